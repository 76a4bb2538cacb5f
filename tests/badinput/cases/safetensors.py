"""Bad-input cases: model.safetensors / optimizer.safetensors."""

from __future__ import annotations

from harness_common import *  # noqa: F401,F403


# ---- model.safetensors / optimizer.safetensors --------------------------------------------------

def safetensors_cases(R: Registry) -> None:
    def add(name: str, desc: str, mutate: Callable, file: str = "model.safetensors", expect: str = "fail",
            cmds: Optional[list] = None) -> None:
        idx = R.count.get("safetensors", 0)
        cmds = cmds or (["resume"] if file == "optimizer.safetensors" else WEIGHT_READERS)

        def build(env: Env) -> Spec:
            spec = ck_spec(env, cmds[idx % len(cmds)])
            path = env.p(f"{CK}/{file}")
            out = mutate(env, path)
            if isinstance(out, tuple):  # (detail, expect)
                spec.detail, spec.expect = out
            return spec
        R.add("safetensors", name, desc, expect, build)

    def length(fn: Callable) -> Callable:
        def m(env: Env, path: Path):
            n, h, d = st_parts(path)
            new = fn(n, path.stat().st_size)
            path.write_bytes(struct.pack("<Q", new % (1 << 64)) + h + d)
            if new == n + 1:
                return f"header length {n} -> {new}", "any" if d[:1] in (b" ", b"\t", b"\r", b"\n") else "fail"
            if new == n - 1:
                return f"header length {n} -> {new}", "any" if h.endswith(b" ") else "fail"
            return f"header length {n} -> {new}", "fail"
        return m

    def header_edit(fn: Callable, marker: Optional[str] = None) -> Callable:
        def m(env: Env, path: Path) -> None:
            _, h, d = st_parts(path)
            header = json.loads(h)
            fn(env, header)
            st_write(path, header, d, deep_marker=marker)
        return m

    def first_weight(header: dict) -> str:
        return sorted(k for k in tensor_names(header) if len(header[k]["shape"]) == 2)[0]

    def set_field(fieldname: str, value) -> Callable:
        return header_edit(lambda env, h: h[first_weight(h)].__setitem__(fieldname, value),
                           marker=value if isinstance(value, str) and value.startswith("__DEEP") else None)

    def same_size_pair(h: dict) -> tuple:
        names = sorted(tensor_names(h), key=lambda k: h[k]["data_offsets"][0])
        by_size = {}
        for k in names:
            by_size.setdefault(nbytes(h[k]), []).append(k)
        for size, ks in sorted(by_size.items(), reverse=True):
            if len(ks) >= 2 and size > 0:
                return ks[0], ks[1]
        raise FixtureError("no two tensors of equal size in model.safetensors")

    def overlap(env: Env, h: dict) -> None:
        a, b = same_size_pair(h)
        h[b]["data_offsets"] = list(h[a]["data_offsets"])

    def shift_into_neighbour(env: Env, h: dict) -> None:
        names = sorted(tensor_names(h), key=lambda k: h[k]["data_offsets"][0])
        k = names[1]
        h[k]["data_offsets"] = [h[k]["data_offsets"][0] - 4, h[k]["data_offsets"][1] - 4]

    def transpose(env: Env, h: dict) -> None:
        for k in sorted(tensor_names(h)):
            s = h[k]["shape"]
            if len(s) == 2 and s[0] != s[1]:
                h[k]["shape"] = [s[1], s[0]]
                return

    def reversed_offsets(env: Env, h: dict) -> None:
        k = first_weight(h)
        h[k]["data_offsets"] = list(reversed(h[k]["data_offsets"]))

    def out_of_range(env: Env, h: dict) -> None:
        k = first_weight(h)
        total = max(h[n]["data_offsets"][1] for n in tensor_names(h))
        size = nbytes(h[k])
        h[k]["data_offsets"] = [total - size + 4, total + 4]

    def overflow_shape(shape: list, zero_offsets: bool) -> Callable:
        def fn(env: Env, h: dict) -> None:
            k = first_weight(h)
            h[k]["shape"] = shape
            if zero_offsets:
                h[k]["data_offsets"] = [0, 0]
        return fn

    add("len-zero", "header length 0", length(lambda n, size: 0))
    add("len-file", "header length = file size", length(lambda n, size: size))
    add("len-max", "header length 2^64-1", length(lambda n, size: (1 << 64) - 1))
    add("len-2e63", "header length 2^63", length(lambda n, size: 1 << 63))
    add("len-plus1", "header length + 1", length(lambda n, size: n + 1))
    add("len-minus1", "header length - 1", length(lambda n, size: n - 1))
    add("len-plus8", "header length + 8 (eats the first float)", length(lambda n, size: n + 8))
    add("len-half", "header length halved", length(lambda n, size: n // 2))

    def insert_byte(env: Env, p: Path) -> None:
        b = p.read_bytes()
        p.write_bytes(b[:8] + b"X" + b[8:])
    add("shift-insert", "one byte inserted after the length field (header shifted by one)", insert_byte)
    add("shift-drop-first", "the first byte removed (everything shifted by one)",
        lambda env, p: p.write_bytes(p.read_bytes()[1:]))
    add("shift-prepend", "a byte prepended to the file", lambda env, p: p.write_bytes(b"\0" + p.read_bytes()))
    add("dtype-i32", "dtype F32 -> I32 on a weight (same size)", set_field("dtype", "I32"))
    add("dtype-bf16", "dtype F32 -> BF16 on a weight (half the size)", set_field("dtype", "BF16"))
    add("dtype-f64", "dtype F64 (unsupported)", set_field("dtype", "F64"))
    add("dtype-number", "dtype 123", set_field("dtype", 123))
    add("dtype-deep", f"dtype = {DEEP} nested arrays", set_field("dtype", "__DEEP_ARR__"))
    add("shape-2x2e32", "shape [2^32, 2^32] (element count wraps to 0)", set_field("shape", [2**32, 2**32]))
    add("shape-2x2e32-empty", "shape [2^32, 2^32] with data_offsets [0, 0]",
        header_edit(overflow_shape([2**32, 2**32], True)))
    add("shape-bytes-wrap", "shape [2^62, 4] with data_offsets [0, 0] (byte count wraps)",
        header_edit(overflow_shape([2**62, 4], True)))
    add("shape-2e63", "shape [2^63]", set_field("shape", [2**63]))
    add("shape-neg", "shape [-1, 32]", set_field("shape", [-1, 32]))
    add("shape-float", "shape [1.5, 32]", set_field("shape", [1.5, 32]))
    add("shape-deep", f"shape = {DEEP} nested arrays", set_field("shape", "__DEEP_ARR__"))
    add("shape-transposed", "a weight's shape transposed (same size)", header_edit(transpose))
    add("offsets-out", "data_offsets 4 bytes past the end", header_edit(out_of_range))
    add("offsets-reversed", "data_offsets [end, begin]", header_edit(reversed_offsets))
    add("offsets-overlap", "two tensors with the same data_offsets", header_edit(overlap))
    add("offsets-shifted", "a tensor's range shifted 4 bytes into its neighbour", header_edit(shift_into_neighbour))
    add("offsets-one", "data_offsets [0]", set_field("data_offsets", [0]))
    add("offsets-strings", "data_offsets ['0', '4']", set_field("data_offsets", ["0", "4"]))
    add("offsets-neg", "data_offsets [-4, 0]", set_field("data_offsets", [-4, 0]))
    add("offsets-huge", "data_offsets [2^64-4, 2^64-1]", set_field("data_offsets", [2**64 - 4, 2**64 - 1]))
    add("offsets-deep", f"data_offsets = {DEEP} nested objects", set_field("data_offsets", "__DEEP_OBJ__"))
    add("missing-tensor", "a weight's entry removed", header_edit(lambda env, h: h.pop(first_weight(h))))
    add("extra-tensor", "an extra empty tensor 'bogus'",
        header_edit(lambda env, h: h.__setitem__("bogus", {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]})))
    add("header-array", "the header is []", lambda env, p: st_write(p, "[]", st_parts(p)[2]))
    add("header-empty-object", "the header is {}", lambda env, p: st_write(p, "{}", st_parts(p)[2]))
    add("header-deep", f"the header is {DEEP} nested arrays", lambda env, p: st_write(p, deep(), st_parts(p)[2]))
    add("metadata-number", "__metadata__ {format: 5}", header_edit(lambda env, h: h.__setitem__("__metadata__", {"format": 5})))
    add("metadata-array", "__metadata__ []", header_edit(lambda env, h: h.__setitem__("__metadata__", [])))
    add("header-bad-utf8", "invalid UTF-8 in a tensor name",
        lambda env, p: st_write(p, st_parts(p)[1].rstrip(b" ").replace(b'"__metadata__"', b'"__meta\xff"', 1), st_parts(p)[2]))
    add("trunc-1", "the last byte cut", lambda env, p: p.write_bytes(p.read_bytes()[:-1]))
    add("trunc-8", "only the 8-byte length", lambda env, p: p.write_bytes(p.read_bytes()[:8]))
    add("trunc-4", "only 4 bytes", lambda env, p: p.write_bytes(p.read_bytes()[:4]))
    add("trunc-header", "cut in the middle of the header", lambda env, p: p.write_bytes(p.read_bytes()[:60]))
    add("empty", "0 bytes", lambda env, p: p.write_bytes(b""))
    add("dir", "model.safetensors is a directory", lambda env, p: make_dir(p))
    add("fifo", "model.safetensors is a FIFO", lambda env, p: make_fifo(p))
    add("missing", "no model.safetensors", lambda env, p: p.unlink())
    add("dev-zero", "model.safetensors -> /dev/zero", lambda env, p: make_link(p, "/dev/zero"))
    add("link-loop", "model.safetensors is a symlink loop", lambda env, p: make_link(p, "model.safetensors"))

    def nan_weights(env: Env, p: Path) -> None:
        n, h, d = st_parts(p)
        header = json.loads(h)
        k = first_weight(header)
        b, e = header[k]["data_offsets"]
        d = d[:b] + struct.pack("<f", float("nan")) * ((e - b) // 4) + d[e:]
        p.write_bytes(struct.pack("<Q", n) + h + d)
    add("nan-weights", "a weight full of NaN", nan_weights)
    add("unpadded", "header not padded to 8 bytes (still valid)",
        lambda env, p: st_write(p, st_parts(p)[1].rstrip(b" "), st_parts(p)[2], pad=False), expect="any")
    add("opt-trunc", "optimizer.safetensors one byte short", lambda env, p: p.write_bytes(p.read_bytes()[:-1]) and None,
        file="optimizer.safetensors")
    def opt_shape(env: Env, h: dict) -> None:
        b = h["exp_avg"]["data_offsets"][0]
        h["exp_avg"] = {"dtype": "F32", "shape": [1], "data_offsets": [b, b + 4]}
    add("opt-shape", "exp_avg shape [1]", header_edit(opt_shape), file="optimizer.safetensors")
    add("opt-missing", "exp_avg missing", header_edit(lambda env, h: h.pop("exp_avg")), file="optimizer.safetensors")
    add("opt-i32", "exp_avg_sq stored as I32", header_edit(lambda env, h: h["exp_avg_sq"].__setitem__("dtype", "I32")),
        file="optimizer.safetensors")
    add("opt-fifo", "optimizer.safetensors is a FIFO", lambda env, p: make_fifo(p), file="optimizer.safetensors")

    # State that is finite but impossible (generated): a negative second moment somewhere in
    # exp_avg_sq; weights so large the first forward pass is not finite. Refused on load or before
    # the run directory is touched.
    def negative_v(where: str, value: float) -> Callable:
        def m(env: Env, p: Path) -> tuple:
            n, h, d = st_parts(p)
            header = json.loads(h)
            b, e = header["exp_avg_sq"]["data_offsets"]
            count = (e - b) // 4
            i = {"first": 0, "last": count - 1, "random": env.rng.randrange(count)}[where]
            d = d[:b + 4 * i] + struct.pack("<f", value) + d[b + 4 * i + 4:]
            p.write_bytes(struct.pack("<Q", n) + h + d)
            return f"exp_avg_sq[{i}] = {value}", "fail"
        return m
    for where in ("first", "last", "random"):
        for value in (-1.0, -1e-30):
            add(f"opt-negative-v-{where}-{value:g}", f"exp_avg_sq holds {value:g} ({where} element)",
                negative_v(where, value), file="optimizer.safetensors")

    def scaled_weights(factor: float) -> Callable:
        def m(env: Env, p: Path) -> str:
            n, h, d = st_parts(p)
            header = json.loads(h)
            body = bytearray(d)
            for k in tensor_names(header):
                if header[k]["dtype"] != "F32" or len(header[k]["shape"]) != 2:
                    continue
                b, e = header[k]["data_offsets"]
                vals = struct.unpack(f"<{(e - b) // 4}f", bytes(body[b:e]))
                body[b:e] = struct.pack(f"<{len(vals)}f", *[max(-3e38, min(3e38, v * factor)) for v in vals])
            p.write_bytes(struct.pack("<Q", n) + h + bytes(body))
            return f"every 2-D weight x {factor:g}"
        return m
    # x1e15 can stay finite through the norms; x1e30 gives a finite loss (eval may report it) but
    # non-finite gradients (a resumed run must stop before touching its directory).
    for factor, expects in ((1e15, {"eval": "any", "resume": "any"}), (1e30, {"eval": "any", "resume": "fail"})):
        for cmd, expect in expects.items():
            add(f"huge-weights-{factor:g}-{cmd}", f"every weight x {factor:g} ({cmd})", scaled_weights(factor),
                cmds=[cmd], expect=expect)

    def huge_final_norm(env: Env, p: Path) -> str:
        n, h, d = st_parts(p)
        header = json.loads(h)
        b, e = header["model.norm.weight"]["data_offsets"]
        d = d[:b] + struct.pack("<f", 3e38) * ((e - b) // 4) + d[e:]
        p.write_bytes(struct.pack("<Q", n) + h + d)
        return "model.norm.weight = 3e38 (finite; the logits are not)"
    for cmd in ("eval", "resume"):
        add(f"huge-final-norm-{cmd}", f"the final norm's weight 3e38: non-finite logits ({cmd})", huge_final_norm,
            cmds=[cmd])
    add("opt-missing-file", "no optimizer.safetensors", lambda env, p: p.unlink(), file="optimizer.safetensors")


def safetensors_random(env: Env) -> Spec:
    rng = env.rng
    file = rng.choice(["model.safetensors"] * 4 + ["optimizer.safetensors"])
    spec = ck_spec(env, "resume" if file == "optimizer.safetensors" else rng.choice(WEIGHT_READERS))
    path = env.p(f"{CK}/{file}")
    n, h, d = st_parts(path)
    kind = rng.choice(["length", "header", "header", "data", "trunc"])
    expect = "any"
    if kind == "length":
        i, o, v = flip_byte(path, rng, 0, 8)
        expect = "fail" if i >= 1 else "any"
        detail = f"length byte {i} 0x{o:02x} -> 0x{v:02x}"
    elif kind == "header":
        i, o, v = flip_byte(path, rng, 8, 8 + n)
        detail = f"header byte {i} 0x{o:02x} -> 0x{v:02x}"
    elif kind == "data":
        i, o, v = flip_byte(path, rng, 8 + n)
        detail = f"data byte {i} 0x{o:02x} -> 0x{v:02x}"
    else:
        size = path.stat().st_size
        k = rng.randrange(size)
        path.write_bytes(path.read_bytes()[:k])
        expect = "fail"
        detail = f"truncated to {k} of {size} bytes"
    spec.detail, spec.expect = f"{file}: {detail}", expect
    return spec
