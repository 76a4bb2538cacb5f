#!/usr/bin/python3
"""Fault tests for `kvroute train`: what a crash, a full disk or a dead MPI rank leaves behind.

  kill9   SIGKILL at seeded random points while checkpoints are written back to back: every
          checkpoints/step_* directory that is not a temporary (a staging directory, *.tmp) is
          complete (safetensors headers, sizes, state.json, and `kvroute eval` loads the newest),
          `--resume auto` picks the newest complete one and finishes; temporaries (and a planted
          decoy) are ignored.
  refuse  a fresh run (no --resume) into a run directory that holds checkpoints is refused with one
          `kvroute: error: ...` line, and the checkpoints are left as they were.
  fsync   under strace: every file of a checkpoint is synced (fsync, or syncfs of its staging
          directory) before the staging directory is renamed to step_N, and the checkpoints
          directory is fsynced after the rename (kill -9 cannot tell an
          fsync from none: the page cache survives a killed process). Skipped without strace.
  fsize   writes fail with EFBIG (RLIMIT_FSIZE, SIGXFSZ ignored) at several limits while the next
          checkpoint is written: the run exits non-zero with one error line, the previous
          checkpoint stays complete, `--resume auto` without the limit picks it.
  tmpfs   the same with a real full disk: a size-limited tmpfs (root and a working mount only,
          skipped otherwise).
  mpi     `mpirun -np 2` training, one rank SIGKILLed (rank 1, then rank 0): mpirun and both ranks
          are gone within 60 s and mpirun's exit code is non-zero (skipped without mpirun).

Fixtures (corpus, tokenizer, shards, config) are generated in a temporary directory. Standard
library only. Exit code: 0 all passed, 1 a failure, 77 nothing failed but the MPI test was skipped
because there is no mpirun (ctest SKIP_RETURN_CODE).

  /usr/bin/python3 tests/fault/fault_tests.py --kvroute build/kvroute --mpiexec /usr/bin/mpiexec
      [--seed N] [--trials N] [--only kill9,refuse,fsync,fsize,tmpfs,mpi] [--keep]
"""

import argparse
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback

TESTS = ["kill9", "refuse", "fsync", "fsize", "tmpfs", "mpi"]
ERROR_LINE = re.compile(r"^kvroute: error(?: \(rank \d+\))?: \S")
RESUMED = re.compile(r"resumed from (\S+) at step (\d+)")
DTYPE_BYTES = {"F32": 4, "BF16": 2, "I32": 4, "U16": 2, "U32": 4, "F16": 2, "F64": 8, "I64": 8}
CHECKPOINT_FILES = ["model.safetensors", "optimizer.safetensors", "state.json", "config.yaml", "config.json"]


# ---- Results ------------------------------------------------------------------------------------


class Results:
    def __init__(self):
        self.rows = []  # (test, status, detail)

    def add(self, test, status, detail):
        self.rows.append((test, status, detail))
        print(f"  [{status}] {test}: {detail}", flush=True)

    def ok(self, test, detail):
        self.add(test, "PASS", detail)

    def fail(self, test, detail):
        self.add(test, "FAIL", detail)

    def skip(self, test, detail):
        self.add(test, "SKIP", detail)

    def failed(self):
        return [r for r in self.rows if r[1] == "FAIL"]


# ---- Processes ----------------------------------------------------------------------------------


def child_env(extra=None):
    env = dict(os.environ)
    # A sanitizer build reports leaks of a run that ends in an error (and of Open MPI's plugins);
    # these tests are about files and processes, leak checking is the other tests' job.
    env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":detect_leaks=0").lstrip(":")
    env.pop("OMP_NUM_THREADS", None)
    if extra:
        env.update(extra)
    return env


def run(cmd, log_prefix, timeout=120, preexec_fn=None, env=None):
    """Runs cmd; stdout/stderr go to log_prefix.out/.err too. Returns (rc, stdout, stderr)."""
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                           preexec_fn=preexec_fn, env=env or child_env())
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = "timeout", e.stdout or b"", e.stderr or b""
    out = out.decode("utf-8", "replace")
    err = err.decode("utf-8", "replace")
    with open(log_prefix + ".out", "w") as f:
        f.write(" ".join(cmd) + "\n" + out)
    with open(log_prefix + ".err", "w") as f:
        f.write(err)
    return rc, out, err


def error_line_problem(stderr):
    """None when stderr is exactly one `kvroute: error: ...` line, else what is wrong."""
    lines = [l for l in stderr.splitlines() if l.strip()]
    if len(lines) == 1 and ERROR_LINE.match(lines[0]):
        return None
    if not lines:
        return "stderr is empty (expected one 'kvroute: error: ...' line)"
    return f"stderr has {len(lines)} line(s), expected one 'kvroute: error: ...' line: {short(stderr)}"


def short(text, n=300):
    text = text.strip().replace("\n", " | ")
    return text if len(text) <= n else text[:n] + "..."


