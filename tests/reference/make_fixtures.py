#!/usr/bin/python3
"""Independent PyTorch reference of kvroute's Qwen3-style decoder with KV routing (R-CLA).

Usage: /usr/bin/python3 tests/reference/make_fixtures.py   (needs Debian's python3-torch)

Writes tests/reference/fixtures/<config>.safetensors: the weights (Hugging Face Qwen3 names), the
input and target tokens, and for each routing plan the plan, the logits, the loss and the gradient
of every parameter. Everything is computed in float64 and stored as float32. The C++ test
(tests/layers/test_reference.cpp) loads the weights into kvroute's Transformer and compares.

This file implements the model from the method description (docs/architecture.md,
docs/method.md), not from kvroute's code. The Llama variant (no QK-norm, Llama-3.1 RoPE scaling)
follows Hugging Face transformers' LlamaForCausalLM and `_compute_llama3_parameters`.
make_hf_models.py imports forward() from here, so there is one reference model.
"""
import json
import math
import os
import struct

import torch
import torch.nn.functional as F

CONFIGS = {
    # Shape keys, then any of COMMON's keys that differ; "seq" (not part of the model config) is
    # the sequence length, SEQ when absent. New configs go at the end: each config's random
    # stream is seeded by its position, so appending leaves the earlier fixtures' tensors alone.
    "mha": dict(vocab_size=40, hidden_size=32, num_layers=4, num_heads=4, num_kv_heads=4, head_dim=8,
                intermediate_size=32, tie_embeddings=True),
    "gqa2": dict(vocab_size=40, hidden_size=32, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=8,
                 intermediate_size=32, tie_embeddings=True),
    "untied": dict(vocab_size=40, hidden_size=24, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=8,
                   intermediate_size=40, tie_embeddings=False),
    # Llama-3.1 style: no QK-norm, llama3 RoPE scaling. head_dim 16 gives 8 frequencies with
    # wavelengths 2*pi*10000^(i/8) = 6.3, 19.9, 62.8, 199, ...; original_max_position 32 with the
    # Llama-3.1 factors (1, 4) puts the cut-offs at 8 and 32 (high-frequency band: i = 0 unchanged,
    # medium: i = 1 smoothed, low: i >= 2 divided by the factor). 24 positions make the scaled
    # frequencies matter (the smoothed one turns 2.2 rad instead of 7.3 by the last position).
    "llama": dict(vocab_size=40, hidden_size=32, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=16,
                  intermediate_size=32, tie_embeddings=True, qk_norm=False, rms_norm_eps=1e-5,
                  rope_scaling="llama3", rope_factor=8.0, rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
                  rope_original_max_position=32, seq=24),
    # Untied head, other scaling constants: cut-offs 16/2 = 8 and 16/0.5 = 32 (same three bands).
    "llama_untied": dict(vocab_size=40, hidden_size=24, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=16,
                         intermediate_size=40, tie_embeddings=False, qk_norm=False, rms_norm_eps=1e-5,
                         rope_scaling="llama3", rope_factor=4.0, rope_low_freq_factor=0.5,
                         rope_high_freq_factor=2.0, rope_original_max_position=16, seq=24),
}
# rope_scaling: "none" or "llama3"; the rope_* constants are read only with "llama3" (the defaults
# are Llama-3.1's).
COMMON = dict(rope_theta=10000.0, rms_norm_eps=1e-6, qk_norm=True, rope_scaling="none", rope_factor=8.0,
              rope_low_freq_factor=1.0, rope_high_freq_factor=4.0, rope_original_max_position=8192)
BATCH, SEQ, IGNORE_INDEX = 2, 8, -100


def model_config(shape_config):
    """The config dict of one CONFIGS entry (COMMON's keys filled in) and its sequence length."""
    c = {k: v for k, v in shape_config.items() if k != "seq"}
    for key, value in COMMON.items():
        c.setdefault(key, value)
    return c, shape_config.get("seq", SEQ)


