"""The Qwen3-style model of kvroute's PyTorch peers (bench/peer_train_step.py on the CPU,
bench/peer_gpu_train_step.py on the GPU): QK-norm, RoPE (rotate-half), GQA, SwiGLU, tied
embeddings, and stochastic KV routing in which a layer computes K/V only when some layer reads
them. Norms compute in f32 whatever the input dtype (bf16 under autocast); with f32 inputs every
cast is a no-op."""
import random
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight.to(x.dtype)


def rotate(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin


def causal_attention(q, k, v):
    if hasattr(F, "scaled_dot_product_attention"):  # fused (flash) attention, torch >= 2.0
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    t = q.shape[-2]  # torch 1.x: materialised scores, as Hugging Face's eager attention
    mask = torch.full((t, t), float("-inf"), device=q.device, dtype=q.dtype).triu(1)
    return ((q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5 + mask).softmax(-1) @ v


def rope_tables(seq, head_dim, theta, device="cpu", dtype=torch.float32):
    inv = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
    ang = torch.arange(seq, dtype=torch.float32, device=device)[:, None] * inv[None]
    return torch.cat([ang.cos()] * 2, -1).to(dtype), torch.cat([ang.sin()] * 2, -1).to(dtype)


def random_plan(layers, share_prob):
    """Layer i reads a uniformly drawn earlier layer with probability share_prob, else itself."""
    out = [0]
    for layer in range(1, layers):
        out.append(random.randrange(layer) if random.random() < share_prob else layer)
    return out


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        h, d, hq, hkv, f = c["hidden"], c["head_dim"], c["heads"], c["kv_heads"], c["ffn"]
        self.q_proj, self.k_proj = nn.Linear(h, hq * d, bias=False), nn.Linear(h, hkv * d, bias=False)
        self.v_proj, self.o_proj = nn.Linear(h, hkv * d, bias=False), nn.Linear(hq * d, h, bias=False)
        self.q_norm, self.k_norm = RMSNorm(d), RMSNorm(d)
        self.gate_proj, self.up_proj = nn.Linear(h, f, bias=False), nn.Linear(h, f, bias=False)
        self.down_proj = nn.Linear(f, h, bias=False)
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(h), RMSNorm(h)

    def kv(self, h, cos, sin):
        b, t, _ = h.shape
        k = rotate(self.k_norm(self.k_proj(h).view(b, t, self.c["kv_heads"], -1)).transpose(1, 2), cos, sin)
        v = self.v_proj(h).view(b, t, self.c["kv_heads"], -1).transpose(1, 2)
        return k, v

    def attend_and_mlp(self, x, h, k, v, cos, sin):
        b, t, _ = x.shape
        q = rotate(self.q_norm(self.q_proj(h).view(b, t, self.c["heads"], -1)).transpose(1, 2), cos, sin)
        group = self.c["heads"] // self.c["kv_heads"]
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
        a = causal_attention(q, k, v).transpose(1, 2).reshape(b, t, -1)
        x = x + self.o_proj(a)
        m = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(m)) * self.up_proj(m))


class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c["vocab"], c["hidden"])
        self.layers = nn.ModuleList(Layer(c) for _ in range(c["layers"]))
        self.norm = RMSNorm(c["hidden"])
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)
        self.kv_fns = [layer.kv for layer in self.layers]
        self.block_fns = [layer.attend_and_mlp for layer in self.layers]

    def compile_blocks(self):
        """torch.compile per layer block: the routing plan changes which K/V a layer reads every
        step, so the whole model is not one static graph when layers share."""
        self.kv_fns = [torch.compile(layer.kv) for layer in self.layers]
        self.block_fns = [torch.compile(layer.attend_and_mlp) for layer in self.layers]

    def forward(self, tokens, targets, plan, cos, sin):
        x = self.embed_tokens(tokens)
        computed = {}
        for i, layer in enumerate(self.layers):
            h = layer.input_layernorm(x)
            if i in plan:  # compute K/V only where some layer reads them
                computed[i] = self.kv_fns[i](h, cos, sin)
            k, v = computed[plan[i]]
            x = self.block_fns[i](x, h, k, v, cos, sin)
        logits = self.norm(x) @ self.embed_tokens.weight.T.to(x.dtype)
        return F.cross_entropy(logits.reshape(-1, self.c["vocab"]).float(), targets.reshape(-1))


def optimizer(model, fused=False):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=3e-4, betas=(0.9, 0.95), eps=1e-8, **({"fused": True} if fused else {}))


def median_step_ms(step, warmup, steps):
    """Median wall time of `step()` in ms over `steps` runs after `warmup` runs, and the last
    value it returned (the loss)."""
    for _ in range(warmup):
        step()
    times, result = [], None
    for _ in range(steps):
        start = time.perf_counter()
        result = step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, result
