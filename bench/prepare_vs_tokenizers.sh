#!/usr/bin/env bash
# The streaming prepare's throughput and peak memory, next to Hugging Face's Rust `tokenizers`
# (npm @anush008/tokenizers) and js-tiktoken encoding the same text with the same vocabulary
# (GPT-2's, data/raw/gpt2) on the same machine. Generates JSONL corpora of the given sizes from
# the Debian documentation text (bench/gen_corpus.py; scripts/fetch_data.sh --docs first), then:
# kvroute prepare at 1 and 2 threads on the PEER_MB corpus (MB/s per core), the peers on one
# thread on the same corpus, and kvroute's peak RSS (GNU time) at every size in SIZES_MB, which
# must stay flat. Corpora, shards and the peers' npm packages go to WORKDIR, outside the tree.
# Usage: bench/prepare_vs_tokenizers.sh [WORKDIR] [SIZES_MB] [PEER_MB] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/kvroute-prepare-bench}
sizes=${2:-"1000 5000"}
peer_mb=${3:-200}
threads=${4:-2}
kvroute=build/kvroute
mkdir -p "$work"
if [[ ! -d "$work/node_modules/@anush008/tokenizers" || ! -d "$work/node_modules/js-tiktoken" ]]; then
  (cd "$work" && echo '{"name": "prepare-bench", "private": true}' > package.json &&
   npm install --no-audit --no-fund @anush008/tokenizers@0.6.0 js-tiktoken@1.0.21 >/dev/null)
fi
python3 bench/gpt2_tokenizer_json.py data/raw/gpt2 "$work/gpt2-tokenizer.json"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores; $(date -u +%F)"
for mb in $peer_mb $sizes; do
  [[ -f "$work/corpus-$mb.jsonl" ]] || python3 bench/gen_corpus.py "$work/corpus-$mb.jsonl" "$mb"
done
prepare() {  # CORPUS THREADS: kvroute's summary line and its peak RSS
  rm -rf "$work/out"
  /usr/bin/time -f "peak RSS %M KB" "$kvroute" prepare --input "$1" --tokenizer data/raw/gpt2 --out "$work/out" \
    --threads "$2" 2>&1 | grep -E "^prepare:|peak RSS" | tr '\n' ' '
  echo
}
echo "--- throughput on corpus-$peer_mb.jsonl (text MB/s, reading and writing included)"
for t in 1 $threads; do echo "kvroute prepare, $t thread(s): $(prepare "$work/corpus-$peer_mb.jsonl" "$t")"; done
export KVROUTE_PEER_MODULES="$work/node_modules"
RAYON_NUM_THREADS=1 node bench/peer_tokenizers.mjs hf "$work/corpus-$peer_mb.jsonl" "$work/gpt2-tokenizer.json"
node bench/peer_tokenizers.mjs tiktoken "$work/corpus-$peer_mb.jsonl"
echo "--- peak memory by corpus size ($threads threads)"
for mb in $sizes; do echo "corpus-$mb.jsonl: $(prepare "$work/corpus-$mb.jsonl" "$threads")"; done
rm -rf "$work/out"