def plans(num_layers, generator):
    """all-self, CLA@2, one stochastic draw (share_prob 0.5, uniform source), retention 25%."""
    stochastic = [0]
    for layer in range(1, num_layers):
        borrow = torch.rand((), generator=generator).item() < 0.5
        stochastic.append(int(torch.randint(0, layer, (), generator=generator)) if borrow else layer)
    keep = max(1, math.ceil(0.25 * num_layers))
    kept = [i * num_layers // keep for i in range(keep)]
    retention = [max(k for k in kept if k <= layer) for layer in range(num_layers)]
    return {"self": list(range(num_layers)), "cla2": [layer // 2 * 2 for layer in range(num_layers)],
            "stochastic": stochastic, "retention25": retention}


def parameter_shapes(c):
    shapes = [("model.embed_tokens.weight", (c["vocab_size"], c["hidden_size"]))]
    q, kv = c["num_heads"] * c["head_dim"], c["num_kv_heads"] * c["head_dim"]
    for i in range(c["num_layers"]):
        p = f"model.layers.{i}."
        shapes += [(p + "self_attn.q_proj.weight", (q, c["hidden_size"])),
                   (p + "self_attn.k_proj.weight", (kv, c["hidden_size"])),
                   (p + "self_attn.v_proj.weight", (kv, c["hidden_size"])),
                   (p + "self_attn.o_proj.weight", (c["hidden_size"], q))]
        if c["qk_norm"]:
            shapes += [(p + "self_attn.q_norm.weight", (c["head_dim"],)),
                       (p + "self_attn.k_norm.weight", (c["head_dim"],))]
        shapes += [(p + "mlp.gate_proj.weight", (c["intermediate_size"], c["hidden_size"])),
                   (p + "mlp.up_proj.weight", (c["intermediate_size"], c["hidden_size"])),
                   (p + "mlp.down_proj.weight", (c["hidden_size"], c["intermediate_size"])),
                   (p + "input_layernorm.weight", (c["hidden_size"],)),
                   (p + "post_attention_layernorm.weight", (c["hidden_size"],))]
    shapes.append(("model.norm.weight", (c["hidden_size"],)))
    if not c["tie_embeddings"]:
        shapes.append(("lm_head.weight", (c["vocab_size"], c["hidden_size"])))
    return shapes


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope_inv_freq(c):
    """The head_dim/2 rotary frequencies (float64) and, per frequency, which llama3 band it is in:
    "high" (kept), "medium" (smoothed), "low" (divided by rope_factor); all "none" without scaling.
    """
    dim = c["head_dim"]
    inv_freq = c["rope_theta"] ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # 1/theta^(2i/d)
    if c["rope_scaling"] == "none":
        return inv_freq, ["none"] * (dim // 2)
    assert c["rope_scaling"] == "llama3", c["rope_scaling"]
    factor, low, high = c["rope_factor"], c["rope_low_freq_factor"], c["rope_high_freq_factor"]
    original = float(c["rope_original_max_position"])
    low_freq_wavelen, high_freq_wavelen = original / low, original / high
    scaled, bands = [], []
    for f in inv_freq.tolist():
        wavelen = 2 * math.pi / f
        if wavelen > low_freq_wavelen:
            scaled.append(f / factor)
            bands.append("low")
        elif wavelen < high_freq_wavelen:
            scaled.append(f)
            bands.append("high")
        else:
            smooth = (original / wavelen - low) / (high - low)
            scaled.append((1 - smooth) * f / factor + smooth * f)
            bands.append("medium")
    return torch.tensor(scaled, dtype=torch.float64), bands


def rotary(x, inv_freq):
    """x: [B, T, H, D]; rotate-half convention, positions 0..T-1; inv_freq: [D/2] float64."""
    seq, dim = x.shape[1], x.shape[-1]
    angles = torch.arange(seq, dtype=torch.float64)[:, None] * inv_freq[None, :]
    cos = torch.cat([angles.cos(), angles.cos()], -1)[None, :, None, :]
    sin = torch.cat([angles.sin(), angles.sin()], -1)[None, :, None, :]
    half = dim // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * cos + rotated * sin


def attention(q, k, v, window=None):
    """q [B, T, Hq, D], k/v [B, T, Hkv, D] -> [B, T, Hq, D], causal, GQA by repetition. With a
    window (Mistral's sliding_window), query i sees keys j with i - window < j <= i."""
    group = q.shape[2] // k.shape[2]
    qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    kh, vh = kh.repeat_interleave(group, 1), vh.repeat_interleave(group, 1)
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(q.shape[-1])
    seq = q.shape[1]
    mask = torch.ones(seq, seq, dtype=torch.bool).tril()
    if window is not None:
        mask &= torch.ones(seq, seq, dtype=torch.bool).triu(-(window - 1))
    scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ vh).transpose(1, 2)


def forward(c, w, tokens, plan):
    """Logits [B, T, V] of config c with weights w (HF names) for tokens [B, T] and a routing plan
    (plan[i]: the layer whose K/V layer i reads). c["sliding_window"], when present and not None,
    limits attention to that many positions (the current one included)."""
    eps = c["rms_norm_eps"]
    inv_freq, _ = rope_inv_freq(c)
    window = c.get("sliding_window")
    qk_norm = c["qk_norm"]

    def norm(t, name):
        return rms_norm(t, w[name], eps) if qk_norm else t

    batch, seq = tokens.shape
    x = w["model.embed_tokens.weight"][tokens]
    readers = set(plan)
    kv = {}
    for i in range(c["num_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        if i in readers:  # this layer's own K/V, from its own input
            k = (h @ w[p + "self_attn.k_proj.weight"].T).view(batch, seq, c["num_kv_heads"], c["head_dim"])
            k = rotary(norm(k, p + "self_attn.k_norm.weight"), inv_freq)
            v = (h @ w[p + "self_attn.v_proj.weight"].T).view(batch, seq, c["num_kv_heads"], c["head_dim"])
            kv[i] = (k, v)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(batch, seq, c["num_heads"], c["head_dim"])
        q = rotary(norm(q, p + "self_attn.q_norm.weight"), inv_freq)
        k, v = kv[plan[i]]
        a = attention(q, k, v, window).reshape(batch, seq, -1)
        x = x + a @ w[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        mlp = F.silu(h @ w[p + "mlp.gate_proj.weight"].T) * (h @ w[p + "mlp.up_proj.weight"].T)
        x = x + mlp @ w[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if c["tie_embeddings"] else w["lm_head.weight"]
    return x @ head.T


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    dtypes = {torch.float32: "F32", torch.int32: "I32", torch.bfloat16: "BF16", torch.float16: "F16"}
    for name, t in tensors.items():
        t = t.contiguous()
        # numpy has no bfloat16: 2-byte types go out as their bit patterns (little-endian).
        data = (t.view(torch.int16) if t.element_size() == 2 else t).numpy().tobytes()
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"))
    text += " " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text.encode())
        for blob in blobs:
            f.write(blob)


def main():
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
    os.makedirs(out_dir, exist_ok=True)
    for index, (name, shape_config) in enumerate(CONFIGS.items()):
        c, seq = model_config(shape_config)
        inv_freq, bands = rope_inv_freq(c)
        if c["rope_scaling"] == "llama3":  # every band of the llama3 rule is exercised
            assert {"low", "medium", "high"} <= set(bands), (name, bands)
        gen = torch.Generator().manual_seed(1000 + index)
        weights = {}
        for pname, shape in parameter_shapes(c):
            if len(shape) == 1:  # norm scales around 1, so that a wrong scale shows
                weights[pname] = 1.0 + 0.2 * torch.randn(shape, generator=gen, dtype=torch.float64)
            else:  # large enough that attention is far from uniform
                weights[pname] = 0.3 * torch.randn(shape, generator=gen, dtype=torch.float64)
        # Round the weights to float32 first: the reference runs on exactly what C++ loads.
        weights = {k: v.float().double() for k, v in weights.items()}
        stream = torch.randint(0, c["vocab_size"], (BATCH, seq + 1), generator=gen)
        inputs, targets = stream[:, :-1].clone(), stream[:, 1:].clone()
        targets[1, 3] = IGNORE_INDEX
        tensors = {k: v.float() for k, v in weights.items()}
        tensors["inputs"] = inputs.int()
        tensors["targets"] = targets.int()
        if c["rope_scaling"] != "none":
            tensors["rope.inv_freq"] = inv_freq.float()
        for plan_name, plan in plans(c["num_layers"], gen).items():
            w = {k: v.clone().requires_grad_(True) for k, v in weights.items()}
            logits = forward(c, w, inputs, plan)
            loss = F.cross_entropy(logits.reshape(-1, c["vocab_size"]), targets.reshape(-1), ignore_index=IGNORE_INDEX)
            loss.backward()
            tensors[f"{plan_name}.plan"] = torch.tensor(plan, dtype=torch.int32)
            tensors[f"{plan_name}.logits"] = logits.detach().float()
            tensors[f"{plan_name}.loss"] = loss.detach().float().reshape(())
            for pname, p in w.items():
                grad = p.grad if p.grad is not None else torch.zeros_like(p)
                tensors[f"{plan_name}.grad.{pname}"] = grad.float()
        metadata = {"config": json.dumps(c), "ignore_index": str(IGNORE_INDEX),
                    "generator": "tests/reference/make_fixtures.py"}
        path = os.path.join(out_dir, f"{name}.safetensors")
        write_safetensors(path, tensors, metadata)
        print(f"wrote {path} ({os.path.getsize(path)} bytes)" +
              (f", rope bands {bands}" if c["rope_scaling"] != "none" else ""))


if __name__ == "__main__":
    main()
