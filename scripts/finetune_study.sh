#!/usr/bin/env bash
# Fine-tuning study (experiments/finetune-quickstart.yaml) on a retrieval QA task made from the
# packaged corpus (scripts/make_qa_task.py). The starting point is a model that can do the task:
# the quickstart baseline (pretrained without routing) fine-tuned on it without routing (the
# "task-capable base", as the paper starts from models that can already read). From there, on the
# same examples for the same steps, with 3 seeds each (data order and routing): no routing, R-CLA
# (p = 0.6), CLA@2 (converted from the dense model, K/V averaged into the leaders) and RD-CLA@2;
# each evaluated at 100/67/50/33% KV-cache retention.
#
# Protocol. The task's training examples are split once (seeded) into three disjoint parts: the
# warm-up's (24,000; the task-capable base is trained on them), the arms' (5,700; the four arms
# fine-tune on them) and a dev split (300) taken from the training data. Design decisions use the
# dev split only (its EM, and the validation loss of the arms' prepared data, 1% of their part held
# out); the test split (300 questions whose facts never occur in training) is scored once, at the
# end. Arms are compared per question on the same test questions (EM averaged over the seeds):
# paired bootstrap intervals of the EM difference and McNemar's exact test, at equal KV cache
# actually kept (CLA@2 keeps 3 of 6 caches at every retention above 50%, and is plotted there).
# Writes experiments/finetune-quickstart/results.csv, report.md and plot.png.
#
# Needs the quickstart's tokenizer and corpus (scripts/quickstart.sh makes them) and build/kvroute.
# Re-running skips what is done (the pretrained model, the task and its splits, both starting
# models, trained runs, evaluations). Everything trains and evaluates in bf16 (train.precision: bf16
# in experiments/finetune-quickstart/finetune.yaml; f32 with a notice on a CPU without bf16
# instructions). Run directories may live elsewhere: make experiments/finetune-quickstart/runs a
# symbolic link first.
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

# 2. The task: train.jsonl / test.jsonl; train.jsonl split into warmup / arms / dev (seeded, disjoint);
#    the warm-up's and the arms' examples prepared for fine-tuning (1% of each held out for the loss).
if [[ ! -f $task/test.jsonl ]]; then
  python3 scripts/make_qa_task.py --out "$task" --seed "$seed"
fi
if [[ ! -f $task/splits.json ]]; then
  python3 - "$task" "$seed" <<'EOF'
import json, random, sys
task, seed = sys.argv[1], sys.argv[2]
lines = [l for l in open(f"{task}/train.jsonl") if l.strip()]
order = list(range(len(lines)))
random.Random(f"{seed}/finetune-splits").shuffle(order)
parts = {"warmup": order[:24000], "dev": order[24000:24300], "arms": order[24300:]}
assert len(parts["arms"]) >= 4000, "too few training examples for the arms (500 steps x 8)"
for name, idx in parts.items():
    with open(f"{task}/{name}.jsonl.tmp", "w") as f:
        f.writelines(lines[i] for i in sorted(idx))
import os
for name in parts:
    os.replace(f"{task}/{name}.jsonl.tmp", f"{task}/{name}.jsonl")
json.dump({k: len(v) for k, v in parts.items()}, open(f"{task}/splits.json.tmp", "w"))
os.replace(f"{task}/splits.json.tmp", f"{task}/splits.json")
EOF
  rm -rf "$task/sft" "$task/sft-warmup"  # prepared from the unsplit file: stale
fi
for part in warmup arms; do
  out=$task/sft; [[ $part == warmup ]] && out=$task/sft-warmup
  if [[ ! -f $out/data.json ]]; then
    "$kv" prepare --format sft --input "$task/$part.jsonl" --tokenizer "$tokenizer" --out "$out" \
      --val-fraction 0.01 --seed "$seed" --overwrite --threads "$threads"
  fi
done
stamp "task ready ($(cat "$task/splits.json"))"

# 3. The task-capable base: the pretrained model fine-tuned on the task without routing (3,000
#    steps of 8 of the warm-up's examples, ~7 min on 2 cores in bf16, resumable). The paper fine-tunes models that
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
    data.dir="$task/sft-warmup" train.run_dir="$warm" train.steps=3000 optim.lr=1e-3 optim.min_lr=1e-4 train.checkpoint_interval=500 \
    train.threads="$threads" "${resume[@]}"
  stamp "task-capable base trained"
