"""Bad-input cases: command-line flags."""

from __future__ import annotations

from harness_common import *  # noqa: F401,F403


# ---- command-line flags -------------------------------------------------------------------------

TEMPLATES = {
    "train": ["train", "cfg.yaml"],
    "eval": ["eval", "--checkpoint", "{CK}", "--batches", "1", "--threads", "1"],
    "generate": ["generate", "--checkpoint", "{CK}", "--prompt", "the sun", "--max-new-tokens", "4"],
    "tok-train": ["tokenizer", "train", "--input", "{CORPUS}", "--vocab", "280", "--out", "tokout", "--threads", "1"],
    "encode": ["tokenizer", "encode", "--tokenizer", "{TOK}", "--text", "hello"],
    "decode": ["tokenizer", "decode", "--tokenizer", "{TOK}", "--ids", "104 101"],
    "prepare": ["prepare", "--input", "{CORPUS}", "--tokenizer", "{TOK}", "--out", "dataout", "--threads", "1"],
    "sweep": ["sweep", "study.yaml", "--threads", "1"],
    "bench-train": ["bench", "train", "cfg.yaml", "--steps", "1", "--no-peer"],
    "bench-gen": ["bench", "generate", "--checkpoint", "{CK}", "--prompt-lengths", "4", "--batch-sizes", "1",
                  "--new-tokens", "2", "--repeats", "1", "--threads", "1"],
}
# Numeric options per template, for the random cases.
NUMERIC = {
    "train": ["--threads"], "eval": ["--batches", "--batch", "--seq-len", "--threads", "--retention", "--groups"],
    "generate": ["--max-new-tokens", "--temperature", "--top-k", "--top-p", "--retention", "--groups", "--seed",
                 "--threads"],
    "tok-train": ["--vocab", "--threads"], "encode": [], "decode": [], "prepare": ["--val-fraction", "--shard-tokens", "--seed", "--threads"],
    "sweep": ["--threads"], "bench-train": ["--steps", "--threads"],
    "bench-gen": ["--prompt-lengths", "--batch-sizes", "--new-tokens", "--repeats", "--retention", "--threads"],
}


def with_opt(argv: list, flag: str, value: Optional[str]) -> list:
    """argv with `flag` set to `value` (replacing an existing value; None drops the flag)."""
    out = list(argv)
    if flag in out:
        i = out.index(flag)
        if value is None:
            del out[i:i + 2]
        else:
            out[i + 1] = value
    elif value is not None:
        out += [flag, value]
    return out


