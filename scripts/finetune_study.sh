#!/usr/bin/env bash
# Fine-tuning study (experiments/finetune-quickstart.yaml) on a retrieval QA task made from the
# packaged corpus (scripts/make_qa_task.py). The starting point is a model that can do the task:
# the quickstart baseline (pretrained without routing) fine-tuned on it without routing (the
# "task-capable base", as the paper starts from models that can already read). From there, on the
# same examples for the same steps: no routing, R-CLA (p = 0.6), CLA@2 (converted from the dense
# model, K/V averaged into the leaders) and RD-CLA@2; each evaluated at 100/67/50/33% KV-cache
# retention: validation loss on the answer tokens, EM/F1/ROUGE-L of greedy answers on the test
# set. Writes experiments/finetune-quickstart/results.csv, report.md and plot.png.
#
# Needs the quickstart's tokenizer and corpus (scripts/quickstart.sh makes them) and build/kvroute.
# Re-running skips what is done (the pretrained model, the task, both starting models, trained
# runs, evaluations). Everything trains and evaluates in bf16 (train.precision: bf16 in
# experiments/finetune-quickstart/finetune.yaml; f32 with a notice on a CPU without bf16
# instructions). On 2 cores of a CPU with AVX512-BF16: the pretrained model ~8 min when it must be
# trained (the quickstart's is copied), the task-capable base ~7 min, the study itself ~8 min.
#   KVROUTE=path/to/kvroute  KVROUTE_THREADS=2  scripts/finetune_study.sh
set -euo pipefail
cd "$(dirname "$0")/.."
kv=${KVROUTE:-build/kvroute}
threads=${KVROUTE_THREADS:-2}
study_file=experiments/finetune-quickstart.yaml
study=experiments/finetune-quickstart
task=data/prepared/qa-task
tokenizer=data/prepared/tokenizer-8k
seed=1
retention=1,0.67,0.5,0.33
precision=bf16  # the evaluation's, as train.precision in $study/finetune.yaml
start=$(date +%s)
stamp() { echo "finetune_study: $* ($(($(date +%s) - start)) s)"; }

[[ -x $kv ]] || { echo "finetune_study: $kv is missing (scripts/build.sh)" >&2; exit 1; }
[[ -f $tokenizer/vocab.bpe && -d data/raw/corpus/sotu ]] ||
  { echo "finetune_study: $tokenizer or data/raw/corpus is missing (scripts/quickstart.sh makes them)" >&2; exit 1; }

# 1. The pretrained model: the quickstart baseline (configs/quickstart.yaml, no routing, 400 steps,
#    the settings of experiments/quickstart.yaml). Copied from the quickstart study when it holds the
#    checkpoint, trained otherwise (~8 min on 2 cores).
pre=$study/runs/pretrain-baseline
pre_ck=$pre/checkpoints/step_00000400
quick_ck=experiments/quickstart/runs/baseline/checkpoints/step_00000400
if [[ ! -f $pre_ck/model.safetensors ]]; then
  if [[ -f $quick_ck/model.safetensors ]]; then
    mkdir -p "$pre/checkpoints"
    cp -r "$quick_ck" "$pre/checkpoints/.step_00000400.tmp"
    mv "$pre/checkpoints/.step_00000400.tmp" "$pre_ck"
    stamp "pretrained model copied from $quick_ck"
  else
    resume=()
    if compgen -G "$pre/checkpoints/step_*" > /dev/null; then
      resume=(--resume auto)
    elif [[ -e $pre ]]; then
      rm -r "$pre"  # an attempt interrupted before its first checkpoint: nothing to keep
    fi
    "$kv" train configs/quickstart.yaml router.policy=none train.steps=400 train.checkpoint_interval=200 \
      eval.interval=0 train.name=pretrain-baseline train.run_dir="$pre" train.threads="$threads" "${resume[@]}"
    stamp "pretrained model trained"
  fi
fi

# 2. The task: train.jsonl / test.jsonl, and the training examples prepared for fine-tuning.
if [[ ! -f $task/test.jsonl ]]; then
  python3 scripts/make_qa_task.py --out "$task" --seed "$seed"
fi
if [[ ! -f $task/sft/data.json ]]; then
  "$kv" prepare --format sft --input "$task/train.jsonl" --tokenizer "$tokenizer" --out "$task/sft" \
    --val-fraction 0.01 --seed "$seed" --overwrite --threads "$threads"
