#!/usr/bin/python3
"""Independent PyTorch reference of kvroute's Qwen3-style decoder with KV routing (R-CLA).

Writes tests/reference/fixtures/<config>.safetensors: the weights (Hugging Face Qwen3 names), the
input and target tokens, and for each routing plan the plan, the logits, the loss and the gradient
of every parameter. Everything is computed in float64 and stored as float32. The C++ test
(tests/layers/test_reference.cpp) loads the weights into kvroute's Transformer and compares.

This file implements the model from the method description (docs/architecture.md,
docs/method.md), not from kvroute's code. Run with Debian's interpreter:
    /usr/bin/python3 tests/reference/make_fixtures.py
"""
import json
import math
import os
import struct

import torch
import torch.nn.functional as F

CONFIGS = {
    # name: (vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, tie)
    "mha": dict(vocab_size=40, hidden_size=32, num_layers=4, num_heads=4, num_kv_heads=4, head_dim=8,
                intermediate_size=32, tie_embeddings=True),
    "gqa2": dict(vocab_size=40, hidden_size=32, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=8,
                 intermediate_size=32, tie_embeddings=True),
    "untied": dict(vocab_size=40, hidden_size=24, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=8,
                   intermediate_size=40, tie_embeddings=False),
}
COMMON = dict(rope_theta=10000.0, rms_norm_eps=1e-6, qk_norm=True)
BATCH, SEQ, IGNORE_INDEX = 2, 8, -100


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
                   (p + "self_attn.o_proj.weight", (c["hidden_size"], q)),
                   (p + "self_attn.q_norm.weight", (c["head_dim"],)),
                   (p + "self_attn.k_norm.weight", (c["head_dim"],)),
                   (p + "mlp.gate_proj.weight", (c["intermediate_size"], c["hidden_size"])),
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


def rotary(x, theta):
    """x: [B, T, H, D]; rotate-half convention, positions 0..T-1."""
    seq, dim = x.shape[1], x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = torch.arange(seq, dtype=torch.float64)[:, None] * inv_freq[None, :]
    cos = torch.cat([angles.cos(), angles.cos()], -1)[None, :, None, :]
    sin = torch.cat([angles.sin(), angles.sin()], -1)[None, :, None, :]
    half = dim // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * cos + rotated * sin


def attention(q, k, v):
    """q [B, T, Hq, D], k/v [B, T, Hkv, D] -> [B, T, Hq, D], causal, GQA by repetition."""
    group = q.shape[2] // k.shape[2]
    qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    kh, vh = kh.repeat_interleave(group, 1), vh.repeat_interleave(group, 1)
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(q.shape[-1])
    seq = q.shape[1]
    mask = torch.ones(seq, seq, dtype=torch.bool).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ vh).transpose(1, 2)


def forward(c, w, tokens, plan):
    eps, theta = c["rms_norm_eps"], c["rope_theta"]
    batch, seq = tokens.shape
    x = w["model.embed_tokens.weight"][tokens]
    readers = set(plan)
    kv = {}
    for i in range(c["num_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        if i in readers:  # this layer's own K/V, from its own input
            k = (h @ w[p + "self_attn.k_proj.weight"].T).view(batch, seq, c["num_kv_heads"], c["head_dim"])
            k = rotary(rms_norm(k, w[p + "self_attn.k_norm.weight"], eps), theta)
            v = (h @ w[p + "self_attn.v_proj.weight"].T).view(batch, seq, c["num_kv_heads"], c["head_dim"])
            kv[i] = (k, v)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(batch, seq, c["num_heads"], c["head_dim"])
        q = rotary(rms_norm(q, w[p + "self_attn.q_norm.weight"], eps), theta)
        k, v = kv[plan[i]]
        a = attention(q, k, v).reshape(batch, seq, -1)
        x = x + a @ w[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        mlp = F.silu(h @ w[p + "mlp.gate_proj.weight"].T) * (h @ w[p + "mlp.up_proj.weight"].T)
        x = x + mlp @ w[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if c["tie_embeddings"] else w["lm_head.weight"]
    return x @ head.T


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    dtypes = {torch.float32: "F32", torch.int32: "I32"}
    for name, t in tensors.items():
        t = t.contiguous()
        data = t.numpy().tobytes()
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
        c = dict(shape_config, **COMMON)
        gen = torch.Generator().manual_seed(1000 + index)
        weights = {}
        for pname, shape in parameter_shapes(c):
            if len(shape) == 1:  # norm scales around 1, so that a wrong scale shows
                weights[pname] = 1.0 + 0.2 * torch.randn(shape, generator=gen, dtype=torch.float64)
            else:  # large enough that attention is far from uniform
                weights[pname] = 0.3 * torch.randn(shape, generator=gen, dtype=torch.float64)
        # Round the weights to float32 first: the reference runs on exactly what C++ loads.
        weights = {k: v.float().double() for k, v in weights.items()}
        stream = torch.randint(0, c["vocab_size"], (BATCH, SEQ + 1), generator=gen)
        inputs, targets = stream[:, :-1].clone(), stream[:, 1:].clone()
        targets[1, 3] = IGNORE_INDEX
        tensors = {k: v.float() for k, v in weights.items()}
        tensors["inputs"] = inputs.int()
        tensors["targets"] = targets.int()
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
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
