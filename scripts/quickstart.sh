#!/usr/bin/env bash
# Quickstart: install dependencies, build, fetch the corpus, train a tokenizer, prepare shards,
# then run the op and training-step benchmarks (next to PyTorch when python3-torch is installed).
# (Training runs and the retention sweep join this script as those parts land.)
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${KVROUTE_THREADS:-2}
scripts/setup.sh
scripts/build.sh
scripts/fetch_data.sh
build/kvroute tokenizer train --vocab 8192 --input data/raw/corpus --out data/prepared/tokenizer-8k --threads "$threads"
build/kvroute prepare --input data/raw/corpus --tokenizer data/prepared/tokenizer-8k --out data/prepared/quickstart \
  --threads "$threads"
build/bench/kvroute_bench_loader --data data/prepared/quickstart --batches 500
build/bench/kvroute_bench_ops --threads "$threads"
if /usr/bin/python3 -c "import torch" 2>/dev/null; then
  bench/train_step_vs_torch.sh "$threads" 10
else
  build/bench/kvroute_bench_train_step --threads "$threads"
  echo "quickstart: python3-torch not installed; skipping the PyTorch peers (KVROUTE_EXTRA_PACKAGES=python3-torch scripts/setup.sh)"
fi
