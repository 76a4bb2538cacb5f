#!/usr/bin/python3
"""PyTorch (CPU) peer of bench_ops.cpp: the same GEMMs, attention fwd+bwd and cross-entropy
fwd+bwd at the quickstart model's shapes, same threads, median of --reps runs.

Run with Debian's interpreter, which has python3-torch:  /usr/bin/python3 bench/peer_ops.py --threads 2
"""
import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F


def median_ms(fn, reps, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def bench_gemm(reps, dtype=torch.float32):
    n_tok = 8 * 256
    shapes = [("q/o proj fwd", n_tok, 256, 256, False, True), ("kv proj fwd", n_tok, 128, 256, False, True),
              ("gate/up fwd", n_tok, 768, 256, False, True), ("down fwd", n_tok, 256, 768, False, True),
              ("lm head fwd", n_tok, 8192, 256, False, True), ("lm head dx", n_tok, 256, 8192, False, False),
              ("lm head dW", 8192, 256, n_tok, True, False), ("gate/up dW", 768, 256, n_tok, True, False),
              ("down dx", n_tok, 768, 256, False, False)]
    print(f"{'gemm':14s} {'m x n x k':22s} {'torch ms':>10s} {'GFLOP/s':>10s}  ({str(dtype).replace('torch.', '')} operands)")
    for what, m, n, k, ta, tb in shapes:
        a = (torch.rand(k, m) if ta else torch.rand(m, k)).to(dtype)
        b = (torch.rand(n, k) if tb else torch.rand(k, n)).to(dtype)
        out = torch.empty(m, n, dtype=dtype)
        aa = a.t() if ta else a
        bb = b.t() if tb else b
        ms = median_ms(lambda: torch.matmul(aa, bb, out=out), reps)
        print(f"{what:14s} {f'{m}x{n}x{k} ' + ('T' if ta else 'N') + ('T' if tb else 'N'):22s} {ms:10.3f} "
              f"{2 * m * n * k / (ms * 1e-3) / 1e9:10.1f}")
    print()


def bench_attention(reps):
    B, T, Hq, Hkv, D = 8, 256, 8, 4, 32
    q = torch.rand(B, T, Hq, D, requires_grad=True)
    k = torch.rand(B, T, Hkv, D, requires_grad=True)
    v = torch.rand(B, T, Hkv, D, requires_grad=True)
    dout = torch.rand(B, T, Hq, D)
    mask = torch.full((T, T), float("-inf")).triu(1)

    def forward():
        # The eager attention of Hugging Face Qwen3 (torch 1.13 has no fused SDPA): repeat K/V per
        # group, materialise the scores, mask, softmax.
        qh = q.transpose(1, 2)
        kh = k.transpose(1, 2).repeat_interleave(Hq // Hkv, dim=1)
        vh = v.transpose(1, 2).repeat_interleave(Hq // Hkv, dim=1)
        scores = qh @ kh.transpose(-1, -2) / math.sqrt(D) + mask
        return (scores.softmax(-1) @ vh).transpose(1, 2)

    fwd = median_ms(lambda: forward(), reps)
    both = median_ms(lambda: forward().backward(dout), reps)
    print(f"attention  B={B} T={T} Hq={Hq} Hkv={Hkv} D={D}  fwd {fwd:.3f} ms  fwd+bwd {both:.3f} ms\n")


def bench_cross_entropy(reps):
    N, V = 8 * 256, 8192
    logits = torch.rand(N, V, requires_grad=True)
    targets = torch.randint(0, V, (N,))
    both = median_ms(lambda: F.cross_entropy(logits, targets).backward(), reps)
    with torch.no_grad():
        loss_only = median_ms(lambda: F.cross_entropy(logits, targets), reps)
    print(f"cross_entropy  N={N} V={V}  loss+dlogits {both:.3f} ms  loss only {loss_only:.3f} ms\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--only", choices=["gemm", "gemm_bf16", "attention", "cross_entropy", "all"], default="all")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__} op benchmarks: threads={args.threads} reps={args.reps} (median)\n")
    if args.only in ("gemm", "all"):
        bench_gemm(args.reps)
    if args.only in ("gemm_bf16", "all"):
        bench_gemm(args.reps, torch.bfloat16)  # what autocast runs: bf16 operands and output
    if args.only in ("attention", "all"):
        bench_attention(args.reps)
    if args.only in ("cross_entropy", "all"):
        bench_cross_entropy(args.reps)


if __name__ == "__main__":
    main()