def cli_cases(R: Registry) -> None:
    def add(name: str, argv: list, expect: str, desc: Optional[str] = None, protect: tuple = (),
            prep: Optional[Callable] = None) -> None:
        R.add("cli", name, desc or shlex.join(argv)[:80], expect, simple(argv, list(protect), prep))

    def opt(t: str, flag: str, value: str, expect: str, name: Optional[str] = None) -> None:
        argv = (with_opt(TEMPLATES[t], flag, value) if not flag.endswith("=")
                else with_opt(TEMPLATES[t], flag[:-1], None) + [f"{flag}{value}"])
        protect = ("run",) if "{CK}" in " ".join(argv) else ()
        tag = name or f"{t}-{flag.strip('-=')}-{value[:10]}".replace("/", "_").replace(" ", "_")
        add(tag, argv, expect, protect=protect)

    # subcommands and structure
    add("none", [], "fail2", "no subcommand")
    add("unknown-sub", ["bogus"], "fail2")
    add("unknown-global-flag", ["--bogus"], "fail2")
    add("train-no-config", ["train"], "fail2")
    add("bench-no-sub", ["bench"], "fail2")
    add("bench-unknown-sub", ["bench", "bogus"], "fail2")
    add("tokenizer-no-sub", ["tokenizer"], "fail2")
    add("eval-no-checkpoint", ["eval"], "fail2")
    add("generate-no-prompt", ["generate", "--checkpoint", "{CK}"], "fail2")
    add("encode-no-text", ["tokenizer", "encode", "--tokenizer", "{TOK}"], "fail2")
    add("tok-train-no-out", ["tokenizer", "train", "--input", "{CORPUS}", "--vocab", "280"], "fail2")
    add("sweep-no-study", ["sweep"], "fail2")
    for t in TEMPLATES:
        add(f"{t}-unknown-flag", TEMPLATES[t] + ["--bogus-flag"], "fail2",
            protect=("run",) if "{CK}" in TEMPLATES[t] else ())
    add("train-resume-no-value", ["train", "cfg.yaml", "--resume"], "fail2")
    add("eval-keep-no-value", TEMPLATES["eval"] + ["--keep"], "fail2", protect=("run",))
    add("generate-max-no-value", ["generate", "--checkpoint", "{CK}", "--prompt", "x", "--max-new-tokens"], "fail2")
    # train
    opt("train", "--threads", "abc", "fail2")
    opt("train", "--threads=", "-1", "fail")
    opt("train", "--threads", "1000000", "fail")
    opt("train", "--threads", "99999999999999999999", "fail")
    add("train-missing-config", ["train", "missing.yaml"], "fail")
    add("train-garbage-positional", ["train", "cfg.yaml", "garbage"], "fail")
    # eval
    for v, e in [("0,1x", "fail"), ("0,1.9", "fail"), ("5", "fail"), ("0,,1", "fail"), ("99999999999", "fail"),
                 ("", "any")]:
        opt("eval", "--keep", v, e)
    opt("eval", "--keep=", "-1", "fail")
    for v in ["abc", "", "-1", "1.5", "99999999999", "1;2", " , "]:
        opt("decode", "--ids", v, "fail2", name=f"decode-ids-{v.strip() or 'blank'}")
    opt("decode", "--ids", "5000", "fail", name="decode-ids-beyond-vocab")
    opt("decode", "--tokenizer", "/nonexistent", "fail")
    # Every flag value checked as it is parsed: a usage error (exit 2) naming the flag.
    for v in ["abc", "0,1,1", "0,0", "0,,1", ",0"]:
        opt("eval", "--keep", v, "fail2")
    for v in ["0.5,,1", ",1", "1,", "0.5,abc"]:
        opt("eval", "--retention", v, "fail2")
    for v in ["2,,4", "2.5", "0"]:
        opt("eval", "--groups", v, "fail2")
    opt("eval", "--plan-split", "0.5", "fail2", name="eval-plan-split-without-greedy")
    opt("eval", "--data", "", "fail2", name="eval-data-empty")
    opt("eval", "--out", "", "fail2", name="eval-out-empty")
    opt("eval", "--seq-len", "100000", "fail", name="eval-seq-len-above-max")
    for v in ["abc", "", "0.5", "-1GB", "5XB", "nan", "1e30"]:
        opt("bench-gen", "--memory-budget", v, "fail2", name=f"bench-gen-memory-budget-{v or 'empty'}")
    for v in ["0.5,,1", "1,"]:
        opt("bench-gen", "--retention", v, "fail2")
    opt("bench-gen", "--prompt-lengths", "4,,8", "fail2")
    opt("bench-gen", "--batch-sizes", "1.5", "fail2")
    opt("bench-gen", "--csv", "", "fail2", name="bench-gen-csv-empty")
    for v in ["-1", "18446744073709551616", "1e30", "abc"]:
        opt("generate", "--seed", v, "fail2", name=f"generate-seed-{v[:10]}")
        opt("prepare", "--seed", v, "fail2", name=f"prepare-seed-{v[:10]}")
    opt("prepare", "--out", "", "fail2", name="prepare-out-empty")
    opt("tok-train", "--out", "", "fail2", name="tok-train-out-empty")
    for flag, v in [("--dtype", "f8"), ("--dtype", ""), ("--shard-size", "abc"), ("--shard-size", ""),
                    ("--shard-size", "0.5"), ("--out", "")]:
        add(f"export-{flag.strip('-')}-{v or 'empty'}", ["export", "{CK}", "--out", "exp", flag, v]
            if flag != "--out" else ["export", "{CK}", "--out", v], "fail2", protect=("run",))
    opt("eval", "--batches=", "-1", "fail")
    opt("eval", "--batches", "abc", "fail2")
    for v in ["2", "0", "nan", "inf"]:
        opt("eval", "--retention", v, "fail")
    opt("eval", "--retention=", "-0.5", "fail")
    opt("eval", "--retention", "0.5,abc", "fail2")
    opt("eval", "--groups", "0", "fail")
    opt("eval", "--groups=", "-1", "fail")
    opt("eval", "--batch", "0", "fail")
    opt("eval", "--batch", I64_MAX, "any")  # may be clamped to the validation windows
    opt("eval", "--seq-len", "100000", "fail")
    opt("eval", "--seq-len=", "-5", "fail")
    opt("eval", "--seq-len", I64_MAX, "fail")
    opt("eval", "--strategy", "bogus", "fail2")
    opt("eval", "--data", "/nonexistent/kvroute", "fail")
    opt("eval", "--data", "{EMPTYDIR}", "fail")
    opt("eval", "--checkpoint", "/nonexistent/kvroute", "fail")
    opt("eval", "--checkpoint", "{CK}/model.safetensors", "fail", name="eval-checkpoint-file")
    opt("eval", "--out", "/dev/null/sub", "fail")
    opt("eval", "--device", "tpu", "fail2")
    opt("eval", "--precision", "fp8", "fail2")
    opt("eval", "--precision", "bf16", "any")  # bf16 GEMMs, or f32 with a notice on a CPU without bf16
    opt("eval", "--threads", "1000000", "fail")
    # generate
    for v in [I64_MAX, "0", "1000"]:
        opt("generate", "--max-new-tokens", v, "fail")
    opt("generate", "--max-new-tokens=", "-1", "fail")
    for v in ["nan", "inf", "1e308"]:
        opt("generate", "--temperature", v, "fail")
    opt("generate", "--temperature=", "-1", "fail")
    opt("generate", "--top-p", "nan", "fail")
    opt("generate", "--top-p", "1.5", "fail")
    opt("generate", "--top-p=", "-0.1", "fail")
    opt("generate", "--top-k=", "-1", "fail")
    opt("generate", "--top-k", "abc", "fail2")
    opt("generate", "--retention", "nan", "fail")
    opt("generate", "--retention", "2", "fail")
    opt("generate", "--groups", "0", "fail")
    add("generate-retention-and-groups", TEMPLATES["generate"] + ["--retention", "0.5", "--groups", "2"], "fail2",
        protect=("run",))
    opt("generate", "--tokenizer", "/nonexistent/kvroute", "fail")
    opt("generate", "--tokenizer", "{EMPTYDIR}", "fail")
    opt("generate", "--seed", "abc", "fail2")
    opt("generate", "--prompt", "", "any")
    opt("generate", "--prompt", " ".join(["the sun"] * 200), "fail", name="generate-prompt-too-long")
    opt("generate", "--checkpoint", "/nonexistent/kvroute", "fail")
    opt("generate", "--threads", "1000000", "fail")
    # tokenizer train / encode
    for v in ["256", "0", I64_MAX]:
        opt("tok-train", "--vocab", v, "fail")
    opt("tok-train", "--vocab=", "-1", "fail")
    opt("tok-train", "--vocab", "abc", "fail2")
    for v in ["/nonexistent/kvroute", "{EMPTYDIR}", "{FIFO}", "/dev/zero"]:
        opt("tok-train", "--input", v, "fail")

    def jsonl(name: str, text: str, expect: str = "fail", t: str = "tok-train") -> None:
        argv = with_opt(TEMPLATES[t], "--input", "in.jsonl")
        prep = lambda env: env.write("in.jsonl", text)
        add(f"{t}-jsonl-{name}", argv, expect, f"{t} --input a .jsonl with {name}", prep=prep)
    jsonl("bad-line", '{"text": "hello"}\n{"text": \n')
    jsonl("number-text", '{"text": 5}\n')
    jsonl("no-text", '{"body": "hello"}\n')
    jsonl("deep", deep() + "\n")
    jsonl("deep-meta", json.dumps({"text": "hello there"})[:-1] + ', "meta": ' + deep(kind="object") + "}\n", "any")
    jsonl("bad-utf8", b'{"text": "\xff"}\n', "any")
    opt("tok-train", "--out", "/dev/null/x", "fail")
    add("tok-train-out-file", with_opt(TEMPLATES["tok-train"], "--out", "afile"), "fail",
        prep=lambda env: env.write("afile", "keep\n"), protect=("afile",))
    add("tok-train-out-existing", with_opt(with_opt(TEMPLATES["tok-train"], "--out", "tok"), "--vocab", "10"), "fail",
        "tokenizer train --vocab 10 into an existing tokenizer dir", prep=lambda env: env.tok_copy(), protect=("tok",))
    opt("tok-train", "--threads", "1000000", "fail")
    opt("encode", "--tokenizer", "/nonexistent/kvroute", "fail")
    opt("encode", "--tokenizer", "{CORPUS}", "fail")
    # prepare
    for v in ["1", "nan"]:
        opt("prepare", "--val-fraction", v, "fail")
    opt("prepare", "--val-fraction=", "-0.1", "fail")
    opt("prepare", "--val-fraction", "abc", "fail2")
    opt("prepare", "--shard-tokens", "0", "fail")
    opt("prepare", "--shard-tokens=", "-5", "fail")
    opt("prepare", "--seed", "abc", "fail2")
    for v in ["/nonexistent/kvroute", "{FIFO}"]:
        opt("prepare", "--input", v, "fail")
    def over_existing(name: str, desc: str, argv: list, prep: Callable) -> None:
        """A failing prepare aimed at an existing shard dir, with --overwrite where the binary has it
        (so that the replacement, not the refusal, is what has to keep the old shards)."""
        def build(env: Env) -> Spec:
            prep(env)
            env.data_copy()
            extra = ["--overwrite"] if "--overwrite" in env.ctx.prepare_help else []
            return Spec(cli_argv(env, argv + extra), protect=["data"], detail=" ".join(extra))
        R.add("cli", name, desc, "fail", build)
    over_existing("prepare-bad-jsonl-existing-out", "prepare a bad .jsonl into an existing shard dir",
                  with_opt(with_opt(TEMPLATES["prepare"], "--input", "in.jsonl"), "--out", "data"),
                  lambda env: env.write("in.jsonl", '{"text": "fine"}\n{"text": 5}\n'))
    over_existing("prepare-bad-tokenizer-existing-out", "prepare with a missing tokenizer into an existing shard dir",
                  with_opt(with_opt(TEMPLATES["prepare"], "--tokenizer", "/nonexistent/kvroute"), "--out", "data"),
                  lambda env: None)
    over_existing("prepare-bad-vocab-existing-out", "prepare with a broken vocab.bpe into an existing shard dir",
                  with_opt(with_opt(TEMPLATES["prepare"], "--tokenizer", "tok"), "--out", "data"),
                  lambda env: (env.tok_copy(), env.write("tok/vocab.bpe", "#version: 0.2\na b c\n")))
    opt("prepare", "--out", "/dev/null/x", "fail")
    add("prepare-out-file", with_opt(TEMPLATES["prepare"], "--out", "afile"), "fail",
        prep=lambda env: env.write("afile", "keep\n"), protect=("afile",))
    opt("prepare", "--threads", "1000000", "fail")
    # sweep
    add("sweep-missing", ["sweep", "missing.yaml"], "fail")
    opt("sweep", "--threads", "1000000", "fail")
    # bench train / generate
    opt("bench-train", "--steps", "0", "fail")
    opt("bench-train", "--steps=", "-1", "fail")
    opt("bench-train", "--steps", I64_MAX, "fail")
    opt("bench-train", "--steps", "abc", "fail2")
    opt("bench-train", "--threads", "1000000", "fail")
    add("bench-train-missing-config", ["bench", "train", "missing.yaml", "--no-peer"], "fail")
    add("bench-train-bad-override", TEMPLATES["bench-train"] + ["model.hidden_size=abc"], "fail")
    add("bench-gen-neither", ["bench", "generate", "--repeats", "1"], "fail")
    add("bench-gen-both", TEMPLATES["bench-gen"] + ["--config", "cfg.yaml"], "fail2", protect=("run",))
    for v in ["2", "nan"]:
        opt("bench-gen", "--retention", v, "fail")
    for flag in ["--prompt-lengths", "--batch-sizes"]:
        opt("bench-gen", flag, "0", "fail")
        opt("bench-gen", flag + "=", "-1", "fail")
    opt("bench-gen", "--prompt-lengths", "1000000", "fail")
    opt("bench-gen", "--prompt-lengths", I64_MAX, "fail")
    opt("bench-gen", "--new-tokens", "0", "fail")
    opt("bench-gen", "--new-tokens", I64_MAX, "fail")
    opt("bench-gen", "--repeats", "0", "fail")
    add("bench-gen-config-missing", ["bench", "generate", "--config", "missing.yaml"], "fail")


