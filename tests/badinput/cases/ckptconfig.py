"""Bad-input cases: config.yaml inside a checkpoint."""

from __future__ import annotations

from harness_common import *  # noqa: F401,F403


# ---- config.yaml inside a checkpoint ------------------------------------------------------------

def ckptconfig_cases(R: Registry) -> None:
    def add(name: str, desc: str, make: Callable, expect: str = "fail", cmds: tuple = ("eval", "generate", "benchgen")) -> None:
        idx = R.count.get("ckptconfig", 0)

        def build(env: Env) -> Spec:
            spec = ck_spec(env, cmds[idx % len(cmds)])
            path = env.p(f"{CK}/config.yaml")
            out = make(env, path.read_text(), path)
            if out is not None:
                env.write(f"{CK}/config.yaml", out)
            return spec
        R.add("ckptconfig", name, desc, expect, build)

    def sub(old: str, new: str) -> Callable:
        def make(env: Env, text: str, p: Path) -> str:
            assert old in text, old
            return text.replace(old, new, 1)
        return make

    add("trunc-key", "cut in the middle of a key", lambda env, t, p: t[: t.index("hidden_size") + 6])
    add("unknown-key", "an unknown model key", sub("model:\n", "model:\n  bogus: 1\n"))
    add("hidden", "model.hidden_size 64 (weights are 32)", sub("hidden_size: 32", "hidden_size: 64"))
    add("layers", "model.num_layers 3 (weights have 2)", sub("num_layers: 2", "num_layers: 3"))
    add("vocab", "model.vocab_size + 1", lambda env, t, p: t.replace(f"vocab_size: {env.ctx.vocab}", f"vocab_size: {env.ctx.vocab + 1}", 1))
    add("untied", "model.tie_embeddings false (no lm_head weight)", sub("tie_embeddings: true", "tie_embeddings: false"))
    add("max-seq", "model.max_seq_len 8 below train.seq_len 16", sub("max_seq_len: 128", "max_seq_len: 8"))
    add("data-missing", "data.dir does not exist (eval reads it)",
        lambda env, t, p: t.replace(str(env.ctx.data), "/nonexistent/kvroute-data", 1), cmds=("eval",))
    add("empty", "empty config.yaml (default model shape)", lambda env, t, p: "")
    add("deep", f"{DEEP} nested sequences", lambda env, t, p: deep_yaml())
    add("fifo", "config.yaml is a FIFO", lambda env, t, p: make_fifo(p))
    add("dir", "config.yaml is a directory", lambda env, t, p: make_dir(p))
    add("missing", "no config.yaml", lambda env, t, p: p.unlink())


def ckptconfig_random(env: Env) -> Spec:
    rng = env.rng
    spec = ck_spec(env, rng.choice(["eval", "generate", "benchgen"]))
    path = env.p(f"{CK}/config.yaml")
    i, o, n = flip_byte(path, rng)
    spec.detail, spec.expect = f"config.yaml byte {i} 0x{o:02x} -> 0x{n:02x}", "any"
    return spec