def proc_state(pid):
    """(state letter, start time) of a live pid, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


def all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def descendants(root):
    children = {}
    for pid in all_pids():
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def exe_of(pid):
    try:
        return os.path.realpath(f"/proc/{pid}/exe")
    except OSError:
        return ""


def rank_of(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            for item in f.read().split(b"\0"):
                if item.startswith(b"OMPI_COMM_WORLD_RANK=") or item.startswith(b"PMIX_RANK="):
                    return int(item.split(b"=", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def gone(pid, start):
    s = proc_state(pid)
    return s is None or s[1] != start or s[0] in ("Z", "X")


def kill_if_alive(pid, start):
    if not gone(pid, start):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


# ---- Checkpoint inspection ----------------------------------------------------------------------


def safetensors_problems(path):
    """Problems of a safetensors file (empty: complete); also returns {name: numel}."""
    tensors = {}
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            if size < 8:
                return [f"{path}: {size} bytes, shorter than the header length"], tensors
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > size - 8:
                return [f"{path}: header length {header_len} exceeds the file ({size} bytes)"], tensors
            header = json.loads(f.read(header_len).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return [f"{path}: unreadable: {e}"], tensors
    if not isinstance(header, dict):
        return [f"{path}: header is not a JSON object"], tensors
    data_size = size - 8 - header_len
    spans, problems = [], []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            width = DTYPE_BYTES[entry["dtype"]]
            numel = math.prod(int(d) for d in entry["shape"])
            begin, end = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            problems.append(f"{path}: tensor {name}: bad entry {entry!r} ({e})")
            continue
        if end - begin != numel * width:
            problems.append(f"{path}: tensor {name}: offsets span {end - begin} bytes, shape needs {numel * width}")
        spans.append((begin, end, name))
        tensors[name] = numel
    spans.sort()
    cursor = 0
    for begin, end, name in spans:
        if begin != cursor:
            problems.append(f"{path}: tensor {name} starts at {begin}, expected {cursor}")
        cursor = max(cursor, end)
    if cursor != data_size:
        problems.append(f"{path}: tensors end at byte {cursor} of a {data_size}-byte data section "
                        f"({'truncated' if cursor > data_size else 'trailing bytes'})")
    if not spans:
        problems.append(f"{path}: no tensors")
    return problems, tensors


def checkpoint_problems(ckpt):
    """Problems of one checkpoint directory (empty: complete and consistent)."""
    name = os.path.basename(ckpt)
    missing = [f for f in CHECKPOINT_FILES if not os.path.isfile(os.path.join(ckpt, f))]
    if missing:
        return [f"{name}: missing {', '.join(missing)}"]
    problems, model = safetensors_problems(os.path.join(ckpt, "model.safetensors"))
    more, optim = safetensors_problems(os.path.join(ckpt, "optimizer.safetensors"))
    problems += more
    if not problems:
        if set(optim) != {"exp_avg", "exp_avg_sq"}:
            problems.append(f"{name}: optimizer.safetensors holds {sorted(optim)}")
        elif optim["exp_avg"] != optim["exp_avg_sq"] or optim["exp_avg"] != sum(model.values()):
            problems.append(f"{name}: optimizer state has {optim['exp_avg']}/{optim['exp_avg_sq']} elements, "
                            f"the model {sum(model.values())}")
    try:
        with open(os.path.join(ckpt, "state.json")) as f:
            state = json.load(f)
        m = re.match(r"^step_(\d+)$", name)
        if m and int(state["step"]) != int(m.group(1)):
            problems.append(f"{name}: state.json says step {state['step']}")
        for key in ("tokens_seen", "data_cursor", "world_size", "global_batch_tokens", "fingerprint"):
            if key not in state:
                problems.append(f"{name}: state.json lacks {key}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        problems.append(f"{name}: state.json: {e}")
    try:
        with open(os.path.join(ckpt, "config.json")) as f:
            if json.load(f).get("model_type") != "qwen3":
                problems.append(f"{name}: config.json is not a qwen3 config")
    except (OSError, ValueError, AttributeError) as e:
        problems.append(f"{name}: config.json: {e}")
    if os.path.getsize(os.path.join(ckpt, "config.yaml")) == 0:
        problems.append(f"{name}: config.yaml is empty")
    return problems


TEMP_NAME = re.compile(r"(\.tmp|\.(staging|aside)-[A-Za-z0-9]{6})$")


def is_temp(name):
    """A temporary of a write or deletion: *.tmp, or a staging / set-aside directory (core/io.h)."""
    return TEMP_NAME.search(name) is not None


def list_checkpoints(run_dir):
    """(complete candidates: names of step_* that are not temporaries, sorted; temporaries)."""
    d = os.path.join(run_dir, "checkpoints")
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return [], []
    steps = [n for n in names if n.startswith("step_") and not is_temp(n)]
    tmps = [n for n in names if n.startswith("step_") and is_temp(n)]
    return steps, tmps


def step_of(name):
    m = re.match(r"^step_(\d+)", name)
    return int(m.group(1)) if m else -1


def snapshot(run_dir):
    """What a refused run must leave alone: checkpoint names, inodes and state.json, metrics.jsonl."""
    steps, tmps = list_checkpoints(run_dir)
    snap = {"steps": steps, "tmps": tmps}
    for n in steps:
        d = os.path.join(run_dir, "checkpoints", n)
        try:  # the directory's inode too: a rewrite with equal contents still shows
            with open(os.path.join(d, "state.json"), "rb") as f:
                snap[n] = (os.stat(d).st_ino, f.read())
        except OSError:
            snap[n] = None
    try:
        with open(os.path.join(run_dir, "metrics.jsonl"), "rb") as f:
            snap["metrics"] = f.read()
    except OSError:
        snap["metrics"] = None
    return snap


# ---- Fixtures -----------------------------------------------------------------------------------


class Fixture:
    def __init__(self, kvroute, work, keep):
        self.kv = kvroute
        self.work = work
        self.keep = keep
        self.config = os.path.join(work, "fault.yaml")

    def build(self):
        corpus = os.path.join(self.work, "corpus")
        os.makedirs(corpus)
        r = random.Random(1234)  # the corpus is the same on every run
        words = ("the of and to in a is that for it as was with be by on not he this are or his from at which "
                 "but have an they you were her she there been one all we their has would when if so no more "
                 "its who will out up said what can them about time into only some could do new people first "
                 "state government nation power liberty union citizens law public peace").split()
        for i in range(8):
            with open(os.path.join(corpus, f"doc{i}.txt"), "w") as f:
                for _ in range(40):
                    f.write(" ".join(r.choice(words) for _ in range(r.randint(30, 120))) + ".\n\n")
        tok, data = os.path.join(self.work, "tokenizer"), os.path.join(self.work, "data")
        logs = os.path.join(self.work, "fixture")
        for cmd in ([self.kv, "tokenizer", "train", "--input", corpus, "--vocab", "300", "--out", tok],
                    [self.kv, "prepare", "--input", corpus, "--tokenizer", tok, "--out", data]):
            rc, out, err = run(cmd, logs)
            if rc != 0:
                raise RuntimeError(f"fixture command failed ({rc}): {' '.join(cmd)}: {short(err)}")
        # Tied 16384 x 32 embeddings make model.safetensors ~2 MB and optimizer.safetensors ~4 MB,
        # so a checkpoint takes a while to write; a step takes milliseconds.
        with open(self.config, "w") as f:
            f.write(f"""# kvroute fault tests (tests/fault/fault_tests.py)
