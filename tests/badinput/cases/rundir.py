"""Bad-input cases: an existing run directory must survive a failed command."""

from __future__ import annotations

from harness_common import *  # noqa: F401,F403


# ---- an existing run directory must survive a failed command ------------------------------------

def rundir_cases(R: Registry) -> None:
    def add(name: str, desc: str, argv: list, prep: Optional[Callable] = None, expect: str = "fail",
            protect: tuple = ("run",)) -> None:
        def build(env: Env) -> Spec:
            env.run_copy()
            if prep:
                prep(env)
            return Spec(cli_argv(env, argv), protect=list(protect))
        R.add("rundir", name, desc, expect, build)

    add("no-resume", "train again into an existing run without --resume", ["train", "config.yaml"])
    add("no-resume-more", "train again (8 steps) into an existing run without --resume",
        ["train", "config.yaml", "train.steps=8"])
    add("resume-missing", "--resume a checkpoint that does not exist",
        ["train", "config.yaml", "--resume", "run/checkpoints/step_00000099"])
    add("resume-run-dir", "--resume the run directory itself", ["train", "config.yaml", "--resume", "run"])
    add("resume-file", "--resume a file", ["train", "config.yaml", "--resume", f"{CK}/state.json"])
    add("fingerprint", "--resume auto with another model shape",
        ["train", "config.yaml", "--resume", "auto", "model.intermediate_size=128"])
    add("batch", "--resume auto with another global batch", ["train", "config.yaml", "--resume", "auto",
                                                              "train.batch_size=4", "train.steps=6"])
    add("data-missing", "--resume auto with a missing data dir",
        ["train", "config.yaml", "--resume", "auto", "data.dir=/nonexistent/kvroute", "train.steps=6"])
    add("weights-missing", "--resume auto, newest checkpoint lacks model.safetensors",
        ["train", "config.yaml", "--resume", "auto", "train.steps=6"],
        prep=lambda env: env.p(f"{CK}/model.safetensors").unlink())
    add("metrics-dir", "--resume auto with metrics.jsonl a directory",
        ["train", "config.yaml", "--resume", "auto", "train.steps=6"],
        prep=lambda env: make_dir(env.p("run/metrics.jsonl")))
    add("checkpoints-file", "--resume auto with checkpoints/ replaced by a file (cannot save)",
        ["train", "config.yaml", "--resume", "auto", "train.steps=6"],
        prep=lambda env: (remove(env.p("run/checkpoints")), env.write("run/checkpoints", "x")))
    add("run-dir-file", "train.run_dir is a regular file", ["train", "config.yaml", "train.run_dir=afile"],
        prep=lambda env: env.p("afile").write_text("keep me\n"), protect=("run", "afile"))
    add("threads", "--resume auto --threads 1000000", ["train", "config.yaml", "--resume", "auto", "--threads", "1000000"])
    add("bad-override", "--resume auto train.steps=abc", ["train", "config.yaml", "--resume", "auto", "train.steps=abc"])
    add("bad-override-late", "--resume auto with an unknown key after valid overrides",
        ["train", "config.yaml", "--resume", "auto", "train.steps=6", "train.bogus=1"])
    add("eval-out", "eval --out under /dev/null", ["eval", "--checkpoint", "{CK}", "--out", "/dev/null/x", "--batches", "1"])
    add("eval-keep", "eval --keep 0,1x", ["eval", "--checkpoint", "{CK}", "--keep", "0,1x", "--batches", "1"])
    add("steps-below", "--resume auto with train.steps 2 below the checkpoint's step 4",
        ["train", "config.yaml", "--resume", "auto", "train.steps=2"], expect="any")
    add("empty-newest", "--resume auto, the newest step_ directory is empty",
        ["train", "config.yaml", "--resume", "auto", "train.steps=6"],
        prep=lambda env: env.p("run/checkpoints/step_00000009").mkdir(), expect="any")

    def sweep_prep(env: Env) -> None:
        env.study()
        dest = env.p("st/runs/a")
        dest.parent.mkdir(parents=True)
        shutil.copytree(env.ctx.golden / "run", dest, symlinks=True)
        # the study trains 2 steps: make step_00000002 the final one, with corrupt weights
        p = dest / "checkpoints/step_00000002/model.safetensors"
        p.write_bytes(p.read_bytes()[:100])
    add("sweep-corrupt-final", "sweep over an out dir whose final checkpoint is corrupt", ["sweep", "study.yaml"],
        prep=sweep_prep, protect=("st",))
