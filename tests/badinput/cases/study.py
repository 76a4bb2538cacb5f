"""Bad-input cases: study files (sweep)."""

from __future__ import annotations

from harness_common import *  # noqa: F401,F403


# ---- study files (sweep) ------------------------------------------------------------------------

def study_cases(R: Registry) -> None:
    def add(name: str, desc: str, text, expect: str = "fail") -> None:
        def build(env: Env) -> Spec:
            env.study()
            if callable(text):
                out = text(env)
                if out is not None:
                    env.write("study.yaml", out)
            else:
                env.write("study.yaml", text)
            return Spec(["sweep", "study.yaml", "--threads", "1"])
        R.add("study", name, desc, expect, build)

    sub = lambda old, new: (lambda env: STUDY.replace(old, new, 1))
    add("empty", "empty study file", "")
    add("list", "the study is a list", "- a\n- b\n")
    add("unknown-key", "an unknown top-level key", STUDY + "bogus: 1\n")
    add("no-base", "no base", sub("base: cfg.yaml\n", ""))
    add("base-missing", "base config does not exist", sub("base: cfg.yaml", "base: missing.yaml"))
    add("base-list", "base is a list", sub("base: cfg.yaml", "base: [cfg.yaml]"))
    add("runs-scalar", "runs: 5", STUDY.split("runs:")[0] + "runs: 5\n")
    add("run-no-name", "a run without a name", sub("  - name: a\n", "  - nam: a\n"))
    add("run-name-list", "a run name that is a list", sub("name: a", "name: [a, b]"))
    add("overrides-scalar", "overrides is a string",
        sub("overrides: [train.steps=2, train.checkpoint_interval=0, eval.interval=0]", "overrides: train.steps=2"))
    add("overrides-bad", "an invalid override", sub("[router.policy=none]", "[router.bogus=1]"))
    add("grid-scalar", "a grid value that is not a list", STUDY + "grid:\n  optim.lr: 5\n")
    add("grid-unknown", "a grid over an unknown key", STUDY + "grid:\n  bogus.key: [1]\n")
    add("retention-string", "eval.retention: abc", sub("retention: [1.0, 0.5]", "retention: abc"))
    add("retention-range", "eval.retention: [2]", sub("retention: [1.0, 0.5]", "retention: [2]"))
    add("retention-nan", "eval.retention: [.nan]", sub("retention: [1.0, 0.5]", "retention: [.nan]"))
    add("batches-neg", "eval.batches: -1", sub("batches: 1", "batches: -1"))
    add("batches-string", "eval.batches: abc", sub("batches: 1", "batches: abc"))
    add("retention-same-plan", "two retention levels keeping the same layers", sub("retention: [1.0, 0.5]", "retention: [1.0, 1.0]"))
    add("retention-empty", "eval.retention: []", sub("retention: [1.0, 0.5]", "retention: []"))
    add("eval-unknown", "an unknown eval key", sub("batches: 1", "batches: 1\n  bogus: 1"))
    add("eval-scalar", "eval: 5", STUDY.split("eval:")[0] + "eval: 5\n")
    add("strategy-bad", "eval.strategy: best", sub("batches: 1", "batches: 1\n  strategy: best"))
    add("plan-split-even", "eval.plan_split without the greedy strategy", sub("batches: 1", "batches: 1\n  plan_split: 0.5"))
    add("plan-split-range", "eval.plan_split: 1", sub("batches: 1", "batches: 1\n  strategy: greedy\n  plan_split: 1"))
    add("plan-split-nan", "eval.plan_split: .nan", sub("batches: 1", "batches: 1\n  strategy: greedy\n  plan_split: .nan"))
    add("plan-split-string", "eval.plan_split: half", sub("batches: 1", "batches: 1\n  strategy: greedy\n  plan_split: half"))
    add("seeds-scalar", "seeds: 3", STUDY + "seeds: 3\n")
    add("seeds-empty", "seeds: []", STUDY + "seeds: []\n")
    add("seeds-dup", "a seed twice", STUDY + "seeds: [1, 2, 1]\n")
    add("seeds-neg", "a negative seed", STUDY + "seeds: [-1]\n")
    add("seeds-float", "a fractional seed", STUDY + "seeds: [1.5]\n")
    add("seeds-huge", "a seed beyond 64 bits", STUDY + "seeds: [99999999999999999999999]\n")
    add("seeds-map", "seeds: {a: 1}", STUDY + "seeds: {a: 1}\n")
    add("shallow-string", "shallow_baselines: maybe", STUDY + "shallow_baselines: maybe\n")
    add("shallow-nothing-smaller", "shallow_baselines with only full retention",
        STUDY.replace("retention: [1.0, 0.5]", "retention: [1.0]") + "shallow_baselines: true\n")
    add("shallow-routed", "a shallower run with routing", sub("[router.policy=none]",
        "[router.policy=stochastic, router.share_prob=0.5, model.num_layers=1]\n  - name: b\n    overrides: []"))
    add("run-name-dup", "two runs of one name", sub("    overrides: [router.policy=none]\n",
        "    overrides: [router.policy=none]\n  - name: a\n    overrides: []\n"))
    add("run-name-path", "a run name with a slash", sub("name: a", "name: ../../x"))
    add("run-name-dot", "a run name '..'", sub("name: a", "name: '..'"))
    add("run-unknown-key", "a run with an unknown key", sub("  - name: a\n", "  - name: a\n    bogus: 1\n"))
    add("deep", f"{DEEP} nested sequences", deep_yaml())
    add("fifo", "the study file is a FIFO", lambda env: make_fifo(env.p("study.yaml")))
    add("dir", "the study file is a directory", lambda env: make_dir(env.p("study.yaml")))
    add("missing", "the study file does not exist", lambda env: env.p("study.yaml").unlink())
    add("dev-zero", "study.yaml -> /dev/zero", lambda env: make_link(env.p("study.yaml"), "/dev/zero"))
