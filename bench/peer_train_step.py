#!/usr/bin/python3
"""PyTorch (CPU) peer of bench_train_step.cpp: the same Qwen3-style model (6 layers, hidden 256,
8 heads / 4 KV heads, head_dim 32, intermediate 768, vocab 8192, tied embeddings, QK-norm), the
same batch, threads and stochastic KV routing (share_prob, uniform source, K/V computed only for
layers that are read), forward + backward + torch.optim.AdamW. Prints tokens/s (median step).

    /usr/bin/python3 bench/peer_train_step.py --threads 2
"""
import argparse
import math
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
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin


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

    def forward(self, x, index, computed, plan, mask, cos, sin):
        b, t, _ = x.shape
        h = self.input_layernorm(x)
        if index in plan:  # compute K/V only where some layer reads them
            computed[index] = self.kv(h, cos, sin)
        k, v = computed[plan[index]]
        q = rotate(self.q_norm(self.q_proj(h).view(b, t, self.c["heads"], -1)).transpose(1, 2), cos, sin)
        group = self.c["heads"] // self.c["kv_heads"]
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + mask
        a = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, -1)
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

    def forward(self, tokens, targets, plan):
        t = tokens.shape[1]
        d = self.c["head_dim"]
        inv = 1e6 ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
        ang = torch.arange(t, dtype=torch.float32)[:, None] * inv[None]
        cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
        mask = torch.full((t, t), float("-inf")).triu(1)
        x = self.embed_tokens(tokens)
        computed = {}
        for i, layer in enumerate(self.layers):
            x = layer(x, i, computed, plan, mask, cos, sin)
        logits = self.norm(x) @ self.embed_tokens.weight.T
        return F.cross_entropy(logits.reshape(-1, self.c["vocab"]), targets.reshape(-1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--share-prob", type=float, default=0.5)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--ffn", type=int, default=768)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    random.seed(0)
    c = dict(vocab=args.vocab, hidden=args.hidden, layers=args.layers, heads=args.heads, kv_heads=args.kv_heads,
             head_dim=args.head_dim, ffn=args.ffn)
    model = Model(c)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), eps=1e-8)
    stream = torch.randint(0, c["vocab"], (args.batch, args.seq + 1))
    inputs, targets = stream[:, :-1], stream[:, 1:]

    def plan():
        out = [0]
        for layer in range(1, c["layers"]):
            out.append(random.randrange(layer) if random.random() < args.share_prob else layer)
        return out

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(inputs, targets, plan())
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(2):
        step()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - start)
    ms = statistics.median(times) * 1e3
    params = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__} train step: params={params} B={args.batch} T={args.seq} "
          f"share_prob={args.share_prob:.2f} threads={args.threads}  {ms:.1f} ms/step  "
          f"{args.batch * args.seq / (ms * 1e-3):.0f} tok/s  (loss {loss:.3f})")


if __name__ == "__main__":
    main()