fi
stamp "task ready"

# 3. The task-capable base: the pretrained model fine-tuned on the task without routing (3,000
#    steps of 8 examples, ~7 min on 2 cores in bf16, resumable). The paper fine-tunes models that
#    can already read; the 6.8M-parameter quickstart model learns to copy the asked value only
#    slowly (scripts/make_qa_task.py), so every model of the study starts from this one.
warm=$study/runs/task-warmup
if [[ ! -f $warm/checkpoints/step_00003000/model.safetensors ]]; then
  resume=()
  if compgen -G "$warm/checkpoints/step_*" > /dev/null; then
    resume=(--resume auto)
  elif [[ -e $warm ]]; then
    rm -r "$warm"  # interrupted before its first checkpoint: nothing to keep
  fi
  "$kv" train "$study/finetune.yaml" model.init_from="$pre_ck" router.policy=none train.name=task-warmup \
    train.run_dir="$warm" train.steps=3000 optim.lr=1e-3 optim.min_lr=1e-4 train.checkpoint_interval=500 \
    train.threads="$threads" "${resume[@]}"
  stamp "task-capable base trained"
fi

# 4. Fine-tuning and the validation loss at each retention (the sweep skips trained runs).
"$kv" sweep "$study_file" --threads "$threads"
stamp "sweep done"

# 5. EM / F1 / ROUGE-L of greedy answers to the test questions, generated with the shared cache.
runs=$(sed -n 's/^  - name: *//p' "$study_file")
for run in $runs; do
  dir=$study/runs/$run
  [[ -f $dir/task/eval.csv ]] && continue
  ck=$(ls -d "$dir"/checkpoints/step_* | sort | tail -n 1)
  "$kv" eval --checkpoint "$ck" --retention "$retention" --task "$task/test.jsonl" --task-seed "$seed" \
    --max-new-tokens 16 --batch 16 --batches 1 --out "$dir/task" --threads "$threads" --precision "$precision"
  stamp "$run evaluated on the test set"
done

# The starting point of every model (the task-capable base) at the same retention levels, its loss
# on the whole validation split like the sweep's.
if [[ ! -f $warm/task/eval.csv ]]; then
  "$kv" eval --checkpoint "$warm/checkpoints/step_00003000" --retention "$retention" --task "$task/test.jsonl" \
    --task-seed "$seed" --max-new-tokens 16 --batch 16 --batches 0 --out "$warm/task" --threads "$threads" \
    --precision "$precision"
  stamp "task-capable base evaluated"
fi

# 6. results.csv (loss from the sweep's full validation pass, task scores from eval --task; the
#    starting point as run "start"), report.md and plot.png (one line per model, a panel per metric).
TASK_FILE=$task/test.jsonl python3 - "$study" $runs <<'EOF'
import csv, json, os, sys
study, runs = sys.argv[1], sys.argv[2:]
rows = []
for run in ["start"] + runs:
    dir = f"{study}/runs/task-warmup" if run == "start" else f"{study}/runs/{run}"
    loss = {p["plan"]: p for p in json.load(open(f"{dir}/task/eval.json" if run == "start" else f"{dir}/eval.json"))}
    for t in csv.DictReader(open(f"{dir}/task/eval.csv")):
        p = loss[t["plan"]]
        assert p["kept"] == [int(x) for x in t["kept_layers"].split()], (run, t["plan"])
        rows.append({"run": run, "plan": t["plan"], "kept": len(p["kept"]), "num_layers": t["num_layers"],
                     "kv_fraction": f"{len(p['kept']) / int(t['num_layers']):.4f}", "val_loss": f"{p['val_loss']:.6f}",
                     "em": f"{float(t['em']):.4f}", "f1": f"{float(t['f1']):.4f}",
                     "rouge_l": f"{float(t['rouge_l']):.4f}", "task_examples": t["task_examples"]})
