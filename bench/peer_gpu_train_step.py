#!/usr/bin/python3
"""PyTorch (GPU) peer of `kvroute bench train` on a CUDA config: the same Qwen3-style model
(QK-norm, RoPE, GQA, SwiGLU, tied embeddings), batch and stochastic KV routing (share_prob,
uniform source, K/V computed only for layers that are read), bf16 autocast with f32 master
weights, fused AdamW, flash attention through F.scaled_dot_product_attention. Modes: eager, and
compile (torch.compile of each layer's two blocks: the routing decides per step which K/V tensors
a layer gets, so the whole model is not one static graph when share_prob > 0; with share_prob 0
the full model is compiled). Prints tokens/s and MFU of the median step.

    /usr/bin/python3 bench/peer_gpu_train_step.py --mode compile --share-prob 0.5
"""
import argparse
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


def attention(q, k, v):
    if hasattr(F, "scaled_dot_product_attention"):  # flash attention on the GPU (torch >= 2.0)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    t = q.shape[-2]  # old torch (the CPU smoke run): plain causal softmax attention
    mask = torch.full((t, t), float("-inf"), device=q.device, dtype=q.dtype).triu(1)
    return ((q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5 + mask).softmax(-1) @ v


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
        a = attention(q, k, v).transpose(1, 2).reshape(b, t, -1)
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["eager", "compile"], default="eager")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--share-prob", type=float, default=0.5)
    parser.add_argument("--vocab", type=int, default=50304)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--ffn", type=int, default=2048)
    parser.add_argument("--rope-theta", type=float, default=10000.0)
    parser.add_argument("--device", default="cuda", help="cuda; cpu only for a smoke run of this script")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H100 SXM: 989)")
    args = parser.parse_args()
    torch.manual_seed(0)
    random.seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    c = dict(vocab=args.vocab, hidden=args.hidden, layers=args.layers, heads=args.heads, kv_heads=args.kv_heads,
             head_dim=args.head_dim, ffn=args.ffn)
    model = Model(c).to(dev)
    if args.mode == "compile":
        if args.share_prob == 0:
            model.forward = torch.compile(model.forward)  # one static graph: every plan is the identity
        else:
            model.compile_blocks()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), eps=1e-8, **({"fused": True} if cuda else {}))
    stream = torch.randint(0, c["vocab"], (args.batch, args.seq + 1), device=dev)
    inputs, targets = stream[:, :-1], stream[:, 1:]
    d = c["head_dim"]
    inv = args.rope_theta ** (-torch.arange(0, d, 2, dtype=torch.float32, device=dev) / d)
    ang = torch.arange(args.seq, dtype=torch.float32, device=dev)[:, None] * inv[None]
    cos = torch.cat([ang.cos()] * 2, -1).to(torch.bfloat16)
    sin = torch.cat([ang.sin()] * 2, -1).to(torch.bfloat16)

    def plan():
        out = [0]
        for layer in range(1, c["layers"]):
            out.append(random.randrange(layer) if random.random() < args.share_prob else layer)
        return out

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss = model(inputs, targets, plan(), cos, sin)
        loss.backward()
        opt.step()
        return loss.item()  # synchronises, like kvroute's loss read-back

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - start)
    ms = statistics.median(times) * 1e3
    params = sum(p.numel() for p in model.parameters())
    tok_s = args.batch * args.seq / (ms * 1e-3)
    # The same FLOP count kvroute reports: 6 N + 12 L H D T per token.
    flops_token = 6 * params + 12 * c["layers"] * c["heads"] * c["head_dim"] * args.seq
    mfu = tok_s * flops_token / (args.peak_tflops * 1e12)
    print(f"torch {torch.__version__} {args.mode} train step: params={params} B={args.batch} T={args.seq} "
          f"share_prob={args.share_prob:.2f} bf16  {ms:.1f} ms/step  {tok_s:.0f} tok/s  MFU {100 * mfu:.1f}%  "
          f"peak {torch.cuda.max_memory_allocated() / 2**30 if cuda else 0:.1f} GiB  (loss {loss:.3f})")


if __name__ == "__main__":
    main()
