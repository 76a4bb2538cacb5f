"""Bad-input cases: supervised fine-tuning data."""

from __future__ import annotations

from harness_common import *  # noqa: F401,F403
from cases.cli import with_opt
from cases.hfmodel import json_with_raw


# ---- supervised fine-tuning: prepare --format sft, sft_*.bin, data.json "format" -----------------

SFT_MAGIC = 20261123
SFT_GOOD = ('{"prompt": "the sun", "response": " is warm"}\n'
            '{"context": "a red bird", "question": "what is red?", "answer": "a bird"}\n')


def sft_prepare_argv(inputs: list, out: str = "sftout", tok: Optional[str] = None, *extra: str) -> list:
    argv = ["prepare", "--format", "sft"]
    for i in inputs:
        argv += ["--input", i]
    return argv + ["--tokenizer", tok or "{TOK}", "--out", out, "--val-fraction", "0.2", "--threads", "1", *extra]


def sft_parse(b: bytes) -> tuple:
    """(header int32[8], [(prompt, response)], width) of a valid sft_*.bin."""
    header = list(struct.unpack("<8i", b[:32]))
    width = header[2]
    code = "H" if width == 2 else "I"
    at, examples = 32, []
    for _ in range(header[3]):
        p, r = struct.unpack_from("<2I", b, at)
        at += 8
        toks = list(struct.unpack_from(f"<{p + r}{code}", b, at))
        at += (p + r) * width
        examples.append((toks[:p], toks[p:]))
    return header, examples, width


def sft_pack(header: list, examples: list, width: int, lengths: Optional[dict] = None) -> bytes:
    """An sft_*.bin; `lengths` {example: (prompt len, response len)} overrides the length fields."""
    code = "H" if width == 2 else "I"
    out = struct.pack("<8i", *header)
    for i, (p, r) in enumerate(examples):
        lp, lr = (lengths or {}).get(i, (len(p), len(r)))
        out += struct.pack("<2I", lp % (1 << 32), lr % (1 << 32)) + struct.pack(f"<{len(p) + len(r)}{code}", *(p + r))
    return out


def sft_reader(env: Env, d: str, which: str) -> Spec:
    """A command that reads the SFT directory `d`: train (sft_train.bin and sft_val.bin) or eval --data
    (sft_val.bin)."""
    if which == "eval":
        env.run_copy()
        return Spec(["eval", "--checkpoint", CK, "--data", d, "--batches", "2", "--threads", "1"], protect=["run", d])
    env.cfg()
    return Spec(["train", "cfg.yaml", f"data.dir={d}"], protect=[d])


def sft_line_ok(obj, task: bool = False) -> bool:
    """Whether one parsed JSONL line is a valid example (data/sft.cpp parse_sft_line; with task, also
    eval/qa.cpp's "answers")."""
    if not isinstance(obj, dict):
        return False
    if task and "answers" in obj:
        a = obj["answers"]
        if not (isinstance(a, list) and 1 <= len(a) <= 64 and all(isinstance(x, str) for x in a)):
            return False
        obj = {k: v for k, v in obj.items() if k != "answers"}
        if "answer" not in obj and "response" not in obj:
            obj["answer"] = a[0]
    if "prompt" in obj or "response" in obj:
        if any(k in obj for k in ("question", "context", "answer")):
            return False
        return isinstance(obj.get("prompt"), str) and isinstance(obj.get("response"), str) and obj["response"] != ""
    return all(isinstance(obj.get(k), str) for k in ("context", "question", "answer"))


# Raw JSON values for a field of a JSONL line (parsed alike by Python and nlohmann::json).
LINE_VALUES = ['""', '"x"', "5", "-1", "null", "true", "[]", '["a"]', "{}", '{"a": "b"}', "1e308", '"\\u0000"',
               '"' + "w" * 3000 + '"']
LINE_KEYS = ["prompt", "response", "context", "question", "answer", "answers"]


def jsonl_value_mutation(rng: random.Random, text: str, task: bool) -> tuple:
    """One field of one line set to a raw value or removed; returns (text, detail, line number, ok)."""
    lines = text.splitlines()
    i = rng.randrange(len(lines))
    obj = json.loads(lines[i])
    key = rng.choice(sorted(set(obj) | set(LINE_KEYS)))
    if rng.random() < 0.25 and key in obj:
        del obj[key]
        lines[i] = json.dumps(obj)
        detail = f"line {i + 1}: '{key}' removed"
    else:
        raw = rng.choice(LINE_VALUES)
        obj[key] = "__RAW__"
        lines[i] = json.dumps(obj).replace('"__RAW__"', raw)
        obj = json.loads(lines[i])
        detail = f"line {i + 1}: {key} = {raw[:20]}"
    return "\n".join(lines) + "\n", detail, i + 1, sft_line_ok(obj, task)


