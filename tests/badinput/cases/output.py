"""Bad-input cases: output paths."""

from __future__ import annotations

from harness_common import *  # noqa: F401,F403
from cases.cli import TEMPLATES, with_opt


# ---- output paths -------------------------------------------------------------------------------

def output_cases(R: Registry) -> None:
    """Every output path given something of the wrong kind: nothing is written into or over a FIFO,
    device, link or a file/directory of the other kind; one error line, the target left as it was.
    Generated: each output x each wrong kind for it."""
    # (name, argv with {T} for the target, what it is: file | dir-into (files written inside) |
    # dir-replaced (published whole, so a link to a directory is refused too))
    outputs = [
        ("bench-csv", TEMPLATES["bench-gen"] + ["--csv", "{T}"], "file"),
        ("eval-out", TEMPLATES["eval"] + ["--out", "{T}"], "dir-into"),
        ("prepare-out", with_opt(TEMPLATES["prepare"], "--out", "{T}"), "dir-replaced"),
        ("tok-train-out", with_opt(TEMPLATES["tok-train"], "--out", "{T}"), "dir-into"),
        ("export-out", ["export", "{CK}", "--out", "{T}"], "dir-replaced"),
        ("export-overwrite", ["export", "{CK}", "--out", "{T}", "--overwrite"], "dir-replaced"),
        ("train-run-dir", ["train", "cfg.yaml", "train.run_dir={T}"], "dir-into"),
    ]
    def fifo(env: Env) -> None:
        make_fifo(env.p("target"))
    def file_(env: Env) -> None:
        env.write("target", "a file of the user's\n")
    def dir_(env: Env) -> None:
        make_dir(env.p("target"))
        env.write("target/keep.txt", "a file of the user's\n")
    def link_file(env: Env) -> None:
        env.write("elsewhere.txt", "a file of the user's\n")
        make_link(env.p("target"), "elsewhere.txt")
    def link_dir(env: Env) -> None:
        make_dir(env.p("elsewhere"))
        env.write("elsewhere/keep.txt", "a file of the user's\n")
        make_link(env.p("target"), "elsewhere")
    def devnull(env: Env) -> None:
        make_link(env.p("target"), "/dev/null")
    kinds = {"file": [("fifo", fifo), ("dir", dir_), ("link-file", link_file), ("link-devnull", devnull)],
             "dir-into": [("fifo", fifo), ("file", file_), ("link-devnull", devnull)],
             "dir-replaced": [("fifo", fifo), ("file", file_), ("link-dir", link_dir), ("link-devnull", devnull)]}
    for name, argv, what in outputs:
        for kind, make in kinds[what]:
            def build(env: Env, argv=argv, make=make) -> Spec:
                make(env)
                spec = Spec(cli_argv(env, [a.replace("{T}", "target") for a in argv]),
                            protect=["target", "elsewhere", "elsewhere.txt"])
                if "{CK}" in " ".join(argv):
                    spec.protect.append("run")
                return spec
            R.add("output", f"{name}-{kind}", f"{name}: the target is a {kind}", "fail", build)
    # prepare replaces its --out whole: a directory holding anything but prepared data is refused.
    def foreign(env: Env) -> Spec:
        dir_(env)
        return Spec(cli_argv(env, with_opt(TEMPLATES["prepare"], "--out", "target")), protect=["target"])
    R.add("output", "prepare-out-foreign-file", "prepare --out: a directory holding a file prepare did not write",
          "fail", foreign)