with open(f"{study}/results.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
plans = list(dict.fromkeys(r["plan"] for r in rows))
md = ["# Study: finetune-quickstart", "",
      "Study file `experiments/finetune-quickstart.yaml`, run by `scripts/finetune_study.sh`. Per model and "
      "KV-cache retention (kept layers of 6 in brackets): EM / F1 / ROUGE-L of greedy answers on the test set, "
      "validation loss on the answer tokens.", "",
      "| model | " + " | ".join(plans) + " |", "|---|" + "---|" * len(plans)]
label = {"start": "start (the task-capable base, before the 500 steps)"}
for run in ["start"] + runs:
    cells = [f"{r['em']} / {r['f1']} / {r['rouge_l']} / {float(r['val_loss']):.3f} ({r['kept']})"
             for r in rows if r["run"] == run]
    md.append(f"| {label.get(run, run)} | " + " | ".join(cells) + " |")
md += ["", "![metrics vs retention](plot.png)", ""]
# EM per asked attribute (the question's wording names it; scripts/make_qa_task.py), from answers.jsonl.
kinds = [("keeper", "Who is the keeper"), ("origin", "Where is the supplier"), ("rooms", "How many rooms"),
         ("hour", "At what hour"), ("colour", "What color")]
questions = [json.loads(l)["question"] for l in open(os.environ["TASK_FILE"]) if l.strip()]
kind_of = [next((k for k, prefix in kinds if q.startswith(prefix)), "other") for q in questions]
counts = {k: kind_of.count(k) for k, _ in kinds}
md += ["EM per asked attribute (" + ", ".join(f"{n} {k}" for k, n in counts.items()) + " questions):", "",
       "| model | retention | " + " | ".join(k for k, _ in kinds) + " |", "|---|---|" + "---|" * len(kinds)]
for run in ["start"] + runs:
    dir = f"{study}/runs/task-warmup" if run == "start" else f"{study}/runs/{run}"
    by_plan = {}
    for line in open(f"{dir}/task/answers.jsonl"):
        a = json.loads(line)
        by_plan.setdefault(a["plan"], []).append(a)
    for plan, answers in by_plan.items():
        em = {k: [0, 0] for k, _ in kinds}
        for a in answers:
            k = kind_of[a["example"]]
            if k in em:
                em[k][0] += a["em"]
                em[k][1] += 1
        md.append(f"| {run} | {plan.split()[-1]} | " +
                  " | ".join(f"{s / n:.2f}" if n else "-" for s, n in em.values()) + " |")
md.append("")
open(f"{study}/report.md", "w").write("\n".join(md))
with open(f"{study}/plot.dat", "w") as f:  # one block per run: retention %, kept, em, f1, rouge_l, loss
    for run in runs:
        f.write(f'"{run}"\n')
        for r in rows:
            if r["run"] == run:
                f.write(f"{100 * float(r['plan'].split()[-1]):.0f} {r['kept']} {r['em']} {r['f1']} {r['rouge_l']} {r['val_loss']}\n")
        f.write("\n\n")
print("\n".join(md))
EOF
n=$(($(wc -w <<< "$runs") - 1))
cat > "$study/plot.gp" <<EOF
set terminal pngcairo size 1100,800 font 'sans,10' noenhanced
set output '$study/plot.png'
set multiplot layout 2,2 title 'Fine-tuned on the retrieval QA task: metric vs KV-cache retention (6 layers)'
set grid
set xrange [105:28]
set xtics ('100' 100, '67' 67, '50' 50, '33' 33)
set xlabel 'layers keeping a KV cache (%)'
set key bottom left
set yrange [0:1]
set ylabel 'exact match'
plot for [i=0:$n] '$study/plot.dat' index i using 1:3 with linespoints lw 2 pt 7 title columnheader(1)
set ylabel 'token F1'
plot for [i=0:$n] '$study/plot.dat' index i using 1:4 with linespoints lw 2 pt 7 title columnheader(1)
set ylabel 'ROUGE-L'
plot for [i=0:$n] '$study/plot.dat' index i using 1:5 with linespoints lw 2 pt 7 title columnheader(1)
set ylabel 'validation loss (answer tokens)'
set key top left
set yrange [0:*]
plot for [i=0:$n] '$study/plot.dat' index i using 1:6 with linespoints lw 2 pt 7 title columnheader(1)
unset multiplot
EOF
if command -v gnuplot > /dev/null; then
  gnuplot "$study/plot.gp" 2> "$study/plot.log" || echo "finetune_study: gnuplot failed (see $study/plot.log)"
else
  echo "finetune_study: gnuplot is not installed; no plot.png (results.csv and report.md are complete)"
fi
stamp "done: $study/results.csv, $study/report.md, $study/plot.png"
