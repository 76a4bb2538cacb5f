"""Bad-input cases: valid control commands that must succeed."""

from __future__ import annotations

from harness_common import *  # noqa: F401,F403
from cases.export import existing_out
from cases.hfmodel import hf_spec, init_cfg


# ---- baseline -----------------------------------------------------------------------------------

def baseline_cases(R: Registry) -> None:
    def add(name: str, argv: list, desc: str, prep: Optional[Callable] = None) -> None:
        R.add("baseline", name, desc, "pass", simple(argv, prep=prep))

    add("train", ["train", "cfg.yaml"], "train the tiny config from scratch")
    add("resume", ["train", "config.yaml", "--resume", "auto", "train.steps=6"],
        "resume a copy of the golden run and train 2 more steps", prep=lambda env: env.run_copy())
    add("eval", ["eval", "--checkpoint", "{CK}", "--batches", "1", "--threads", "1"], "eval a checkpoint copy")
    add("eval-greedy", ["eval", "--checkpoint", "{CK}", "--batches", "1", "--keep", "0,1", "--groups", "2",
                        "--strategy", "greedy", "--out", "evalout"], "eval with keep-sets and greedy plans")
    add("generate", ["generate", "--checkpoint", "{CK}", "--prompt", "the sun", "--max-new-tokens", "4",
                     "--top-k", "5", "--top-p", "0.9", "--retention", "0.5"], "sample 4 tokens")
    add("encode", ["tokenizer", "encode", "--tokenizer", "{TOK}", "--text", "hello world"], "encode a text")
    add("decode", ["tokenizer", "decode", "--tokenizer", "{TOK}", "--ids", "104 101,108 108 111"], "decode ids")
    add("bench-train-random", ["bench", "train", "cfg.yaml", "--steps", "1", "--no-peer", "--random-data"],
        "bench train on random tokens (no corpus needed)")
    add("tok-train", ["tokenizer", "train", "--input", "{CORPUS}", "--vocab", "280", "--out", "tokout",
                      "--threads", "1"], "train a tokenizer")
    add("prepare", ["prepare", "--input", "{CORPUS}", "--tokenizer", "{TOK}", "--out", "dataout", "--threads", "1"],
        "prepare shards")
    add("prepare-tiny-shards", ["prepare", "--input", "{CORPUS}", "--tokenizer", "{TOK}", "--out", "dataout",
                                     "--threads", "1", "--shard-tokens", "8"],
        "8-token shards (about ten thousand files: synced once, not one by one)")
    add("bench-gen", ["bench", "generate", "--checkpoint", "{CK}", "--prompt-lengths", "4", "--batch-sizes", "1",
                      "--new-tokens", "2", "--repeats", "1", "--threads", "1"], "bench generate on a checkpoint copy")
    add("bench-train", ["bench", "train", "cfg.yaml", "--steps", "1", "--no-peer"], "bench train, no peer")
    add("sweep", ["sweep", "study.yaml"], "a one-run study")

    # architectures, Hugging Face model directories, model.init_from, export
    def scratch(name: str, desc: str, values: dict) -> None:
        def build(env: Env) -> Spec:
            c = base_cfg(env.ctx)
            for (section, key), value in values.items():
                c[section][key] = value
            env.cfg(cfg=c)
            return Spec(["train", "cfg.yaml"])
        R.add("baseline", name, desc, "pass", build)
    scratch("train-llama3", "train a llama model with llama3 RoPE scaling from scratch",
            {("model", "architecture"): "llama", ("model", "rope_scaling"): "llama3", ("model", "rope_factor"): "8",
             ("model", "rope_low_freq_factor"): "1", ("model", "rope_high_freq_factor"): "4",
             ("model", "rope_original_max_position"): "32"})
    scratch("train-mistral-window", "train a mistral model with sliding_window 128 from scratch",
            {("model", "architecture"): "mistral", ("model", "sliding_window"): "128"})
    for which in ["llama", "qwen3", "golden"]:
        R.add("baseline", f"hf-eval-{which}", f"eval a copy of the {which} Hugging Face model directory", "pass",
              lambda env, which=which: hf_spec(env, which, "eval"))

    def init_mistral(env: Env) -> Spec:
        m = env.hf_copy("mistral")
        env.cfg(cfg=init_cfg(env, "mistral", extra={("router", "policy"): "fixed_groups", ("router", "group_size"): "2",
                                                    ("router", "kv_init"): "average"}), rel="init.yaml")
        return Spec(["train", "init.yaml"], protect=[m])
    R.add("baseline", "hf-init-mistral-cla", "train fixed_groups from a mistral model.init_from, kv_init average",
          "pass", init_mistral)

    def init_ckpt(env: Env) -> Spec:
        env.run_copy()
        env.cfg(cfg=init_cfg(env, "ckpt", {"init_from": CK}), rel="init.yaml")
        return Spec(["train", "init.yaml"], protect=["run"])
    R.add("baseline", "init-checkpoint", "train from model.init_from a kvroute checkpoint", "pass", init_ckpt)
    add("export", ["export", "{CK}", "--out", "exported"], "export the golden checkpoint (f32, one file)")
    add("export-bf16-sharded", ["export", "{CK}", "--out", "exported", "--dtype", "bf16", "--shard-size", "20KB"],
        "export as bf16 in 20 KB shards")
    add("export-overwrite", ["export", "{CK}", "--out", "exported", "--dtype", "f16", "--overwrite"],
        "export as f16 over an earlier export", prep=lambda env: existing_out(env))

    def leftover_tmp(env: Env) -> None:
        env.run_copy()
        make_dir(env.p("run/checkpoints/step_00000006.tmp"))
        env.write("run/checkpoints/step_00000006.tmp/state.json", "{garbage")
    add("resume-tmp", ["train", "config.yaml", "--resume", "auto", "train.steps=6"],
        "resume with a leftover step_00000006.tmp directory", prep=leftover_tmp)

    # supervised fine-tuning data, QA tasks, a Hugging Face tokenizer.json
    add("prepare-sft", ["prepare", "--format", "sft", "--input", "{SFTJSONL}", "--tokenizer", "{TOK}", "--out", "sftout",
                        "--val-fraction", "0.2", "--threads", "1"], "prepare --format sft from the fixture's JSONL")
    add("train-sft", ["train", "cfg.yaml", "data.dir={SFT}"], "train on an SFT directory (one example per row)")
    add("eval-sft", ["eval", "--checkpoint", "{CK}", "--data", "{SFT}", "--batches", "2", "--threads", "1"],
        "eval --data an SFT directory")
    add("eval-task", ["eval", "--checkpoint", "{CK}", "--task", "{TASK}", "--retention", "1", "--batches", "1",
                      "--max-new-tokens", "4", "--threads", "1"], "eval --task (EM, F1, ROUGE-L)")
    add("encode-hf", ["tokenizer", "encode", "--tokenizer", "{HFTOK}", "--text", "hello world <|endoftext|>"],
        "encode with a tokenizer.json")
    add("generate-hf", ["generate", "--checkpoint", "{CK}", "--tokenizer", "{HFTOK}", "--prompt", "the sun",
                        "--max-new-tokens", "4"], "generate with a tokenizer.json")
    add("prepare-sft-hf", ["prepare", "--format", "sft", "--input", "{SFTJSONL}", "--tokenizer", "{HFTOK}", "--out",
                           "sftout", "--val-fraction", "0.2", "--threads", "1"], "prepare --format sft with a tokenizer.json")
