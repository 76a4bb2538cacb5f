"""Bad-input cases: token shards."""

from __future__ import annotations

from harness_common import *  # noqa: F401,F403


# ---- shards -------------------------------------------------------------------------------------

def shard_cases(R: Registry) -> None:
    def add(name: str, desc: str, mutate: Callable, target: str = "train", expect: str = "fail") -> None:
        def build(env: Env) -> Spec:
            d = env.data_copy()
            path = env.p(f"{d}/{target}_000000.bin")
            mutate(env, path)
            if target == "val" and env.rng.random() < 0.5:
                env.run_copy()
                return Spec(["eval", "--checkpoint", CK, "--data", d, "--batches", "2", "--threads", "1"],
                            protect=["run"], detail="read by eval --data")
            env.cfg()
            return Spec(["train", "cfg.yaml", f"data.dir={d}"], detail="read by train")
        R.add("shard", name, desc, expect, build)

    def set_header(idx: int, value: int) -> Callable:
        def m(env: Env, path: Path) -> None:
            h, body = shard_bytes(path)
            h[idx] = value
            write_shard(path, h, body)
        return m

    def count_delta(delta: int) -> Callable:
        def m(env: Env, path: Path) -> None:
            h, body = shard_bytes(path)
            h[2] += delta
            write_shard(path, h, body)
        return m

    def truncate(n: Optional[int] = None, minus: int = 0) -> Callable:
        def m(env: Env, path: Path) -> None:
            b = path.read_bytes()
            path.write_bytes(b[:n] if n is not None else b[:len(b) - minus])
        return m

    def tokens(value: int, every: int = 5) -> Callable:
        def m(env: Env, path: Path) -> None:
            h, body = shard_bytes(path)
            toks = list(struct.unpack(f"<{len(body) // 2}H", body))
            for i in range(0, len(toks), every):
                toks[i] = value
            write_shard(path, h, struct.pack(f"<{len(toks)}H", *toks))
        return m

    def to_u32(value: Optional[int]) -> Callable:
        def m(env: Env, path: Path) -> None:
            h, body = shard_bytes(path)
            toks = list(struct.unpack(f"<{len(body) // 2}H", body))
            if value is not None:
                for i in range(0, len(toks), 5):
                    toks[i] = value
            h[0], h[1] = 20240801, 7
            write_shard(path, h, struct.pack(f"<{len(toks)}I", *toks))
        return m

    def n_tokens(n: int) -> Callable:
        def m(env: Env, path: Path) -> None:
            h, body = shard_bytes(path)
            h[2] = n
            write_shard(path, h, body[:2 * n])
        return m

    add("magic", "magic 20240520 -> 20240521", set_header(0, 20240521))
    add("magic-zero", "magic 0", set_header(0, 0))
    add("version", "version 1 -> 2", set_header(1, 2))
    add("magic-u32-v1", "uint32 magic with version 1", set_header(1, 7))
    add("count-plus", "token count + 1", count_delta(1))
    add("count-minus", "token count - 1", count_delta(-1))
    add("count-neg", "token count -1", set_header(2, -1))
    add("count-max", "token count INT32_MAX", set_header(2, 2**31 - 1))
    add("count-zero", "token count 0 with tokens present", set_header(2, 0))
    add("trunc-100", "truncated to 100 bytes", truncate(100))
    add("trunc-header", "only the 1024-byte header", truncate(1024))
    add("trunc-1", "one byte short", truncate(minus=1))
    add("trunc-odd", "one byte short of a token (odd size)", truncate(minus=3))
    add("empty", "0 bytes", truncate(0))
    add("only-header-zero", "a consistent header with 0 tokens", n_tokens(0))
    add("one-token", "a consistent shard of 1 token", n_tokens(1))
    add("token-vocab", "every 5th token = vocab size (300)", lambda env, p: tokens(env.ctx.vocab)(env, p))
    add("token-65535", "every 5th token = 65535", tokens(65535))
    add("u32-2g", "uint32 shard with tokens 0x80000000", to_u32(0x80000000))
    add("u32-ffffffff", "uint32 shard with tokens 0xffffffff", to_u32(0xFFFFFFFF))
    add("u32-valid", "the same tokens as a uint32 shard", to_u32(None), expect="any")
    add("dir", "train_000000.bin is a directory (no other train shard)", lambda env, p: make_dir(p))
    add("fifo", "train_000000.bin is a FIFO (no other train shard)", lambda env, p: make_fifo(p))
    add("dev-zero", "train_000000.bin -> /dev/zero", lambda env, p: make_link(p, "/dev/zero"))
    add("missing", "no train shard at all", lambda env, p: p.unlink())
    add("stray", "an extra garbage train_000001.bin",
        lambda env, p: (p.parent / "train_000001.bin").write_bytes(bytes(env.rng.randrange(256) for _ in range(3000))))
    add("val-magic", "val shard magic flipped", set_header(0, 12345), target="val")
    add("val-short", "val shard of 3 tokens (less than one window)", n_tokens(3), target="val")
    add("val-token-vocab", "val tokens = vocab size", lambda env, p: tokens(env.ctx.vocab, 3)(env, p), target="val")
    add("val-trunc", "val shard one byte short", truncate(minus=1), target="val")


def shard_random(env: Env) -> Spec:
    rng = env.rng
    d = env.data_copy()
    target = rng.choice(["train", "train", "val"])
    path = env.p(f"{d}/{target}_000000.bin")
    size = path.stat().st_size
    kind = rng.choice(["header", "reserved", "tokens", "tokens", "trunc", "append"])
    expect = "any"
    if kind == "header":
        i, o, n = flip_byte(path, rng, 0, 12)
        expect = "fail"  # magic, version or count: none of them can stay consistent
        detail = f"{target} header byte {i} 0x{o:02x} -> 0x{n:02x}"
    elif kind == "reserved":
        i, o, n = flip_byte(path, rng, 12, 1024)
        detail = f"{target} reserved header byte {i} 0x{o:02x} -> 0x{n:02x}"
    elif kind == "tokens":
        i, o, n = flip_byte(path, rng, 1024)
        detail = f"{target} token byte {i} 0x{o:02x} -> 0x{n:02x}"
    elif kind == "trunc":
        n = rng.randrange(size)
        path.write_bytes(path.read_bytes()[:n])
        expect = "fail"
        detail = f"{target} truncated to {n} of {size} bytes"
    else:
        k = rng.randrange(1, 64)
        with open(path, "ab") as f:
            f.write(bytes(rng.randrange(256) for _ in range(k)))
        expect = "fail"
        detail = f"{target}: {k} garbage bytes appended"
    if target == "val" and rng.random() < 0.5:
        env.run_copy()
        return Spec(["eval", "--checkpoint", CK, "--data", d, "--batches", "2", "--threads", "1"], protect=["run"],
                    detail=detail + " (eval --data)", expect=expect)
    env.cfg()
    return Spec(["train", "cfg.yaml", f"data.dir={d}"], detail=detail + " (train)", expect=expect)
