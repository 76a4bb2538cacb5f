"""Bad-input cases: kvroute export."""

from __future__ import annotations

from harness_common import *  # noqa: F401,F403
from cases.hfmodel import NAN, st_edit, st_fill, st_remove, st_weight


# ---- kvroute export CHECKPOINT --out DIR ----------------------------------------------------------

OUT = "exported"


def export_argv(*extra: str, ck: str = CK, out: str = OUT) -> list:
    return ["export", ck, "--out", out, *extra]


def existing_out(env: Env) -> str:
    """An earlier export in the way (a copy of the golden checkpoint's export)."""
    if not env.p(OUT).exists():
        shutil.copytree(env.ctx.hfgolden, env.p(OUT), symlinks=True)
    return OUT


def export_cases(R: Registry) -> None:
    def add(name: str, desc: str, argv: list, expect: str = "fail", prep: Optional[Callable] = None,
            protect: tuple = ("run", OUT)) -> None:
        def build(env: Env) -> Spec:
            env.run_copy()
            if prep:
                prep(env)
            return Spec(cli_argv(env, argv), protect=list(protect))
        R.add("export", name, desc, expect, build)

    # flags
    for v in ["x", "i32", "BF16", "f8", ""]:
        add(f"dtype-{v or 'empty'}", f"--dtype {v!r}", export_argv("--dtype", v))
    for v in ["abc", "0", "nan", "inf", "1e30", "", "5XB", "5 GB", "1e-9", "0.5", "-0", "99999999999999999999TB"]:
        add(f"shard-size-{v.replace(' ', '_') or 'empty'}", f"--shard-size {v!r}", export_argv("--shard-size", v))
    add("shard-size-neg", "--shard-size=-5", export_argv("--shard-size=-5"))
    add("shard-size-1", "--shard-size 1 (one tensor per file)", export_argv("--shard-size", "1"), expect="pass")
    add("dtype-no-value", "--dtype without a value", export_argv("--dtype"), expect="fail2")
    add("shard-size-no-value", "--shard-size without a value", export_argv("--shard-size"), expect="fail2")
    add("no-out", "no --out", ["export", CK], expect="fail2")
    add("no-checkpoint", "no checkpoint", ["export", "--out", OUT], expect="fail2")
    add("unknown-flag", "an unknown flag", export_argv("--bogus"), expect="fail2")
    add("extra-positional", "a second positional argument", export_argv("garbage"), expect="fail2")
    # the checkpoint
    add("ck-missing", "the checkpoint does not exist", export_argv(ck="/nonexistent/kvroute-ck"))
    add("ck-file", "the checkpoint is a file", export_argv(ck=f"{CK}/model.safetensors"))
    add("ck-empty-dir", "the checkpoint is an empty directory", export_argv(ck="{EMPTYDIR}"))
    add("ck-run-dir", "the checkpoint is the run directory", export_argv(ck="run"))
    add("ck-hf-dir", "the checkpoint is a Hugging Face model directory (no config.yaml)", export_argv(ck="model"),
        prep=lambda env: env.hf_copy("mistral"), protect=("model", OUT))

    def ck_case(name: str, desc: str, mutate: Callable, expect: str = "fail") -> None:
        """A corrupt checkpoint, exported to a new --out (which must not appear) or, every other
        case, over an earlier export with --overwrite (which must survive byte for byte)."""
        idx = R.count.get("export", 0)

        def prep(env: Env) -> None:
            mutate(env, env.p(CK))
            if idx % 2:
                existing_out(env)
        R.add("export", name, desc + (" (--overwrite over an earlier export)" if idx % 2 else ""), expect,
              lambda env: (env.run_copy(), prep(env),
                           Spec(export_argv(*(["--overwrite"] if idx % 2 else [])), protect=["run", OUT]))[2])

    w = "model.safetensors"
    ck_case("weights-trunc", "model.safetensors truncated", lambda env, d: (d / w).write_bytes((d / w).read_bytes()[:1000]))
    ck_case("weights-missing", "no model.safetensors", lambda env, d: (d / w).unlink())
    ck_case("weights-len-huge", "model.safetensors header length 2^63",
            lambda env, d: (d / w).write_bytes(struct.pack("<Q", 1 << 63) + (d / w).read_bytes()[8:]))
    ck_case("weights-nan", "a NaN weight", lambda env, d: st_fill(d / w, NAN["F32"], 1) and None)
    ck_case("weights-transposed", "a weight's shape transposed",
            lambda env, d: st_edit(d / w, lambda h: h[st_weight(h)].__setitem__(
                "shape", list(reversed(h[st_weight(h)]["shape"])))))
    ck_case("weights-missing-tensor", "a weight removed", lambda env, d: st_remove(d / w, st_weight))
    ck_case("weights-i32", "a weight stored as I32", lambda env, d: st_edit(d / w, lambda h: h[st_weight(h)].__setitem__("dtype", "I32")))
    ck_case("weights-fifo", "model.safetensors is a FIFO", lambda env, d: make_fifo(d / w))
    ck_case("config-missing", "no config.yaml", lambda env, d: (d / "config.yaml").unlink())
    ck_case("config-hidden", "config.yaml model.hidden_size 64 (weights are 32)",
            lambda env, d: (d / "config.yaml").write_text((d / "config.yaml").read_text().replace("hidden_size: 32", "hidden_size: 64", 1)))
    ck_case("config-empty", "empty config.yaml", lambda env, d: (d / "config.yaml").write_text(""))
    ck_case("config-fifo", "config.yaml is a FIFO", lambda env, d: make_fifo(d / "config.yaml"))
    ck_case("config-deep", f"config.yaml is {DEEP} nested sequences", lambda env, d: (d / "config.yaml").write_text(deep_yaml()))
    # eval.json (its keep-sets go into config.json) and the tokenizer are read once the export has begun
    ck_case("evaljson-garbage", "eval.json is not JSON", lambda env, d: (d / "eval.json").write_text("{garbage"))
    ck_case("evaljson-no-kept", "an eval.json entry without 'kept'", lambda env, d: (d / "eval.json").write_text('[{"plan": "x"}]'))
    ck_case("evaljson-object", "eval.json is an object", lambda env, d: (d / "eval.json").write_text('{"kept": [0]}'))
    ck_case("evaljson-deep", f"eval.json is {DEEP} nested arrays", lambda env, d: (d / "eval.json").write_text(deep()))
    ck_case("evaljson-fifo", "eval.json is a FIFO", lambda env, d: make_fifo(d / "eval.json"))
    ck_case("evaljson-empty-list", "eval.json is []", lambda env, d: (d / "eval.json").write_text("[]"), expect="pass")

    def broken_tokenizer(env: Env, d: Path) -> None:
        tok = env.tok_copy()
        env.write(f"{tok}/encoder.json", (env.p(tok) / "encoder.json").read_text()[:100])
        cfg = (d / "config.yaml").read_text()
        assert str(env.ctx.tok) in cfg
        (d / "config.yaml").write_text(cfg.replace(str(env.ctx.tok), str(env.p(tok)), 1))
    ck_case("tokenizer-broken", "the checkpoint's data.tokenizer has a truncated encoder.json", broken_tokenizer)
    ck_case("tokenizer-broken-2", "the checkpoint's data.tokenizer has a truncated encoder.json", broken_tokenizer)
    ck_case("tokenizer-missing", "the checkpoint's data.tokenizer does not exist (exported without one)",
            lambda env, d: (d / "config.yaml").write_text((d / "config.yaml").read_text().replace(
                str(env.ctx.tok), "/nonexistent/kvroute-tok", 1)), expect="pass")
    add("cla", "a fixed_groups (CLA) checkpoint: layer 1 has no K/V weights", export_argv(ck=CLA_CK),
        prep=lambda env: env.cla_copy(), protect=("cla", OUT))
    add("cla-overwrite", "a fixed_groups (CLA) checkpoint, --overwrite over an earlier export",
        export_argv("--overwrite", ck=CLA_CK), prep=lambda env: (env.cla_copy(), existing_out(env)), protect=("cla", OUT))
    # --out
    add("out-exists", "--out exists, no --overwrite", export_argv(), prep=existing_out)
    add("out-exists-bf16", "--out exists, no --overwrite, --dtype bf16 --shard-size 1", export_argv("--dtype", "bf16", "--shard-size", "1"),
        prep=existing_out)
    add("out-file", "--out is a regular file, no --overwrite", export_argv(out="afile"),
        prep=lambda env: env.write("afile", "keep me\n"), protect=("run", "afile"))
    add("out-parent-file", "--out under a regular file", export_argv(out="afile/out"),
        prep=lambda env: env.write("afile", "keep me\n"), protect=("run", "afile"))
    add("out-dev-null", "--out /dev/null/x", export_argv(out="/dev/null/x"))
    add("out-is-checkpoint", "--out is the checkpoint itself, no --overwrite", export_argv(out=CK))
    add("out-parent-missing", "--out whose parent does not exist (created)", export_argv(out="nodir/sub/out"),
        expect="any", protect=("run",))

    def dot_tmp(env: Env) -> None:
        env.write(".tmp/keep", "keep me\n")
    add("out-empty", "--out '' with an unrelated ./.tmp directory present", export_argv(out=""), prep=dot_tmp,
        protect=("run", ".tmp"))