def sft_cases(R: Registry) -> None:
    # -- prepare --format sft: the JSONL inputs (every other case over an earlier SFT dir, --overwrite)
    def prep(name: str, desc: str, text, expect: str = "fail", line: Optional[int] = None,
             extra: tuple = (), val: Optional[str] = None) -> None:
        idx = R.count.get("sft", 0)

        def build(env: Env) -> Spec:
            env.write("in.jsonl", text(env) if callable(text) else text)
            argv = cli_argv(env, sft_prepare_argv(["in.jsonl"], "sftout", None, *extra))
            if val is not None:
                argv = with_opt(argv, "--val-fraction", val)
            protect = []
            if idx % 2:
                env.sft_copy("sftout")
                argv.append("--overwrite")
                protect = ["sftout"]
            return Spec(argv, protect=protect, mention=[f"in.jsonl:{line}"] if line else [],
                        detail="--overwrite over an earlier SFT dir" if idx % 2 else "")
        R.add("sft", name, desc, expect, build)

    good = SFT_GOOD
    prep("bad-json", "line 3 is cut inside an object", good + '{"prompt": "a", "response": \n', line=3)
    prep("array-line", "line 3 is a JSON array", good + '["the sun", " is warm"]\n', line=3)
    prep("missing-response", "prompt without response", good + '{"prompt": "a"}\n', line=3)
    prep("prompt-number", "prompt 5", good + '{"prompt": 5, "response": "b"}\n', line=3)
    prep("response-list", "response [\"b\"]", '{"prompt": "a", "response": ["b"]}\n', line=1)
    prep("mixed-answer", "prompt/response mixed with answer", good + '{"prompt": "a", "response": "b", "answer": "c"}\n',
         line=3)
    prep("qa-missing-context", "question/answer without context", good + '{"question": "q", "answer": "a"}\n', line=3)
    prep("no-known-keys", "{\"text\": ...} (neither layout)", good + '{"text": "hello"}\n', line=3)
    prep("empty-response", "response \"\"", good + '{"prompt": "a", "response": ""}\n', line=3)
    prep("qa-empty-answer", "answer \"\" (the response is then one space)",
         good + '{"context": "c", "question": "q", "answer": ""}\n', expect="any")
    prep("blank-only", "only blank lines", "\n  \n\t\n\r\n")
    prep("deep-line", f"line 2 is {DEEP} nested arrays", lambda env: good.split("\n")[0] + "\n" + deep() + "\n", line=2)
    prep("nul-byte", "a raw NUL byte inside a string", good + '{"prompt": "a\0b", "response": "c"}\n', line=3)
    prep("late-bad-line", "line 61 of 61 is not JSON", good * 30 + "{oops}\n", line=61)
    prep("all-val-one", "one example, --val-fraction 0.5: nothing left to train on", good.split("\n")[0] + "\n", val="0.5")
    prep("format-bogus", "--format bogus", good, expect="fail2", extra=("--format", "bogus"))

    def second_bad(env: Env) -> Spec:
        env.write("a.jsonl", SFT_GOOD)
        env.write("b.jsonl", SFT_GOOD + '{"prompt": "x", "response": 1}\n')
        return Spec(cli_argv(env, sft_prepare_argv(["a.jsonl", "b.jsonl"])), mention=["b.jsonl:3"])
    R.add("sft", "second-input-bad", "two --input files, line 3 of the second bad", "fail", second_bad)

    def input_case(name: str, desc: str, make: Callable) -> None:
        def build(env: Env) -> Spec:
            path = make(env)
            return Spec(cli_argv(env, sft_prepare_argv([path])), mention=[path])
        R.add("sft", name, desc, "fail", build)
    input_case("input-fifo", "--input is a FIFO with no writer", lambda env: (make_fifo(env.p("in.fifo")), "in.fifo")[1])
    input_case("input-dir", "--input is a directory", lambda env: (make_dir(env.p("indir")), "indir")[1])
    R.add("sft", "out-existing", "--out holds token shards (data.json), no --overwrite", "fail",
          lambda env: (env.data_copy(), Spec(cli_argv(env, sft_prepare_argv(["{SFTJSONL}"], "data")),
                                             protect=["data"]))[1])

    # -- sft_*.bin, read by train (train and val) or eval --data (val)
    def bin_case(name: str, desc: str, mutate: Callable, target: str = "train", expect: str = "fail") -> None:
        idx = R.count.get("sft", 0)

        def build(env: Env) -> Spec:
            d = env.sft_copy()
            path = env.p(f"{d}/sft_{target}.bin")
            mutate(env, path)
            spec = sft_reader(env, d, "eval" if target == "val" and idx % 2 else "train")
            spec.mention = [f"sft_{target}.bin"] if expect == "fail" else []
            return spec
        R.add("sft", name, desc + ("" if target == "train" else " (sft_val.bin)"), expect, build)

    def edit(fn: Callable) -> Callable:
        def m(env: Env, path: Path) -> None:
            h, ex, w = sft_parse(path.read_bytes())
            out = fn(h, ex, w)
            path.write_bytes(out if isinstance(out, bytes) else sft_pack(h, ex, w))
        return m

    def header(i: int, v: int) -> Callable:
        return edit(lambda h, ex, w: (h.__setitem__(i, v), sft_pack(h, ex, w))[1])

    def raw(fn: Callable) -> Callable:
        return lambda env, p: p.write_bytes(fn(p.read_bytes()))

    def token(value: int, part: int = 1) -> Callable:
        def fn(h, ex, w):
            ex[1][part][0] = value
            return sft_pack(h, ex, w)
        return edit(fn)

    def widen(value: Optional[int]) -> Callable:
        def fn(h, ex, w):
            h[2] = 4
            if value is not None:
                ex[0][1][0] = value
            return sft_pack(h, ex, 4)
        return edit(fn)

    def drop_part(part: int) -> Callable:  # example 0's prompt or response removed, its length 0
        def fn(h, ex, w):
            p, r = ex[0]
            ex[0] = ([], r) if part == 0 else (p, [])
            return sft_pack(h, ex, w)
        return edit(fn)

    def length(lp: Optional[int], lr: Optional[int]) -> Callable:
        def fn(h, ex, w):
            p, r = ex[0]
            return sft_pack(h, ex, w, {0: (len(p) if lp is None else lp, len(r) if lr is None else lr)})
        return edit(fn)

    bin_case("magic", "magic 20261123 -> 20240520 (a token shard's)", header(0, 20240520))
    bin_case("version", "version 1 -> 2", header(1, 2))
    bin_case("width-3", "token width 3", header(2, 3))
    bin_case("width-4-data-2", "token width 4 over 2-byte tokens", header(2, 4))
    bin_case("count-plus", "example count + 1", edit(lambda h, ex, w: (h.__setitem__(3, h[3] + 1), sft_pack(h, ex, w))[1]))
    bin_case("count-minus", "example count - 1 (trailing bytes)",
             edit(lambda h, ex, w: (h.__setitem__(3, h[3] - 1), sft_pack(h, ex, w))[1]), target="val")
    bin_case("count-neg", "example count -1", header(3, -1))
    bin_case("count-max", "example count INT32_MAX", header(3, 2**31 - 1), target="val")
    bin_case("trunc-header", "only 16 bytes (half a header)", raw(lambda b: b[:16]))
    bin_case("trunc-1", "one byte short", raw(lambda b: b[:-1]), target="val")
    bin_case("trailing", "one trailing byte", raw(lambda b: b + b"\0"), target="val")
    bin_case("zero-prompt", "example 0 with an empty prompt (length 0)", drop_part(0))
    bin_case("zero-response", "example 0 with an empty response (length 0)", drop_part(1), target="val")
    bin_case("len-max", "example 0's prompt length 2^32-1", length(2**32 - 1, None))
    bin_case("len-2e24", "example 0's response length 2^24+1", length(None, 2**24 + 1), target="val")
    bin_case("token-vocab", "a response token = the vocab size (300)", token(300))
    bin_case("u32-negative", "4-byte tokens, one 0x80000000 (negative as int32)", widen(0x80000000))
    bin_case("fifo", "sft_val.bin is a FIFO", lambda env, p: make_fifo(p), target="val")
    bin_case("val-no-examples", "sft_val.bin with 0 examples", edit(lambda h, ex, w: sft_pack(h[:3] + [0] + h[4:], [], w)),
             target="val")

    # -- data.json "format"
    def fmt_case(name: str, desc: str, raw_value: str, base: str = "sft", reader: str = "train",
                 mention: str = "data.json") -> None:
        def build(env: Env) -> Spec:
            d = env.sft_copy() if base == "sft" else env.data_copy()
            path = env.p(f"{d}/data.json")
            path.write_text(json_with_raw(json.loads(path.read_text()), lambda o, v: o.__setitem__("format", v),
                                          raw_value))
            spec = sft_reader(env, d, reader)
            spec.mention = [mention]
            return spec
        R.add("sft", name, desc, "fail", build)
    fmt_case("format-bogus", "data.json format \"bogus\"", '"bogus"')
    fmt_case("format-number", "data.json format 5", "5", reader="eval")
    fmt_case("format-tokens", "an SFT directory whose data.json says \"tokens\" (no token shards)", '"tokens"',
             reader="eval", mention="sft")
    fmt_case("format-sft-shards", "a token-shard directory whose data.json says \"sft\" (no sft_*.bin)", '"sft"',
             base="data", mention="sft_train.bin")


