#!/usr/bin/env bash
# Hugging Face round trip on small random models in Hugging Face layout (the reference script
# writes them; Debian's python3-torch): import a Llama-shaped and a Qwen3-shaped model, fine-tune
# each for a few steps with R-CLA, evaluate at 100/50/25% KV retention, export back to Hugging
# Face layout, and evaluate the export (same loss as the checkpoint at full retention).
# A few minutes on 2 cores; everything goes under runs/hf-demo/ and is replaced on each run.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${KVROUTE_THREADS:-2}
KVROUTE_EXTRA_PACKAGES="python3-torch" scripts/setup.sh
scripts/build.sh
scripts/fetch_data.sh
if [[ ! -f data/prepared/tokenizer-8k/vocab.bpe ]]; then
  build/kvroute tokenizer train --vocab 8192 --input data/raw/corpus --out data/prepared/tokenizer-8k --threads "$threads" --overwrite
fi
if [[ ! -f data/prepared/quickstart/data.json ]]; then
  build/kvroute prepare --input data/raw/corpus --tokenizer data/prepared/tokenizer-8k --out data/prepared/quickstart --threads "$threads"
fi
demo=runs/hf-demo
rm -rf "$demo" runs/hf-finetune-llama runs/hf-finetune-qwen3
mkdir -p "$demo"
M=tests/reference/make_hf_models.py
# Llama 3 shape (no QK-norm, llama3 RoPE scaling, untied head, bf16 in 2 shards, transformers 4.x config).
/usr/bin/python3 $M --out $demo/llama-base --arch llama --style 4 --dtype bf16 --shards 2 --vocab 8192 --hidden 128 \
  --layers 8 --heads 4 --kv-heads 2 --head-dim 32 --intermediate 384 --tie 0 --seed 11 --rope-original-max-position 64
# Qwen3 shape (QK-norm, tied head, f16, transformers 5.x config).
/usr/bin/python3 $M --out $demo/qwen3-base --arch qwen3 --style 5 --dtype f16 --vocab 8192 --hidden 128 \
  --layers 8 --heads 4 --kv-heads 2 --head-dim 32 --intermediate 384 --tie 1 --seed 12

for arch in llama qwen3; do
  echo "== $arch: the imported model before fine-tuning"
  build/kvroute eval --checkpoint $demo/$arch-base --data data/prepared/quickstart --retention 1,0.5,0.25 \
    --seq-len 128 --batches 8 --out $demo/$arch-base-eval
  echo "== $arch: fine-tune with R-CLA (share_prob 0.5)"
  build/kvroute train configs/hf-finetune.yaml model.init_from=$demo/$arch-base train.name=hf-finetune-$arch \
    train.threads="$threads"
  ckpt=$(ls -d runs/hf-finetune-$arch/checkpoints/step_* | tail -1)
  build/kvroute eval --checkpoint "$ckpt" --retention 1,0.5,0.25 --batches 8
  echo "== $arch: export to Hugging Face layout and evaluate the export"
  build/kvroute export "$ckpt" --out $demo/$arch-exported --dtype f32 --shard-size 2MB
  build/kvroute eval --checkpoint $demo/$arch-exported --data data/prepared/quickstart --retention 1 --seq-len 128 \
    --batches 8 --out $demo/$arch-exported-eval
done
echo
echo "hf_demo: imported, fine-tuned, evaluated and exported a Llama-shaped and a Qwen3-shaped model (runs/hf-demo/)"
