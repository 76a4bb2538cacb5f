#!/usr/bin/env bash
# The whole test suite, as CI runs it: install dependencies, build (with the CUDA backend when nvcc
# is present: it must compile even where no GPU runs it), run every test (unit tests, the bad-input
# harness, the fault tests); then rebuild the CPU code with AddressSanitizer +
# UndefinedBehaviorSanitizer and run the tests again; then a short libFuzzer run on the parsers.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/fetch_data.sh --tokenizer-only  # GPT-2's files, for the tokenizer parity test
jobs=$(nproc)

scripts/build.sh
ctest --test-dir build -j "$jobs" --output-on-failure

# -O1 -g1 (line tables): what ASan recommends, and far quicker to compile than -O2 -g; no benchmarks.
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
  -DKVROUTE_CUDA=OFF -DKVROUTE_SANITIZE=ON -DKVROUTE_BENCH=OFF
cmake --build build-asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --test-dir build-asan -j "$jobs" --output-on-failure
scripts/fuzz.sh 5  # libFuzzer on the file parsers (fuzz/), a 5 s smoke run per target; skips without Clang
echo "kvroute: all tests passed (release and sanitizer builds, fuzz smoke run)"