SHARD_SIZES = {"1": "any", "20000": "any", "0.5MB": "any", "1KiB": "any", "5GB": "any", "2GiB": "any",
               "1e15": "any", "1TB": "any", "0x10": "any", "1e16": "fail", "0": "fail", "-1": "fail", "nan": "fail",
               "inf": "fail", "abc": "fail", "": "fail", "5 GB": "fail", "1e-3": "fail", "1PB": "fail",
               "9999999999999999999999": "fail", "1gb": "fail", "GB": "fail"}
DTYPES = {"f32": "any", "bf16": "any", "f16": "any", "F32": "fail", "fp16": "fail", "bfloat16": "fail",
          "f64": "fail", "": "fail", "bf16 ": "fail"}


def export_random(env: Env) -> Spec:
    rng = env.rng
    env.run_copy()
    kind = rng.choice(["flags", "flags", "corrupt"])
    if kind == "flags":
        size, dtype = rng.choice(sorted(SHARD_SIZES)), rng.choice(sorted(DTYPES))
        argv = export_argv("--shard-size", size, "--dtype", dtype)
        expect = "fail" if "fail" in (SHARD_SIZES[size], DTYPES[dtype]) else "any"
        overwrite = rng.random() < 0.5
        if overwrite:
            existing_out(env)
            argv.append("--overwrite")
        detail = f"--shard-size {size!r} --dtype {dtype!r}" + (" --overwrite over an earlier export" if overwrite else "")
    else:
        file = rng.choice(["model.safetensors", "model.safetensors", "config.yaml"])
        path = env.p(f"{CK}/{file}")
        if file == "model.safetensors":
            n, _, _ = st_parts(path)
            lo, hi = rng.choice([(0, 8), (8, 8 + n), (8, 8 + n), (8 + n, None)])
            i, o, v = flip_byte(path, rng, lo, hi)
            expect = "fail" if lo == 0 and i >= 1 else "any"
        else:
            i, o, v = flip_byte(path, rng)
            expect = "any"
        existing_out(env)
        argv = export_argv("--overwrite")
        detail = f"{file} byte {i} 0x{o:02x} -> 0x{v:02x}, --overwrite over an earlier export"
    return Spec(argv, protect=["run", OUT], detail=detail, expect=expect)
