#!/usr/bin/env bash
# Quickstart: install dependencies, build, and run the op benchmarks at the quickstart model's
# shapes, next to the PyTorch peer when Debian's python3-torch is installed.
# (Training and the retention sweep join this script as those parts land.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
threads=${KVROUTE_THREADS:-2}
build/bench/kvroute_bench_ops --threads "$threads"
if /usr/bin/python3 -c "import torch" 2>/dev/null; then
  /usr/bin/python3 bench/peer_ops.py --threads "$threads"
else
  echo "quickstart: python3-torch not installed; skipping the PyTorch peer (KVROUTE_EXTRA_PACKAGES=python3-torch scripts/setup.sh)"
fi