fi

# 4. Fine-tuning and the validation loss at each retention (the sweep skips trained runs).
"$kv" sweep "$study_file" --threads "$threads"
stamp "sweep done"

# 5. EM / F1 / ROUGE-L of greedy answers generated with the shared cache: every arm and seed on the
#    dev questions (for decisions) and, last, on the test questions.
runs=$(sed -n 's/^  - name: *//p' "$study_file")
seeds=$(sed -n 's/^seeds: *\[\(.*\)\]/\1/p' "$study_file" | tr -d ' ' | tr ',' ' ')
score() {  # checkpoint, task file, output dir, batches of the validation loss
  "$kv" eval --checkpoint "$1" --retention "$retention" --task "$2" --task-seed "$seed" --max-new-tokens 16 \
    --batch 16 --batches "$4" --out "$3" --threads "$threads" --precision "$precision"
}
for split in dev test; do
  for run in $runs; do
    for s in $seeds; do
      dir=$study/runs/$run/seed-$s
      [[ -f $dir/$split/eval.csv ]] && continue
      ck=$(ls -d "$dir"/checkpoints/step_* | sort | tail -n 1)
      score "$ck" "$task/$split.jsonl" "$dir/$split" 1
      stamp "$run seed $s evaluated on the $split questions"
    done
  done
  # The starting point of every model (the task-capable base), its loss on the whole validation
  # split of the arms' data like the sweep's.
  if [[ ! -f $warm/$split/eval.csv ]]; then
    "$kv" eval --checkpoint "$warm/checkpoints/step_00003000" --retention "$retention" --task "$task/$split.jsonl" \
      --task-seed "$seed" --max-new-tokens 16 --batch 16 --batches 0 --data "$task/sft" --out "$warm/$split" \
      --threads "$threads" --precision "$precision"
    stamp "task-capable base evaluated on the $split questions"
  fi
done

# 6. results.csv (one row per run, seed and retention: the validation loss of the sweep's full pass,
#    dev and test scores), report.md (means over seeds, paired per-question comparisons at equal
#    cache) and plot.png (metric vs the KV cache actually kept, mean and sd over seeds).
STAMP_SECONDS=$(($(date +%s) - start)) python3 - "$study" "$task" "$runs" "$seeds" <<'EOF'
import csv, json, math, os, random, statistics, sys
study, task, runs, seeds = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()

def answers(path):  # plan -> per-example em list
    by_plan = {}
    for line in open(path):
        a = json.loads(line)
        by_plan.setdefault(a["plan"], {})[a["example"]] = a["em"]
    return {p: [v[i] for i in range(len(v))] for p, v in by_plan.items()}

rows, em_of = [], {}  # em_of[(run, seed, kept)] = per-question test EM
for run in ["start"] + runs:
    for s in (["-"] if run == "start" else seeds):
        dir = f"{study}/runs/task-warmup" if run == "start" else f"{study}/runs/{run}/seed-{s}"
        loss = {p["plan"]: p for p in json.load(open(f"{dir}/test/eval.json" if run == "start" else f"{dir}/eval.json"))}
        dev = {t["plan"]: t for t in csv.DictReader(open(f"{dir}/dev/eval.csv"))}
        test_answers = answers(f"{dir}/test/answers.jsonl")
        for t in csv.DictReader(open(f"{dir}/test/eval.csv")):
            p = loss[t["plan"]]
            assert p["kept"] == [int(x) for x in t["kept_layers"].split()], (run, t["plan"])
            kept = len(p["kept"])
            rows.append({"run": run, "seed": s, "plan": t["plan"], "kept": kept, "num_layers": t["num_layers"],
                         "kv_fraction": f"{kept / int(t['num_layers']):.4f}", "val_loss": f"{p['val_loss']:.6f}",
                         "dev_em": f"{float(dev[t['plan']]['em']):.4f}", "em": f"{float(t['em']):.4f}",
                         "f1": f"{float(t['f1']):.4f}", "rouge_l": f"{float(t['rouge_l']):.4f}",
                         "task_examples": t["task_examples"]})
            em_of[(run, s, kept)] = test_answers[t["plan"]]
with open(f"{study}/results.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)

def mean_sd(xs):
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)

