#!/usr/bin/env bash
# kvroute vs PyTorch (CPU) on the same quickstart model, batch, threads and routing, in one run.
# PyTorch runs twice: as is, and with OMP_WAIT_POLICY=PASSIVE (Debian's torch mixes its OpenMP
# pool with OpenBLAS's pthread pool; spinning OpenMP threads starve OpenBLAS's on few cores). The
# ratio is taken against PyTorch's better run.
# Usage: bench/train_step_vs_torch.sh [THREADS] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
steps=${2:-10}
tps() { sed -E 's/.* ([0-9]+) tok\/s.*/\1/' <<<"$1"; }
ours=$(build/bench/kvroute_bench_train_step --threads "$threads" --steps "$steps")
peer=$(/usr/bin/python3 bench/peer_train_step.py --threads "$threads" --steps "$steps")
peer_passive=$(OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/peer_train_step.py --threads "$threads" --steps "$steps")
echo "$ours"
echo "$peer"
echo "$peer_passive  [OMP_WAIT_POLICY=PASSIVE]"
awk -v a="$(tps "$ours")" -v b="$(tps "$peer")" -v c="$(tps "$peer_passive")" \
  'BEGIN { best = b > c ? b : c; printf "kvroute / best torch tokens/s: %.2fx (target >= 1.5x)\n", a / best }'
