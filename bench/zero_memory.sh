#!/bin/bash
# ZeRO on the pretrain-cpu model: step time and per-rank state under mpirun.
cd "$(dirname "$0")/.."
for n in 1 2 4; do
  for z in 0 1 2; do
    out=$(mpirun --allow-run-as-root --oversubscribe -np $n build/kvroute bench train configs/pretrain-cpu.yaml train.batch_size=$((16 / n)) dist.zero=$z dist.backend=auto --no-peer --threads 1 --steps 6 2>&1)
    echo "np=$n zero=$z: $(echo "$out" | grep -E 'ms/step' | head -1 | grep -oE '[0-9.]+ ms/step') | $(echo "$out" | grep 'tensor memory per rank' | head -1 | cut -c1-90)"
  done
done
