"""Bad-input cases: state.json."""

from __future__ import annotations

from harness_common import *  # noqa: F401,F403


# ---- state.json ---------------------------------------------------------------------------------

STATE_KEYS = ["step", "tokens_seen", "data_cursor.epoch", "data_cursor.position", "world_size", "global_batch_tokens",
              "fingerprint"]


def state_set(state: dict, key: str, value) -> None:
    if "." in key:
        a, b = key.split(".")
        state[a][b] = value
    else:
        state[key] = value


def state_del(state: dict, key: str) -> None:
    if "." in key:
        a, b = key.split(".")
        del state[a][b]
    else:
        del state[key]


def state_cases(R: Registry) -> None:
    def add(name: str, desc: str, make: Callable, expect: str = "fail") -> None:
        def build(env: Env) -> Spec:
            spec = ck_spec(env, "resume")
            path = env.p(f"{CK}/state.json")
            out = make(env, json.loads(path.read_text()), path)
            if out is not None:
                env.write(f"{CK}/state.json", out)
            return spec
        R.add("state", name, desc, expect, build)

    def raw(key: str, value: str) -> Callable:
        def make(env: Env, s: dict, p: Path) -> str:
            state_set(s, key, "__V__")
            return json.dumps(s, indent=2).replace('"__V__"', value)
        return make

    def drop(key: str) -> Callable:
        def make(env: Env, s: dict, p: Path) -> str:
            state_del(s, key)
            return json.dumps(s, indent=2)
        return make

    for value, tag in [("99999999", "99999999"), ("-1", "neg"), ('"4"', "string"), ("4.5", "fraction"), ("null", "null"),
                       ("1e308", "1e308"), (I64_MAX, "i64max"), ("18446744073709551616", "2e64"), ("true", "bool"),
                       ("[]", "list"), ("NaN", "nan"), (deep(), "deep")]:
        add(f"step-{tag}", f"step {value[:20]}", raw("step", value))
    for key in STATE_KEYS + ["data_cursor"]:
        add(f"missing-{key.replace('.', '-')}", f"no {key}", drop(key))
    add("tokens-neg", "tokens_seen -1", raw("tokens_seen", "-1"))
    add("position-odd", "data_cursor.position 3 (not a batch boundary)", raw("data_cursor.position", "3"))
    add("position-neg", "data_cursor.position -32", raw("data_cursor.position", "-32"))
    add("epoch-neg", "data_cursor.epoch -1", raw("data_cursor.epoch", "-1"))
    add("cursor-string", "data_cursor is a string", raw("data_cursor", '"0:0"'))
    add("world-zero", "world_size 0", raw("world_size", "0"))
    add("world-neg", "world_size -1", raw("world_size", "-1"))
    add("gbt-other", "global_batch_tokens 64 (the run uses 32)", raw("global_batch_tokens", "64"))
    add("gbt-zero", "global_batch_tokens 0", raw("global_batch_tokens", "0"))
    add("fingerprint-other", "fingerprint of another model", raw("fingerprint", '"{vocab_size: 1}"'))
    add("fingerprint-number", "fingerprint 5", raw("fingerprint", "5"))
    add("fingerprint-deep", f"fingerprint = {DEEP} nested objects", raw("fingerprint", deep(kind="object")))
    add("empty", "empty state.json", lambda env, s, p: "")
    add("truncated", "truncated state.json", lambda env, s, p: p.read_text()[:30])
    add("array", "state.json is []", lambda env, s, p: "[]")
    add("deep", f"state.json is {DEEP} nested arrays", lambda env, s, p: deep())
    add("garbage", "binary garbage", lambda env, s, p: bytes(env.rng.randrange(256) for _ in range(512)))
    add("bad-utf8", "invalid UTF-8 in the fingerprint", lambda env, s, p: p.read_bytes().replace(b'"{vocab', b'"\xff{vocab', 1))
    add("dir", "state.json is a directory", lambda env, s, p: make_dir(p))
    add("fifo", "state.json is a FIFO", lambda env, s, p: make_fifo(p))
    add("missing-file", "no state.json", lambda env, s, p: p.unlink())
    add("dev-zero", "state.json -> /dev/zero", lambda env, s, p: make_link(p, "/dev/zero"))
    add("extra-key", "an extra key", raw("comment", '"x"'), expect="any")


def state_random(env: Env) -> Spec:
    rng = env.rng
    spec = ck_spec(env, "resume")
    path = env.p(f"{CK}/state.json")
    s = json.loads(path.read_text())
    detail, expect = mutate_json_file(path, rng, s, STATE_KEYS,
                                      ["-1", '"x"', "null", "[]", "{}", "1e308", "99999999", "0.5", "true",
                                       "18446744073709551616"], state_set)
    if expect == "value":
        key, value = detail.split(": ", 1)
        expect = "any"
        certain = {"-1", '"x"', "null", "[]", "{}", "1e308", "0.5", "true", "18446744073709551616"}
        if key == "fingerprint":
            expect = "fail"
        elif key in ("step", "global_batch_tokens", "data_cursor.position"):
            expect = "fail"  # 99999999 contradicts the directory name, the run's batch or the batch boundaries
        elif value in certain:
            expect = "fail"
    spec.detail, spec.expect = detail, expect
    return spec
