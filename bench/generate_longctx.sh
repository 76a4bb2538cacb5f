#!/usr/bin/env bash
# The cache-dominated generation benchmark (docs/benchmarks.md): configs/bench-longctx.yaml (8
# layers, 4.5K context, random weights), prompts of 1K and 4K tokens, batch 1 and 4, retention
# 1 / 0.5 / 0.25 (8 / 4 / 2 kept layers), interleaved repeats; then the memory-budget table (the
# largest batch that runs within a budget at a 2K context). Writes CSVs and a plot to OUT
# (default docs/figures). Run it on a quiet machine: about 6 minutes on 2 cores.
#   bench/generate_longctx.sh [BUILD_DIR] [OUT] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${2:-docs/figures}
threads=${3:-2}
mkdir -p "$out"
"$build/kvroute" bench generate --config configs/bench-longctx.yaml --prompt-lengths 1024,4096 --batch-sizes 1,4 \
  --retention 1,0.5,0.25 --new-tokens 32 --repeats 3 --threads "$threads" --csv "$out/generate_longctx.csv"
"$build/kvroute" bench generate --config configs/bench-longctx.yaml --memory-budget 256MB --context 2048 \
  --new-tokens 4 --retention 1,0.5,0.25 --threads "$threads" --csv "$out/generate_budget.csv"
command -v gnuplot >/dev/null || { echo "generate_longctx: gnuplot not found, no plot"; exit 0; }
# Decode tokens/s (left) and KV-cache MB (right) against retention, one line per (prompt, batch).
gnuplot <<GP
set terminal pngcairo size 1100,420 font ",10"
set output "$out/generate_longctx.png"
set datafile separator ","
set multiplot layout 1,2
set xlabel "KV-cache retention"
set xrange [0.2:1.05]
set key top left
set grid
set title "decode tokens/s (median of 3, bars min-max)"
plot for [cfg in "1024,1 1024,4 4096,1 4096,4"] \
  "< awk -F, -v c='".cfg."' 'NR>1 && (\$4\",\"\$5)==c' $out/generate_longctx.csv" \
  using 1:11:12:13 with yerrorlines title "prompt ".cfg." (prompt,batch)"
set title "KV cache (MB)"
set key top left
plot for [cfg in "1024,1 1024,4 4096,1 4096,4"] \
  "< awk -F, -v c='".cfg."' 'NR>1 && (\$4\",\"\$5)==c' $out/generate_longctx.csv" \
  using 1:(\$14/1e6) with linespoints title cfg
unset multiplot
GP
echo "generate_longctx: $out/generate_longctx.csv, $out/generate_budget.csv, $out/generate_longctx.png"
