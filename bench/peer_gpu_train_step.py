#!/usr/bin/python3
"""PyTorch (GPU) peer of `kvroute bench train` on a CUDA config: the same Qwen3-style model
(bench/peer_model.py), batch and stochastic KV routing, bf16 autocast over f32 weights, fused
AdamW, flash attention through F.scaled_dot_product_attention. Modes: eager, and compile
(torch.compile of each layer's K/V and attention+MLP blocks, since the routing changes which K/V
a layer reads every step when share_prob > 0; the whole model at share_prob 0). Prints tokens/s
and MFU of the median step.

    python3 bench/peer_gpu_train_step.py --mode compile --share-prob 0.5
"""
import argparse
import random

import torch

from peer_model import Model, median_step_ms, optimizer, random_plan, rope_tables


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
    opt = optimizer(model, fused=cuda)
    stream = torch.randint(0, c["vocab"], (args.batch, args.seq + 1), device=dev)
    inputs, targets = stream[:, :-1], stream[:, 1:]
    cos, sin = rope_tables(args.seq, args.head_dim, args.rope_theta, dev, torch.bfloat16)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss = model(inputs, targets, random_plan(c["layers"], args.share_prob), cos, sin)
        loss.backward()
        opt.step()
        return loss.item()  # synchronises, like kvroute's loss read-back

    ms, loss = median_step_ms(step, args.warmup, args.steps)
    params = sum(p.numel() for p in model.parameters())
    tok_s = args.batch * args.seq / (ms * 1e-3)
    # The FLOP count kvroute reports: 6 N + 12 L H D T per token.
    flops_token = 6 * params + 12 * c["layers"] * c["heads"] * c["head_dim"] * args.seq
    mfu = tok_s * flops_token / (args.peak_tflops * 1e12)
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    print(f"torch {torch.__version__} {args.mode} train step: params={params} B={args.batch} T={args.seq} "
          f"share_prob={args.share_prob:.2f} bf16  {ms:.1f} ms/step  {tok_s:.0f} tok/s  MFU {100 * mfu:.1f}%  "
          f"peak {peak_gib:.1f} GiB  (loss {loss:.3f})")


if __name__ == "__main__":
    main()
