#!/usr/bin/env bash
# Configures and builds kvroute into build/ (Release; CUDA backend when nvcc is found).
# Extra arguments go to CMake, e.g. scripts/build.sh -DKVROUTE_CUDA=OFF
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build -j "$jobs"
