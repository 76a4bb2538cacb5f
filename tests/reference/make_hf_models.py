#!/usr/bin/python3
"""Small random models in the exact Hugging Face directory layout, with reference logits.

Usage: /usr/bin/python3 tests/reference/make_hf_models.py --out DIR [--arch llama|qwen3|mistral]
           [--style 4|5] [--dtype f32|bf16|f16] [--shards N] [--vocab V] [--hidden H] [--layers L]
           [--heads N] [--kv-heads N] [--head-dim D] [--intermediate I] [--tie 0|1] [--store-lm-head 0|1]
           [--seed S] [--max-pos P] [--sliding-window W] [--seq T] [--rope-theta X] [--rope-scaling llama3|none]
           [--rope-factor F] [--rope-low-freq-factor F] [--rope-high-freq-factor F] [--rope-original-max-position N]

DIR receives what transformers' from_pretrained loads:
  config.json             LlamaConfig / Qwen3Config / MistralConfig as transformers 4.4x-4.5x (--style 4:
                          "torch_dtype", top-level "rope_theta" and "rope_scaling") or 5.x (--style 5: "dtype",
                          "rope_parameters" holding rope_theta and rope_type) writes it: sorted keys, indent 2.
  generation_config.json
  model.safetensors       (--shards 1) or model-0000k-of-0000N.safetensors + model.safetensors.index.json
and, as a test aid outside the HF layout, reference.safetensors: "inputs" (int32 [2, T]) and "logits"
(float32 [2, T, V]) of the model with standard attention (every layer its own K/V), computed in float64 by
make_fixtures.forward from the weights as stored (after rounding to --dtype).

Deterministic: the same arguments give the same bytes. Needs Debian's python3-torch.
"""
import argparse
import glob
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures  # noqa: E402  (the one reference model: forward, parameter_shapes, write_safetensors)

ARCH = {
    # architectures, model_type, qk_norm, rope_theta, rms_norm_eps, max_position_embeddings
    "llama": ("LlamaForCausalLM", "llama", False, 500000.0, 1e-5, 131072),
    "qwen3": ("Qwen3ForCausalLM", "qwen3", True, 1000000.0, 1e-6, 40960),
    "mistral": ("MistralForCausalLM", "mistral", False, 1000000.0, 1e-5, 32768),
}
DTYPES = {"f32": (torch.float32, "float32"), "bf16": (torch.bfloat16, "bfloat16"), "f16": (torch.float16, "float16")}
VERSIONS = {4: "4.51.3", 5: "5.0.0"}
BATCH, MAX_SEQ = 2, 16


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--arch", choices=sorted(ARCH), default="llama")
    p.add_argument("--style", type=int, choices=[4, 5], default=4)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="f32")
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--vocab", type=int, default=64)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=8)
    p.add_argument("--intermediate", type=int, default=64)
    p.add_argument("--tie", type=int, choices=[0, 1], default=0)
    p.add_argument("--store-lm-head", type=int, choices=[0, 1], default=0,
                   help="with --tie 1, also store lm_head.weight (equal to embed_tokens)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-pos", type=int, default=None, help="max_position_embeddings (default per arch)")
    p.add_argument("--sliding-window", type=int, default=4096, help="mistral only; 0 writes null")
    p.add_argument("--seq", type=int, default=MAX_SEQ, help=f"T of the reference inputs, at most {MAX_SEQ}")
    p.add_argument("--rope-theta", type=float, default=None, help="default per arch")
    p.add_argument("--rms-norm-eps", type=float, default=None, help="default per arch")
    p.add_argument("--rope-scaling", choices=["llama3", "none"], default=None,
                   help="llama only (default llama3); qwen3 and mistral have none")
    p.add_argument("--rope-factor", type=float, default=8.0)
    p.add_argument("--rope-low-freq-factor", type=float, default=1.0)
    p.add_argument("--rope-high-freq-factor", type=float, default=4.0)
    p.add_argument("--rope-original-max-position", type=int, default=8192)
    a = p.parse_args(argv)
    if a.shards < 1 or not 1 <= a.seq <= MAX_SEQ or a.heads % a.kv_heads:
        p.error("need --shards >= 1, 1 <= --seq <= 16 and --heads a multiple of --kv-heads")
    if a.store_lm_head and not a.tie:
        p.error("--store-lm-head 1 is for tied models (an untied model always stores lm_head.weight)")
    if a.rope_scaling == "llama3" and a.arch != "llama":
        p.error("--rope-scaling llama3 is for --arch llama")
    return a


