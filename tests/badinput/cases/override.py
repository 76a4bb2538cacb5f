"""Bad-input cases: section.key=value overrides."""

from __future__ import annotations

from harness_common import *  # noqa: F401,F403


# ---- section.key=value overrides ----------------------------------------------------------------

def override_cases(R: Registry) -> None:
    def add(name: str, ov: str, expect: str = "fail", desc: Optional[str] = None) -> None:
        def build(env: Env) -> Spec:
            env.cfg()
            return Spec(["train", "cfg.yaml", ov])
        R.add("override", name, desc or f"override {ov[:60]!r}", expect, build)

    add("no-equals", "noequals")
    # Values every key accepts in range but that fail later: the message must name the key.
    def named(name: str, ovs: list, mention: list) -> None:
        def build(env: Env) -> Spec:
            env.cfg()
            return Spec(["train", "cfg.yaml", *ovs], mention=mention)
        R.add("override", name, f"overrides {' '.join(ovs)!r} (the error names {', '.join(mention)})", "fail", build)
    # The same key twice on one command line: refused, naming both (neither value is guessed).
    named("duplicate-key", ["train.steps=3", "train.steps=4"], ["train.steps", "train.steps=3"])
    named("duplicate-key-same-value", ["dist.zero=1", "dist.zero=1"], ["dist.zero"])
    named("zero-range", ["dist.zero=3"], ["dist.zero"])
    for v in ["1e-320", "1e-45", "0"]:
        named(f"eps-{v}", [f"optim.eps={v}"], ["optim.eps"])
    # Models of 10^12+ parameters: more than any machine's memory (and any sanitizer's limits).
    for key, v, other in [("hidden_size", "1000000", "model.vocab_size=1000000"),
                          ("intermediate_size", "4194304", "model.hidden_size=100000"),
                          ("vocab_size", "16000000", "model.hidden_size=100000")]:
        named(f"huge-{key}", [f"model.{key}={v}", other], [key])
    add("second-doc-value", "train.steps=4\n---\n5")
    add("no-value", "model.hidden_size")
    add("no-key", "=5")
    add("no-section", ".hidden_size=5")
    add("empty-key", "model.=5")
    add("three-parts", "model.hidden.size=5")
    add("section-only", "model=5")
    add("unknown-section", "bogus.key=1")
    add("unknown-key", "model.bogus=1")
    add("yaml-error", "model.hidden_size=[")
    add("empty-value", "model.hidden_size=")
    add("string", "model.hidden_size=abc")
    add("i64max", "model.hidden_size=" + I64_MAX)
    add("i64max-vocab", "model.vocab_size=" + I64_MAX)
    add("overflow", "train.batch_size=99999999999999999999")
    add("float-for-int", "model.hidden_size=1e308")
    add("nan", "model.hidden_size=.nan")
    add("lr-inf", "optim.lr=.inf")
    add("lr-nan-word", "optim.lr=nan")
    add("threads", "train.threads=1000000")
    add("steps-neg", "train.steps=-1")
    # one argument can hold at most 128 KiB (MAX_ARG_STRLEN)
    add("deep", "model.hidden_size=" + deep_yaml(ARG_DEEP), desc=f"override value of {ARG_DEEP} nested sequences")
    add("deep-map", "model.hidden_size=" + deep_yaml(ARG_DEEP // 3, kind="map"),
        desc=f"override value of {ARG_DEEP // 3} nested maps")
    add("map", "model.hidden_size={a: 1}")
    add("retention-range", "eval.retention=[2]")
    add("retention-scalar", "eval.retention=0.5")
    add("policy", "router.policy=bogus")
    add("backend", "dist.backend=bogus")
    add("seq-len", "train.seq_len=100000")
    add("newline", "model.hidden_size=32\nextra")
    add("architecture", "model.architecture=bogus")
    add("architecture-llama-qknorm", "model.architecture=llama", expect="pass",
        desc="model.architecture=llama (qk_norm follows the architecture when not given)")
    add("kv-init", "router.kv_init=bogus")
    add("init-from-missing", "model.init_from=/nonexistent/kvroute-model")
    add("window", "model.sliding_window=abc")
    add("rope-factor", "model.rope_factor=0.5")
    add("comment", "model.hidden_size=32 # a comment", expect="any")
    add("quoted-int", "train.threads='1'", expect="any")


def override_random(env: Env) -> Spec:
    rng = env.rng
    while True:
        key = rng.choice(sorted(SCHEMA))
        value = rng.choice(NASTY)
        expect = oracle(key, value)
        if expect is not None:
            break
    env.cfg()
    ov = f"{key[0]}.{key[1]}={value}"
    return Spec(["train", "cfg.yaml", ov], detail=f"override {ov[:60]!r}", expect=expect)