CLI_VALUES = ["-1", "0", "1e308", "nan", "inf", I64_MAX, "99999999999999999999", "0x10", "1.5", "", "abc", "1,2"]


def cli_random(env: Env) -> Spec:
    rng = env.rng
    t = rng.choice(sorted(TEMPLATES))
    argv = list(TEMPLATES[t])
    kind = rng.choice(["unknown", "missing", "value", "value", "value", "positional"])
    if kind in ("missing", "value") and not NUMERIC[t]:
        kind = "unknown"
    expect = "any"
    if kind == "unknown":
        flag = "--" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz-") for _ in range(rng.randint(3, 12))).strip("-")
        first = 2 if argv[0] in ("bench", "tokenizer") else 1
        argv.insert(rng.randint(first, len(argv)), flag + "x")
        expect = "fail2"
        detail = f"unknown flag {flag}x"
    elif kind == "missing":
        flag = rng.choice(NUMERIC[t])
        argv = with_opt(argv, flag, None) + [flag]
        expect = "fail2"
        detail = f"{flag} without a value"
    elif kind == "value":
        flag = rng.choice(NUMERIC[t])
        value = rng.choice(CLI_VALUES)
        argv = with_opt(argv, flag, None) + [f"{flag}={value}"]
        expect = "fail2" if value in ("abc",) else "any"
        detail = f"{flag}={value}"
        if flag == "--threads" and value in (I64_MAX, "1e308", "inf"):
            expect = "fail"
        if flag in ("--steps", "--new-tokens", "--max-new-tokens") and value == I64_MAX:
            expect = "fail"
    else:
        argv.append("garbage")
        expect = "fail" if t in ("train", "bench-train") else "fail2"
        detail = "an extra positional argument"
    protect = ["run"] if any("{CK}" in a for a in argv) else []
    return Spec(cli_argv(env, argv), protect=protect, detail=detail, expect=expect)