# One point per run and KV cache actually kept (CLA@2 keeps 3 caches at retention 1, 0.67 and 0.5:
# the same model and plan, one point).
points = {}
for r in rows:
    points.setdefault((r["run"], r["kept"]), {}).setdefault(r["seed"], r)
kepts = sorted({k for _, k in points}, reverse=True)
n_layers = int(rows[0]["num_layers"])
seconds = int(os.environ.get("STAMP_SECONDS", "0"))
md = ["# Study: finetune-quickstart", "",
      "Study file `experiments/finetune-quickstart.yaml`, run by `scripts/finetune_study.sh`. Splits of the task's "
      f"training examples (disjoint): {open(f'{task}/splits.json').read().strip()}; the test questions share no fact "
      f"with them. Seeds per arm: {len(seeds)} ({', '.join(seeds)}). The last invocation of the script took "
      f"{seconds // 60} min {seconds % 60} s (steps already done are skipped).", "",
      f"Per model and KV cache actually kept (caches of {n_layers} layers): test EM / F1, mean ± sd over seeds; "
      "dev EM and the validation loss on answer tokens (dev data) in the second table. Design decisions read "
      "only the second table.", "",
      "| model | " + " | ".join(f"{k} of {n_layers} kept" for k in kepts) + " |", "|---|" + "---|" * len(kepts)]
label = {"start": "start (task-capable base)"}
def cell(run, k, key, fmt="{:.3f}"):
    if (run, k) not in points: return "-"
    m, sd = mean_sd([float(r[key]) for r in points[(run, k)].values()])
    return fmt.format(m) + (f" ± {fmt.format(sd)}" if len(points[(run, k)]) > 1 else "")
for run in ["start"] + runs:
    md.append(f"| {label.get(run, run)} | " + " | ".join(
        (cell(run, k, "em") + " / " + cell(run, k, "f1")) if (run, k) in points else "-" for k in kepts) + " |")
md += ["", "| model (dev) | " + " | ".join(f"{k} of {n_layers} kept" for k in kepts) + " |", "|---|" + "---|" * len(kepts)]
for run in ["start"] + runs:
    md.append(f"| {label.get(run, run)} | " + " | ".join(
        (cell(run, k, "dev_em") + " / " + cell(run, k, "val_loss")) if (run, k) in points else "-" for k in kepts) + " |")

# Paired per-question comparisons on the test set at equal cache: EM averaged over seeds per
# question, its mean difference with a paired bootstrap 95% interval over questions (10,000
# resamples), and McNemar's exact test over the (question, seed) pairs.
def seed_mean(run, k):
    lists = [em_of[(run, s, k)] for s in seeds if (run, s, k) in em_of]
    return [statistics.mean(col) for col in zip(*lists)], lists
