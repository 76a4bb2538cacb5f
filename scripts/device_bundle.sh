#!/usr/bin/env bash
# Builds kvroute for a GPU machine that has the CUDA 13 toolkit but none of kvroute's Debian
# libraries (and no network), and gathers what it needs to run there into build-device/bundle:
# the stripped binaries (kvroute, the CUDA tests, the benchmarks) and the shared libraries they
# load that are not the C/C++ runtime or CUDA's own. Portable code (no -march=native): the GPU
# machine's CPU may lack this one's instructions.
#   scripts/device_bundle.sh            # then carry build-device/bundle to the GPU machine
#   there: build-device/bundle/run.sh build-device/bundle/bin/cuda_tests
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-device -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVROUTE_CUDA=ON -DKVROUTE_NATIVE=OFF \
  -DKVROUTE_CUDA_ARCHITECTURES=90
cmake --build build-device -j "$(nproc)" --target kvroute cuda_tests kernels_tests kvroute_bench_ops
bundle=build-device/bundle
rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/lib"
for b in build-device/kvroute build-device/tests/cuda_tests build-device/tests/kernels_tests \
         build-device/bench/kvroute_bench_ops; do
  strip -o "$bundle/bin/$(basename "$b")" "$b"
done
# Every resolved library except glibc/libstdc++/libgcc (the GPU machine's are newer) and CUDA's.
ldd "$bundle"/bin/* | awk '$3 ~ /^\// {print $3}' | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|libstdc++.so*|libgcc_s.so*) ;;
    libcudart*|libcublas*|libnccl*|libcudnn*) ;;
    *) cp -L "$lib" "$bundle/lib/" ;;
  esac
done
strip --strip-unneeded "$bundle"/lib/*.so* 2>/dev/null || true
cat > "$bundle/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs a bundled binary with the bundled libraries and the machine's CUDA 13 libraries (toolkit
# or PyTorch's pip wheels, whichever has them).
here=$(cd "$(dirname "$0")" && pwd)
paths="$here/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib"
for py in python3 /opt/torch/.venv/bin/python3; do
  site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null) || continue
  for d in "$site"/nvidia/*/lib "$site"/nvidia/cu13/lib; do [ -d "$d" ] && paths="$paths:$d"; done
done
export LD_LIBRARY_PATH="$paths${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$@"
RUN
chmod +x "$bundle/run.sh"
du -sh "$bundle"
