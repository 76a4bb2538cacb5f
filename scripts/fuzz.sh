#!/usr/bin/env bash
# Fuzzes the parsers of untrusted files (fuzz/: safetensors, token shards, tokenizer files, Hugging
# Face tokenizer.json, run configs) with libFuzzer + AddressSanitizer + UndefinedBehaviorSanitizer:
# builds the fuzz targets with Clang into build-fuzz/, then runs each for SECONDS (default 15) on a
# copy of its seed corpus (fuzz/corpus/<target>/). Fails if any target finds a crash, sanitizer
# report, uncaught exception other than kvroute::Error, hang (>10 s) or allocation over 2 GiB; the
# input is kept in fuzz/crashes/<target>/ (replay: build-fuzz/fuzz/fuzz_<target>
# fuzz/crashes/<target>/crash-...).
# Without Clang, libFuzzer or Clang's OpenMP it says so and exits 0: scripts/setup.sh installs them.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   TARGET: safetensors shard tokenizer tokenizer_json config
#        (default all)
# Environment: JOBS (build parallelism, default nproc), FUZZ_MAX_LEN (largest input, default per
# target), FUZZ_ARGS (more libFuzzer flags, e.g. "-jobs=2" or "-only_ascii=1").
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-15}
[[ $seconds =~ ^[0-9]+$ ]] || { echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2; exit 2; }
shift $(($# > 0 ? 1 : 0))
targets=("$@")
((${#targets[@]})) || targets=(safetensors shard tokenizer tokenizer_json config)
for i in "${!targets[@]}"; do
  targets[i]=${targets[i]#fuzz_}
  [[ -f fuzz/fuzz_${targets[i]}.cpp ]] || { echo "fuzz: no target '${targets[i]}' (fuzz/fuzz_*.cpp)" >&2; exit 2; }
done
# The largest input each target tries: room for its seeds and some growth, small enough to keep
# iterations fast (the tokenizer's seed is 2 KiB: 256 byte tokens).
declare -A max_len=([safetensors]=4096 [shard]=4096 [tokenizer]=8192 [tokenizer_json]=8192 [config]=4096)

# --- Toolchain: skip (not fail) where Clang or its libFuzzer / OpenMP runtime is missing -----------
if ! command -v clang >/dev/null 2>&1 || ! command -v clang++ >/dev/null 2>&1; then
  echo "fuzz: clang/clang++ not found: skipping the fuzzers (scripts/setup.sh installs clang)"
  exit 0
fi
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf '%s\n' '#include <cstddef>' '#include <cstdint>' '#include <omp.h>' \
  'extern "C" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return omp_get_max_threads() > 0 ? 0 : 1; }' \
  >"$probe/probe.cpp"
if ! clang++ -fsanitize=fuzzer,address,undefined -fopenmp "$probe/probe.cpp" -o "$probe/probe" 2>"$probe/log"; then
  echo "fuzz: clang++ cannot link a libFuzzer target with ASan/UBSan and OpenMP: skipping the fuzzers"
  echo "fuzz: (scripts/setup.sh installs libclang-rt-dev and libomp-dev); clang++ said:"
  head -n 5 "$probe/log" | sed 's/^/  /'
  exit 0
fi

# --- Build: only the fuzz targets and the libraries they link -------------------------------------
jobs=${JOBS:-$(nproc)}
start=$SECONDS
# Build type "Fuzz": -O1 (fast to compile, fast enough to fuzz) and no NDEBUG, so the assertions in
# headers (nlohmann::json's among them) stay on.
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja --log-level=WARNING -DKVROUTE_FUZZ=ON -DKVROUTE_CUDA=OFF \
  -DCMAKE_BUILD_TYPE=Fuzz -DCMAKE_C_FLAGS_FUZZ=-O1 -DCMAKE_CXX_FLAGS_FUZZ=-O1
cmake --build build-fuzz -j "$jobs" --target "${targets[@]/#/fuzz_}"
echo "fuzz: built ${targets[*]} in $((SECONDS - start)) s"

# --- Run ------------------------------------------------------------------------------------------
symbolizer=$(clang++ -print-prog-name=llvm-symbolizer)
if [[ -x $symbolizer ]]; then export ASAN_SYMBOLIZER_PATH=$symbolizer; fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
read -r -a extra <<<"${FUZZ_ARGS:-}"
mkdir -p build-fuzz/logs
failed=()
for t in "${targets[@]}"; do
  corpus=build-fuzz/corpus/$t
  rm -rf "$corpus"
  mkdir -p "$corpus" "fuzz/crashes/$t"
  cp fuzz/corpus/"$t"/* "$corpus"/
  log=build-fuzz/logs/$t.log
  args=(-max_total_time="$seconds" -max_len="${FUZZ_MAX_LEN:-${max_len[$t]}}" -timeout=10 -rss_limit_mb=2048
        -artifact_prefix="fuzz/crashes/$t/" -print_final_stats=1 "${extra[@]}")
  if [[ -f fuzz/dict/$t.dict ]]; then args+=(-dict="fuzz/dict/$t.dict"); fi
  if "build-fuzz/fuzz/fuzz_$t" "${args[@]}" "$corpus" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 || true)
    echo "fuzz: $t: ok, ${runs:-?} inputs in ${seconds} s (${cov:-cov: ?}, corpus $(ls "$corpus" | wc -l) files)"
  else
    failed+=("$t")
    echo "fuzz: $t: FAILED (full log: $log); input kept in fuzz/crashes/$t/:"
    grep -E -m 1 -A 40 '^==[0-9]+==|runtime error|terminate called|ERROR: libFuzzer|fuzz_[a-z]+: ' "$log" ||
      tail -n 40 "$log"
    ls -t "fuzz/crashes/$t" | head -n 1 | sed "s|^|  fuzz/crashes/$t/|"
  fi
done
if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz: no crash in ${targets[*]} (${seconds} s each)"