def mcnemar(a_lists, b_lists):
    b = c = 0
    for xa, xb in zip(a_lists, b_lists):
        for u, v in zip(xa, xb):
            b += u > v
            c += v > u
    n = b + c
    if n == 0: return 1.0, b, c
    tail = sum(math.comb(n, i) for i in range(0, min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail), b, c
pairs = [("rcla-p0.6", "base"), ("rcla-p0.6", "rdcla2"), ("rcla-p0.6", "cla2"), ("cla2", "base"), ("rdcla2", "base")]
md += ["", "Paired comparisons on the test questions at equal KV cache (difference of EM, A − B; per-question EM "
       "averaged over seeds; 95% paired bootstrap interval; McNemar's exact p over question × seed pairs, "
       "with the counts of pairs only A / only B answered; the seeds of one question are not independent, so these p-values are optimistic: the bootstrap interval, which resamples questions, is the one to read):", "",
       "| A vs B | cache kept | EM A | EM B | A − B [95% CI] | McNemar p (only A / only B) |", "|---|---|---|---|---|---|"]
rng = random.Random(0)
for a, b in pairs:
    for k in kepts:
        if (a, k) not in points or (b, k) not in points: continue
        ma, la = seed_mean(a, k)
        mb, lb = seed_mean(b, k)
        d = [x - y for x, y in zip(ma, mb)]
        n = len(d)
        boots = sorted(statistics.mean(d[rng.randrange(n)] for _ in range(n)) for _ in range(10000))
        p, only_a, only_b = mcnemar(la, lb)
        md.append(f"| {a} vs {b} | {k} of {n_layers} | {statistics.mean(ma):.3f} | {statistics.mean(mb):.3f} | "
                  f"{statistics.mean(d):+.3f} [{boots[250]:+.3f}, {boots[9749]:+.3f}] | {p:.3g} ({only_a} / {only_b}) |")
md += ["", "![metrics vs KV cache kept](plot.png)", ""]

# EM per asked attribute (the question's wording names it; scripts/make_qa_task.py), test set, all seeds.
kinds = [("keeper", "Who is the keeper"), ("origin", "Where is the supplier"), ("rooms", "How many rooms"),
         ("hour", "At what hour"), ("colour", "What color")]
questions = [json.loads(l)["question"] for l in open(f"{task}/test.jsonl") if l.strip()]
kind_of = [next((k for k, prefix in kinds if q.startswith(prefix)), "other") for q in questions]
counts = {k: kind_of.count(k) for k, _ in kinds}
md += ["Test EM per asked attribute, mean over seeds (" + ", ".join(f"{n} {k}" for k, n in counts.items()) + " questions):", "",
       "| model | cache kept | " + " | ".join(k for k, _ in kinds) + " |", "|---|---|" + "---|" * len(kinds)]
for run in ["start"] + runs:
    for k in kepts:
        if (run, k) not in points: continue
        per_q, _ = seed_mean(run, k) if run != "start" else (em_of[("start", "-", k)], None)
        em = {kk: [0.0, 0] for kk, _ in kinds}
        for i, v in enumerate(per_q):
            if kind_of[i] in em:
                em[kind_of[i]][0] += v
                em[kind_of[i]][1] += 1
        md.append(f"| {run} | {k} of {n_layers} | " + " | ".join(f"{s / c:.2f}" if c else "-" for s, c in em.values()) + " |")
md.append("")
open(f"{study}/report.md", "w").write("\n".join(md))
with open(f"{study}/plot.dat", "w") as f:  # per run: kept %, em, sd, f1, sd, rouge_l, sd, loss, sd
    for run in runs:
        f.write(f'"{run}"\n')
        for k in kepts:
            if (run, k) not in points: continue
            vals = []
            for key in ("em", "f1", "rouge_l", "val_loss"):
                vals += mean_sd([float(r[key]) for r in points[(run, k)].values()])
            f.write(f"{100 * k / n_layers:.1f} " + " ".join(f"{v:.5f}" for v in vals) + "\n")
        f.write("\n\n")
print("\n".join(md))
EOF
n=$(($(wc -w <<< "$runs") - 1))
cat > "$study/plot.gp" <<EOF
set terminal pngcairo size 1100,800 font 'sans,10' noenhanced
set output '$study/plot.png'
set multiplot layout 2,2 title 'Fine-tuned on the retrieval QA task: test metric vs the KV cache actually kept (6 layers; mean and sd over seeds)'
set grid
set xrange [105:28]
set xtics ('100' 100, '67' 66.7, '50' 50, '33' 33.3)
set xlabel 'layers keeping a KV cache (%)'
set key bottom left
set yrange [0:1]
set ylabel 'exact match'
plot for [i=0:$n] '$study/plot.dat' index i using 1:2:3 with yerrorlines lw 2 pt 7 title columnheader(1)
set ylabel 'token F1'
plot for [i=0:$n] '$study/plot.dat' index i using 1:4:5 with yerrorlines lw 2 pt 7 title columnheader(1)
set ylabel 'ROUGE-L'
plot for [i=0:$n] '$study/plot.dat' index i using 1:6:7 with yerrorlines lw 2 pt 7 title columnheader(1)
set ylabel 'validation loss (answer tokens, dev data)'
set key top left
set yrange [0:*]
plot for [i=0:$n] '$study/plot.dat' index i using 1:8:9 with yerrorlines lw 2 pt 7 title columnheader(1)
unset multiplot
EOF
if command -v gnuplot > /dev/null; then
  gnuplot "$study/plot.gp" 2> "$study/plot.log" || echo "finetune_study: gnuplot failed (see $study/plot.log)"
else
  echo "finetune_study: gnuplot is not installed; no plot.png (results.csv and report.md are complete)"
fi
stamp "done: $study/results.csv, $study/report.md, $study/plot.png"