def reference_config(a):
    """The make_fixtures config dict of this model."""
    _, _, qk_norm, theta, eps, _ = ARCH[a.arch]
    scaling = a.rope_scaling or ("llama3" if a.arch == "llama" else "none")
    return dict(vocab_size=a.vocab, hidden_size=a.hidden, num_layers=a.layers, num_heads=a.heads,
                num_kv_heads=a.kv_heads, head_dim=a.head_dim, intermediate_size=a.intermediate,
                tie_embeddings=bool(a.tie), rope_theta=a.rope_theta if a.rope_theta is not None else theta,
                rms_norm_eps=a.rms_norm_eps if a.rms_norm_eps is not None else eps, qk_norm=qk_norm,
                rope_scaling=scaling, rope_factor=a.rope_factor, rope_low_freq_factor=a.rope_low_freq_factor,
                rope_high_freq_factor=a.rope_high_freq_factor,
                rope_original_max_position=a.rope_original_max_position,
                sliding_window=(a.sliding_window or None) if a.arch == "mistral" else None)


def hf_config(a, c):
    arch_name, model_type, _, _, _, max_pos = ARCH[a.arch]
    bos, eos = (a.vocab - 2, a.vocab - 1) if a.arch == "qwen3" else (1, 2)
    cfg = {
        "architectures": [arch_name], "model_type": model_type, "vocab_size": a.vocab, "hidden_size": a.hidden,
        "intermediate_size": a.intermediate, "num_hidden_layers": a.layers, "num_attention_heads": a.heads,
        "num_key_value_heads": a.kv_heads, "head_dim": a.head_dim, "hidden_act": "silu",
        "max_position_embeddings": a.max_pos if a.max_pos is not None else max_pos,
        "initializer_range": 0.02, "rms_norm_eps": c["rms_norm_eps"], "use_cache": True,
        "tie_word_embeddings": bool(a.tie), "attention_dropout": 0.0, "bos_token_id": bos, "eos_token_id": eos,
        "transformers_version": VERSIONS[a.style],
    }
    if a.arch == "llama":
        cfg.update(attention_bias=False, mlp_bias=False, pretraining_tp=1)
    elif a.arch == "qwen3":
        cfg.update(attention_bias=False, use_sliding_window=False, sliding_window=None, max_window_layers=a.layers)
        if a.style == 5:
            cfg["layer_types"] = ["full_attention"] * a.layers
    else:
        cfg["sliding_window"] = c["sliding_window"]
    llama3 = {"factor": c["rope_factor"], "low_freq_factor": c["rope_low_freq_factor"],
              "high_freq_factor": c["rope_high_freq_factor"],
              "original_max_position_embeddings": c["rope_original_max_position"]}
    dtype_name = DTYPES[a.dtype][1]
    if a.style == 4:
        cfg["torch_dtype"] = dtype_name
        cfg["rope_theta"] = c["rope_theta"]
        if a.arch != "mistral":  # MistralConfig 4.x has no rope_scaling attribute
            cfg["rope_scaling"] = dict(rope_type="llama3", **llama3) if c["rope_scaling"] == "llama3" else None
    else:
        cfg["dtype"] = dtype_name
        rope = {"rope_type": c["rope_scaling"] if c["rope_scaling"] == "llama3" else "default",
                "rope_theta": c["rope_theta"]}
        if c["rope_scaling"] == "llama3":
            rope.update(llama3)
        cfg["rope_parameters"] = rope
    return cfg