def sft_random(env: Env) -> Spec:
    rng = env.rng
    kind = rng.choice(["jsonl", "jsonl", "bin", "bin", "bin", "format"])
    if kind == "jsonl":
        text = env.ctx.sftjsonl.read_text()
        op = rng.choice(["value", "value", "flip", "trunc"])
        expect, line = "any", None
        if op == "value":
            text, detail, line, ok = jsonl_value_mutation(rng, text, task=False)
            env.write("in.jsonl", text)
            expect = "any" if ok else "fail"
        elif op == "flip":
            env.write("in.jsonl", text)
            i, o, n = flip_byte(env.p("in.jsonl"), rng)
            detail = f"byte {i} 0x{o:02x} -> 0x{n:02x}"
        else:
            n = rng.randrange(len(text))
            env.write("in.jsonl", text[:n])
            partial = text[:n].rsplit("\n", 1)[-1]
            expect = "fail" if partial.strip() and text[n] != "\n" else "any"
            line = text[:n].count("\n") + 1 if expect == "fail" else None
            detail = f"truncated to {n} of {len(text)} bytes"
        argv = cli_argv(env, sft_prepare_argv(["in.jsonl"]))
        protect = []
        if rng.random() < 0.5:
            env.sft_copy("sftout")
            argv.append("--overwrite")
            protect = ["sftout"]
            detail += ", --overwrite over an earlier SFT dir"
        return Spec(argv, protect=protect, detail=f"prepare: {detail}", expect=expect,
                    mention=[f"in.jsonl:{line}"] if line and expect == "fail" else [])
    d = env.sft_copy()
    if kind == "format":
        path = env.p(f"{d}/data.json")
        raw = rng.choice(['"sft"', '"tokens"', '"SFT"', '""', "null", "5", "[]", "{}", "true"])
        path.write_text(json_with_raw(json.loads(path.read_text()), lambda o, v: o.__setitem__("format", v), raw))
        spec = sft_reader(env, d, rng.choice(["train", "eval"]))
        spec.detail, spec.expect = f"data.json format {raw}", "any" if raw == '"sft"' else "fail"
        return spec
    target = rng.choice(["train", "val"])
    path = env.p(f"{d}/sft_{target}.bin")
    size = path.stat().st_size
    part = rng.choice(["header", "reserved", "body", "body", "trunc", "append"])
    expect = "any"
    if part == "header":  # magic, version, width, count: none can change and stay consistent
        i, o, n = flip_byte(path, rng, 0, 16)
        expect, detail = "fail", f"header byte {i} 0x{o:02x} -> 0x{n:02x}"
    elif part == "reserved":
        i, o, n = flip_byte(path, rng, 16, 32)
        detail = f"reserved header byte {i} 0x{o:02x} -> 0x{n:02x}"
    elif part == "body":
        i, o, n = flip_byte(path, rng, 32)
        detail = f"byte {i} 0x{o:02x} -> 0x{n:02x}"
    elif part == "trunc":
        n = rng.randrange(size)
        path.write_bytes(path.read_bytes()[:n])
        expect, detail = "fail", f"truncated to {n} of {size} bytes"
    else:
        k = rng.randrange(1, 16)
        with open(path, "ab") as f:
            f.write(bytes(rng.randrange(256) for _ in range(k)))
        expect, detail = "fail", f"{k} garbage bytes appended"
    which = "eval" if target == "val" and rng.random() < 0.5 else "train"
    spec = sft_reader(env, d, which)
    spec.detail, spec.expect = f"sft_{target}.bin {detail} ({which})", expect
    return spec
