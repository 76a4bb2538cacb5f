#!/usr/bin/env bash
# CPU training throughput in four configurations, alternating in one run so that every round sees
# the same machine state: kvroute fp32 (oneDNN with AVX-512, else OpenBLAS), kvroute bf16 (bf16 GEMM operands, f32
# accumulation, oneDNN), PyTorch fp32 and PyTorch with torch.autocast("cpu", dtype=torch.bfloat16)
# (each PyTorch configuration as is and with OMP_WAIT_POLICY=PASSIVE; the better counts). Same
# model, batch, threads and routing. Prints every run, then the median tokens/s of each
# configuration over the rounds and the ratios, then kvroute's per-op profile of the step in fp32
# and bf16 (`kvroute bench train --profile`). CONFIGS: one config or several, comma-separated
# (default: the quickstart and the pre-training study's model).
# Usage: bench/cpu_bf16_vs_torch.sh [CONFIGS] [THREADS] [ROUNDS] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
configs=${1:-configs/quickstart.yaml,configs/pretrain-cpu.yaml}
threads=${2:-2}
rounds=${3:-3}
steps=${4:-8}
kvroute=build/kvroute
python=${KVROUTE_PYTHON:-/usr/bin/python3}

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); flags:" \
  "$(grep -m1 '^flags' /proc/cpuinfo | grep -o -w -E 'avx2|avx512f|avx512_bf16|amx_bf16' | tr '\n' ' ')"
compare() {
  local config=$1
  echo "config: $config, threads $threads, $rounds rounds x $steps timed steps"

  # The peer takes the model's shape from the config, as `kvroute bench train` does.
  dims=$($kvroute bench train "$config" --print-peer-args || true)
  if [[ -z "$dims" ]]; then
    echo "cpu_bf16_vs_torch: could not read the model shape of $config" >&2
    exit 1
  fi

  tok_s() { sed -E 's/.* ([0-9]+) tok\/s.*/\1/' <<<"$1"; }
  declare -A runs
  record() { runs[$1]="${runs[$1]:-} $2"; }
  for ((r = 1; r <= rounds; r++)); do
    echo "--- round $r"
    for p in fp32 bf16; do
      line=$($kvroute bench train "$config" --no-peer --steps "$steps" --threads "$threads" train.precision=$p | grep " tok/s" | tail -n 1)
      echo "$line"
      record "kvroute_$p" "$(tok_s "$line")"
    done
    for a in none bf16; do
      best=0
      for env in "" "OMP_WAIT_POLICY=PASSIVE"; do
        line=$(env $env "$python" bench/peer_train_step.py --threads "$threads" --steps "$steps" $dims --autocast $a | tail -n 1)
        echo "$line${env:+  [$env]}"
        t=$(tok_s "$line")
        ((t > best)) && best=$t
      done
      record "torch_$a" "$best"
    done
  done

  median() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
  k32=$(median "${runs[kvroute_fp32]}")
  k16=$(median "${runs[kvroute_bf16]}")
  t32=$(median "${runs[torch_none]}")
  t16=$(median "${runs[torch_bf16]}")
  echo "--- median tokens/s over $rounds rounds"
  printf "kvroute fp32 %s | kvroute bf16 %s | PyTorch fp32 %s | PyTorch bf16 autocast %s\n" "$k32" "$k16" "$t32" "$t16"
  awk -v k32="$k32" -v k16="$k16" -v t32="$t32" -v t16="$t16" 'BEGIN {
    printf "kvroute bf16 / PyTorch bf16 autocast: %.2fx (target >= 2.5x)\n", k16 / t16
    printf "kvroute bf16 / kvroute fp32:          %.2fx (target >= 3x on AMX)\n", k16 / k32
    printf "kvroute fp32 / PyTorch fp32:          %.2fx\n", k32 / t32
    printf "kvroute bf16 / best PyTorch:          %.2fx\n", k16 / (t16 > t32 ? t16 : t32)
  }'
  for p in fp32 bf16; do
    echo "--- per-op profile, $p"
    $kvroute bench train "$config" --no-peer --steps "$steps" --threads "$threads" train.precision=$p --profile |
      sed -n '/^per-op profile/,$p'
  done
}

IFS=, read -r -a config_list <<<"$configs"
for config in "${config_list[@]}"; do
  echo
  echo "=== $config"
  compare "$config"
done
