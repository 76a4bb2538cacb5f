#!/usr/bin/python3
"""PyTorch (CPU) peer of bench_train_step.cpp and `kvroute bench train`: the same Qwen3-style model
(bench/peer_model.py; defaults: 6 layers, hidden 256, 8 heads / 4 KV heads, head_dim 32,
intermediate 768, vocab 8192), the same batch, threads and stochastic KV routing, forward +
backward + torch.optim.AdamW. Prints tokens/s (median step). --autocast bf16 runs the forward under
torch.autocast("cpu", dtype=torch.bfloat16), PyTorch's best configuration on a CPU with bf16
instructions (fp32 master weights and optimizer, bf16 GEMMs).

    /usr/bin/python3 bench/peer_train_step.py --threads 2 [--autocast bf16]
"""
import argparse
import contextlib
import random

import torch

from peer_model import Model, median_step_ms, optimizer, random_plan, rope_tables


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
    parser.add_argument("--rope-theta", type=float, default=1e6)
    parser.add_argument("--autocast", choices=["none", "bf16"], default="none")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    random.seed(0)
    c = dict(vocab=args.vocab, hidden=args.hidden, layers=args.layers, heads=args.heads, kv_heads=args.kv_heads,
             head_dim=args.head_dim, ffn=args.ffn)
    model = Model(c)
    opt = optimizer(model)
    stream = torch.randint(0, c["vocab"], (args.batch, args.seq + 1))
    inputs, targets = stream[:, :-1], stream[:, 1:]
    cos, sin = rope_tables(args.seq, args.head_dim, args.rope_theta)

    def autocast():
        if args.autocast == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = model(inputs, targets, random_plan(c["layers"], args.share_prob), cos, sin)
        loss.backward()
        opt.step()
        return loss.item()

    ms, loss = median_step_ms(step, 2, args.steps)
    params = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__} train step: params={params} B={args.batch} T={args.seq} "
          f"share_prob={args.share_prob:.2f} threads={args.threads} autocast={args.autocast}  {ms:.1f} ms/step  "
          f"{args.batch * args.seq / (ms * 1e-3):.0f} tok/s  (loss {loss:.3f})")


if __name__ == "__main__":
    main()
