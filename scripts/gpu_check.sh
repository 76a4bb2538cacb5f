#!/usr/bin/env bash
# Everything the CUDA backend needs checked on a GPU machine, in one go: the CUDA tests (both
# attention kernels), the op benchmark that picks the attention kernel, and the 124M-model
# training benchmark against PyTorch eager / torch.compile. Logs go to $OUT (or ./gpu-check).
#   scripts/gpu_check.sh build                  # a build made on the GPU machine
#   scripts/gpu_check.sh build-device/bundle    # the portable bundle of scripts/device_bundle.sh
set -uo pipefail
cd "$(dirname "$0")/.."
where=${1:-build}
out=${OUT:-gpu-check}
mkdir -p "$out"
if [ -x "$where/run.sh" ]; then  # a bundle: binaries in bin/, libraries through run.sh
  run=("$where/run.sh")
  kvroute=$where/bin/kvroute cuda_tests=$where/bin/cuda_tests bench_ops=$where/bin/kvroute_bench_ops
else
  run=()
  kvroute=$where/kvroute cuda_tests=$where/tests/cuda_tests bench_ops=$where/bench/kvroute_bench_ops
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  nproc
  date -u
} > "$out/machine.txt" 2>&1
"${run[@]}" "$cuda_tests" --gtest_output="xml:$out/cuda_tests.xml" > "$out/cuda_tests.log" 2>&1
echo "cuda tests: exit $? (log $out/cuda_tests.log)"
tail -n 30 "$out/cuda_tests.log"
"${run[@]}" "$bench_ops" --only gpu --reps 20 > "$out/bench_ops_gpu.log" 2>&1
echo "op benchmark: exit $?"
cat "$out/bench_ops_gpu.log"
# A bundled kvroute needs its libraries on the path for the whole benchmark script.
if [ ${#run[@]} -gt 0 ]; then
  "${run[@]}" bash bench/gpu_train_vs_torch.sh "$kvroute" 10 16 > "$out/train_vs_torch.log" 2>&1
else
  bash bench/gpu_train_vs_torch.sh "$kvroute" 10 16 > "$out/train_vs_torch.log" 2>&1
fi
echo "training benchmark: exit $?"
cat "$out/train_vs_torch.log"