model: {{vocab_size: 16384, hidden_size: 32, num_layers: 2, num_heads: 4, num_kv_heads: 2, head_dim: 8,
        intermediate_size: 64, max_seq_len: 16}}
router: {{policy: stochastic, share_prob: 0.5, seed: 3}}
data: {{dir: {data}, tokenizer: {tok}}}
optim: {{lr: 3.0e-3, min_lr: 3.0e-4}}
train: {{name: fault, run_dir: {self.work}/unused_run, steps: 20, batch_size: 2, seq_len: 16, log_interval: 1,
        threads: 1, checkpoint_interval: 1, keep_checkpoints: 2}}
eval: {{retention: [1.0], batches: 1}}
dist: {{backend: none}}
""")

    def train(self, run_dir, *extra):
        return [self.kv, "train", self.config, f"train.run_dir={run_dir}", *extra]

    def eval_ok(self, ckpt, log_prefix):
        out_dir = log_prefix + "_eval"
        os.makedirs(out_dir, exist_ok=True)
        rc, out, err = run([self.kv, "eval", "--checkpoint", ckpt, "--batches", "1", "--retention", "1",
                            "--out", out_dir], log_prefix + "_eval", timeout=120)
        return None if rc == 0 else f"`kvroute eval --checkpoint {os.path.basename(ckpt)}` exited {rc}: {short(err)}"


def check_resume(fx, run_dir, expect_name, final_step, log_prefix):
    """`--resume auto` must start from expect_name and finish; None or the problem."""
    rc, out, err = run(fx.train(run_dir, f"train.steps={final_step}", "--resume", "auto"), log_prefix)
    if rc != 0:
        return f"`train --resume auto` exited {rc}: {short(err)}"
    m = RESUMED.search(out)
    if not m:
        return f"`train --resume auto` did not report 'resumed from ...' (started over?): {short(out, 200)}"
    if os.path.basename(m.group(1).rstrip("/")) != expect_name or int(m.group(2)) != step_of(expect_name):
        return f"`train --resume auto` resumed from {m.group(1)} at step {m.group(2)}, expected {expect_name}"
    final = os.path.join(run_dir, "checkpoints", f"step_{final_step:08d}")
    if not os.path.isdir(final):
        return f"the resumed run left no {os.path.basename(final)}"
    problems = checkpoint_problems(final)
    return f"the resumed run's final checkpoint is incomplete: {problems[0]}" if problems else None


# ---- 1. SIGKILL while checkpointing ---------------------------------------------------------------


def test_kill9(fx, rng, trials, results):
    print(f"\n== kill9: SIGKILL at random points while checkpoints are written ({trials} trials)", flush=True)
    base = os.path.join(fx.work, "kill9")
    os.makedirs(base)
    failures, mid_write, last_run_dir, modes = 0, 0, None, {}
    for t in range(trials):
        run_dir = os.path.join(base, f"trial{t:02d}")
        ckdir = os.path.join(run_dir, "checkpoints")
        log = os.path.join(base, f"trial{t:02d}")
        mode = ("delay", "in-write", "renamed")[t % 3]
        problems = []
        with open(log + "_killed.out", "w") as out, open(log + "_killed.err", "w") as err:
            p = subprocess.Popen(fx.train(run_dir, "train.steps=1000000", "train.checkpoint_interval=1"),
                                 stdout=out, stderr=err, env=child_env())
        t0 = time.monotonic()
        # First wait for a complete checkpoint, so there is always one to resume from.
        while time.monotonic() - t0 < 60 and p.poll() is None and not list_checkpoints(run_dir)[0]:
            time.sleep(0.002)
        if mode == "delay":
            time.sleep(rng.uniform(0.0, 0.5))
        elif mode == "in-write":
            # Kill while a step_*.tmp exists: after the k-th new one appears, a few ms into it.
            skip, seen, lag = rng.randint(0, 6), set(), rng.uniform(0.0, 0.004)
            while time.monotonic() - t0 < 60 and p.poll() is None:
                try:
                    fresh = {n for n in os.listdir(ckdir) if is_temp(n)} - seen
                except OSError:
                    fresh = set()
                if fresh:
                    seen |= fresh
                    if len(seen) > skip:
                        time.sleep(lag)
                        break
                time.sleep(0.0005)
        else:
            # Kill at once when more than keep_checkpoints (2) finished ones exist: a new one was
            # renamed into place and the oldest is (about to be) deleted (then the mode reads "deleting").
            # A product that never shows more than 2 (say, renaming old ones to .tmp first) is killed
            # after 2 s.
            skip, seen, give_up = rng.randint(0, 4), 0, time.monotonic() + 2.0
            while time.monotonic() < give_up and p.poll() is None:
                try:
                    done = [n for n in os.listdir(ckdir) if n.startswith("step_") and not is_temp(n)]
                except OSError:
                    done = []
                if len(done) > 2:
                    seen += 1
                    if seen > skip:
                        mode = "deleting"
                        break
                    while p.poll() is None and len(list_checkpoints(run_dir)[0]) > 2 and time.monotonic() < give_up:
                        pass  # this deletion is over: wait for the next one
        alive = p.poll() is None
        if alive:
            p.send_signal(signal.SIGKILL)
        p.wait()
        killed_at = time.monotonic() - t0
        if not alive:
            results.fail("kill9", f"trial {t}: training exited by itself ({p.returncode}) before the kill; "
                                  f"see {log}_killed.err: {short(open(log + '_killed.err').read())}")
            failures += 1
            continue
        steps, tmps = list_checkpoints(run_dir)
        mid_write += bool(tmps)
        complete = []
        for n in steps:
            pr = checkpoint_problems(os.path.join(ckdir, n))
            if not pr:
                complete.append(n)
            elif steps and step_of(n) < max(step_of(s) for s in steps):
                problems.append(f"{pr[0]} (an older checkpoint under its final name: a deletion of old "
                                f"checkpoints cut short?)")
            else:
                problems.append(pr[0])
        if not complete:
            problems.append("no complete checkpoint after the kill")
        # The rest of the trial runs on the newest complete checkpoint even when another is broken.
        newest = max(complete, key=step_of) if complete else None
        if newest and newest != max(steps, key=step_of):
            newest = None  # the newest name is broken: --resume auto would (rightly) be expected to pick it
        if newest:
            e = fx.eval_ok(os.path.join(ckdir, newest), log)
            if e:
                problems.append(e)
                newest = None
        resumed = "-"
        if newest:
            # A decoy: a half-written checkpoint numbered past everything; --resume auto must skip it.
            decoy = os.path.join(ckdir, f"step_{step_of(newest) + 500:08d}.tmp")
            os.makedirs(decoy, exist_ok=True)
            with open(os.path.join(decoy, "model.safetensors"), "wb") as f:
                f.write(struct.pack("<Q", 4096) + b'{"x": ')
            with open(os.path.join(decoy, "state.json"), "w") as f:
                f.write('{"step": %d' % (step_of(newest) + 500))
            e = check_resume(fx, run_dir, newest, step_of(newest) + 2, log + "_resume")
            if e:
                problems.append(e)
            else:
                resumed = f"resumed from {newest} -> step {step_of(newest) + 2}"
        left = list_checkpoints(run_dir)[1]
        status = "ok" if not problems else "FAILED: " + "; ".join(problems[:3])
        print(f"  trial {t:02d} [{mode:8s}] killed at {killed_at:5.2f}s: step dirs {[step_of(s) for s in steps]}, "
              f"tmp left {tmps or '-'}; {resumed}; tmp dirs after resume: {left or 'none'}; {status}", flush=True)
        if problems:
            failures += 1
        if last_run_dir and not fx.keep:  # ~20 MB a trial: only the last one stays (for `refuse`)
            shutil.rmtree(last_run_dir, ignore_errors=True)
        counts = modes.setdefault(mode, [0, 0])
        counts[0] += 1
        counts[1] += bool(problems)
        last_run_dir = run_dir
    by_mode = ", ".join(f"{m} {n} ({f} failed)" for m, (n, f) in sorted(modes.items()))
    summary = f"{trials} trials [{by_mode}], {mid_write} left a step_*.tmp, {failures} failed"
    (results.fail if failures else results.ok)("kill9", summary)
    return last_run_dir


# ---- 2. A fresh run into a used run directory ------------------------------------------------------


def test_refuse(fx, run_dir, results):
    print("\n== refuse: a fresh run (no --resume) into a run directory with checkpoints", flush=True)
    if run_dir is None:
        run_dir = os.path.join(fx.work, "refuse")
        rc, out, err = run(fx.train(run_dir, "train.steps=3"), os.path.join(fx.work, "refuse_setup"))
        if rc != 0:
            results.fail("refuse", f"setup run exited {rc}: {short(err)}")
            return
    before = snapshot(run_dir)
    rc, out, err = run(fx.train(run_dir, "train.steps=3"), os.path.join(fx.work, "refuse"))
    after = snapshot(run_dir)
    problems = []
    if rc == 0 or not isinstance(rc, int) or rc < 0:
        problems.append(f"exited {rc} (expected a non-zero exit with an error)")
    else:
        e = error_line_problem(err)
        if e:
            problems.append(e)
    if before != after:
        changed = [k for k in set(before) | set(after) if before.get(k) != after.get(k)]
        problems.append(f"the run directory changed ({', '.join(sorted(changed)[:6])}): checkpoints before "
                        f"{before['steps']}, after {after['steps']}")
    if problems:
        results.fail("refuse", "; ".join(problems))
    else:
        results.ok("refuse", f"refused ({rc}): {short(err, 160)}")


# ---- 3. Durability: fsync before the rename, and of the parent after it -------------------------


SYSCALL = re.compile(r"^(\d+)\s+(\w+)\((.*)\)\s+=\s+(-?\d+)")
FD_PATH = re.compile(r"^\d+<(.*)>$")
PATH_ARG = re.compile(r'(?:(?:AT_FDCWD|\d+)<([^>]*)>,\s*)?"((?:[^"\\]|\\.)*)"')


def parse_strace(path):
    """[(syscall, [paths], result)] in order, for fsync/fdatasync/syncfs (the fd's path) and renames."""
    events = []
    with open(path, errors="replace") as f:
        for line in f:
            m = SYSCALL.match(line.strip())
            if not m:
                continue
            name, args, result = m.group(2), m.group(3), int(m.group(4))
            if name in ("fsync", "fdatasync", "syncfs"):
                fd = FD_PATH.match(args.strip())
                events.append((name, [fd.group(1) if fd else args], result))
            elif name in ("rename", "renameat", "renameat2"):
                paths = [p if p.startswith("/") or not d else os.path.join(d, p) for d, p in PATH_ARG.findall(args)]
                events.append(("rename", [os.path.normpath(p) for p in paths[:2]], result))
    return events


def sync_problems(events):
    """(checkpoint renames seen, problems, notes) of a trace from parse_strace."""
    problems, notes, seen = [], [], 0
    for i, (name, paths, result) in enumerate(events):
        if name != "rename" or len(paths) != 2 or result != 0 or not re.match(r"^step_\d+$", os.path.basename(paths[1])):
            continue
        seen += 1
        old, new = paths
        label = os.path.basename(new)
        if not is_temp(os.path.basename(old)):
            problems.append(f"{label} was renamed from {old}, not from a staging directory")
        synced_before = {os.path.normpath(p[0]) for n, p, r in events[:i] if n in ("fsync", "fdatasync") and r == 0}
        synced_after = {os.path.normpath(p[0]) for n, p, r in events[i + 1:] if n in ("fsync", "fdatasync") and r == 0}
        # syncfs on the staging directory makes every file written into it durable at once.
        fs_synced = {os.path.normpath(p[0]) for n, p, r in events[:i] if n == "syncfs" and r == 0}
        files = sorted(os.listdir(new)) if os.path.isdir(new) else CHECKPOINT_FILES
        unsynced = [f for f in files
                    if os.path.join(old, f) not in synced_before and os.path.normpath(old) not in fs_synced]
        if unsynced:
            problems.append(f"{label}: not fsynced before the rename: {', '.join(unsynced)}")
        if os.path.normpath(os.path.dirname(new)) not in synced_after:
            problems.append(f"{label}: the checkpoints directory is not fsynced after the rename")
        notes.append(f"{label}: staging directory itself fsynced before the rename: "
                     f"{'yes' if os.path.normpath(old) in synced_before else 'no'}")
    return seen, problems, notes


def test_fsync(fx, results):
    print("\n== fsync: checkpoint files and directory synced around the rename (strace)", flush=True)
    strace = shutil.which("strace")
    if not strace:
        results.skip("fsync", "no strace")
        return
    run_dir = os.path.realpath(os.path.join(fx.work, "fsync_run"))
    trace = os.path.join(fx.work, "fsync.trace")
    rc, out, err = run([strace, "-f", "-qq", "-y", "-o", trace,
                        "-e", "trace=fsync,fdatasync,syncfs,rename,renameat,renameat2",
                        *fx.train(run_dir, "train.steps=2", "train.checkpoint_interval=1")],
                       os.path.join(fx.work, "fsync_run"))
    if rc != 0 and ("ptrace" in err or "PTRACE" in err):
        results.skip("fsync", f"strace cannot trace here: {short(err, 120)}")
        return
    if rc != 0:
        results.fail("fsync", f"training under strace exited {rc}: {short(err)}")
        return
    events = parse_strace(trace)
    seen, problems, notes = sync_problems(events)
    if seen == 0:
        problems.append(f"no rename of a staging directory into place seen in {trace}")
    for n in notes:
        print(f"  {n}", flush=True)
    syncs = sum(1 for n, _, _ in events if n in ("fsync", "fdatasync"))
    detail = f"{seen} checkpoint renames, {syncs} fsync/fdatasync calls"
    if problems:
        results.fail("fsync", detail + ": " + "; ".join(problems[:4]))
    else:
        results.ok("fsync", detail + ", each file synced before its rename and the directory after")


# ---- 4. Writes failing: RLIMIT_FSIZE and a full tmpfs ---------------------------------------------


def fsize_limit(limit):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def check_failed_write(fx, run_dir, rc, err, good, label):
    """After a run whose checkpoint write failed: problems (empty: as expected)."""
    problems = []
    if not isinstance(rc, int) or rc <= 0:
        problems.append(f"exited {rc} (expected a non-zero exit with an error)")
    else:
        e = error_line_problem(err)
        if e:
            problems.append(e)
    steps, tmps = list_checkpoints(run_dir)
    if good not in steps:
        problems.append(f"the previous checkpoint {good} is gone (left: {steps})")
    else:
        problems += checkpoint_problems(os.path.join(run_dir, "checkpoints", good))
    for n in steps:
        if n != good:
            pr = checkpoint_problems(os.path.join(run_dir, "checkpoints", n))
            problems.append(f"{n} was put in place although writing it failed"
                            + (f" and it is incomplete: {pr[0]}" if pr else ""))
    if good in steps and not problems:
        e = fx.eval_ok(os.path.join(run_dir, "checkpoints", good), os.path.join(fx.work, label))
        if e:
            problems.append(e)
    return problems, tmps


def test_fsize(fx, results):
    print("\n== fsize: checkpoint writes failing with EFBIG (RLIMIT_FSIZE)", flush=True)
    base = os.path.join(fx.work, "fsize")
    os.makedirs(base)
    failures, limits, sizes = 0, None, None
    for i in range(3):
        run_dir = os.path.join(base, f"run{i}")
        log = os.path.join(base, f"run{i}")
        rc, out, err = run(fx.train(run_dir, "train.steps=1"), log + "_first")
        good = "step_00000001"
        if rc != 0 or checkpoint_problems(os.path.join(run_dir, "checkpoints", good)):
            results.fail("fsize", f"the unlimited first run exited {rc} without a complete {good}: {short(err)}")
            return
        if limits is None:
            ck = os.path.join(run_dir, "checkpoints", good)
            sizes = {f: os.path.getsize(os.path.join(ck, f)) for f in ("model.safetensors", "optimizer.safetensors")}
            m, o = sizes["model.safetensors"], sizes["optimizer.safetensors"]
            # In the model's header/first tensor, halfway through the model, halfway through the optimizer state.
            limits = [4096, m // 2, m + (o - m) // 2 if o > m else o // 2]
        limit = limits[i]
        rc, out, err = run(fx.train(run_dir, "train.steps=4", "--resume", "auto"), log + "_limited",
                           preexec_fn=fsize_limit(limit))
        problems, tmps = check_failed_write(fx, run_dir, rc, err, good, f"fsize/run{i}")
        if not problems:
            e = check_resume(fx, run_dir, good, 3, log + "_resume")
            if e:
                problems.append(e)
        status = "ok" if not problems else "FAILED: " + "; ".join(problems[:3])
        print(f"  limit {limit:8d} bytes: exit {rc}, stderr {short(err, 160)!r}, tmp left {tmps or '-'}; {status}",
              flush=True)
        failures += bool(problems)
    summary = f"{len(limits)} limits {limits} (model {sizes['model.safetensors']} B, optimizer " \
              f"{sizes['optimizer.safetensors']} B), {failures} failed"
    (results.fail if failures else results.ok)("fsize", summary)


def test_tmpfs(fx, results):
    print("\n== tmpfs: a full disk (size-limited tmpfs) while the second checkpoint is written", flush=True)
    if os.geteuid() != 0:
        results.skip("tmpfs", "not root: cannot mount a tmpfs")
        return
    mnt = os.path.join(fx.work, "tmpfs")
    os.makedirs(mnt)
    # One checkpoint (~6.5 MB) and the run's small files fit; a second checkpoint does not.
    probe = os.path.join(fx.work, "tmpfs_probe")
    rc, out, err = run(fx.train(probe, "train.steps=1"), probe)
    ck = os.path.join(probe, "checkpoints", "step_00000001")
    if rc != 0 or not os.path.isdir(ck):
        results.fail("tmpfs", f"probe run exited {rc}: {short(err)}")
        return
    ckpt_bytes = sum(os.path.getsize(os.path.join(ck, f)) for f in os.listdir(ck))
    size_kb = int(ckpt_bytes * 1.6) // 1024
    rc, out, err = run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "kvroute_fault", mnt],
                       os.path.join(fx.work, "mount"))
    if rc != 0:
        results.skip("tmpfs", f"mount failed ({short(err, 120)})")
        return
    try:
        run_dir = os.path.join(mnt, "run")
        log = os.path.join(fx.work, "tmpfs_run")
        rc, out, err = run(fx.train(run_dir, "train.steps=5"), log + "_full")
        good = "step_00000001"
        problems, tmps = check_failed_write(fx, run_dir, rc, err, good, "tmpfs_eval")
        if not problems:
            r2, o2, e2 = run(["mount", "-o", f"remount,size={size_kb * 8}k", mnt], os.path.join(fx.work, "remount"))
            if r2 != 0:
                problems.append(f"remount failed: {short(e2)}")
            else:
                e = check_resume(fx, run_dir, good, 3, log + "_resume")
                if e:
                    problems.append(e)
        detail = f"tmpfs {size_kb} KiB, checkpoint {ckpt_bytes} B: exit {rc}, stderr {short(err, 160)!r}, " \
                 f"tmp left {tmps or '-'}"
        if problems:
            results.fail("tmpfs", detail + "; " + "; ".join(problems[:3]))
        else:
            results.ok("tmpfs", detail + "; previous checkpoint intact, resumed from it")
    finally:
        subprocess.run(["umount", mnt], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ---- 5. A rank killed under mpirun --------------------------------------------------------------


def test_mpi(fx, mpiexec, rng, results):
    print("\n== mpi: one rank of `mpirun -np 2` SIGKILLed during training", flush=True)
    base = os.path.join(fx.work, "mpi")
    os.makedirs(base)
    kv_real = os.path.realpath(fx.kv)
    env = child_env({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                     "OMPI_MCA_rmaps_base_oversubscribe": "1"})
    failures = 0
    for victim_rank in (1, 0):
        run_dir = os.path.join(base, f"kill_rank{victim_rank}")
        log = os.path.join(base, f"kill_rank{victim_rank}")
        cmd = [mpiexec, "--allow-run-as-root", "--oversubscribe", "-np", "2",
               *fx.train(run_dir, "train.steps=1000000", "train.threads=1", "dist.backend=mpi",
                         "train.checkpoint_interval=5")]
        with open(log + ".out", "w") as out, open(log + ".err", "w") as err:
            mpirun = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        ranks, problems, t0 = {}, [], time.monotonic()
        metrics = os.path.join(run_dir, "metrics.jsonl")
        # Wait until both ranks run and training has logged a few steps.
        while time.monotonic() - t0 < 90 and mpirun.poll() is None:
            for pid in descendants(mpirun.pid):
                if pid not in ranks and exe_of(pid) == kv_real:
                    # A process caught while it is being executed may not show its environment
                    # yet: it is recorded once its rank can be read (kvroute starts in ~20 ms).
                    st, rank = proc_state(pid), rank_of(pid)
                    if st and rank is not None:
                        ranks[pid] = (rank, st[1])
            try:
                with open(metrics) as f:
                    started = sum(1 for _ in f) >= 3
            except OSError:
                started = False
            if started and len(ranks) >= 2:
                break
            time.sleep(0.02)
        victim = [pid for pid, (r, _) in ranks.items() if r == victim_rank]
        if mpirun.poll() is not None or len(ranks) < 2 or not victim:
            problems.append(f"training under mpirun did not get going (mpirun exit {mpirun.poll()}, "
                            f"kvroute ranks found {[(p, r) for p, (r, _) in ranks.items()]}); see {log}.err: "
                            f"{short(open(log + '.err').read())}")
        else:
            time.sleep(rng.uniform(0.0, 0.3))
            os.kill(victim[0], signal.SIGKILL)
            killed = time.monotonic()
            try:
                rc = mpirun.wait(timeout=60)
            except subprocess.TimeoutExpired:
                rc = None
                problems.append("mpirun still running 60 s after the kill")
            while time.monotonic() - killed < 60 and not all(gone(p, s) for p, (_, s) in ranks.items()):
                time.sleep(0.05)
            took = time.monotonic() - killed
            alive = [(p, r) for p, (r, s) in ranks.items() if not gone(p, s)]
            if alive:
                problems.append(f"ranks still running 60 s after the kill: {alive}")
            if rc is not None and rc == 0:
                problems.append("mpirun exited 0 after a rank was killed")
            print(f"  killed rank {victim_rank} (pid {victim[0]}): mpirun exit {rc}, all processes gone after "
                  f"{took:.1f} s", flush=True)
        # Whatever is left of this run goes (only the processes this test started).
        for pid, (_, start) in ranks.items():
            kill_if_alive(pid, start)
        if mpirun.poll() is None:
            mpirun.kill()
        mpirun.wait()
        if problems:
            failures += 1
            results.fail("mpi", f"rank {victim_rank} killed: " + "; ".join(problems))
        else:
            results.ok("mpi", f"rank {victim_rank} killed: mpirun exit {mpirun.returncode}, every process gone")
    return failures


# ---- Main ---------------------------------------------------------------------------------------


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kvroute", default=os.path.join(here, "..", "..", "build", "kvroute"))
    ap.add_argument("--mpiexec", default=shutil.which("mpiexec") or "")
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--trials", type=int, default=12, help="SIGKILL trials")
    ap.add_argument("--only", default=",".join(TESTS), help="comma-separated subset of " + ",".join(TESTS))
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = ap.parse_args()
    only = [t for t in a.only.split(",") if t]
    unknown = [t for t in only if t not in TESTS]
    if unknown:
        ap.error(f"unknown test(s) {unknown}; choose from {TESTS}")
    kv = os.path.abspath(a.kvroute)
    for _ in range(60):  # a rebuild may replace the binary
        if os.access(kv, os.X_OK):
            break
        time.sleep(1)
    if not os.access(kv, os.X_OK):
        print(f"fault_tests: {kv} is not an executable", file=sys.stderr)
        return 1

    start = time.monotonic()
    rng = random.Random(a.seed)
    results = Results()
    work = tempfile.mkdtemp(prefix="kvroute_fault_")
    print(f"fault_tests: kvroute {kv} (built {time.ctime(os.path.getmtime(kv))}), seed {a.seed}, work dir {work}",
          flush=True)
    mpi_missing, timings = False, []
    try:
        fx = Fixture(kv, work, a.keep)
        fx.build()
        timings.append(("fixtures", time.monotonic() - start))
        last_run = None
        for name in TESTS:
            if name not in only:
                continue
            t0 = time.monotonic()
            if name == "kill9":
                last_run = test_kill9(fx, rng, a.trials, results)
            elif name == "refuse":
                test_refuse(fx, last_run, results)
            elif name == "fsync":
                test_fsync(fx, results)
            elif name == "fsize":
                test_fsize(fx, results)
            elif name == "tmpfs":
                test_tmpfs(fx, results)
            elif name == "mpi":
                mpiexec = a.mpiexec if a.mpiexec and os.access(a.mpiexec, os.X_OK) else shutil.which(a.mpiexec or "mpiexec")
                if not mpiexec:
                    mpi_missing = True
                    results.skip("mpi", f"no mpirun ({a.mpiexec or 'not configured'})")
                else:
                    test_mpi(fx, mpiexec, rng, results)
            timings.append((name, time.monotonic() - t0))
    except Exception as e:  # a broken fixture or harness: a failure
        traceback.print_exc()
        results.fail("harness", f"{type(e).__name__}: {e}")
    finally:
        failed = results.failed()
        print(f"\n== summary ({time.monotonic() - start:.1f} s, seed {a.seed})")
        for test, status, detail in results.rows:
            print(f"  {status:4s} {test:7s} {detail}")
        print("  time: " + ", ".join(f"{n} {t:.1f} s" for n, t in timings))
        if a.keep:
            print(f"  logs and run directories kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
            if failed:
                print(f"  to keep the logs and run directories: --keep --seed {a.seed}")
    if failed:
        print(f"fault_tests: {len(failed)} FAILED")
        return 1
    if mpi_missing:
        print("fault_tests: passed, MPI test skipped (no mpirun)")
        return 77
    print("fault_tests: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
