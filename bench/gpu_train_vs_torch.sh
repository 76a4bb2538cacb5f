#!/usr/bin/env bash
# The GPU benchmark of the CUDA backend, in one run: a GPT-2-124M-sized Qwen3 model (12 layers,
# hidden 768, 12 heads / 4 KV heads, intermediate 2048, vocab 50304, T=1024, bf16) trained by
# kvroute and by the same model in PyTorch (eager and torch.compile, bench/peer_gpu_train_step.py),
# at share_prob 0 and 0.5. Tokens are random (a synthetic shard): throughput does not depend on
# them. Prints tokens/s, MFU (H100 SXM bf16 dense peak 989 TFLOP/s) and the ratios.
# Usage: bench/gpu_train_vs_torch.sh [KVROUTE_BINARY] [STEPS] [BATCH]
set -euo pipefail
cd "$(dirname "$0")/.."
kvroute=${1:-build/kvroute}
steps=${2:-10}
batch=${3:-16}
seq=1024
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
# llm.c shard: 256 x int32 header (magic 20240520, version 1, count), then uint16 tokens.
python3 - "$data" <<'PY'
import array, random, sys
n = 4_000_000
random.seed(0)
header = array.array("i", [0] * 256)
header[0], header[1], header[2] = 20240520, 1, n
tokens = array.array("H", (random.randrange(50257) for _ in range(n)))
for split in ("train", "val"):
    with open(f"{sys.argv[1]}/{split}_000000.bin", "wb") as f:
        header.tofile(f)
        tokens.tofile(f)
PY
export KVROUTE_SOURCE_DIR=$PWD  # where the peer script is, wherever the binary was built
# The peer runs under the python3 on PATH that has torch (the GPU machine's), else Debian's.
if [ -z "${KVROUTE_PYTHON:-}" ] && python3 -c 'import torch' 2>/dev/null; then
  export KVROUTE_PYTHON=$(command -v python3)
fi
for p in 0 0.5; do
  "$kvroute" bench train configs/gpt2-124m-like.yaml "data.dir=$data" "router.share_prob=$p" \
    "train.batch_size=$batch" "train.seq_len=$seq" "train.global_batch_tokens=$((batch * seq))" --steps "$steps"
done