def write_json(path, obj):
    with open(path, "w") as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def split_shards(names, sizes, count):
    """Contiguous groups of the names (state-dict order), about equal in bytes, none empty."""
    assert len(names) >= count, "more shards than tensors"
    total, before, shard, groups = sum(sizes), 0, 0, [[] for _ in range(count)]
    for i, (name, size) in enumerate(zip(names, sizes)):
        target = min(count - 1, before * count // total, shard + 1)  # by bytes, skipping no shard
        shard = max(shard, target, count - (len(names) - i))  # and one tensor left for each later shard
        groups[shard].append(name)
        before += size
    assert all(groups), "more shards than tensors"
    return groups


def main(argv=None):
    a = parse_args(argv)
    c = reference_config(a)
    torch_dtype = DTYPES[a.dtype][0]
    gen = torch.Generator().manual_seed(a.seed)
    weights = {}  # state-dict order, float64 holding the stored (rounded) values
    for name, shape in make_fixtures.parameter_shapes(c):
        if len(shape) == 1:
            w = 1.0 + 0.2 * torch.randn(shape, generator=gen, dtype=torch.float64)
        else:
            w = 0.3 * torch.randn(shape, generator=gen, dtype=torch.float64)
        weights[name] = w.to(torch_dtype).double()
    if a.tie and a.store_lm_head:
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"].clone()
    num_parameters = sum(w.numel() for n, w in weights.items() if not (a.tie and n == "lm_head.weight"))
    inputs = torch.randint(0, a.vocab, (BATCH, a.seq), generator=gen)
    with torch.no_grad():
        logits = make_fixtures.forward(c, weights, inputs, list(range(a.layers)))

    os.makedirs(a.out, exist_ok=True)
    for stale in glob.glob(os.path.join(a.out, "model*.safetensors*")):
        os.remove(stale)
    stored = {n: w.to(torch_dtype) for n, w in weights.items()}
    st_metadata = {"format": "pt"}
    if a.shards == 1:
        make_fixtures.write_safetensors(os.path.join(a.out, "model.safetensors"),
                                        {n: stored[n] for n in sorted(stored)}, st_metadata)
    else:
        names = list(stored)
        sizes = [stored[n].numel() * stored[n].element_size() for n in names]
        weight_map = {}
        for k, group in enumerate(split_shards(names, sizes, a.shards)):
            file_name = f"model-{k + 1:05d}-of-{a.shards:05d}.safetensors"
            make_fixtures.write_safetensors(os.path.join(a.out, file_name), {n: stored[n] for n in sorted(group)},
                                            st_metadata)
            weight_map.update({n: file_name for n in group})
        index_metadata = {"total_size": sum(sizes)}
        if a.style == 5:
            index_metadata["total_parameters"] = num_parameters
        write_json(os.path.join(a.out, "model.safetensors.index.json"),
                   {"metadata": index_metadata, "weight_map": weight_map})
    config = hf_config(a, c)
    write_json(os.path.join(a.out, "config.json"), config)
    write_json(os.path.join(a.out, "generation_config.json"),
               {"_from_model_config": True, "bos_token_id": config["bos_token_id"],
                "eos_token_id": config["eos_token_id"], "transformers_version": VERSIONS[a.style]})
    make_fixtures.write_safetensors(
        os.path.join(a.out, "reference.safetensors"),
        {"inputs": inputs.int(), "logits": logits.float()},
        {"format": "pt", "generator": "tests/reference/make_hf_models.py", "attention": "all-self",
         "weights": f"as stored ({a.dtype}), computed in float64"})
    bands = make_fixtures.rope_inv_freq(c)[1]
    print(f"wrote {a.out}: {a.arch} style {a.style} {a.dtype}, {a.shards} file(s), {num_parameters} parameters"
          + (f", rope bands {bands}" if c["rope_scaling"] != "none" else ""))


if __name__ == "__main__":
    main()
