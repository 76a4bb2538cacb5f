"""Bad-input cases: data.json."""

from __future__ import annotations

from harness_common import *  # noqa: F401,F403


# ---- data.json ----------------------------------------------------------------------------------

REQUIRED_META = ("vocab_size", "eot_id", "token_bytes")


def datajson_cases(R: Registry) -> None:
    def add(name: str, desc: str, make: Callable, expect: str = "fail") -> None:
        def build(env: Env) -> Spec:
            d = env.data_copy()
            path = env.p(f"{d}/data.json")
            meta = json.loads(path.read_text())
            out = make(env, meta, path)
            if out is not None:
                env.write(f"{d}/data.json", out)
            env.cfg()
            return Spec(["train", "cfg.yaml", f"data.dir={d}"])
        R.add("datajson", name, desc, expect, build)

    def with_value(key: str, raw: str) -> Callable:
        marker = "__VALUE__"

        def make(env: Env, meta: dict, path: Path) -> str:
            meta[key] = marker
            return json.dumps(meta, indent=2).replace(json.dumps(marker), raw)
        return make

    def without(key: str) -> Callable:
        def make(env: Env, meta: dict, path: Path) -> str:
            del meta[key]
            return json.dumps(meta, indent=2)
        return make

    add("truncated", "truncated in the middle", lambda env, m, p: p.read_text()[:40])
    add("empty", "empty file", lambda env, m, p: "")
    add("array", "a JSON array", lambda env, m, p: "[]")
    add("string", "a JSON string", lambda env, m, p: '"data"')
    add("null", "JSON null", lambda env, m, p: "null")
    add("empty-object", "{}", lambda env, m, p: "{}")
    for raw, tag in [('"300"', "string"), ("300.5", "fraction"), ("null", "null"), ("[300]", "list"), ("{}", "map"),
                     ("-1", "neg"), ("0", "zero"), (I64_MAX, "i64max"), ("1e308", "1e308"),
                     ("18446744073709551616", "2e64"), ("true", "bool"), ("1000000", "huge")]:
        add(f"vocab-{tag}", f"vocab_size {raw}", with_value("vocab_size", raw))
    for raw, tag in [("-1", "neg"), ("300", "eq-vocab"), ('"x"', "string"), ("1e308", "1e308"), ("299.5", "fraction")]:
        add(f"eot-{tag}", f"eot_id {raw}", with_value("eot_id", raw))
    for raw, tag in [("3", "three"), ('"2"', "string"), ("4", "mismatch"), ("0", "zero")]:
        add(f"width-{tag}", f"token_bytes {raw} (shards are uint16)", with_value("token_bytes", raw))
    for key in REQUIRED_META:
        add(f"missing-{key}", f"no {key}", without(key))
    add("missing-documents", "no documents count", without("documents"), expect="any")
    add("extra-key", "an extra key", with_value("comment", '"hello"'), expect="any")
    add("deep", f"{DEEP} nested arrays as the whole file", lambda env, m, p: deep())
    add("deep-vocab", f"vocab_size = {DEEP} nested arrays", with_value("vocab_size", deep()))
    add("deep-extra", f"an extra key holding {DEEP} nested objects", with_value("extra", deep(kind="object")), expect="any")
    add("dir", "data.json is a directory", lambda env, m, p: make_dir(p))
    add("fifo", "data.json is a FIFO", lambda env, m, p: make_fifo(p))
    add("dev-zero", "data.json -> /dev/zero", lambda env, m, p: make_link(p, "/dev/zero"))
    add("bad-utf8", "invalid UTF-8 in a string", lambda env, m, p: p.read_bytes().replace(b'"tokenizer": "', b'"tokenizer": "\xff\xfe', 1))
    add("nan", "vocab_size NaN (not JSON)", with_value("vocab_size", "NaN"))


def datajson_random(env: Env) -> Spec:
    rng = env.rng
    d = env.data_copy()
    path = env.p(f"{d}/data.json")
    meta = json.loads(path.read_text())
    mutated = mutate_json_file(path, rng, meta, sorted(meta),
                               ["-1", '"x"', "null", "[]", "{}", "1e308", I64_MAX, "true", "0.5", "0"],
                               lambda obj, key, v: obj.__setitem__(key, v))
    detail, expect = mutated
    if expect == "value":
        key = detail.split(":")[0]
        # none of the raw values is the right vocab size, EOT id or width
        expect = "fail" if key in REQUIRED_META else "any"
    env.cfg()
    return Spec(["train", "cfg.yaml", f"data.dir={d}"], detail=detail, expect=expect)
