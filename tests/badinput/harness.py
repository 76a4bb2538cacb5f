#!/usr/bin/python3
"""Seeded bad-input harness for the kvroute executable.

The contract under test (README "Every bad input ..."): for every bad input the process exits
non-zero on its own (no signal, no timeout), its stderr is exactly one line starting with
"kvroute: error: " (a flag the command line parser rejects: the same line, exit code 2), and
nothing already written is lost: a run directory, checkpoint or output directory that existed
before a failed command is byte-for-byte unchanged after it.

The harness builds everything it needs from nothing in a fresh temporary directory (a generated
pseudo-English corpus, a 300-token tokenizer, shards, a tiny config and one trained "golden" run
with two checkpoints, a fixed_groups run, an export of the golden checkpoint, supervised fine-tuning
data from a generated JSONL file, a QA task file, the tokenizer converted to a Hugging Face
tokenizer.json), copies the Hugging Face model directories of tests/reference/fixtures/hf (vocab 64,
with shards remapped below 64), then runs several hundred cases: a fixed list of targeted mutations
per category plus seeded random ones (byte flips, truncations, duplicated lines, hostile values).
Every case that changes a file works on a copy in its own directory, never on the fixtures.

Each case carries an expectation:
  fail   the input is certainly invalid: must fail cleanly (any non-zero exit)
  fail2  a command-line parse error: must fail cleanly with exit code 2
  any    may be accepted (exit 0) or fail cleanly, but must never crash, hang, or print more
         than the one error line (random byte flips, which can land somewhere harmless)
  pass   a valid control command that must succeed (guards against over-strict validation
         and against a broken fixture)
A case may also list what its error line must name (Spec.mention: a file:line, a key path).

Standard library only; run with /usr/bin/python3:
  harness.py --kvroute build/kvroute [--cases 300] [--seed 1] [--keep-going] [--only CATEGORY,...]
             [--case ID] [--list] [--jobs N] [--timeout S] [--keep-workdir] [--json FILE] [-v]
--cases is the total: below the number of targeted cases it runs a seeded sample of them (in
proportion per category, baselines always); above it the rest are seeded random mutations.
Without --keep-going the run stops starting cases after the first violation.
Exit status: 0 no violation, 1 violations (each listed with its command), 3 the fixtures could not
be built, 2 usage errors.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import random
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

PREFIX = "kvroute: error: "
CKPT_STEP = "step_00000004"          # the golden run's newest checkpoint (steps 4, interval 2)
CK = f"run/checkpoints/{CKPT_STEP}"  # as seen from a case directory holding a copy of the run
CATEGORIES = ["baseline", "config", "override", "shard", "datajson", "tokenizer", "safetensors", "state",
              "ckptconfig", "rundir", "study", "cli", "hfmodel", "export", "sft", "task", "tokenizerjson", "output"]
# Share of the seeded random cases per category (categories with a random generator).
RANDOM_WEIGHTS = {"config": 22, "override": 14, "shard": 12, "datajson": 6, "tokenizer": 10, "safetensors": 14,
                  "state": 8, "ckptconfig": 4, "cli": 10, "hfmodel": 14, "export": 5, "sft": 10, "task": 6,
                  "tokenizerjson": 10}
# The Hugging Face model directories of tests/reference/fixtures/hf the harness copies (vocab 64).
HF_SRC = Path(__file__).resolve().parent.parent / "reference" / "fixtures" / "hf"
HF_MODELS = {"llama": "llama-4x-bf16-sharded", "qwen3": "qwen3-5x-f16", "tied": "qwen3-4x-f32-tied-lmhead",
             "mistral": "mistral-4x-bf16"}
HF_VOCAB = 64
CLA_CK = "cla/checkpoints/step_00000002"  # a fixed_groups (CLA) run: layer 1 has no K/V weights
DEEP = 100_000  # nesting depth of the deep-nesting cases
ARG_DEEP = 60_000  # the same in a command-line argument (at most 128 KiB each)
I64_MAX = "9223372036854775807"


# ------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------

class FixtureError(Exception):
    pass


@dataclass
class Ctx:
    kvroute: str          # the snapshot that runs
    kvroute_shown: str    # the path given on the command line (for reproduction lines)
    work: Path
    fixtures: Path
    corpus: Path
    tok: Path
    data: Path
    golden: Path          # holds config.yaml (run_dir: run) and run/
    hf: Optional[Path] = None        # copies of the Hugging Face model directories (HF_MODELS), vocab 64
    hfdata: Optional[Path] = None    # the shards with every token < 64, for the vocab-64 models
    hfgolden: Optional[Path] = None  # `kvroute export` of the golden checkpoint (bf16, 3 shards + index)
    cla: Optional[Path] = None       # holds cla/ (a fixed_groups run) and cla.yaml
    vocab: int = 0
    prepare_help: str = ""  # `kvroute prepare --help`: which optional flags this build has
    sftjsonl: Optional[Path] = None  # the JSONL examples `prepare --format sft` turned into `sft`
    sft: Optional[Path] = None       # sft_train.bin, sft_val.bin, data.json ("format": "sft"), vocab 300
    task: Optional[Path] = None      # a QA task file for `eval --task` (prompt/response, context/question/answer[s])
    hftok: Optional[Path] = None     # tokenizer.json + tokenizer_config.json: the 300-token tokenizer converted
    eot: int = 0
    env: dict = field(default_factory=dict)
    wrapper: list = field(default_factory=list)


def make_corpus(out: Path, seed: int = 20240520, target_bytes: int = 320_000) -> None:
    """Deterministic pseudo-English: a Zipf-distributed vocabulary of made-up words, sentences and
    paragraphs, as .txt documents plus one .jsonl file ({"text": ...} per line)."""
    r = random.Random(seed)
    onsets = ["b", "c", "d", "f", "g", "h", "l", "m", "n", "p", "r", "s", "t", "v", "w", "th", "st", "pr",
              "ch", "sh", "gr", "tr", "", ""]
    vowels = ["a", "e", "i", "o", "u", "ea", "ou", "ai", "io", "ee"]
    codas = ["", "", "n", "r", "s", "t", "l", "nd", "st", "ng", "rd", "m"]
    function = ("the of and to in a is that for it as was with be by on not he this are or his from at which "
                "but have an they you were her she there been one all we their has would when if so no").split()
    words = set()
    while len(words) < 1500:
        words.add("".join(r.choice(onsets) + r.choice(vowels) + r.choice(codas)
                          for _ in range(r.choice([1, 1, 2, 2, 3]))))
    vocab = function + sorted(words)
    weights = [1.0 / (i + 1) ** 1.05 for i in range(len(vocab))]
    cum = []
    total = 0.0
    for w in weights:
        total += w
        cum.append(total)

    def sentence() -> str:
        n = r.randint(4, 18)
        ws = r.choices(vocab, cum_weights=cum, k=n)
        if r.random() < 0.15:
            ws.insert(r.randrange(len(ws)), str(r.randint(1, 2024)))
        if n > 8 and r.random() < 0.4:
            ws[r.randrange(1, n - 1)] += ","
        ws[0] = ws[0].capitalize()
        return " ".join(ws) + r.choice([".", ".", ".", "!", "?", ";"])

    def document(paragraphs: int) -> str:
        return "\n\n".join(" ".join(sentence() for _ in range(r.randint(2, 7))) for _ in range(paragraphs)) + "\n"

    out.mkdir(parents=True)
    written = 0
    i = 0
    while written < target_bytes * 0.85:
        text = document(r.randint(3, 10))
        (out / f"doc_{i:03d}.txt").write_text(text)
        written += len(text)
        i += 1
    with open(out / "extra.jsonl", "w") as f:
        while written < target_bytes:
            text = document(r.randint(1, 3))
            f.write(json.dumps({"text": text, "id": i}) + "\n")
            written += len(text)
            i += 1


def q(s: str) -> str:
    """A YAML double-quoted scalar (JSON string syntax is valid YAML)."""
    return json.dumps(s)


def base_cfg(ctx: Ctx) -> dict:
    return {
        "model": {"vocab_size": str(ctx.vocab), "hidden_size": "32", "num_layers": "2", "num_heads": "2",
                  "num_kv_heads": "1", "head_dim": "16", "intermediate_size": "64", "max_seq_len": "128",
                  "rope_theta": "10000"},
        "router": {"policy": "stochastic", "share_prob": "0.5"},
        "data": {"dir": q(str(ctx.data)), "tokenizer": q(str(ctx.tok))},
        "optim": {"lr": "3.0e-3", "min_lr": "3.0e-4"},
        "train": {"name": "golden", "run_dir": "run", "steps": "4", "batch_size": "2", "seq_len": "16",
                  "log_interval": "2", "checkpoint_interval": "2", "threads": "1"},
        "eval": {"retention": "[1.0, 0.5]", "batches": "2"},
        "dist": {"backend": "none"},
    }


def render_cfg(cfg: dict) -> str:
    lines = []
    for section, keys in cfg.items():
        lines.append(f"{section}:")
        for k, v in keys.items():
            lines.append(f"  {k}: {v}")
    return "\n".join(lines) + "\n"


STUDY = """study: st
base: cfg.yaml
overrides: [train.steps=2, train.checkpoint_interval=0, eval.interval=0]
runs:
  - name: a
    overrides: [router.policy=none]
eval:
  retention: [1.0, 0.5]
  batches: 1
"""


def run_fixture_cmd(ctx: Ctx, args: list, cwd: Path) -> None:
    p = subprocess.run(ctx.wrapper + [ctx.kvroute] + args, cwd=cwd, env=ctx.env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    if p.returncode != 0:
        raise FixtureError(f"fixture command failed (exit {p.returncode}): cd {cwd} && "
                           f"{shlex.join([ctx.kvroute_shown] + args)}\n{p.stderr.decode(errors='replace')[-2000:]}")


def build_fixtures(ctx: Ctx) -> None:
    make_corpus(ctx.corpus)
    run_fixture_cmd(ctx, ["tokenizer", "train", "--vocab", "300", "--input", str(ctx.corpus), "--out", str(ctx.tok),
                          "--threads", "1"], ctx.fixtures)
    run_fixture_cmd(ctx, ["prepare", "--input", str(ctx.corpus), "--tokenizer", str(ctx.tok), "--out", str(ctx.data),
                          "--val-fraction", "0.05", "--threads", "1"], ctx.fixtures)
    p = subprocess.run(ctx.wrapper + [ctx.kvroute, "prepare", "--help"], env=ctx.env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    ctx.prepare_help = p.stdout.decode(errors="replace")
    meta = json.loads((ctx.data / "data.json").read_text())
    ctx.vocab, ctx.eot = int(meta["vocab_size"]), int(meta["eot_id"])
    ctx.golden.mkdir()
    (ctx.golden / "config.yaml").write_text(render_cfg(base_cfg(ctx)))
    run_fixture_cmd(ctx, ["train", "config.yaml"], ctx.golden)
    ck = ctx.golden / CK
    for name in ["model.safetensors", "optimizer.safetensors", "state.json", "config.yaml"]:
        if not (ck / name).is_file():
            raise FixtureError(f"the golden run has no {ck / name}")
    if not (ctx.golden / "run/checkpoints/step_00000002").is_dir():
        raise FixtureError("the golden run has no step_00000002 checkpoint")
    build_hf_fixtures(ctx)
    build_sft_fixtures(ctx)


def build_hf_fixtures(ctx: Ctx) -> None:
    """The Hugging Face side: copies of the reference model directories, shards they can read (every
    token < 64), a fixed_groups (CLA) checkpoint, and an export of the golden checkpoint."""
    ctx.hf, ctx.hfdata, ctx.hfgolden, ctx.cla = (ctx.fixtures / "hf", ctx.fixtures / "hfdata",
                                                 ctx.fixtures / "hfgolden", ctx.fixtures / "cla")
    ctx.hf.mkdir()
    for name in HF_MODELS.values():
        src = HF_SRC / name
        if not (src / "config.json").is_file():
            raise FixtureError(f"{src}: no Hugging Face model directory (tests/reference/fixtures/hf)")
        shutil.copytree(src, ctx.hf / name, ignore=shutil.ignore_patterns("reference.safetensors", "eval.*"))
    ctx.hfdata.mkdir()
    meta = json.loads((ctx.data / "data.json").read_text())
    meta.update({"vocab_size": HF_VOCAB, "eot_id": HF_VOCAB - 1})
    (ctx.hfdata / "data.json").write_text(json.dumps(meta, indent=2) + "\n")
    for shard in sorted(ctx.data.glob("*.bin")):
        header, body = shard_bytes(shard)
        toks = struct.unpack(f"<{len(body) // 2}H", body)
        toks = [HF_VOCAB - 1 if t == ctx.eot else t % (HF_VOCAB - 1) for t in toks]
        write_shard(ctx.hfdata / shard.name, header, struct.pack(f"<{len(toks)}H", *toks))
    ctx.cla.mkdir()
    cfg = base_cfg(ctx)
    cfg["router"] = {"policy": "fixed_groups", "group_size": "2"}
    cfg["train"].update({"name": "cla", "run_dir": "cla", "steps": "2"})
    (ctx.cla / "cla.yaml").write_text(render_cfg(cfg))
    run_fixture_cmd(ctx, ["train", "cla.yaml"], ctx.cla)
    if not (ctx.cla / CLA_CK / "model.safetensors").is_file():
        raise FixtureError(f"the fixed_groups run has no {CLA_CK}")
    run_fixture_cmd(ctx, ["export", str(ctx.golden / CK), "--out", str(ctx.hfgolden), "--dtype", "bf16",
                          "--shard-size", "20000"], ctx.fixtures)
    if not (ctx.hfgolden / "model.safetensors.index.json").is_file():
        raise FixtureError(f"{ctx.hfgolden}: the export of the golden checkpoint is not sharded")


SFT_WORDS = ("the sun moon river stone tree bird rain wind fire house road cold warm old new small big red "
             "blue green light dark north south morning evening").split()


def sft_text(r: random.Random, lo: int, hi: int) -> str:
    return " ".join(r.choice(SFT_WORDS) for _ in range(r.randint(lo, hi)))


def sft_line(r: random.Random, i: int) -> dict:
    if i % 2:
        return {"prompt": sft_text(r, 2, 8), "response": " " + sft_text(r, 1, 5)}
    return {"context": sft_text(r, 3, 10), "question": sft_text(r, 2, 4) + "?", "answer": sft_text(r, 1, 3)}


SFT_LINES = 40  # examples in the fixture's JSONL file (val fraction 0.2: 32 train, 8 val)


def write_sft_fixtures(ctx: Ctx) -> None:
    r = random.Random(20261123)
    ctx.sftjsonl.write_text("".join(json.dumps(sft_line(r, i)) + "\n" for i in range(SFT_LINES)))
    task = [{"context": "the sun is red", "question": "what is red?", "answers": ["the sun", "sun"]},
            {"prompt": "the old road is", "response": " cold"},
            {"context": "a bird in the rain", "question": "where is the bird?", "answer": "in the rain"},
            {"context": "north wind", "question": "which wind?", "answer": "north", "answers": ["north", "the north"]}]
    ctx.task.write_text("".join(json.dumps(t) + "\n" for t in task))


def tokenizer_json(tok: Path) -> dict:
    """encoder.json + vocab.bpe as a Hugging Face tokenizer.json (byte-level BPE, GPT-2 layout); the
    same ids, so that the golden model (vocab 300) can use it."""
    enc = json.loads((tok / "encoder.json").read_text())
    lines = (tok / "vocab.bpe").read_text().splitlines()
    merges = [m for i, m in enumerate(lines) if m and not (i == 0 and m.startswith("#version"))]
    flags = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
    return {"version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": enc["<|endoftext|>"], "content": "<|endoftext|>", **flags}],
            "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                      "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": enc, "merges": merges}}


def build_sft_fixtures(ctx: Ctx) -> None:
    """Supervised fine-tuning data (prepare --format sft), a QA task file and the tokenizer as a
    Hugging Face tokenizer.json."""
    ctx.sftjsonl, ctx.sft, ctx.task, ctx.hftok = (ctx.fixtures / "sft.jsonl", ctx.fixtures / "sft",
                                                  ctx.fixtures / "task.jsonl", ctx.fixtures / "hftok")
    write_sft_fixtures(ctx)
    run_fixture_cmd(ctx, ["prepare", "--format", "sft", "--input", str(ctx.sftjsonl), "--tokenizer", str(ctx.tok),
                          "--out", str(ctx.sft), "--val-fraction", "0.2", "--seed", "3", "--threads", "1"], ctx.fixtures)
    for name in ["sft_train.bin", "sft_val.bin", "data.json"]:
        if not (ctx.sft / name).is_file():
            raise FixtureError(f"prepare --format sft wrote no {ctx.sft / name}")
    ctx.hftok.mkdir()
    (ctx.hftok / "tokenizer.json").write_text(json.dumps(tokenizer_json(ctx.tok), ensure_ascii=False))
    (ctx.hftok / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>",
                                                                 "model_max_length": 128}) + "\n")


# ------------------------------------------------------------------------------------------------
# Hashing (never opens anything but regular files: FIFOs stay unread)
# ------------------------------------------------------------------------------------------------

def tree_hash(path: Path) -> dict:
    out = {}
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return {".": "missing"}
    base = str(path)

    def one(p: str, rel: str) -> None:
        s = os.lstat(p)
        if os.path.islink(p):
            out[rel] = "link:" + os.readlink(p)
        elif os.path.isdir(p):
            out[rel] = "dir"
            for name in sorted(os.listdir(p)):
                one(os.path.join(p, name), rel + "/" + name)
        elif os.path.isfile(p):
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            out[rel] = f"file:{s.st_size}:{h.hexdigest()}"
        else:
            out[rel] = f"special:{s.st_mode:o}"

    del st
    one(base, ".")
    return out


def tree_diff(before: dict, after: dict) -> str:
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    parts = []
    for k in changed[:4]:
        b, a = before.get(k, "absent"), after.get(k, "absent")
        parts.append(f"{k}: {b[:40]} -> {a[:40]}")
    more = f" (+{len(changed) - 4} more)" if len(changed) > 4 else ""
    return "; ".join(parts) + more


# ------------------------------------------------------------------------------------------------
# Case machinery
# ------------------------------------------------------------------------------------------------

@dataclass
class Spec:
    argv: list                 # arguments after the executable
    protect: list = field(default_factory=list)   # case-relative paths that must survive a failure
    detail: str = ""           # what exactly was mutated
    expect: Optional[str] = None  # overrides the case's expectation once the mutation is known
    timeout: Optional[float] = None
    mention: list = field(default_factory=list)  # what the error line must name (a file:line, a key)


@dataclass
class Case:
    id: str
    category: str
    desc: str
    expect: str
    build: Callable  # (Env) -> Spec


class Env:
    """One case's directory, its seeded RNG and helpers that copy fixtures into it."""

    def __init__(self, ctx: Ctx, d: Path, rng: random.Random):
        self.ctx, self.d, self.rng = ctx, d, rng

    def p(self, rel: str) -> Path:
        return self.d / rel

    def write(self, rel: str, data) -> str:
        path = self.p(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            remove(path)
        if isinstance(data, str):
            data = data.encode()
        path.write_bytes(data)
        return rel

    def cfg(self, text: Optional[str] = None, cfg: Optional[dict] = None, rel: str = "cfg.yaml") -> str:
        if text is None:
            text = render_cfg(cfg if cfg is not None else base_cfg(self.ctx))
        return self.write(rel, text)

    def run_copy(self) -> str:
        if not self.p("run").exists():
            shutil.copytree(self.ctx.golden / "run", self.p("run"), symlinks=True)
            shutil.copy2(self.ctx.golden / "config.yaml", self.p("config.yaml"))
        return CK

    def data_copy(self, rel: str = "data") -> str:
        if not self.p(rel).exists():
            shutil.copytree(self.ctx.data, self.p(rel), symlinks=True)
        return rel

    def tok_copy(self, rel: str = "tok") -> str:
        if not self.p(rel).exists():
            shutil.copytree(self.ctx.tok, self.p(rel), symlinks=True)
        return rel

    def study(self, text: str = STUDY) -> str:
        self.cfg()
        return self.write("study.yaml", text)

    def hf_copy(self, which: str, rel: str = "model") -> str:
        """A copy of a Hugging Face model directory: a key of HF_MODELS, or "golden" (the export of
        the golden checkpoint, vocab 300)."""
        if not self.p(rel).exists():
            src = self.ctx.hfgolden if which == "golden" else self.ctx.hf / HF_MODELS[which]
            shutil.copytree(src, self.p(rel), symlinks=True)
        return rel

    def sft_copy(self, rel: str = "sft") -> str:
        if not self.p(rel).exists():
            shutil.copytree(self.ctx.sft, self.p(rel), symlinks=True)
        return rel

    def hftok_copy(self, rel: str = "tok") -> str:
        """A copy of the tokenizer.json directory (tokenizer.json + tokenizer_config.json)."""
        if not self.p(rel).exists():
            shutil.copytree(self.ctx.hftok, self.p(rel), symlinks=True)
        return rel

    def cla_copy(self) -> str:
        if not self.p("cla").exists():
            shutil.copytree(self.ctx.cla / "cla", self.p("cla"), symlinks=True)
        return CLA_CK


def remove(path: Path) -> None:
    if path.is_symlink() or path.is_file() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def make_fifo(path: Path) -> None:
    remove(path) if (path.exists() or path.is_symlink()) else None
    os.mkfifo(path)


def make_dir(path: Path) -> None:
    remove(path) if (path.exists() or path.is_symlink()) else None
    path.mkdir(parents=True)


def make_link(path: Path, target: str) -> None:
    remove(path) if (path.exists() or path.is_symlink()) else None
    os.symlink(target, path)


def mutate_json_file(path: Path, rng: random.Random, obj: dict, keys: list, values: list, setter) -> tuple:
    """One random mutation of a JSON file: a flipped byte, a truncation, or one key set to a raw
    JSON value. Returns (detail, expect); expect is "value" for the last kind (the caller decides
    whether that value is certainly invalid)."""
    kind = rng.choice(["flip", "value", "value", "trunc"])
    if kind == "flip":
        i, o, n = flip_byte(path, rng)
        return f"byte {i} 0x{o:02x} -> 0x{n:02x}", "any"
    if kind == "trunc":
        text = path.read_bytes()
        n = rng.randrange(len(text))
        path.write_bytes(text[:n])
        return f"truncated to {n} of {len(text)} bytes", "any" if text[n:].strip() == b"" else "fail"
    key = rng.choice(keys)
    raw = rng.choice(values)
    setter(obj, key, "__V__")
    path.write_text(json.dumps(obj, indent=2).replace('"__V__"', raw))
    return f"{key}: {raw}", "value"


def flip_byte(path: Path, rng: random.Random, lo: int = 0, hi: Optional[int] = None) -> tuple:
    b = bytearray(path.read_bytes())
    hi = len(b) if hi is None else min(hi, len(b))
    i = rng.randrange(lo, hi)
    old = b[i]
    new = rng.choice([x for x in range(256) if x != old])
    b[i] = new
    path.write_bytes(bytes(b))
    return i, old, new


def deep(n: int = DEEP, kind: str = "array") -> str:
    if kind == "array":
        return "[" * n + "]" * n
    return '{"a":' * n + "1" + "}" * n


def deep_yaml(n: int = DEEP, kind: str = "array") -> str:
    if kind == "array":
        return "[" * n + "]" * n
    return "{a: " * n + "1" + "}" * n


# ---- safetensors --------------------------------------------------------------------------------

def st_parts(path: Path) -> tuple:
    b = path.read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    return n, b[8:8 + n], b[8 + n:]


def st_header(path: Path) -> dict:
    _, h, _ = st_parts(path)
    return json.loads(h)


def st_write(path: Path, header, data: bytes, pad: bool = True, length: Optional[int] = None,
             deep_marker: Optional[str] = None) -> None:
    text = header if isinstance(header, (bytes, str)) else json.dumps(header, separators=(",", ":"))
    if isinstance(text, str):
        if deep_marker is not None:
            text = text.replace(json.dumps(deep_marker), deep_marker_value(deep_marker))
        text = text.encode()
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    n = len(text) if length is None else length
    path.write_bytes(struct.pack("<Q", n % (1 << 64)) + text + data)


def deep_marker_value(marker: str) -> str:
    return deep(DEEP, "object" if "OBJ" in marker else "array")


def tensor_names(header: dict) -> list:
    return [k for k in header if k != "__metadata__"]


def nbytes(entry: dict) -> int:
    return entry["data_offsets"][1] - entry["data_offsets"][0]


JSON_WS = b" \t\r\n"


# ------------------------------------------------------------------------------------------------
# Commands that read a checkpoint (run from a case directory holding a copy of the golden run)
# ------------------------------------------------------------------------------------------------

CK_CMDS = {
    "eval": ["eval", "--checkpoint", CK, "--batches", "1", "--threads", "1"],
    "generate": ["generate", "--checkpoint", CK, "--prompt", "the sun", "--max-new-tokens", "4", "--threads", "1"],
    "resume": ["train", "config.yaml", "--resume", "auto", "train.steps=6"],
    "benchgen": ["bench", "generate", "--checkpoint", CK, "--prompt-lengths", "4", "--batch-sizes", "1",
                 "--new-tokens", "2", "--repeats", "1", "--retention", "1", "--threads", "1"],
}
WEIGHT_READERS = ["eval", "generate", "resume", "benchgen"]


def ck_spec(env: Env, cmd: str, detail: str = "", expect: Optional[str] = None) -> Spec:
    env.run_copy()
    return Spec(list(CK_CMDS[cmd]), protect=["run"], detail=detail, expect=expect)


# ------------------------------------------------------------------------------------------------
# The config schema (train/config.cpp) for the value oracle
# ------------------------------------------------------------------------------------------------

# kind, and for int: (min, huge_is_invalid); float: (min, max, min_open)
SCHEMA = {
    ("model", "vocab_size"): ("int", 1, True), ("model", "hidden_size"): ("int", 1, True),
    ("model", "num_layers"): ("int", 1, True), ("model", "num_heads"): ("int", 1, True),
    ("model", "num_kv_heads"): ("int", 1, True), ("model", "head_dim"): ("int", 2, True),
    ("model", "intermediate_size"): ("int", 1, True), ("model", "rope_theta"): ("float", 0, 1e12, True),
    ("model", "rms_norm_eps"): ("float", 0, 1, True), ("model", "max_seq_len"): ("int", 1, True),
    ("model", "tie_embeddings"): ("bool",), ("model", "qk_norm"): ("bool",),
    ("model", "init_std"): ("float", 0, 10, True), ("model", "scaled_residual_init"): ("bool",),
    ("model", "init_from"): ("path",), ("model", "architecture"): ("enum",), ("model", "rope_scaling"): ("enum",),
    ("model", "rope_factor"): ("float", 1, 1e6, False), ("model", "rope_low_freq_factor"): ("float", 0, 1e6, True),
    ("model", "rope_high_freq_factor"): ("float", 0, 1e6, True),
    ("model", "rope_original_max_position"): ("int", 1, True), ("model", "sliding_window"): ("int", 0, True),
    ("router", "policy"): ("enum",), ("router", "share_prob"): ("float", 0, 1, False),
    ("router", "source"): ("enum",), ("router", "group_size"): ("int", 1, True),
    ("router", "group_share_prob"): ("float", 0, 1, False), ("router", "seed"): ("int", 0, False),
    ("router", "same_plan_all_ranks"): ("bool",), ("router", "kv_init"): ("enum",),
    ("data", "dir"): ("str",), ("data", "tokenizer"): ("str",),
    ("optim", "lr"): ("float", 0, 10, False), ("optim", "min_lr"): ("float", 0, 10, False),
    ("optim", "beta1"): ("float", 0, 0.999999, False), ("optim", "beta2"): ("float", 0, 0.999999, False),
    ("optim", "eps"): ("float", 1.1754943508222875e-38, 1, False), ("optim", "weight_decay"): ("float", 0, 10, False),
    ("optim", "grad_clip"): ("float", 0, 1e9, False), ("optim", "schedule"): ("enum",),
    ("optim", "warmup_fraction"): ("float", 0, 1, False), ("optim", "decay_fraction"): ("float", 0, 1, False),
    ("train", "name"): ("str",), ("train", "run_dir"): ("str",), ("train", "steps"): ("int", 1, None),
    ("train", "batch_size"): ("int", 1, True), ("train", "seq_len"): ("int", 1, True),
    ("train", "global_batch_tokens"): ("int", 0, True), ("train", "seed"): ("int", 0, False),
    ("train", "log_interval"): ("int", 1, False), ("train", "checkpoint_interval"): ("int", 0, False),
    ("train", "keep_checkpoints"): ("int", 1, False), ("train", "threads"): ("int", 0, True),
    ("train", "device"): ("enum",), ("train", "precision"): ("enum",), ("train", "attention"): ("enum",),
    ("train", "peak_tflops"): ("float", 0, 1e6, False),
    ("eval", "interval"): ("int", 0, False), ("eval", "retention"): ("list",), ("eval", "batches"): ("int", 0, False),
    ("dist", "backend"): ("enum",), ("dist", "bucket_mb"): ("float", 0, 65536, True),
}

NASTY = ["abc", "-1", "0", I64_MAX, "9223372036854775808", "-9223372036854775809", "1e308", ".nan", ".inf",
         "-.inf", "[1, 2]", "{a: 1}", "''", "3.5", "true", "0x10", "[" * 300 + "]" * 300]


def oracle(key: tuple, value: str) -> Optional[str]:
    """'fail' when `value` is certainly invalid for `key`, 'any' when it may be valid, None when the
    combination is not worth running (it would train for ever)."""
    kind = SCHEMA[key][0]
    structural = value.startswith("[") or value.startswith("{")
    # Cross-field rules against the base config (architecture qwen3, max_seq_len 128): qwen3 needs
    # qk_norm true, and only a mistral model has a sliding window, so any value but 0 fails.
    if key == ("model", "qk_norm") and value == "0":
        return "fail"
    if key == ("model", "sliding_window") and value != "0":
        return "fail"
    if kind == "path":  # model.init_from: no such directory in the case directory; '' means none
        return "any" if value == "''" else "fail"
    if kind == "list":
        return "fail"  # every NASTY value is a scalar, a map or a list holding 2 / nothing
    if kind == "enum":
        return "fail"
    if kind == "str":
        return "fail" if structural else "any"
    if kind == "bool":
        return "any" if value in ("true", "0") else "fail"
    if structural or value in ("abc", "''", "true", ".nan", ".inf", "-.inf", "1e308", "-1",
                               "-9223372036854775809"):
        return "fail"
    if kind == "int":
        _, lo, huge_bad = SCHEMA[key]
        if value in ("9223372036854775808", "3.5"):
            return "fail"
        if value == I64_MAX:
            if huge_bad is None:
                return None
            return "fail" if huge_bad else "any"
        if value == "0":
            return "fail" if lo >= 1 else "any"
        return "any"  # 0x10
    # float
    _, lo, hi, open_lo = SCHEMA[key]
    if value in (I64_MAX, "9223372036854775808"):
        return "fail" if float(value) > hi else "any"
    if value == "0":
        return "fail" if open_lo or lo > 0 else "any"
    if value == "3.5":
        return "fail" if not lo <= 3.5 <= hi else "any"
    return "any"


# ------------------------------------------------------------------------------------------------
# Case lists
# ------------------------------------------------------------------------------------------------

class Registry:
    def __init__(self):
        self.cases: list = []
        self.count: dict = {}

    def add(self, category: str, name: str, desc: str, expect: str, build: Callable) -> None:
        n = self.count.get(category, 0)
        self.count[category] = n + 1
        self.cases.append(Case(f"{category}-{n:03d}-{name}", category, desc, expect, build))


def cli_argv(env: Env, argv: list) -> list:
    """Resolves placeholders and creates what the arguments refer to."""
    out = []
    for a in argv:
        if "{CK}" in a:
            env.run_copy()
            a = a.replace("{CK}", CK)
        if "{TOK}" in a:
            a = a.replace("{TOK}", str(env.ctx.tok))
        if "{CORPUS}" in a:
            a = a.replace("{CORPUS}", str(env.ctx.corpus))
        if "{DATA}" in a:
            a = a.replace("{DATA}", str(env.ctx.data))
        for key, path in (("{SFT}", env.ctx.sft), ("{SFTJSONL}", env.ctx.sftjsonl), ("{TASK}", env.ctx.task),
                          ("{HFTOK}", env.ctx.hftok)):
            if key in a:
                a = a.replace(key, str(path))
        if a == "{FIFO}":
            make_fifo(env.p("fifo"))
            a = "fifo"
        if a == "{EMPTYDIR}":
            make_dir(env.p("emptydir"))
            a = "emptydir"
        if a == "cfg.yaml":
            env.cfg()
        if a == "study.yaml":
            env.study()
        out.append(a)
    return out


def simple(argv: list, protect: Optional[list] = None, prep: Optional[Callable] = None) -> Callable:
    def build(env: Env) -> Spec:
        if prep:
            prep(env)
        return Spec(cli_argv(env, argv), protect=list(protect or []))
    return build


# ---- baseline -----------------------------------------------------------------------------------

def baseline_cases(R: Registry) -> None:
    def add(name: str, argv: list, desc: str, prep: Optional[Callable] = None) -> None:
        R.add("baseline", name, desc, "pass", simple(argv, prep=prep))

    add("train", ["train", "cfg.yaml"], "train the tiny config from scratch")
    add("resume", ["train", "config.yaml", "--resume", "auto", "train.steps=6"],
        "resume a copy of the golden run and train 2 more steps", prep=lambda env: env.run_copy())
    add("eval", ["eval", "--checkpoint", "{CK}", "--batches", "1", "--threads", "1"], "eval a checkpoint copy")
    add("eval-greedy", ["eval", "--checkpoint", "{CK}", "--batches", "1", "--keep", "0,1", "--groups", "2",
                        "--strategy", "greedy", "--out", "evalout"], "eval with keep-sets and greedy plans")
    add("generate", ["generate", "--checkpoint", "{CK}", "--prompt", "the sun", "--max-new-tokens", "4",
                     "--top-k", "5", "--top-p", "0.9", "--retention", "0.5"], "sample 4 tokens")
    add("encode", ["tokenizer", "encode", "--tokenizer", "{TOK}", "--text", "hello world"], "encode a text")
    add("decode", ["tokenizer", "decode", "--tokenizer", "{TOK}", "--ids", "104 101,108 108 111"], "decode ids")
    add("bench-train-random", ["bench", "train", "cfg.yaml", "--steps", "1", "--no-peer", "--random-data"],
        "bench train on random tokens (no corpus needed)")
    add("tok-train", ["tokenizer", "train", "--input", "{CORPUS}", "--vocab", "280", "--out", "tokout",
                      "--threads", "1"], "train a tokenizer")
    add("prepare", ["prepare", "--input", "{CORPUS}", "--tokenizer", "{TOK}", "--out", "dataout", "--threads", "1"],
        "prepare shards")
    add("prepare-tiny-shards", ["prepare", "--input", "{CORPUS}", "--tokenizer", "{TOK}", "--out", "dataout",
                                     "--threads", "1", "--shard-tokens", "8"],
        "8-token shards (about ten thousand files: synced once, not one by one)")
    add("bench-gen", ["bench", "generate", "--checkpoint", "{CK}", "--prompt-lengths", "4", "--batch-sizes", "1",
                      "--new-tokens", "2", "--repeats", "1", "--threads", "1"], "bench generate on a checkpoint copy")
    add("bench-train", ["bench", "train", "cfg.yaml", "--steps", "1", "--no-peer"], "bench train, no peer")
    add("sweep", ["sweep", "study.yaml"], "a one-run study")

    # architectures, Hugging Face model directories, model.init_from, export
    def scratch(name: str, desc: str, values: dict) -> None:
        def build(env: Env) -> Spec:
            c = base_cfg(env.ctx)
            for (section, key), value in values.items():
                c[section][key] = value
            env.cfg(cfg=c)
            return Spec(["train", "cfg.yaml"])
        R.add("baseline", name, desc, "pass", build)
    scratch("train-llama3", "train a llama model with llama3 RoPE scaling from scratch",
            {("model", "architecture"): "llama", ("model", "rope_scaling"): "llama3", ("model", "rope_factor"): "8",
             ("model", "rope_low_freq_factor"): "1", ("model", "rope_high_freq_factor"): "4",
             ("model", "rope_original_max_position"): "32"})
    scratch("train-mistral-window", "train a mistral model with sliding_window 128 from scratch",
            {("model", "architecture"): "mistral", ("model", "sliding_window"): "128"})
    for which in ["llama", "qwen3", "golden"]:
        R.add("baseline", f"hf-eval-{which}", f"eval a copy of the {which} Hugging Face model directory", "pass",
              lambda env, which=which: hf_spec(env, which, "eval"))

    def init_mistral(env: Env) -> Spec:
        m = env.hf_copy("mistral")
        env.cfg(cfg=init_cfg(env, "mistral", extra={("router", "policy"): "fixed_groups", ("router", "group_size"): "2",
                                                    ("router", "kv_init"): "average"}), rel="init.yaml")
        return Spec(["train", "init.yaml"], protect=[m])
    R.add("baseline", "hf-init-mistral-cla", "train fixed_groups from a mistral model.init_from, kv_init average",
          "pass", init_mistral)

    def init_ckpt(env: Env) -> Spec:
        env.run_copy()
        env.cfg(cfg=init_cfg(env, "ckpt", {"init_from": CK}), rel="init.yaml")
        return Spec(["train", "init.yaml"], protect=["run"])
    R.add("baseline", "init-checkpoint", "train from model.init_from a kvroute checkpoint", "pass", init_ckpt)
    add("export", ["export", "{CK}", "--out", "exported"], "export the golden checkpoint (f32, one file)")
    add("export-bf16-sharded", ["export", "{CK}", "--out", "exported", "--dtype", "bf16", "--shard-size", "20KB"],
        "export as bf16 in 20 KB shards")
    add("export-overwrite", ["export", "{CK}", "--out", "exported", "--dtype", "f16", "--overwrite"],
        "export as f16 over an earlier export", prep=lambda env: existing_out(env))

    def leftover_tmp(env: Env) -> None:
        env.run_copy()
        make_dir(env.p("run/checkpoints/step_00000006.tmp"))
        env.write("run/checkpoints/step_00000006.tmp/state.json", "{garbage")
    add("resume-tmp", ["train", "config.yaml", "--resume", "auto", "train.steps=6"],
        "resume with a leftover step_00000006.tmp directory", prep=leftover_tmp)

    # supervised fine-tuning data, QA tasks, a Hugging Face tokenizer.json
    add("prepare-sft", ["prepare", "--format", "sft", "--input", "{SFTJSONL}", "--tokenizer", "{TOK}", "--out", "sftout",
                        "--val-fraction", "0.2", "--threads", "1"], "prepare --format sft from the fixture's JSONL")
    add("train-sft", ["train", "cfg.yaml", "data.dir={SFT}"], "train on an SFT directory (one example per row)")
    add("eval-sft", ["eval", "--checkpoint", "{CK}", "--data", "{SFT}", "--batches", "2", "--threads", "1"],
        "eval --data an SFT directory")
    add("eval-task", ["eval", "--checkpoint", "{CK}", "--task", "{TASK}", "--retention", "1", "--batches", "1",
                      "--max-new-tokens", "4", "--threads", "1"], "eval --task (EM, F1, ROUGE-L)")
    add("encode-hf", ["tokenizer", "encode", "--tokenizer", "{HFTOK}", "--text", "hello world <|endoftext|>"],
        "encode with a tokenizer.json")
    add("generate-hf", ["generate", "--checkpoint", "{CK}", "--tokenizer", "{HFTOK}", "--prompt", "the sun",
                        "--max-new-tokens", "4"], "generate with a tokenizer.json")
    add("prepare-sft-hf", ["prepare", "--format", "sft", "--input", "{SFTJSONL}", "--tokenizer", "{HFTOK}", "--out",
                           "sftout", "--val-fraction", "0.2", "--threads", "1"], "prepare --format sft with a tokenizer.json")


# ---- config files -------------------------------------------------------------------------------

def config_cases(R: Registry) -> None:
    def text_case(name: str, desc: str, expect: str, make: Callable) -> None:
        def build(env: Env) -> Spec:
            out = make(env)
            if isinstance(out, Spec):
                return out
            env.cfg(text=out)
            return Spec(["train", "cfg.yaml"])
        R.add("config", name, desc, expect, build)

    def cfg_with(env: Env, section: str, key: str, value: str) -> str:
        c = base_cfg(env.ctx)
        c.setdefault(section, {})[key] = value
        return render_cfg(c)

    def set_value(name: str, section: str, key: str, value: str, expect: str = "fail") -> None:
        text_case(name, f"{section}.{key}: {value[:40]}", expect, lambda env: cfg_with(env, section, key, value))

    def path_case(name: str, desc: str, make: Callable) -> None:
        def build(env: Env) -> Spec:
            return Spec(["train", make(env)])
        R.add("config", name, desc, "fail", build)

    text_case("empty", "empty config file (defaults: no data)", "fail", lambda env: "")
    text_case("blank", "only blank lines and a comment", "fail", lambda env: "\n\n# nothing\n\n")
    path_case("directory", "the config path is a directory", lambda env: (make_dir(env.p("cfgdir")), "cfgdir")[1])
    path_case("fifo", "the config path is a FIFO with no writer", lambda env: (make_fifo(env.p("cfg.fifo")), "cfg.fifo")[1])
    path_case("dev-zero", "the config path is /dev/zero", lambda env: "/dev/zero")
    path_case("dev-zero-link", "cfg.yaml is a symlink to /dev/zero", lambda env: (make_link(env.p("z.yaml"), "/dev/zero"), "z.yaml")[1])
    path_case("missing", "the config file does not exist", lambda env: "missing.yaml")
    path_case("link-loop", "cfg.yaml is a symlink loop", lambda env: (make_link(env.p("loop.yaml"), "loop.yaml"), "loop.yaml")[1])
    text_case("garbage", "4 KiB of seeded binary garbage", "fail", lambda env: bytes(env.rng.randrange(256) for _ in range(4096)))
    text_case("garbage-nul", "NUL bytes then garbage", "fail", lambda env: "\0" * 16 + "model: {hidden_size: 32}\n")

    def trunc_at(marker: str) -> Callable:
        def make(env: Env) -> str:
            t = render_cfg(base_cfg(env.ctx))
            return t[:t.index(marker) + len(marker)]
        return make
    text_case("trunc-key", "truncated in the middle of a key ('hidden_si')", "fail", trunc_at("hidden_si"))
    text_case("trunc-list", "truncated inside a flow list ('retention: [1.0, 0.')", "fail", trunc_at("[1.0, 0."))
    text_case("trunc-quote", "truncated inside a quoted path", "fail",
              lambda env: render_cfg(base_cfg(env.ctx)).split('dir: "')[0] + 'dir: "' + str(env.ctx.data)[:5])

    def dup_key(env: Env) -> str:
        return render_cfg(base_cfg(env.ctx)).replace("  hidden_size: 32\n", "  hidden_size: 32\n  hidden_size: 64\n")
    text_case("dup-key", "model.hidden_size given twice (32, then 64)", "fail", dup_key)
    text_case("dup-key-same", "train.steps given twice with the same value", "fail",
              lambda env: render_cfg(base_cfg(env.ctx)).replace("  steps: 4\n", "  steps: 4\n  steps: 4\n"))
    text_case("dup-section", "a second 'model:' section", "fail",
              lambda env: render_cfg(base_cfg(env.ctx)) + "model:\n  hidden_size: 64\n")
    text_case("dup-section-empty", "'train:' twice, the second empty", "fail",
              lambda env: render_cfg(base_cfg(env.ctx)) + "train:\n")
    # A second YAML document is refused, whatever it holds (generated: each kind of second document).
    for tag, second in [("valid", "train:\n  steps: 9\n"), ("invalid", "bogus: [\n"), ("empty", ""),
                        ("scalar", "42\n"), ("same", None)]:
        text_case(f"second-doc-{tag}", f"a second YAML document ({tag}) after the config", "fail",
                  lambda env, second=second: render_cfg(base_cfg(env.ctx)) + "---\n" +
                  (render_cfg(base_cfg(env.ctx)) if second is None else second))
    set_value("unknown-key", "model", "hidden_sizes", "32")
    set_value("unknown-section", "modle", "hidden_size", "32")
    for key, val, tag in [(("model", "hidden_size"), "abc", "str"), (("model", "hidden_size"), "[32]", "list"),
                          (("model", "hidden_size"), "{a: 1}", "map"), (("model", "hidden_size"), "32.5", "float"),
                          (("model", "hidden_size"), "true", "bool"), (("model", "hidden_size"), "~", "null"),
                          (("optim", "lr"), "abc", "str"), (("optim", "lr"), "[0.1]", "list"),
                          (("model", "tie_embeddings"), "3", "int"), (("router", "policy"), "5", "int"),
                          (("router", "policy"), "[stochastic]", "list"), (("eval", "retention"), "0.5", "scalar"),
                          (("eval", "retention"), "[]", "empty"), (("eval", "retention"), "[2]", "range"),
                          (("eval", "retention"), "[.nan]", "nan"), (("eval", "retention"), "[abc]", "str"),
                          (("eval", "retention"), "{a: 1}", "map"), (("data", "dir"), "[a, b]", "list"),
                          (("train", "name"), "{a: 1}", "map"), (("dist", "backend"), "mpi2", "enum"),
                          (("train", "device"), "gpu", "enum")]:
        set_value(f"type-{key[1]}-{tag}", key[0], key[1], val)
    text_case("section-scalar", "model: 5", "fail", lambda env: render_cfg(base_cfg(env.ctx)).replace("model:\n", "model: 5\nx:\n", 1))
    text_case("section-list", "model: [1, 2] (a sequence section)", "fail",
              lambda env: "model: [1, 2]\n" + render_cfg({k: v for k, v in base_cfg(env.ctx).items() if k != "model"}))
    text_case("root-list", "the document is a list", "fail", lambda env: "- model\n- train\n")
    text_case("root-scalar", "the document is a scalar", "fail", lambda env: "hello\n")
    for key, val in [(("model", "hidden_size"), I64_MAX), (("model", "hidden_size"), "9223372036854775808"),
                     (("model", "hidden_size"), "-1"), (("model", "hidden_size"), "1e308"),
                     (("model", "hidden_size"), ".nan"), (("model", "hidden_size"), ".inf"),
                     (("model", "vocab_size"), I64_MAX), (("model", "num_layers"), I64_MAX),
                     (("model", "intermediate_size"), I64_MAX),
                     (("model", "num_heads"), I64_MAX), (("model", "head_dim"), "4294967296"),
                     (("train", "batch_size"), I64_MAX), (("train", "seq_len"), I64_MAX),
                     (("train", "threads"), "1025"), (("train", "threads"), I64_MAX),
                     (("router", "group_size"), I64_MAX), (("router", "seed"), "-1"),
                     (("train", "seed"), "18446744073709551616"), (("optim", "lr"), "1e308"),
                     (("optim", "lr"), ".nan"), (("optim", "lr"), ".inf"), (("router", "share_prob"), ".nan"),
                     (("router", "share_prob"), "1.0000001"), (("model", "rope_theta"), ".inf"),
                     (("model", "rms_norm_eps"), "0"), (("dist", "bucket_mb"), ".nan"),
                     (("train", "steps"), "0"), (("train", "steps"), "-1"), (("train", "log_interval"), "0"),
                     (("train", "global_batch_tokens"), "33"), (("train", "global_batch_tokens"), I64_MAX),
                     (("model", "num_kv_heads"), "3"), (("model", "vocab_size"), str(299)),
                     (("train", "seq_len"), "200"), (("optim", "min_lr"), "0.1")]:
        set_value(f"value-{key[1]}-{val[:8].replace('.', '').replace('-', 'm')}", key[0], key[1], val)
    text_case("deep-list", f"model: {DEEP} nested flow sequences", "fail",
              lambda env: "model: " + deep_yaml() + "\n")
    text_case("deep-map", f"model: {DEEP} nested flow maps", "fail", lambda env: "model: " + deep_yaml(kind="map") + "\n")
    text_case("deep-root", f"the document is {DEEP} nested sequences", "fail", lambda env: deep_yaml() + "\n")
    text_case("deep-block", "2000 nested block mappings under train", "fail",
              lambda env: "train:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(2000)))
    text_case("tabs", "indentation with a tab", "fail",
              lambda env: render_cfg(base_cfg(env.ctx)).replace("  hidden_size", "\thidden_size"))
    text_case("aliases", "billion-laughs aliases in eval.retention", "fail",
              lambda env: render_cfg(base_cfg(env.ctx)).replace(
                  "  retention: [1.0, 0.5]\n",
                  "  retention: &a9 [&a0 [x, x, x, x, x, x, x, x, x]]\n") + "".join(
                  f"x{i}: &b{i} [*a0, *a0, *a0]\n" for i in range(3)))
    text_case("key-not-scalar", "a sequence used as a key inside model", "fail",
              lambda env: render_cfg(base_cfg(env.ctx)).replace("model:\n", "model:\n  ? [a, b]\n  : 1\n", 1))
    text_case("long-key", "a 1 MiB key", "fail",
              lambda env: render_cfg(base_cfg(env.ctx)).replace("model:\n", "model:\n  " + "k" * (1 << 20) + ": 1\n", 1))
    text_case("bad-utf8-key", "invalid UTF-8 in a key", "fail",
              lambda env: render_cfg(base_cfg(env.ctx)).encode().replace(b"model:\n", b"model:\n  hidden\xff: 1\n", 1))
    text_case("binary-tag", "model: !!binary", "fail",
              lambda env: render_cfg(base_cfg(env.ctx)).replace("model:\n", "model: !!binary AAAA\nx:\n", 1))
    text_case("bom", "UTF-8 byte-order mark before a valid config", "any", lambda env: "\ufeff" + render_cfg(base_cfg(env.ctx)))
    text_case("crlf", "CRLF line endings", "any", lambda env: render_cfg(base_cfg(env.ctx)).replace("\n", "\r\n"))
    text_case("two-docs", "a second YAML document with a bad value", "any",
              lambda env: render_cfg(base_cfg(env.ctx)) + "---\nmodel: {hidden_size: abc}\n")
    text_case("hex-int", "hidden_size: 0x20", "any", lambda env: cfg_with(env, "model", "hidden_size", "0x20"))
    # absurd but workable: positions are computed per token, nothing is sized by max_seq_len
    set_value("value-max_seq_len-huge", "model", "max_seq_len", I64_MAX, expect="any")

    # architectures, RoPE scaling, sliding window, init_from / kv_init and their cross-field rules
    def cfg_many(env: Env, values: dict) -> str:
        c = base_cfg(env.ctx)
        for (section, key), value in values.items():
            c.setdefault(section, {})[key] = value
        return render_cfg(c)

    def many(name: str, desc: str, values: dict, expect: str = "fail") -> None:
        text_case(name, desc, expect, lambda env: cfg_many(env, values))

    llama3 = {("model", "architecture"): "llama", ("model", "rope_scaling"): "llama3", ("model", "rope_factor"): "8",
              ("model", "rope_low_freq_factor"): "1", ("model", "rope_high_freq_factor"): "4",
              ("model", "rope_original_max_position"): "64"}
    many("arch-qwen3-no-qknorm", "architecture qwen3 with qk_norm false",
         {("model", "architecture"): "qwen3", ("model", "qk_norm"): "false"})
    many("arch-llama-qknorm", "architecture llama with qk_norm true", {("model", "architecture"): "llama",
                                                                       ("model", "qk_norm"): "true"})
    many("arch-mistral-qknorm", "architecture mistral with qk_norm true", {("model", "architecture"): "mistral",
                                                                           ("model", "qk_norm"): "true"})
    set_value("arch-unknown", "model", "architecture", "gpt2")
    set_value("arch-class-name", "model", "architecture", "LlamaForCausalLM")
    set_value("arch-list", "model", "architecture", "[llama]")
    set_value("rope-scaling-yarn", "model", "rope_scaling", "yarn")
    many("rope-high-eq-low", "llama3 rope scaling, high_freq_factor = low_freq_factor = 2",
         {**llama3, ("model", "rope_low_freq_factor"): "2", ("model", "rope_high_freq_factor"): "2"})
    many("rope-high-below-low", "llama3 rope scaling, high_freq_factor 0.5 < low_freq_factor 1",
         {**llama3, ("model", "rope_high_freq_factor"): "0.5"})
    many("rope-factor-below-1", "llama3 rope scaling, rope_factor 0.5", {**llama3, ("model", "rope_factor"): "0.5"})
    many("rope-factor-nan", "llama3 rope scaling, rope_factor .nan", {**llama3, ("model", "rope_factor"): ".nan"})
    many("rope-factor-inf", "llama3 rope scaling, rope_factor .inf", {**llama3, ("model", "rope_factor"): ".inf"})
    many("rope-low-zero", "llama3 rope scaling, rope_low_freq_factor 0",
         {**llama3, ("model", "rope_low_freq_factor"): "0"})
    many("rope-orig-zero", "llama3 rope scaling, rope_original_max_position 0",
         {**llama3, ("model", "rope_original_max_position"): "0"})
    set_value("rope-orig-2e24", "model", "rope_original_max_position", str(2**24 + 1))
    set_value("rope-high-huge", "model", "rope_high_freq_factor", "1.0e7")
    set_value("window-qwen3", "model", "sliding_window", "128")
    set_value("window-neg", "model", "sliding_window", "-1")
    set_value("window-2e24", "model", "sliding_window", str(2**24 + 1))
    many("window-below-max-seq", "mistral with sliding_window 64 < max_seq_len 128",
         {("model", "architecture"): "mistral", ("model", "sliding_window"): "64"})
    many("window-below-seq-len", "mistral with sliding_window 8 = max_seq_len 8 < train.seq_len 16",
         {("model", "architecture"): "mistral", ("model", "sliding_window"): "8", ("model", "max_seq_len"): "8"})
    set_value("kv-init-unknown", "router", "kv_init", "sum")
    set_value("kv-init-list", "router", "kv_init", "[drop]")
    set_value("init-from-missing", "model", "init_from", q("/nonexistent/kvroute-model"))
    set_value("init-from-list", "model", "init_from", "[a, b]")
    text_case("init-from-file", "model.init_from is a regular file (the config itself)", "fail",
              lambda env: cfg_with(env, "model", "init_from", "cfg.yaml"))
    text_case("init-from-empty-dir", "model.init_from is an empty directory", "fail",
              lambda env: (make_dir(env.p("emptydir")), cfg_with(env, "model", "init_from", "emptydir"))[1])
    text_case("init-from-fifo", "model.init_from/config.json is a FIFO", "fail",
              lambda env: (make_dir(env.p("m")), make_fifo(env.p("m/config.json")),
                           cfg_with(env, "model", "init_from", "m"))[2])


def config_random(env: Env) -> Spec:
    rng = env.rng
    text = render_cfg(base_cfg(env.ctx))
    kind = rng.choice(["flip", "flip", "flip", "trunc", "dupline", "delline", "swaplines", "nasty", "nasty", "unknown"])
    expect = "any"
    if kind == "flip":
        b = bytearray(text.encode())
        i = rng.randrange(len(b))
        old, new = b[i], rng.choice([x for x in range(256) if x != b[i]])
        b[i] = new
        env.write("cfg.yaml", bytes(b))
        detail = f"byte {i} 0x{old:02x} -> 0x{new:02x}"
    elif kind == "trunc":
        n = rng.randrange(len(text))
        env.write("cfg.yaml", text[:n])
        detail = f"truncated to {n} of {len(text)} bytes"
    elif kind in ("dupline", "delline", "swaplines"):
        lines = text.splitlines(keepends=True)
        i = rng.randrange(len(lines))
        if kind == "dupline":
            lines.insert(i + 1, lines[i])
            expect = "fail"  # a duplicated key or section
            detail = f"line {i + 1} duplicated: {lines[i].strip()!r}"
        elif kind == "delline":
            detail = f"line {i + 1} deleted: {lines[i].strip()!r}"
            del lines[i]
        else:
            j = rng.choice([k for k in range(len(lines)) if k != i])
            lines[i], lines[j] = lines[j], lines[i]
            detail = f"lines {i + 1} and {j + 1} swapped"
        env.write("cfg.yaml", "".join(lines))
    elif kind == "nasty":
        while True:
            key = rng.choice(sorted(SCHEMA))
            value = rng.choice(NASTY)
            expect = oracle(key, value)
            if expect is not None:
                break
        c = base_cfg(env.ctx)
        c.setdefault(key[0], {})[key[1]] = value
        env.cfg(cfg=c)
        detail = f"{key[0]}.{key[1]}: {value[:40]}"
    else:
        c = base_cfg(env.ctx)
        section = rng.choice(sorted(c))
        c[section][f"bogus_{rng.randrange(1000)}"] = "1"
        env.cfg(cfg=c)
        expect = "fail"
        detail = f"unknown key in section {section}"
    return Spec(["train", "cfg.yaml"], detail=f"{kind}: {detail}", expect=expect)


# ---- section.key=value overrides ----------------------------------------------------------------

def override_cases(R: Registry) -> None:
    def add(name: str, ov: str, expect: str = "fail", desc: Optional[str] = None) -> None:
        def build(env: Env) -> Spec:
            env.cfg()
            return Spec(["train", "cfg.yaml", ov])
        R.add("override", name, desc or f"override {ov[:60]!r}", expect, build)

    add("no-equals", "noequals")
    # Values every key accepts in range but that fail later: the message must name the key.
    def named(name: str, ovs: list, mention: list) -> None:
        def build(env: Env) -> Spec:
            env.cfg()
            return Spec(["train", "cfg.yaml", *ovs], mention=mention)
        R.add("override", name, f"overrides {' '.join(ovs)!r} (the error names {', '.join(mention)})", "fail", build)
    for v in ["1e-320", "1e-45", "0"]:
        named(f"eps-{v}", [f"optim.eps={v}"], ["optim.eps"])
    # Models of 10^12+ parameters: more than any machine's memory (and any sanitizer's limits).
    for key, v, other in [("hidden_size", "1000000", "model.vocab_size=1000000"),
                          ("intermediate_size", "4194304", "model.hidden_size=100000"),
                          ("vocab_size", "16000000", "model.hidden_size=100000")]:
        named(f"huge-{key}", [f"model.{key}={v}", other], [key])
    add("second-doc-value", "train.steps=4\n---\n5")
    add("no-value", "model.hidden_size")
    add("no-key", "=5")
    add("no-section", ".hidden_size=5")
    add("empty-key", "model.=5")
    add("three-parts", "model.hidden.size=5")
    add("section-only", "model=5")
    add("unknown-section", "bogus.key=1")
    add("unknown-key", "model.bogus=1")
    add("yaml-error", "model.hidden_size=[")
    add("empty-value", "model.hidden_size=")
    add("string", "model.hidden_size=abc")
    add("i64max", "model.hidden_size=" + I64_MAX)
    add("i64max-vocab", "model.vocab_size=" + I64_MAX)
    add("overflow", "train.batch_size=99999999999999999999")
    add("float-for-int", "model.hidden_size=1e308")
    add("nan", "model.hidden_size=.nan")
    add("lr-inf", "optim.lr=.inf")
    add("lr-nan-word", "optim.lr=nan")
    add("threads", "train.threads=1000000")
    add("steps-neg", "train.steps=-1")
    # one argument can hold at most 128 KiB (MAX_ARG_STRLEN)
    add("deep", "model.hidden_size=" + deep_yaml(ARG_DEEP), desc=f"override value of {ARG_DEEP} nested sequences")
    add("deep-map", "model.hidden_size=" + deep_yaml(ARG_DEEP // 3, kind="map"),
        desc=f"override value of {ARG_DEEP // 3} nested maps")
    add("map", "model.hidden_size={a: 1}")
    add("retention-range", "eval.retention=[2]")
    add("retention-scalar", "eval.retention=0.5")
    add("policy", "router.policy=bogus")
    add("backend", "dist.backend=bogus")
    add("seq-len", "train.seq_len=100000")
    add("newline", "model.hidden_size=32\nextra")
    add("architecture", "model.architecture=bogus")
    add("architecture-llama-qknorm", "model.architecture=llama", expect="pass",
        desc="model.architecture=llama (qk_norm follows the architecture when not given)")
    add("kv-init", "router.kv_init=bogus")
    add("init-from-missing", "model.init_from=/nonexistent/kvroute-model")
    add("window", "model.sliding_window=abc")
    add("rope-factor", "model.rope_factor=0.5")
    add("comment", "model.hidden_size=32 # a comment", expect="any")
    add("quoted-int", "train.threads='1'", expect="any")


def override_random(env: Env) -> Spec:
    rng = env.rng
    while True:
        key = rng.choice(sorted(SCHEMA))
        value = rng.choice(NASTY)
        expect = oracle(key, value)
        if expect is not None:
            break
    env.cfg()
    ov = f"{key[0]}.{key[1]}={value}"
    return Spec(["train", "cfg.yaml", ov], detail=f"override {ov[:60]!r}", expect=expect)


# ---- shards -------------------------------------------------------------------------------------

def shard_bytes(path: Path) -> tuple:
    b = path.read_bytes()
    return list(struct.unpack("<256i", b[:1024])), b[1024:]


def write_shard(path: Path, header: list, body: bytes) -> None:
    path.write_bytes(struct.pack("<256i", *header) + body)


def shard_cases(R: Registry) -> None:
    def add(name: str, desc: str, mutate: Callable, target: str = "train", expect: str = "fail") -> None:
        def build(env: Env) -> Spec:
            d = env.data_copy()
            path = env.p(f"{d}/{target}_000000.bin")
            mutate(env, path)
            if target == "val" and env.rng.random() < 0.5:
                env.run_copy()
                return Spec(["eval", "--checkpoint", CK, "--data", d, "--batches", "2", "--threads", "1"],
                            protect=["run"], detail="read by eval --data")
            env.cfg()
            return Spec(["train", "cfg.yaml", f"data.dir={d}"], detail="read by train")
        R.add("shard", name, desc, expect, build)

    def set_header(idx: int, value: int) -> Callable:
        def m(env: Env, path: Path) -> None:
            h, body = shard_bytes(path)
            h[idx] = value
            write_shard(path, h, body)
        return m

    def count_delta(delta: int) -> Callable:
        def m(env: Env, path: Path) -> None:
            h, body = shard_bytes(path)
            h[2] += delta
            write_shard(path, h, body)
        return m

    def truncate(n: Optional[int] = None, minus: int = 0) -> Callable:
        def m(env: Env, path: Path) -> None:
            b = path.read_bytes()
            path.write_bytes(b[:n] if n is not None else b[:len(b) - minus])
        return m

    def tokens(value: int, every: int = 5) -> Callable:
        def m(env: Env, path: Path) -> None:
            h, body = shard_bytes(path)
            toks = list(struct.unpack(f"<{len(body) // 2}H", body))
            for i in range(0, len(toks), every):
                toks[i] = value
            write_shard(path, h, struct.pack(f"<{len(toks)}H", *toks))
        return m

    def to_u32(value: Optional[int]) -> Callable:
        def m(env: Env, path: Path) -> None:
            h, body = shard_bytes(path)
            toks = list(struct.unpack(f"<{len(body) // 2}H", body))
            if value is not None:
                for i in range(0, len(toks), 5):
                    toks[i] = value
            h[0], h[1] = 20240801, 7
            write_shard(path, h, struct.pack(f"<{len(toks)}I", *toks))
        return m

    def n_tokens(n: int) -> Callable:
        def m(env: Env, path: Path) -> None:
            h, body = shard_bytes(path)
            h[2] = n
            write_shard(path, h, body[:2 * n])
        return m

    add("magic", "magic 20240520 -> 20240521", set_header(0, 20240521))
    add("magic-zero", "magic 0", set_header(0, 0))
    add("version", "version 1 -> 2", set_header(1, 2))
    add("magic-u32-v1", "uint32 magic with version 1", set_header(1, 7))
    add("count-plus", "token count + 1", count_delta(1))
    add("count-minus", "token count - 1", count_delta(-1))
    add("count-neg", "token count -1", set_header(2, -1))
    add("count-max", "token count INT32_MAX", set_header(2, 2**31 - 1))
    add("count-zero", "token count 0 with tokens present", set_header(2, 0))
    add("trunc-100", "truncated to 100 bytes", truncate(100))
    add("trunc-header", "only the 1024-byte header", truncate(1024))
    add("trunc-1", "one byte short", truncate(minus=1))
    add("trunc-odd", "one byte short of a token (odd size)", truncate(minus=3))
    add("empty", "0 bytes", truncate(0))
    add("only-header-zero", "a consistent header with 0 tokens", n_tokens(0))
    add("one-token", "a consistent shard of 1 token", n_tokens(1))
    add("token-vocab", "every 5th token = vocab size (300)", lambda env, p: tokens(env.ctx.vocab)(env, p))
    add("token-65535", "every 5th token = 65535", tokens(65535))
    add("u32-2g", "uint32 shard with tokens 0x80000000", to_u32(0x80000000))
    add("u32-ffffffff", "uint32 shard with tokens 0xffffffff", to_u32(0xFFFFFFFF))
    add("u32-valid", "the same tokens as a uint32 shard", to_u32(None), expect="any")
    add("dir", "train_000000.bin is a directory (no other train shard)", lambda env, p: make_dir(p))
    add("fifo", "train_000000.bin is a FIFO (no other train shard)", lambda env, p: make_fifo(p))
    add("dev-zero", "train_000000.bin -> /dev/zero", lambda env, p: make_link(p, "/dev/zero"))
    add("missing", "no train shard at all", lambda env, p: p.unlink())
    add("stray", "an extra garbage train_000001.bin",
        lambda env, p: (p.parent / "train_000001.bin").write_bytes(bytes(env.rng.randrange(256) for _ in range(3000))))
    add("val-magic", "val shard magic flipped", set_header(0, 12345), target="val")
    add("val-short", "val shard of 3 tokens (less than one window)", n_tokens(3), target="val")
    add("val-token-vocab", "val tokens = vocab size", lambda env, p: tokens(env.ctx.vocab, 3)(env, p), target="val")
    add("val-trunc", "val shard one byte short", truncate(minus=1), target="val")


def shard_random(env: Env) -> Spec:
    rng = env.rng
    d = env.data_copy()
    target = rng.choice(["train", "train", "val"])
    path = env.p(f"{d}/{target}_000000.bin")
    size = path.stat().st_size
    kind = rng.choice(["header", "reserved", "tokens", "tokens", "trunc", "append"])
    expect = "any"
    if kind == "header":
        i, o, n = flip_byte(path, rng, 0, 12)
        expect = "fail"  # magic, version or count: none of them can stay consistent
        detail = f"{target} header byte {i} 0x{o:02x} -> 0x{n:02x}"
    elif kind == "reserved":
        i, o, n = flip_byte(path, rng, 12, 1024)
        detail = f"{target} reserved header byte {i} 0x{o:02x} -> 0x{n:02x}"
    elif kind == "tokens":
        i, o, n = flip_byte(path, rng, 1024)
        detail = f"{target} token byte {i} 0x{o:02x} -> 0x{n:02x}"
    elif kind == "trunc":
        n = rng.randrange(size)
        path.write_bytes(path.read_bytes()[:n])
        expect = "fail"
        detail = f"{target} truncated to {n} of {size} bytes"
    else:
        k = rng.randrange(1, 64)
        with open(path, "ab") as f:
            f.write(bytes(rng.randrange(256) for _ in range(k)))
        expect = "fail"
        detail = f"{target}: {k} garbage bytes appended"
    if target == "val" and rng.random() < 0.5:
        env.run_copy()
        return Spec(["eval", "--checkpoint", CK, "--data", d, "--batches", "2", "--threads", "1"], protect=["run"],
                    detail=detail + " (eval --data)", expect=expect)
    env.cfg()
    return Spec(["train", "cfg.yaml", f"data.dir={d}"], detail=detail + " (train)", expect=expect)


# ---- data.json ----------------------------------------------------------------------------------

REQUIRED_META = ("vocab_size", "eot_id", "token_bytes")


def datajson_cases(R: Registry) -> None:
    def add(name: str, desc: str, make: Callable, expect: str = "fail") -> None:
        def build(env: Env) -> Spec:
            d = env.data_copy()
            path = env.p(f"{d}/data.json")
            meta = json.loads(path.read_text())
            out = make(env, meta, path)
            if out is not None:
                env.write(f"{d}/data.json", out)
            env.cfg()
            return Spec(["train", "cfg.yaml", f"data.dir={d}"])
        R.add("datajson", name, desc, expect, build)

    def with_value(key: str, raw: str) -> Callable:
        marker = "__VALUE__"

        def make(env: Env, meta: dict, path: Path) -> str:
            meta[key] = marker
            return json.dumps(meta, indent=2).replace(json.dumps(marker), raw)
        return make

    def without(key: str) -> Callable:
        def make(env: Env, meta: dict, path: Path) -> str:
            del meta[key]
            return json.dumps(meta, indent=2)
        return make

    add("truncated", "truncated in the middle", lambda env, m, p: p.read_text()[:40])
    add("empty", "empty file", lambda env, m, p: "")
    add("array", "a JSON array", lambda env, m, p: "[]")
    add("string", "a JSON string", lambda env, m, p: '"data"')
    add("null", "JSON null", lambda env, m, p: "null")
    add("empty-object", "{}", lambda env, m, p: "{}")
    for raw, tag in [('"300"', "string"), ("300.5", "fraction"), ("null", "null"), ("[300]", "list"), ("{}", "map"),
                     ("-1", "neg"), ("0", "zero"), (I64_MAX, "i64max"), ("1e308", "1e308"),
                     ("18446744073709551616", "2e64"), ("true", "bool"), ("1000000", "huge")]:
        add(f"vocab-{tag}", f"vocab_size {raw}", with_value("vocab_size", raw))
    for raw, tag in [("-1", "neg"), ("300", "eq-vocab"), ('"x"', "string"), ("1e308", "1e308"), ("299.5", "fraction")]:
        add(f"eot-{tag}", f"eot_id {raw}", with_value("eot_id", raw))
    for raw, tag in [("3", "three"), ('"2"', "string"), ("4", "mismatch"), ("0", "zero")]:
        add(f"width-{tag}", f"token_bytes {raw} (shards are uint16)", with_value("token_bytes", raw))
    for key in REQUIRED_META:
        add(f"missing-{key}", f"no {key}", without(key))
    add("missing-documents", "no documents count", without("documents"), expect="any")
    add("extra-key", "an extra key", with_value("comment", '"hello"'), expect="any")
    add("deep", f"{DEEP} nested arrays as the whole file", lambda env, m, p: deep())
    add("deep-vocab", f"vocab_size = {DEEP} nested arrays", with_value("vocab_size", deep()))
    add("deep-extra", f"an extra key holding {DEEP} nested objects", with_value("extra", deep(kind="object")), expect="any")
    add("dir", "data.json is a directory", lambda env, m, p: make_dir(p))
    add("fifo", "data.json is a FIFO", lambda env, m, p: make_fifo(p))
    add("dev-zero", "data.json -> /dev/zero", lambda env, m, p: make_link(p, "/dev/zero"))
    add("bad-utf8", "invalid UTF-8 in a string", lambda env, m, p: p.read_bytes().replace(b'"tokenizer": "', b'"tokenizer": "\xff\xfe', 1))
    add("nan", "vocab_size NaN (not JSON)", with_value("vocab_size", "NaN"))


def datajson_random(env: Env) -> Spec:
    rng = env.rng
    d = env.data_copy()
    path = env.p(f"{d}/data.json")
    meta = json.loads(path.read_text())
    mutated = mutate_json_file(path, rng, meta, sorted(meta),
                               ["-1", '"x"', "null", "[]", "{}", "1e308", I64_MAX, "true", "0.5", "0"],
                               lambda obj, key, v: obj.__setitem__(key, v))
    detail, expect = mutated
    if expect == "value":
        key = detail.split(":")[0]
        # none of the raw values is the right vocab size, EOT id or width
        expect = "fail" if key in REQUIRED_META else "any"
    env.cfg()
    return Spec(["train", "cfg.yaml", f"data.dir={d}"], detail=detail, expect=expect)


# ---- tokenizer files ----------------------------------------------------------------------------

def tok_command(env: Env, which: str) -> Spec:
    tok = env.tok_copy()
    if which == "encode":
        return Spec(["tokenizer", "encode", "--tokenizer", tok, "--text", "hello world, the sun"])
    if which == "prepare":  # into a new directory, so that the tokenizer is what gets checked
        return Spec(["prepare", "--input", str(env.ctx.corpus), "--tokenizer", tok, "--out", "prepared",
                     "--threads", "1"])
    env.run_copy()
    return Spec(["generate", "--checkpoint", CK, "--tokenizer", tok, "--prompt", "the sun", "--max-new-tokens", "4"],
                protect=["run"])


TOK_CMDS = ["encode", "prepare", "generate"]


def tokenizer_cases(R: Registry) -> None:
    def add(name: str, desc: str, mutate: Callable, file: str = "encoder.json", expect: str = "fail") -> None:
        idx = R.count.get("tokenizer", 0)

        def build(env: Env) -> Spec:
            spec = tok_command(env, TOK_CMDS[idx % len(TOK_CMDS)])
            path = env.p(f"tok/{file}")
            out = mutate(env, path)
            if out is not None:
                env.write(f"tok/{file}", out)
            return spec
        R.add("tokenizer", name, desc, expect, build)

    def enc_edit(fn: Callable) -> Callable:
        def m(env: Env, path: Path) -> str:
            enc = json.loads(path.read_text())
            fn(env, enc)
            return json.dumps(enc, ensure_ascii=False)
        return m

    def raw_value(key_pick: Callable, raw: str) -> Callable:
        def m(env: Env, path: Path) -> str:
            enc = json.loads(path.read_text())
            key = key_pick(enc)
            enc[key] = "__V__"
            return json.dumps(enc, ensure_ascii=False).replace('"__V__"', raw)
        return m

    first = lambda enc: next(iter(enc))
    eot = lambda enc: "<|endoftext|>"
    add("enc-trunc", "encoder.json truncated", lambda env, p: p.read_text()[: len(p.read_text()) // 2])
    add("enc-empty", "encoder.json empty", lambda env, p: "")
    add("enc-array", "encoder.json is []", lambda env, p: "[]")
    add("enc-empty-object", "encoder.json is {}", lambda env, p: "{}")
    add("enc-deep", f"encoder.json is {DEEP} nested arrays", lambda env, p: deep())
    add("enc-deep-object", f"encoder.json is {DEEP} nested objects", lambda env, p: deep(kind="object"))
    add("enc-deep-value", f"a token id is {DEEP} nested arrays", raw_value(first, deep()))
    add("enc-id-string", "a token id is a string", raw_value(first, '"0"'))
    add("enc-id-neg", "a token id is -1", raw_value(first, "-1"))
    add("enc-id-big", "a token id equals the vocab size", raw_value(first, "300"))
    add("enc-id-i64", "a token id is INT64_MAX", raw_value(first, I64_MAX))
    add("enc-id-float", "a token id is 1.5", raw_value(first, "1.5"))
    add("enc-id-1e308", "a token id is 1e308", raw_value(first, "1e308"))
    add("enc-id-dup", "two tokens share id 0", raw_value(lambda enc: list(enc)[1], "0"))
    add("enc-eot-nan", "<|endoftext|> id is NaN (not JSON)", raw_value(eot, "NaN"))
    add("enc-alphabet", "a token outside GPT-2's byte alphabet",
        enc_edit(lambda env, enc: enc.__setitem__("\u4e00", enc.pop(list(enc)[5]))))
    add("enc-no-eot", "<|endoftext|> renamed to an unused token",
        enc_edit(lambda env, enc: enc.__setitem__("\u0120\u0120\u0120\u0120zz", enc.pop("<|endoftext|>"))))
    add("enc-drop-byte", "the token for 'a' removed (ids no longer dense)", enc_edit(lambda env, enc: enc.pop("a")))
    add("enc-bad-utf8", "invalid UTF-8 in a key", lambda env, p: p.read_bytes().replace(b'"a"', b'"\xff"', 1))
    add("enc-fifo", "encoder.json is a FIFO", lambda env, p: make_fifo(p))
    add("enc-dir", "encoder.json is a directory", lambda env, p: make_dir(p))
    add("enc-missing", "no encoder.json", lambda env, p: p.unlink())
    add("enc-dev-zero", "encoder.json -> /dev/zero", lambda env, p: make_link(p, "/dev/zero"))

    def merges(fn: Callable) -> Callable:
        def m(env: Env, path: Path) -> str:
            lines = path.read_text().splitlines()
            return "\n".join(fn(lines)) + "\n"
        return m
    add("bpe-trunc-line", "vocab.bpe cut in the middle of a merge (no space left)",
        merges(lambda ls: ls[:3] + [ls[3].split(" ")[0]]), file="vocab.bpe")
    add("bpe-three", "a merge line with three fields", merges(lambda ls: ls + ["a b c"]), file="vocab.bpe")
    add("bpe-unknown", "a merge of tokens missing from encoder.json", merges(lambda ls: ls + ["\u0120zq xq"]),
        file="vocab.bpe")
    add("bpe-result-missing", "a merge whose result is not a token", merges(lambda ls: ls + ["q x"]), file="vocab.bpe")
    add("bpe-garbage", "vocab.bpe is binary garbage",
        lambda env, p: bytes(env.rng.randrange(256) for _ in range(2048)), file="vocab.bpe")
    add("bpe-long", "a 1 MiB line", merges(lambda ls: ls + ["a" * (1 << 20) + " b"]), file="vocab.bpe")
    add("bpe-fifo", "vocab.bpe is a FIFO", lambda env, p: make_fifo(p), file="vocab.bpe")
    add("bpe-dir", "vocab.bpe is a directory", lambda env, p: make_dir(p), file="vocab.bpe")
    add("bpe-missing", "no vocab.bpe", lambda env, p: p.unlink(), file="vocab.bpe")
    add("bpe-dev-zero", "vocab.bpe -> /dev/zero", lambda env, p: make_link(p, "/dev/zero"), file="vocab.bpe")
    add("bpe-empty", "vocab.bpe empty", lambda env, p: "", file="vocab.bpe", expect="any")
    add("bpe-version-only", "only the #version line", lambda env, p: "#version: 0.2\n", file="vocab.bpe", expect="any")
    add("bpe-dup", "a merge line repeated", merges(lambda ls: ls + [ls[-1]]), file="vocab.bpe", expect="any")
    add("bpe-crlf", "CRLF line endings", lambda env, p: p.read_text().replace("\n", "\r\n"), file="vocab.bpe",
        expect="any")

    def dir_case(name: str, desc: str, mk: Callable) -> None:
        idx = R.count.get("tokenizer", 0)

        def build(env: Env) -> Spec:
            spec = tok_command(env, TOK_CMDS[idx % len(TOK_CMDS)])
            remove(env.p("tok"))
            mk(env, env.p("tok"))
            return spec
        R.add("tokenizer", name, desc, "fail", build)
    dir_case("dir-missing", "the tokenizer directory does not exist", lambda env, p: None)
    dir_case("dir-is-file", "the tokenizer path is a regular file", lambda env, p: p.write_text("x"))
    dir_case("dir-empty", "the tokenizer directory is empty", lambda env, p: p.mkdir())


def tokenizer_random(env: Env) -> Spec:
    rng = env.rng
    spec = tok_command(env, rng.choice(TOK_CMDS))
    file = rng.choice(["encoder.json", "encoder.json", "vocab.bpe"])
    path = env.p(f"tok/{file}")
    kind = rng.choice(["flip", "flip", "trunc"])
    expect = "any"
    if kind == "flip":
        i, o, n = flip_byte(path, rng)
        detail = f"{file} byte {i} 0x{o:02x} -> 0x{n:02x}"
    else:
        b = path.read_bytes()
        n = rng.randrange(len(b))
        path.write_bytes(b[:n])
        if file == "encoder.json" and b[n:].strip() != b"":
            expect = "fail"
        detail = f"{file} truncated to {n} of {len(b)} bytes"
    spec.detail = detail
    spec.expect = expect
    return spec


# ---- model.safetensors / optimizer.safetensors --------------------------------------------------

def safetensors_cases(R: Registry) -> None:
    def add(name: str, desc: str, mutate: Callable, file: str = "model.safetensors", expect: str = "fail",
            cmds: Optional[list] = None) -> None:
        idx = R.count.get("safetensors", 0)
        cmds = cmds or (["resume"] if file == "optimizer.safetensors" else WEIGHT_READERS)

        def build(env: Env) -> Spec:
            spec = ck_spec(env, cmds[idx % len(cmds)])
            path = env.p(f"{CK}/{file}")
            out = mutate(env, path)
            if isinstance(out, tuple):  # (detail, expect)
                spec.detail, spec.expect = out
            return spec
        R.add("safetensors", name, desc, expect, build)

    def length(fn: Callable) -> Callable:
        def m(env: Env, path: Path):
            n, h, d = st_parts(path)
            new = fn(n, path.stat().st_size)
            path.write_bytes(struct.pack("<Q", new % (1 << 64)) + h + d)
            if new == n + 1:
                return f"header length {n} -> {new}", "any" if d[:1] in (b" ", b"\t", b"\r", b"\n") else "fail"
            if new == n - 1:
                return f"header length {n} -> {new}", "any" if h.endswith(b" ") else "fail"
            return f"header length {n} -> {new}", "fail"
        return m

    def header_edit(fn: Callable, marker: Optional[str] = None) -> Callable:
        def m(env: Env, path: Path) -> None:
            _, h, d = st_parts(path)
            header = json.loads(h)
            fn(env, header)
            st_write(path, header, d, deep_marker=marker)
        return m

    def first_weight(header: dict) -> str:
        return sorted(k for k in tensor_names(header) if len(header[k]["shape"]) == 2)[0]

    def set_field(fieldname: str, value) -> Callable:
        return header_edit(lambda env, h: h[first_weight(h)].__setitem__(fieldname, value),
                           marker=value if isinstance(value, str) and value.startswith("__DEEP") else None)

    def same_size_pair(h: dict) -> tuple:
        names = sorted(tensor_names(h), key=lambda k: h[k]["data_offsets"][0])
        by_size = {}
        for k in names:
            by_size.setdefault(nbytes(h[k]), []).append(k)
        for size, ks in sorted(by_size.items(), reverse=True):
            if len(ks) >= 2 and size > 0:
                return ks[0], ks[1]
        raise FixtureError("no two tensors of equal size in model.safetensors")

    def overlap(env: Env, h: dict) -> None:
        a, b = same_size_pair(h)
        h[b]["data_offsets"] = list(h[a]["data_offsets"])

    def shift_into_neighbour(env: Env, h: dict) -> None:
        names = sorted(tensor_names(h), key=lambda k: h[k]["data_offsets"][0])
        k = names[1]
        h[k]["data_offsets"] = [h[k]["data_offsets"][0] - 4, h[k]["data_offsets"][1] - 4]

    def transpose(env: Env, h: dict) -> None:
        for k in sorted(tensor_names(h)):
            s = h[k]["shape"]
            if len(s) == 2 and s[0] != s[1]:
                h[k]["shape"] = [s[1], s[0]]
                return

    def reversed_offsets(env: Env, h: dict) -> None:
        k = first_weight(h)
        h[k]["data_offsets"] = list(reversed(h[k]["data_offsets"]))

    def out_of_range(env: Env, h: dict) -> None:
        k = first_weight(h)
        total = max(h[n]["data_offsets"][1] for n in tensor_names(h))
        size = nbytes(h[k])
        h[k]["data_offsets"] = [total - size + 4, total + 4]

    def overflow_shape(shape: list, zero_offsets: bool) -> Callable:
        def fn(env: Env, h: dict) -> None:
            k = first_weight(h)
            h[k]["shape"] = shape
            if zero_offsets:
                h[k]["data_offsets"] = [0, 0]
        return fn

    add("len-zero", "header length 0", length(lambda n, size: 0))
    add("len-file", "header length = file size", length(lambda n, size: size))
    add("len-max", "header length 2^64-1", length(lambda n, size: (1 << 64) - 1))
    add("len-2e63", "header length 2^63", length(lambda n, size: 1 << 63))
    add("len-plus1", "header length + 1", length(lambda n, size: n + 1))
    add("len-minus1", "header length - 1", length(lambda n, size: n - 1))
    add("len-plus8", "header length + 8 (eats the first float)", length(lambda n, size: n + 8))
    add("len-half", "header length halved", length(lambda n, size: n // 2))

    def insert_byte(env: Env, p: Path) -> None:
        b = p.read_bytes()
        p.write_bytes(b[:8] + b"X" + b[8:])
    add("shift-insert", "one byte inserted after the length field (header shifted by one)", insert_byte)
    add("shift-drop-first", "the first byte removed (everything shifted by one)",
        lambda env, p: p.write_bytes(p.read_bytes()[1:]))
    add("shift-prepend", "a byte prepended to the file", lambda env, p: p.write_bytes(b"\0" + p.read_bytes()))
    add("dtype-i32", "dtype F32 -> I32 on a weight (same size)", set_field("dtype", "I32"))
    add("dtype-bf16", "dtype F32 -> BF16 on a weight (half the size)", set_field("dtype", "BF16"))
    add("dtype-f64", "dtype F64 (unsupported)", set_field("dtype", "F64"))
    add("dtype-number", "dtype 123", set_field("dtype", 123))
    add("dtype-deep", f"dtype = {DEEP} nested arrays", set_field("dtype", "__DEEP_ARR__"))
    add("shape-2x2e32", "shape [2^32, 2^32] (element count wraps to 0)", set_field("shape", [2**32, 2**32]))
    add("shape-2x2e32-empty", "shape [2^32, 2^32] with data_offsets [0, 0]",
        header_edit(overflow_shape([2**32, 2**32], True)))
    add("shape-bytes-wrap", "shape [2^62, 4] with data_offsets [0, 0] (byte count wraps)",
        header_edit(overflow_shape([2**62, 4], True)))
    add("shape-2e63", "shape [2^63]", set_field("shape", [2**63]))
    add("shape-neg", "shape [-1, 32]", set_field("shape", [-1, 32]))
    add("shape-float", "shape [1.5, 32]", set_field("shape", [1.5, 32]))
    add("shape-deep", f"shape = {DEEP} nested arrays", set_field("shape", "__DEEP_ARR__"))
    add("shape-transposed", "a weight's shape transposed (same size)", header_edit(transpose))
    add("offsets-out", "data_offsets 4 bytes past the end", header_edit(out_of_range))
    add("offsets-reversed", "data_offsets [end, begin]", header_edit(reversed_offsets))
    add("offsets-overlap", "two tensors with the same data_offsets", header_edit(overlap))
    add("offsets-shifted", "a tensor's range shifted 4 bytes into its neighbour", header_edit(shift_into_neighbour))
    add("offsets-one", "data_offsets [0]", set_field("data_offsets", [0]))
    add("offsets-strings", "data_offsets ['0', '4']", set_field("data_offsets", ["0", "4"]))
    add("offsets-neg", "data_offsets [-4, 0]", set_field("data_offsets", [-4, 0]))
    add("offsets-huge", "data_offsets [2^64-4, 2^64-1]", set_field("data_offsets", [2**64 - 4, 2**64 - 1]))
    add("offsets-deep", f"data_offsets = {DEEP} nested objects", set_field("data_offsets", "__DEEP_OBJ__"))
    add("missing-tensor", "a weight's entry removed", header_edit(lambda env, h: h.pop(first_weight(h))))
    add("extra-tensor", "an extra empty tensor 'bogus'",
        header_edit(lambda env, h: h.__setitem__("bogus", {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]})))
    add("header-array", "the header is []", lambda env, p: st_write(p, "[]", st_parts(p)[2]))
    add("header-empty-object", "the header is {}", lambda env, p: st_write(p, "{}", st_parts(p)[2]))
    add("header-deep", f"the header is {DEEP} nested arrays", lambda env, p: st_write(p, deep(), st_parts(p)[2]))
    add("metadata-number", "__metadata__ {format: 5}", header_edit(lambda env, h: h.__setitem__("__metadata__", {"format": 5})))
    add("metadata-array", "__metadata__ []", header_edit(lambda env, h: h.__setitem__("__metadata__", [])))
    add("header-bad-utf8", "invalid UTF-8 in a tensor name",
        lambda env, p: st_write(p, st_parts(p)[1].rstrip(b" ").replace(b'"__metadata__"', b'"__meta\xff"', 1), st_parts(p)[2]))
    add("trunc-1", "the last byte cut", lambda env, p: p.write_bytes(p.read_bytes()[:-1]))
    add("trunc-8", "only the 8-byte length", lambda env, p: p.write_bytes(p.read_bytes()[:8]))
    add("trunc-4", "only 4 bytes", lambda env, p: p.write_bytes(p.read_bytes()[:4]))
    add("trunc-header", "cut in the middle of the header", lambda env, p: p.write_bytes(p.read_bytes()[:60]))
    add("empty", "0 bytes", lambda env, p: p.write_bytes(b""))
    add("dir", "model.safetensors is a directory", lambda env, p: make_dir(p))
    add("fifo", "model.safetensors is a FIFO", lambda env, p: make_fifo(p))
    add("missing", "no model.safetensors", lambda env, p: p.unlink())
    add("dev-zero", "model.safetensors -> /dev/zero", lambda env, p: make_link(p, "/dev/zero"))
    add("link-loop", "model.safetensors is a symlink loop", lambda env, p: make_link(p, "model.safetensors"))

    def nan_weights(env: Env, p: Path) -> None:
        n, h, d = st_parts(p)
        header = json.loads(h)
        k = first_weight(header)
        b, e = header[k]["data_offsets"]
        d = d[:b] + struct.pack("<f", float("nan")) * ((e - b) // 4) + d[e:]
        p.write_bytes(struct.pack("<Q", n) + h + d)
    add("nan-weights", "a weight full of NaN", nan_weights)
    add("unpadded", "header not padded to 8 bytes (still valid)",
        lambda env, p: st_write(p, st_parts(p)[1].rstrip(b" "), st_parts(p)[2], pad=False), expect="any")
    add("opt-trunc", "optimizer.safetensors one byte short", lambda env, p: p.write_bytes(p.read_bytes()[:-1]) and None,
        file="optimizer.safetensors")
    def opt_shape(env: Env, h: dict) -> None:
        b = h["exp_avg"]["data_offsets"][0]
        h["exp_avg"] = {"dtype": "F32", "shape": [1], "data_offsets": [b, b + 4]}
    add("opt-shape", "exp_avg shape [1]", header_edit(opt_shape), file="optimizer.safetensors")
    add("opt-missing", "exp_avg missing", header_edit(lambda env, h: h.pop("exp_avg")), file="optimizer.safetensors")
    add("opt-i32", "exp_avg_sq stored as I32", header_edit(lambda env, h: h["exp_avg_sq"].__setitem__("dtype", "I32")),
        file="optimizer.safetensors")
    add("opt-fifo", "optimizer.safetensors is a FIFO", lambda env, p: make_fifo(p), file="optimizer.safetensors")

    # State that is finite but impossible (generated): a negative second moment somewhere in
    # exp_avg_sq; weights so large the first forward pass is not finite. Refused on load or before
    # the run directory is touched.
    def negative_v(where: str, value: float) -> Callable:
        def m(env: Env, p: Path) -> tuple:
            n, h, d = st_parts(p)
            header = json.loads(h)
            b, e = header["exp_avg_sq"]["data_offsets"]
            count = (e - b) // 4
            i = {"first": 0, "last": count - 1, "random": env.rng.randrange(count)}[where]
            d = d[:b + 4 * i] + struct.pack("<f", value) + d[b + 4 * i + 4:]
            p.write_bytes(struct.pack("<Q", n) + h + d)
            return f"exp_avg_sq[{i}] = {value}", "fail"
        return m
    for where in ("first", "last", "random"):
        for value in (-1.0, -1e-30):
            add(f"opt-negative-v-{where}-{value:g}", f"exp_avg_sq holds {value:g} ({where} element)",
                negative_v(where, value), file="optimizer.safetensors")

    def scaled_weights(factor: float) -> Callable:
        def m(env: Env, p: Path) -> str:
            n, h, d = st_parts(p)
            header = json.loads(h)
            body = bytearray(d)
            for k in tensor_names(header):
                if header[k]["dtype"] != "F32" or len(header[k]["shape"]) != 2:
                    continue
                b, e = header[k]["data_offsets"]
                vals = struct.unpack(f"<{(e - b) // 4}f", bytes(body[b:e]))
                body[b:e] = struct.pack(f"<{len(vals)}f", *[max(-3e38, min(3e38, v * factor)) for v in vals])
            p.write_bytes(struct.pack("<Q", n) + h + bytes(body))
            return f"every 2-D weight x {factor:g}"
        return m
    # x1e15 can stay finite through the norms; x1e30 gives a finite loss (eval may report it) but
    # non-finite gradients (a resumed run must stop before touching its directory).
    for factor, expects in ((1e15, {"eval": "any", "resume": "any"}), (1e30, {"eval": "any", "resume": "fail"})):
        for cmd, expect in expects.items():
            add(f"huge-weights-{factor:g}-{cmd}", f"every weight x {factor:g} ({cmd})", scaled_weights(factor),
                cmds=[cmd], expect=expect)

    def huge_final_norm(env: Env, p: Path) -> str:
        n, h, d = st_parts(p)
        header = json.loads(h)
        b, e = header["model.norm.weight"]["data_offsets"]
        d = d[:b] + struct.pack("<f", 3e38) * ((e - b) // 4) + d[e:]
        p.write_bytes(struct.pack("<Q", n) + h + d)
        return "model.norm.weight = 3e38 (finite; the logits are not)"
    for cmd in ("eval", "resume"):
        add(f"huge-final-norm-{cmd}", f"the final norm's weight 3e38: non-finite logits ({cmd})", huge_final_norm,
            cmds=[cmd])
    add("opt-missing-file", "no optimizer.safetensors", lambda env, p: p.unlink(), file="optimizer.safetensors")


def safetensors_random(env: Env) -> Spec:
    rng = env.rng
    file = rng.choice(["model.safetensors"] * 4 + ["optimizer.safetensors"])
    spec = ck_spec(env, "resume" if file == "optimizer.safetensors" else rng.choice(WEIGHT_READERS))
    path = env.p(f"{CK}/{file}")
    n, h, d = st_parts(path)
    kind = rng.choice(["length", "header", "header", "data", "trunc"])
    expect = "any"
    if kind == "length":
        i, o, v = flip_byte(path, rng, 0, 8)
        expect = "fail" if i >= 1 else "any"
        detail = f"length byte {i} 0x{o:02x} -> 0x{v:02x}"
    elif kind == "header":
        i, o, v = flip_byte(path, rng, 8, 8 + n)
        detail = f"header byte {i} 0x{o:02x} -> 0x{v:02x}"
    elif kind == "data":
        i, o, v = flip_byte(path, rng, 8 + n)
        detail = f"data byte {i} 0x{o:02x} -> 0x{v:02x}"
    else:
        size = path.stat().st_size
        k = rng.randrange(size)
        path.write_bytes(path.read_bytes()[:k])
        expect = "fail"
        detail = f"truncated to {k} of {size} bytes"
    spec.detail, spec.expect = f"{file}: {detail}", expect
    return spec


# ---- state.json ---------------------------------------------------------------------------------

STATE_KEYS = ["step", "tokens_seen", "data_cursor.epoch", "data_cursor.position", "world_size", "global_batch_tokens",
              "fingerprint"]


def state_set(state: dict, key: str, value) -> None:
    if "." in key:
        a, b = key.split(".")
        state[a][b] = value
    else:
        state[key] = value


def state_del(state: dict, key: str) -> None:
    if "." in key:
        a, b = key.split(".")
        del state[a][b]
    else:
        del state[key]


def state_cases(R: Registry) -> None:
    def add(name: str, desc: str, make: Callable, expect: str = "fail") -> None:
        def build(env: Env) -> Spec:
            spec = ck_spec(env, "resume")
            path = env.p(f"{CK}/state.json")
            out = make(env, json.loads(path.read_text()), path)
            if out is not None:
                env.write(f"{CK}/state.json", out)
            return spec
        R.add("state", name, desc, expect, build)

    def raw(key: str, value: str) -> Callable:
        def make(env: Env, s: dict, p: Path) -> str:
            state_set(s, key, "__V__")
            return json.dumps(s, indent=2).replace('"__V__"', value)
        return make

    def drop(key: str) -> Callable:
        def make(env: Env, s: dict, p: Path) -> str:
            state_del(s, key)
            return json.dumps(s, indent=2)
        return make

    for value, tag in [("99999999", "99999999"), ("-1", "neg"), ('"4"', "string"), ("4.5", "fraction"), ("null", "null"),
                       ("1e308", "1e308"), (I64_MAX, "i64max"), ("18446744073709551616", "2e64"), ("true", "bool"),
                       ("[]", "list"), ("NaN", "nan"), (deep(), "deep")]:
        add(f"step-{tag}", f"step {value[:20]}", raw("step", value))
    for key in STATE_KEYS + ["data_cursor"]:
        add(f"missing-{key.replace('.', '-')}", f"no {key}", drop(key))
    add("tokens-neg", "tokens_seen -1", raw("tokens_seen", "-1"))
    add("position-odd", "data_cursor.position 3 (not a batch boundary)", raw("data_cursor.position", "3"))
    add("position-neg", "data_cursor.position -32", raw("data_cursor.position", "-32"))
    add("epoch-neg", "data_cursor.epoch -1", raw("data_cursor.epoch", "-1"))
    add("cursor-string", "data_cursor is a string", raw("data_cursor", '"0:0"'))
    add("world-zero", "world_size 0", raw("world_size", "0"))
    add("world-neg", "world_size -1", raw("world_size", "-1"))
    add("gbt-other", "global_batch_tokens 64 (the run uses 32)", raw("global_batch_tokens", "64"))
    add("gbt-zero", "global_batch_tokens 0", raw("global_batch_tokens", "0"))
    add("fingerprint-other", "fingerprint of another model", raw("fingerprint", '"{vocab_size: 1}"'))
    add("fingerprint-number", "fingerprint 5", raw("fingerprint", "5"))
    add("fingerprint-deep", f"fingerprint = {DEEP} nested objects", raw("fingerprint", deep(kind="object")))
    add("empty", "empty state.json", lambda env, s, p: "")
    add("truncated", "truncated state.json", lambda env, s, p: p.read_text()[:30])
    add("array", "state.json is []", lambda env, s, p: "[]")
    add("deep", f"state.json is {DEEP} nested arrays", lambda env, s, p: deep())
    add("garbage", "binary garbage", lambda env, s, p: bytes(env.rng.randrange(256) for _ in range(512)))
    add("bad-utf8", "invalid UTF-8 in the fingerprint", lambda env, s, p: p.read_bytes().replace(b'"{vocab', b'"\xff{vocab', 1))
    add("dir", "state.json is a directory", lambda env, s, p: make_dir(p))
    add("fifo", "state.json is a FIFO", lambda env, s, p: make_fifo(p))
    add("missing-file", "no state.json", lambda env, s, p: p.unlink())
    add("dev-zero", "state.json -> /dev/zero", lambda env, s, p: make_link(p, "/dev/zero"))
    add("extra-key", "an extra key", raw("comment", '"x"'), expect="any")


def state_random(env: Env) -> Spec:
    rng = env.rng
    spec = ck_spec(env, "resume")
    path = env.p(f"{CK}/state.json")
    s = json.loads(path.read_text())
    detail, expect = mutate_json_file(path, rng, s, STATE_KEYS,
                                      ["-1", '"x"', "null", "[]", "{}", "1e308", "99999999", "0.5", "true",
                                       "18446744073709551616"], state_set)
    if expect == "value":
        key, value = detail.split(": ", 1)
        expect = "any"
        certain = {"-1", '"x"', "null", "[]", "{}", "1e308", "0.5", "true", "18446744073709551616"}
        if key == "fingerprint":
            expect = "fail"
        elif key in ("step", "global_batch_tokens", "data_cursor.position"):
            expect = "fail"  # 99999999 contradicts the directory name, the run's batch or the batch boundaries
        elif value in certain:
            expect = "fail"
    spec.detail, spec.expect = detail, expect
    return spec


# ---- config.yaml inside a checkpoint ------------------------------------------------------------

def ckptconfig_cases(R: Registry) -> None:
    def add(name: str, desc: str, make: Callable, expect: str = "fail", cmds: tuple = ("eval", "generate", "benchgen")) -> None:
        idx = R.count.get("ckptconfig", 0)

        def build(env: Env) -> Spec:
            spec = ck_spec(env, cmds[idx % len(cmds)])
            path = env.p(f"{CK}/config.yaml")
            out = make(env, path.read_text(), path)
            if out is not None:
                env.write(f"{CK}/config.yaml", out)
            return spec
        R.add("ckptconfig", name, desc, expect, build)

    def sub(old: str, new: str) -> Callable:
        def make(env: Env, text: str, p: Path) -> str:
            assert old in text, old
            return text.replace(old, new, 1)
        return make

    add("trunc-key", "cut in the middle of a key", lambda env, t, p: t[: t.index("hidden_size") + 6])
    add("unknown-key", "an unknown model key", sub("model:\n", "model:\n  bogus: 1\n"))
    add("hidden", "model.hidden_size 64 (weights are 32)", sub("hidden_size: 32", "hidden_size: 64"))
    add("layers", "model.num_layers 3 (weights have 2)", sub("num_layers: 2", "num_layers: 3"))
    add("vocab", "model.vocab_size + 1", lambda env, t, p: t.replace(f"vocab_size: {env.ctx.vocab}", f"vocab_size: {env.ctx.vocab + 1}", 1))
    add("untied", "model.tie_embeddings false (no lm_head weight)", sub("tie_embeddings: true", "tie_embeddings: false"))
    add("max-seq", "model.max_seq_len 8 below train.seq_len 16", sub("max_seq_len: 128", "max_seq_len: 8"))
    add("data-missing", "data.dir does not exist (eval reads it)",
        lambda env, t, p: t.replace(str(env.ctx.data), "/nonexistent/kvroute-data", 1), cmds=("eval",))
    add("empty", "empty config.yaml (default model shape)", lambda env, t, p: "")
    add("deep", f"{DEEP} nested sequences", lambda env, t, p: deep_yaml())
    add("fifo", "config.yaml is a FIFO", lambda env, t, p: make_fifo(p))
    add("dir", "config.yaml is a directory", lambda env, t, p: make_dir(p))
    add("missing", "no config.yaml", lambda env, t, p: p.unlink())


def ckptconfig_random(env: Env) -> Spec:
    rng = env.rng
    spec = ck_spec(env, rng.choice(["eval", "generate", "benchgen"]))
    path = env.p(f"{CK}/config.yaml")
    i, o, n = flip_byte(path, rng)
    spec.detail, spec.expect = f"config.yaml byte {i} 0x{o:02x} -> 0x{n:02x}", "any"
    return spec


# ---- an existing run directory must survive a failed command ------------------------------------

def rundir_cases(R: Registry) -> None:
    def add(name: str, desc: str, argv: list, prep: Optional[Callable] = None, expect: str = "fail",
            protect: tuple = ("run",)) -> None:
        def build(env: Env) -> Spec:
            env.run_copy()
            if prep:
                prep(env)
            return Spec(cli_argv(env, argv), protect=list(protect))
        R.add("rundir", name, desc, expect, build)

    add("no-resume", "train again into an existing run without --resume", ["train", "config.yaml"])
    add("no-resume-more", "train again (8 steps) into an existing run without --resume",
        ["train", "config.yaml", "train.steps=8"])
    add("resume-missing", "--resume a checkpoint that does not exist",
        ["train", "config.yaml", "--resume", "run/checkpoints/step_00000099"])
    add("resume-run-dir", "--resume the run directory itself", ["train", "config.yaml", "--resume", "run"])
    add("resume-file", "--resume a file", ["train", "config.yaml", "--resume", f"{CK}/state.json"])
    add("fingerprint", "--resume auto with another model shape",
        ["train", "config.yaml", "--resume", "auto", "model.intermediate_size=128"])
    add("batch", "--resume auto with another global batch", ["train", "config.yaml", "--resume", "auto",
                                                              "train.batch_size=4", "train.steps=6"])
    add("data-missing", "--resume auto with a missing data dir",
        ["train", "config.yaml", "--resume", "auto", "data.dir=/nonexistent/kvroute", "train.steps=6"])
    add("weights-missing", "--resume auto, newest checkpoint lacks model.safetensors",
        ["train", "config.yaml", "--resume", "auto", "train.steps=6"],
        prep=lambda env: env.p(f"{CK}/model.safetensors").unlink())
    add("metrics-dir", "--resume auto with metrics.jsonl a directory",
        ["train", "config.yaml", "--resume", "auto", "train.steps=6"],
        prep=lambda env: make_dir(env.p("run/metrics.jsonl")))
    add("checkpoints-file", "--resume auto with checkpoints/ replaced by a file (cannot save)",
        ["train", "config.yaml", "--resume", "auto", "train.steps=6"],
        prep=lambda env: (remove(env.p("run/checkpoints")), env.write("run/checkpoints", "x")))
    add("run-dir-file", "train.run_dir is a regular file", ["train", "config.yaml", "train.run_dir=afile"],
        prep=lambda env: env.p("afile").write_text("keep me\n"), protect=("run", "afile"))
    add("threads", "--resume auto --threads 1000000", ["train", "config.yaml", "--resume", "auto", "--threads", "1000000"])
    add("bad-override", "--resume auto train.steps=abc", ["train", "config.yaml", "--resume", "auto", "train.steps=abc"])
    add("bad-override-late", "--resume auto with an unknown key after valid overrides",
        ["train", "config.yaml", "--resume", "auto", "train.steps=6", "train.bogus=1"])
    add("eval-out", "eval --out under /dev/null", ["eval", "--checkpoint", "{CK}", "--out", "/dev/null/x", "--batches", "1"])
    add("eval-keep", "eval --keep 0,1x", ["eval", "--checkpoint", "{CK}", "--keep", "0,1x", "--batches", "1"])
    add("steps-below", "--resume auto with train.steps 2 below the checkpoint's step 4",
        ["train", "config.yaml", "--resume", "auto", "train.steps=2"], expect="any")
    add("empty-newest", "--resume auto, the newest step_ directory is empty",
        ["train", "config.yaml", "--resume", "auto", "train.steps=6"],
        prep=lambda env: env.p("run/checkpoints/step_00000009").mkdir(), expect="any")

    def sweep_prep(env: Env) -> None:
        env.study()
        dest = env.p("st/runs/a")
        dest.parent.mkdir(parents=True)
        shutil.copytree(env.ctx.golden / "run", dest, symlinks=True)
        # the study trains 2 steps: make step_00000002 the final one, with corrupt weights
        p = dest / "checkpoints/step_00000002/model.safetensors"
        p.write_bytes(p.read_bytes()[:100])
    add("sweep-corrupt-final", "sweep over an out dir whose final checkpoint is corrupt", ["sweep", "study.yaml"],
        prep=sweep_prep, protect=("st",))


# ---- study files (sweep) ------------------------------------------------------------------------

def study_cases(R: Registry) -> None:
    def add(name: str, desc: str, text, expect: str = "fail") -> None:
        def build(env: Env) -> Spec:
            env.study()
            if callable(text):
                out = text(env)
                if out is not None:
                    env.write("study.yaml", out)
            else:
                env.write("study.yaml", text)
            return Spec(["sweep", "study.yaml", "--threads", "1"])
        R.add("study", name, desc, expect, build)

    sub = lambda old, new: (lambda env: STUDY.replace(old, new, 1))
    add("empty", "empty study file", "")
    add("list", "the study is a list", "- a\n- b\n")
    add("unknown-key", "an unknown top-level key", STUDY + "bogus: 1\n")
    add("no-base", "no base", sub("base: cfg.yaml\n", ""))
    add("base-missing", "base config does not exist", sub("base: cfg.yaml", "base: missing.yaml"))
    add("base-list", "base is a list", sub("base: cfg.yaml", "base: [cfg.yaml]"))
    add("runs-scalar", "runs: 5", STUDY.split("runs:")[0] + "runs: 5\n")
    add("run-no-name", "a run without a name", sub("  - name: a\n", "  - nam: a\n"))
    add("run-name-list", "a run name that is a list", sub("name: a", "name: [a, b]"))
    add("overrides-scalar", "overrides is a string",
        sub("overrides: [train.steps=2, train.checkpoint_interval=0, eval.interval=0]", "overrides: train.steps=2"))
    add("overrides-bad", "an invalid override", sub("[router.policy=none]", "[router.bogus=1]"))
    add("grid-scalar", "a grid value that is not a list", STUDY + "grid:\n  optim.lr: 5\n")
    add("grid-unknown", "a grid over an unknown key", STUDY + "grid:\n  bogus.key: [1]\n")
    add("retention-string", "eval.retention: abc", sub("retention: [1.0, 0.5]", "retention: abc"))
    add("retention-range", "eval.retention: [2]", sub("retention: [1.0, 0.5]", "retention: [2]"))
    add("retention-nan", "eval.retention: [.nan]", sub("retention: [1.0, 0.5]", "retention: [.nan]"))
    add("batches-neg", "eval.batches: -1", sub("batches: 1", "batches: -1"))
    add("batches-string", "eval.batches: abc", sub("batches: 1", "batches: abc"))
    add("retention-same-plan", "two retention levels keeping the same layers", sub("retention: [1.0, 0.5]", "retention: [1.0, 1.0]"))
    add("retention-empty", "eval.retention: []", sub("retention: [1.0, 0.5]", "retention: []"))
    add("eval-unknown", "an unknown eval key", sub("batches: 1", "batches: 1\n  bogus: 1"))
    add("eval-scalar", "eval: 5", STUDY.split("eval:")[0] + "eval: 5\n")
    add("strategy-bad", "eval.strategy: best", sub("batches: 1", "batches: 1\n  strategy: best"))
    add("plan-split-even", "eval.plan_split without the greedy strategy", sub("batches: 1", "batches: 1\n  plan_split: 0.5"))
    add("plan-split-range", "eval.plan_split: 1", sub("batches: 1", "batches: 1\n  strategy: greedy\n  plan_split: 1"))
    add("plan-split-nan", "eval.plan_split: .nan", sub("batches: 1", "batches: 1\n  strategy: greedy\n  plan_split: .nan"))
    add("plan-split-string", "eval.plan_split: half", sub("batches: 1", "batches: 1\n  strategy: greedy\n  plan_split: half"))
    add("seeds-scalar", "seeds: 3", STUDY + "seeds: 3\n")
    add("seeds-empty", "seeds: []", STUDY + "seeds: []\n")
    add("seeds-dup", "a seed twice", STUDY + "seeds: [1, 2, 1]\n")
    add("seeds-neg", "a negative seed", STUDY + "seeds: [-1]\n")
    add("seeds-float", "a fractional seed", STUDY + "seeds: [1.5]\n")
    add("seeds-huge", "a seed beyond 64 bits", STUDY + "seeds: [99999999999999999999999]\n")
    add("seeds-map", "seeds: {a: 1}", STUDY + "seeds: {a: 1}\n")
    add("shallow-string", "shallow_baselines: maybe", STUDY + "shallow_baselines: maybe\n")
    add("shallow-nothing-smaller", "shallow_baselines with only full retention",
        STUDY.replace("retention: [1.0, 0.5]", "retention: [1.0]") + "shallow_baselines: true\n")
    add("shallow-routed", "a shallower run with routing", sub("[router.policy=none]",
        "[router.policy=stochastic, router.share_prob=0.5, model.num_layers=1]\n  - name: b\n    overrides: []"))
    add("run-name-dup", "two runs of one name", sub("    overrides: [router.policy=none]\n",
        "    overrides: [router.policy=none]\n  - name: a\n    overrides: []\n"))
    add("run-name-path", "a run name with a slash", sub("name: a", "name: ../../x"))
    add("run-name-dot", "a run name '..'", sub("name: a", "name: '..'"))
    add("run-unknown-key", "a run with an unknown key", sub("  - name: a\n", "  - name: a\n    bogus: 1\n"))
    add("deep", f"{DEEP} nested sequences", deep_yaml())
    add("fifo", "the study file is a FIFO", lambda env: make_fifo(env.p("study.yaml")))
    add("dir", "the study file is a directory", lambda env: make_dir(env.p("study.yaml")))
    add("missing", "the study file does not exist", lambda env: env.p("study.yaml").unlink())
    add("dev-zero", "study.yaml -> /dev/zero", lambda env: make_link(env.p("study.yaml"), "/dev/zero"))


# ---- Hugging Face model directories (eval --checkpoint HFDIR, train with model.init_from: HFDIR) --

HF_CMDS = ["eval", "train"]
HF_INDEX = "model.safetensors.index.json"


def hf_shard(i: int) -> str:
    return f"model-{i:05d}-of-00003.safetensors"


def init_cfg(env: Env, which: str, model: Optional[dict] = None, extra: Optional[dict] = None) -> dict:
    """A one-step run that starts from model.init_from (what the model section leaves out comes from
    the source); the shards match the source's vocabulary."""
    data = env.ctx.data if which in ("golden", "ckpt") else env.ctx.hfdata
    c = {"model": {"init_from": "model", "max_seq_len": "64"} if model is None else model,
         "router": {"policy": "stochastic", "share_prob": "0.5"},
         "data": {"dir": q(str(data)), "tokenizer": q(str(env.ctx.tok))},
         "optim": {"lr": "3.0e-3", "min_lr": "3.0e-4"},
         "train": {"name": "init", "run_dir": "initrun", "steps": "1", "batch_size": "2", "seq_len": "16",
                   "log_interval": "1", "checkpoint_interval": "0", "threads": "1"},
         "eval": {"retention": "[1.0]", "batches": "1"},
         "dist": {"backend": "none"}}
    for (section, key), value in (extra or {}).items():
        c.setdefault(section, {})[key] = value(env) if callable(value) else value
    return c


def hf_spec(env: Env, which: str, cmd: str, detail: str = "", expect: Optional[str] = None) -> Spec:
    """eval reads the model directory through --checkpoint, train through model.init_from; either
    way a failure must leave the directory as it was (eval writes eval.csv/json into it on success)."""
    m = env.hf_copy(which)
    if cmd == "eval":
        data = env.ctx.data if which == "golden" else env.ctx.hfdata
        argv = ["eval", "--checkpoint", m, "--data", str(data), "--retention", "1", "--seq-len", "16",
                "--batches", "1", "--threads", "1"]
    else:
        env.cfg(cfg=init_cfg(env, which), rel="init.yaml")
        argv = ["train", "init.yaml"]
    return Spec(argv, protect=[m], detail=detail, expect=expect)


def json_with_raw(obj, setter, raw: str) -> str:
    """obj as JSON with one value (placed by setter) replaced by raw JSON text (NaN, 1e999, ...)."""
    setter(obj, "__RAW_VALUE__")
    return json.dumps(obj, indent=2).replace('"__RAW_VALUE__"', raw)


def st_weight(header: dict, rank: int = 2) -> str:
    """The first weight of this rank that every model reads (a tied model ignores lm_head.weight)."""
    return sorted(k for k in tensor_names(header) if len(header[k]["shape"]) == rank and k != "lm_head.weight")[0]


def st_remove(path: Path, pick: Callable) -> None:
    """Removes one tensor (header entry and data; the others move up, so no gap is left)."""
    _, h, d = st_parts(path)
    header = json.loads(h)
    gone = pick(header)
    out, data = {}, b""
    for k, v in header.items():
        if k == "__metadata__":
            out[k] = v
    for k in sorted(tensor_names(header), key=lambda k: header[k]["data_offsets"][0]):
        if k == gone:
            continue
        b, e = header[k]["data_offsets"]
        out[k] = dict(header[k], data_offsets=[len(data), len(data) + e - b])
        data += d[b:e]
    st_write(path, out, data)


def st_edit(path: Path, fn: Callable) -> None:
    _, h, d = st_parts(path)
    header = json.loads(h)
    fn(header)
    st_write(path, header, d)


def st_fill(path: Path, element: bytes, count: Optional[int] = None) -> str:
    """Overwrites the first 2-D weight's values (all, or the first `count`) with `element`."""
    n, h, d = st_parts(path)
    header = json.loads(h)
    k = st_weight(header)
    b, e = header[k]["data_offsets"]
    width = len(element)
    k_elems = (e - b) // width if count is None else count
    d = d[:b] + element * k_elems + d[b + k_elems * width:]
    path.write_bytes(struct.pack("<Q", n) + h + d)
    return k


# F16/BF16/F32 NaN and infinity, little-endian
NAN = {"F16": b"\x00\x7e", "BF16": b"\xc0\x7f", "F32": struct.pack("<f", float("nan"))}
INF = {"F16": b"\x00\x7c", "BF16": b"\x80\x7f", "F32": struct.pack("<f", float("inf"))}


def hfmodel_cases(R: Registry) -> None:
    def add(name: str, desc: str, which: str, mutate: Callable, expect: str = "fail",
            cmds: Optional[list] = None) -> None:
        idx = R.count.get("hfmodel", 0)
        cmds = cmds or HF_CMDS

        def build(env: Env) -> Spec:
            spec = hf_spec(env, which, cmds[idx % len(cmds)])
            out = mutate(env, env.p("model"))
            if isinstance(out, Spec):
                out.protect = out.protect or spec.protect
                return out
            return spec
        R.add("hfmodel", name, desc, expect, build)

    # -- config.json
    def cj(fn: Callable) -> Callable:
        def m(env: Env, d: Path) -> None:
            c = json.loads((d / "config.json").read_text())
            out = fn(c)
            (d / "config.json").write_text(out if isinstance(out, str) else json.dumps(c, indent=2))
        return m

    def cj_set(key: str, value) -> Callable:
        return cj(lambda c: c.__setitem__(key, value))

    def cj_raw(key: str, raw: str, sub: Optional[str] = None) -> Callable:
        def setter(c: dict, v) -> None:
            (c[sub] if sub else c)[key] = v
        return cj(lambda c: json_with_raw(c, setter, raw))

    def cj_drop(*keys: str) -> Callable:
        return cj(lambda c: [c.pop(k, None) for k in keys] and None)

    def cj_sub(sub: str, key: str, value) -> Callable:
        return cj(lambda c: c[sub].__setitem__(key, value))

    add("arch-unknown", "architectures ['GPT2LMHeadModel']", "llama", cj_set("architectures", ["GPT2LMHeadModel"]))
    add("arch-two", "architectures lists two classes", "qwen3",
        cj_set("architectures", ["Qwen3ForCausalLM", "LlamaForCausalLM"]))
    add("arch-number", "architectures 5", "mistral", cj_set("architectures", 5))
    add("model-type-mismatch", "model_type 'mistral' with LlamaForCausalLM", "llama", cj_set("model_type", "mistral"))
    add("model-type-unknown", "no architectures, model_type 'gpt2'", "qwen3",
        cj(lambda c: (c.pop("architectures"), c.__setitem__("model_type", "gpt2")) and None))
    add("no-architecture", "neither architectures nor model_type", "mistral", cj_drop("architectures", "model_type"))
    add("model-type-number", "model_type 5", "tied", cj_set("model_type", 5))
    add("rope-type-yarn", "rope_scaling.rope_type 'yarn'", "llama", cj_sub("rope_scaling", "rope_type", "yarn"))
    add("rope-type-dynamic-5x", "rope_parameters.rope_type 'dynamic' (transformers 5.x style)", "qwen3",
        cj_sub("rope_parameters", "rope_type", "dynamic"))
    add("rope-scaling-string", "rope_scaling 'llama3' (not an object)", "llama", cj_set("rope_scaling", "llama3"))
    add("rope-parameters-list", "rope_parameters [1]", "qwen3", cj_set("rope_parameters", [1]))
    add("rope-high-eq-low", "llama3 high_freq_factor = low_freq_factor", "llama",
        cj_sub("rope_scaling", "high_freq_factor", 1.0))
    add("rope-factor-half", "llama3 factor 0.5", "llama", cj_sub("rope_scaling", "factor", 0.5))
    add("rope-no-original", "llama3 without original_max_position_embeddings", "llama",
        cj(lambda c: c["rope_scaling"].pop("original_max_position_embeddings") and None))
    add("rope-original-huge", "original_max_position_embeddings 2^40", "llama",
        cj_sub("rope_scaling", "original_max_position_embeddings", 2**40))
    add("rope-theta-inf", "rope_theta 1e999 (overflows to inf)", "mistral", cj_raw("rope_theta", "1e999"))
    add("rope-theta-nan", "rope_parameters.rope_theta NaN (not JSON)", "qwen3",
        cj_raw("rope_theta", "NaN", sub="rope_parameters"))
    add("rope-theta-neg", "rope_theta -1", "tied", cj_set("rope_theta", -1))
    add("rms-eps-zero", "rms_norm_eps 0", "mistral", cj_set("rms_norm_eps", 0))
    add("rms-eps-infinity", "rms_norm_eps Infinity (not JSON)", "llama", cj_raw("rms_norm_eps", "Infinity"))
    add("rms-eps-string", "rms_norm_eps '1e-6' (a string)", "tied", cj_set("rms_norm_eps", "1e-6"))
    add("attention-bias", "attention_bias true", "qwen3", cj_set("attention_bias", True))
    add("mlp-bias", "mlp_bias true", "llama", cj_set("mlp_bias", True))
    add("attention-bias-string", "attention_bias 'false' (a string)", "mistral", cj_set("attention_bias", "false"))
    add("hidden-act-gelu", "hidden_act gelu", "mistral", cj_set("hidden_act", "gelu"))
    add("hidden-act-number", "hidden_act 5", "tied", cj_set("hidden_act", 5))
    add("qwen3-sliding", "Qwen3 with use_sliding_window true", "qwen3", cj_set("use_sliding_window", True))
    for key, which in [("vocab_size", "llama"), ("hidden_size", "qwen3"), ("num_hidden_layers", "mistral"),
                       ("num_attention_heads", "tied"), ("intermediate_size", "llama")]:
        add(f"missing-{key}", f"no {key}", which, cj_drop(key))
    for key, value, tag, which in [("vocab_size", "64", "string", "qwen3"), ("hidden_size", 32.5, "fraction", "mistral"),
                                   ("num_hidden_layers", True, "bool", "llama"),
                                   ("tie_word_embeddings", "yes", "string", "tied"),
                                   ("head_dim", [16], "list", "qwen3"), ("num_key_value_heads", {}, "object", "mistral"),
                                   ("max_position_embeddings", -1, "neg", "llama")]:
        add(f"type-{key}-{tag}", f"{key} {json.dumps(value)}", which, cj_set(key, value))
    for key, raw, tag, which in [("vocab_size", str(2**40), "2e40", "llama"), ("hidden_size", str(2**31), "2e31", "tied"),
                                 ("num_hidden_layers", "1000000", "1e6", "qwen3"),
                                 ("intermediate_size", I64_MAX, "i64max", "mistral"),
                                 ("num_attention_heads", "18446744073709551616", "2e64", "llama"),
                                 ("max_position_embeddings", str(2**40), "2e40", "qwen3"),
                                 ("head_dim", "1e308", "1e308", "mistral")]:
        add(f"huge-{key}-{tag}", f"{key} {raw}", which, cj_raw(key, raw))
    add("kv-heads-3", "num_key_value_heads 3 does not divide 4 heads", "llama", cj_set("num_key_value_heads", 3))
    add("kv-heads-0", "num_key_value_heads 0", "qwen3", cj_set("num_key_value_heads", 0))
    add("hidden-not-multiple", "hidden_size 30 (not a multiple of 4 heads), no head_dim", "mistral",
        cj(lambda c: (c.pop("head_dim"), c.__setitem__("hidden_size", 30)) and None))
    add("head-dim-odd", "head_dim 7", "llama", cj_set("head_dim", 7))
    add("quantization", "quantization_config (GPTQ)", "tied", cj_set("quantization_config", {"quant_method": "gptq", "bits": 4}))
    add("eos-empty-list", "eos_token_id []", "qwen3", cj_set("eos_token_id", []))
    add("bos-neg", "bos_token_id -1", "llama", cj_set("bos_token_id", -1))
    # the config disagrees with the weights
    add("shape-intermediate", "intermediate_size 128 (weights have 64)", "qwen3", cj_set("intermediate_size", 128))
    add("shape-layers-3", "num_hidden_layers 3 (weights have 4)", "llama", cj_set("num_hidden_layers", 3))
    add("shape-layers-5", "num_hidden_layers 5 (weights have 4)", "mistral", cj_set("num_hidden_layers", 5))
    add("shape-vocab", "vocab_size 65 (weights have 64)", "tied", cj_set("vocab_size", 65))
    add("shape-head-dim", "head_dim 8 (weights have 16)", "qwen3", cj_set("head_dim", 8))
    add("untied-no-lm-head", "tie_word_embeddings false, no lm_head.weight stored", "qwen3",
        cj_set("tie_word_embeddings", False))
    add("tied-lm-head-stored", "tie_word_embeddings true with lm_head.weight stored (it is ignored)", "llama",
        cj_set("tie_word_embeddings", True), expect="any")
    add("window-below-seq-eval", "mistral sliding_window 8 < --seq-len 16", "mistral", cj_set("sliding_window", 8),
        cmds=["eval"])
    add("window-zero", "mistral sliding_window 0", "mistral", cj_set("sliding_window", 0))
    add("window-null", "mistral sliding_window null (full attention)", "mistral", cj_set("sliding_window", None),
        expect="pass")
    add("unknown-key", "an unknown key in config.json", "llama", cj_set("kvroute_comment", {"x": [1, 2]}), expect="pass")
    # config.json itself
    add("config-empty-object", "config.json is {}", "qwen3", cj(lambda c: "{}"))
    add("config-array", "config.json is []", "mistral", cj(lambda c: "[]"))
    add("config-empty", "config.json is empty", "llama", cj(lambda c: ""))
    add("config-trunc", "config.json truncated", "tied", cj(lambda c: json.dumps(c, indent=2)[:200]))
    add("config-deep", f"config.json is {DEEP} nested arrays", "qwen3", cj(lambda c: deep()))
    add("config-deep-value", f"an unknown key holding {DEEP} nested objects", "mistral",
        cj(lambda c: json_with_raw(c, lambda o, v: o.__setitem__("extra", v), deep(kind="object"))), expect="any")
    add("config-fifo", "config.json is a FIFO", "llama", lambda env, d: make_fifo(d / "config.json"))
    add("config-dir", "config.json is a directory", "qwen3", lambda env, d: make_dir(d / "config.json"))
    add("config-dev-zero", "config.json -> /dev/zero", "mistral", lambda env, d: make_link(d / "config.json", "/dev/zero"))
    add("config-missing", "no config.json", "tied", lambda env, d: (d / "config.json").unlink())

    # -- model.safetensors.index.json and the shards (llama: 3 shards)
    def ix(fn: Callable) -> Callable:
        def m(env: Env, d: Path) -> None:
            index = json.loads((d / HF_INDEX).read_text())
            out = fn(env, d, index)
            (d / HF_INDEX).write_text(out if isinstance(out, str) else json.dumps(index, indent=2))
        return m

    def entry(value) -> Callable:  # the first tensor of shard 1 mapped to `value`
        def fn(env: Env, d: Path, index: dict) -> None:
            wm = index["weight_map"]
            name = sorted(k for k, v in wm.items() if v == hf_shard(1))[0]
            wm[name] = value
        return fn

    def unlisted(env: Env, d: Path, index: dict) -> None:
        del index["weight_map"][sorted(index["weight_map"])[0]]

    def listed_absent(env: Env, d: Path, index: dict) -> None:
        index["weight_map"]["model.layers.9.mlp.up_proj.weight"] = hf_shard(1)

    def wrong_shard(env: Env, d: Path, index: dict) -> None:
        wm = index["weight_map"]
        name = sorted(k for k, v in wm.items() if v == hf_shard(1))[0]
        wm[name] = hf_shard(2)

    def duplicate(env: Env, d: Path) -> None:
        """A tensor of shard 1 also stored in shard 2 (the index lists it for shard 1)."""
        _, h1, d1 = st_parts(d / hf_shard(1))
        head1 = json.loads(h1)
        name = st_weight(head1)
        b, e = head1[name]["data_offsets"]
        _, h2, d2 = st_parts(d / hf_shard(2))
        head2 = json.loads(h2)
        head2[name] = dict(head1[name], data_offsets=[len(d2), len(d2) + e - b])
        st_write(d / hf_shard(2), head2, d2 + d1[b:e])

    def in_subdir(env: Env, d: Path, index: dict) -> None:
        make_dir(d / "sub")
        shutil.copy2(d / hf_shard(1), d / "sub" / hf_shard(1))
        entry(f"sub/{hf_shard(1)}")(env, d, index)

    add("index-trunc", "index.json truncated", "llama", ix(lambda env, d, i: json.dumps(i, indent=2)[:300]))
    add("index-empty", "index.json empty", "llama", ix(lambda env, d, i: ""))
    add("index-array", "index.json is []", "llama", ix(lambda env, d, i: "[]"))
    add("index-no-weight-map", "index.json without weight_map", "llama", ix(lambda env, d, i: i.pop("weight_map") and None))
    add("index-weight-map-list", "weight_map is a list", "llama", ix(lambda env, d, i: i.__setitem__("weight_map", [])))
    add("index-weight-map-empty", "weight_map is {}", "llama", ix(lambda env, d, i: i.__setitem__("weight_map", {})))
    add("index-weight-map-string", "weight_map is a string", "llama",
        ix(lambda env, d, i: i.__setitem__("weight_map", hf_shard(1))))
    add("index-entry-number", "a weight_map entry is 1", "llama", ix(entry(1)))
    add("index-entry-null", "a weight_map entry is null", "llama", ix(entry(None)))
    add("index-dotdot", "a weight_map entry '../<shard>'", "llama",
        lambda env, d: (shutil.copy2(d / hf_shard(1), env.p(hf_shard(1))), ix(entry(f"../{hf_shard(1)}"))(env, d))[1])
    add("index-subdir", "a weight_map entry 'sub/<shard>' (the file exists there)", "llama", ix(in_subdir))
    add("index-absolute", "a weight_map entry is the shard's absolute path", "llama",
        lambda env, d: ix(entry(str(d / hf_shard(1))))(env, d))
    add("index-not-safetensors", "a weight_map entry 'config.json'", "llama", ix(entry("config.json")))
    add("index-bare-suffix", "a weight_map entry '.safetensors'", "llama", ix(entry(".safetensors")))
    add("index-nul", "a weight_map entry with a NUL byte", "llama", ix(entry(hf_shard(1)[:5] + "\0" + hf_shard(1)[5:])))
    add("index-missing-shard", "shard 2 of 3 deleted", "llama", lambda env, d: (d / hf_shard(2)).unlink())
    add("index-listed-absent", "a tensor listed in weight_map but in no shard", "llama", ix(listed_absent))
    add("index-unlisted", "a tensor stored in a shard but not in weight_map", "llama", ix(unlisted))
    add("index-wrong-shard", "a tensor listed for shard 2 but stored in shard 1", "llama", ix(wrong_shard))
    add("index-duplicate", "a tensor stored in shards 1 and 2", "llama", duplicate)
    add("index-deep", f"index.json is {DEEP} nested arrays", "llama", ix(lambda env, d, i: deep()))
    add("index-fifo", "index.json is a FIFO", "llama", lambda env, d: make_fifo(d / HF_INDEX))
    add("index-dir", "index.json is a directory", "llama", lambda env, d: make_dir(d / HF_INDEX))
    add("shard-header-garbage", "shard 2's JSON header overwritten with garbage (same length)", "llama",
        lambda env, d: (lambda n, h, b: (d / hf_shard(2)).write_bytes(
            struct.pack("<Q", n) + bytes(env.rng.randrange(256) for _ in range(len(h))) + b))(*st_parts(d / hf_shard(2))))
    add("shard-len-huge", "shard 1's header length 2^63", "llama",
        lambda env, d: (lambda p: p.write_bytes(struct.pack("<Q", 1 << 63) + p.read_bytes()[8:]))(d / hf_shard(1)))
    add("shard-trunc", "shard 3 cut in half", "llama",
        lambda env, d: (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]))(d / hf_shard(3)))
    add("shard-empty", "shard 1 is empty", "llama", lambda env, d: (d / hf_shard(1)).write_bytes(b""))
    add("shard-fifo", "shard 2 is a FIFO", "llama", lambda env, d: make_fifo(d / hf_shard(2)))
    add("shard-dir", "shard 3 is a directory", "llama", lambda env, d: make_dir(d / hf_shard(3)))

    # -- weights
    single = "model.safetensors"
    add("f16-nan", "an F16 weight full of NaN", "qwen3", lambda env, d: st_fill(d / single, NAN["F16"]) and None)
    add("f16-inf", "an F16 weight with one +inf", "qwen3", lambda env, d: st_fill(d / single, INF["F16"], 1) and None)
    add("bf16-nan", "a BF16 weight (shard 2) full of NaN", "llama", lambda env, d: st_fill(d / hf_shard(2), NAN["BF16"]) and None)
    add("bf16-inf", "a BF16 weight with one +inf", "mistral", lambda env, d: st_fill(d / single, INF["BF16"], 1) and None)
    add("f32-nan", "an F32 weight with one NaN", "tied", lambda env, d: st_fill(d / single, NAN["F32"], 1) and None)
    add("dtype-i32", "an F32 weight stored as I32 (same size)", "tied",
        lambda env, d: st_edit(d / single, lambda h: h[st_weight(h)].__setitem__("dtype", "I32")))
    add("dtype-i16", "an F16 weight stored as I16 (same size)", "qwen3",
        lambda env, d: st_edit(d / single, lambda h: h[st_weight(h)].__setitem__("dtype", "I16")))
    add("dtype-f64", "a BF16 weight labelled F64 (size mismatch)", "llama",
        lambda env, d: st_edit(d / hf_shard(1), lambda h: h[st_weight(h)].__setitem__("dtype", "F64")))
    add("dtype-f8", "a BF16 weight labelled F8_E4M3", "mistral",
        lambda env, d: st_edit(d / single, lambda h: h[st_weight(h)].__setitem__("dtype", "F8_E4M3")))

    def transpose(h: dict) -> None:
        for k in sorted(tensor_names(h)):
            s = h[k]["shape"]
            if len(s) == 2 and s[0] != s[1]:
                h[k]["shape"] = [s[1], s[0]]
                return
    add("shape-transposed", "a weight's shape transposed (same size)", "mistral", lambda env, d: st_edit(d / single, transpose))

    def extra_tensor(name: str) -> Callable:
        def m(env: Env, d: Path) -> None:
            _, h, data = st_parts(d / single)
            head = json.loads(h)
            head[name] = {"dtype": "BF16", "shape": [4], "data_offsets": [len(data), len(data) + 8]}
            st_write(d / single, head, data + b"\0" * 8)
        return m
    add("extra-bias", "an extra q_proj.bias tensor (kvroute has no biases)", "mistral",
        extra_tensor("model.layers.0.self_attn.q_proj.bias"))
    add("extra-inv-freq", "an extra rotary_emb.inv_freq buffer (ignored)", "mistral",
        extra_tensor("model.layers.0.self_attn.rotary_emb.inv_freq"), expect="pass")
    add("missing-tensor", "a weight removed", "tied", lambda env, d: st_remove(d / single, st_weight))
    add("missing-lm-head", "untied model without lm_head.weight", "mistral",
        lambda env, d: st_remove(d / single, lambda h: "lm_head.weight"))
    add("metadata-number", "__metadata__ {format: 5}", "qwen3",
        lambda env, d: st_edit(d / single, lambda h: h.__setitem__("__metadata__", {"format": 5})))
    add("weights-missing", "no model.safetensors (only config.json)", "mistral", lambda env, d: (d / single).unlink())
    add("weights-dir", "model.safetensors is a directory", "tied", lambda env, d: make_dir(d / single))
    add("weights-fifo", "model.safetensors is a FIFO", "qwen3", lambda env, d: make_fifo(d / single))
    add("weights-dev-zero", "model.safetensors -> /dev/zero", "mistral", lambda env, d: make_link(d / single, "/dev/zero"))

    # -- model.init_from (train only): the run's model section against the source's
    def init_case(name: str, desc: str, which: str, model: Optional[dict] = None, extra: Optional[dict] = None,
                  mutate: Optional[Callable] = None, expect: str = "fail", src: str = "hf") -> None:
        def build(env: Env) -> Spec:
            if src == "hf":
                m = env.hf_copy(which)
            else:  # a kvroute checkpoint: a copy of the golden run (or of the fixed_groups run)
                m = env.cla_copy() if src == "cla" else env.run_copy()
            if mutate:
                mutate(env, env.p(m))
            mm = {"init_from": m, "max_seq_len": "64"} if model is None else {"init_from": m, **model}
            env.cfg(cfg=init_cfg(env, "ckpt" if src != "hf" else which, mm, extra), rel="init.yaml")
            return Spec(["train", "init.yaml"], protect=[m.split("/")[0]])
        R.add("hfmodel", name, desc, expect, build)

    init_case("init-conflict-hidden", "model.hidden_size 64, model.init_from has 32", "llama",
              model={"max_seq_len": "64", "hidden_size": "64"})
    init_case("init-conflict-arch", "model.architecture qwen3, model.init_from is llama", "llama",
              model={"max_seq_len": "64", "architecture": "qwen3"})
    init_case("init-qk-norm-llama", "model.qk_norm true with a llama model.init_from", "llama",
              model={"max_seq_len": "64", "qk_norm": "true"})
    init_case("init-window-seq-len", "model.init_from mistral with sliding_window 8 < train.seq_len 16", "mistral",
              model={}, mutate=cj_set("sliding_window", 8))
    init_case("init-window-given", "model.sliding_window 8 while model.init_from has 4096", "mistral",
              model={"max_seq_len": "8", "sliding_window": "8"}, extra={("train", "seq_len"): "8"})
    init_case("init-vocab-data", "a vocab-64 model.init_from with the vocab-300 shards", "llama",
              extra={("data", "dir"): lambda env: q(str(env.ctx.data))})
    init_case("init-no-weights", "model.init_from holds config.json but no weights", "llama",
              mutate=lambda env, d: [p.unlink() for p in d.glob("*.safetensors*")])
    init_case("init-ckpt-trunc", "model.init_from a checkpoint whose model.safetensors is truncated", "",
              model={}, src="ckpt",
              mutate=lambda env, d: (lambda p: p.write_bytes(p.read_bytes()[:1000]))(d / "model.safetensors"))
    init_case("init-ckpt-nan", "model.init_from a checkpoint with a NaN weight", "", model={}, src="ckpt",
              mutate=lambda env, d: st_fill(d / "model.safetensors", NAN["F32"], 1) and None)
    init_case("init-cla-source", "model.init_from a fixed_groups checkpoint (no K/V in layer 1) into a "
              "stochastic run", "", model={}, src="cla")


def hfmodel_random(env: Env) -> Spec:
    """One random mutation of a copied model directory: a config.json value, a weight_map entry, or
    a byte of a shard's length/header/data."""
    rng = env.rng
    which = rng.choice(sorted(HF_MODELS) + ["golden"])
    cmd = rng.choice(HF_CMDS)
    spec = hf_spec(env, which, cmd)
    d = env.p("model")
    sharded = (d / HF_INDEX).exists()
    kind = rng.choice(["config", "config", "config", "index", "shard"] if sharded else
                      ["config", "config", "config", "shard"])
    expect = "any"
    if kind == "config":
        path = d / "config.json"
        c = json.loads(path.read_text())
        original = json.loads(path.read_text())
        values = ["-1", "0", "1", "65", "2.5", "1e308", "1e999", "18446744073709551616", "null", "true", '"x"',
                  "[]", "{}", "NaN"]
        keys = sorted(c) + ["quantization_config", "attention_bias", "mlp_bias", "sliding_window", "head_dim"]
        detail, expect = mutate_json_file(path, rng, c, keys, values, lambda obj, k, v: obj.__setitem__(k, v))
        if expect == "value":
            key, raw = detail.split(": ", 1)
            expect = hf_config_oracle(which, cmd, key, raw, original)
        detail = f"config.json {detail}"
    elif kind == "index":
        path = d / HF_INDEX
        index = json.loads(path.read_text())
        wm = index["weight_map"]
        names = sorted(wm)
        op = rng.choice(["drop", "add", "retarget", "value", "flip", "trunc"])
        expect = "fail"
        if op == "drop":
            name = rng.choice(names)
            del wm[name]
            detail = f"weight_map: '{name}' removed"
        elif op == "add":
            name = rng.choice(["model.layers.9.mlp.up_proj.weight", "lm_head.bias", "x"])
            wm[name] = rng.choice(sorted(set(wm.values())))
            detail = f"weight_map: '{name}' added"
        elif op == "retarget":
            name = rng.choice(names)
            wm[name] = rng.choice(sorted(set(wm.values()) - {wm[name]}))
            detail = f"weight_map: '{name}' -> {wm[name]}"
        if op in ("drop", "add", "retarget"):
            path.write_text(json.dumps(index, indent=2))
        elif op == "value":
            name = rng.choice(names)
            raw = rng.choice(["1", "null", "[]", '"../x.safetensors"', '"a/b.safetensors"', '"missing.safetensors"',
                              '"model.safetensors"', '""', '"config.json"'])
            path.write_text(json_with_raw(index, lambda o, v: o["weight_map"].__setitem__(name, v), raw))
            detail = f"weight_map: '{name}' -> {raw}"
        elif op == "flip":
            i, o, n = flip_byte(path, rng)
            expect, detail = "any", f"index byte {i} 0x{o:02x} -> 0x{n:02x}"
        else:
            b = path.read_bytes()
            n = rng.randrange(len(b))
            path.write_bytes(b[:n])
            expect = "any" if b[n:].strip() == b"" else "fail"
            detail = f"index truncated to {n} of {len(b)} bytes"
    else:
        files = sorted(p.name for p in d.glob("*.safetensors"))
        path = d / rng.choice(files)
        n, h, _ = st_parts(path)
        part = rng.choice(["length", "header", "header", "data", "trunc"])
        if part == "length":
            i, o, v = flip_byte(path, rng, 0, 8)
            expect = "fail" if i >= 1 else "any"
            detail = f"length byte {i} 0x{o:02x} -> 0x{v:02x}"
        elif part == "header":
            i, o, v = flip_byte(path, rng, 8, 8 + n)
            detail = f"header byte {i} 0x{o:02x} -> 0x{v:02x}"
        elif part == "data":
            i, o, v = flip_byte(path, rng, 8 + n)
            detail = f"data byte {i} 0x{o:02x} -> 0x{v:02x}"
        else:
            size = path.stat().st_size
            k = rng.randrange(size)
            path.write_bytes(path.read_bytes()[:k])
            expect, detail = "fail", f"truncated to {k} of {size} bytes"
        detail = f"{path.name}: {detail}"
    spec.detail, spec.expect = f"{which}: {detail}", expect
    return spec


def hf_config_oracle(which: str, cmd: str, key: str, raw: str, original: dict) -> str:
    """'fail' where a raw JSON value for a config.json key is certainly rejected, else 'any'."""
    if raw == "NaN":
        return "fail"  # not JSON
    qwen3 = which in ("qwen3", "tied", "golden")
    if key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        return "fail"  # required, and no listed value matches the weights (golden: 300, 32, 64, 2, 2)
    if key == "num_key_value_heads":  # null: as many as the heads, which no model here has
        return "any" if raw == json.dumps(original.get(key)) else "fail"
    if key == "head_dim":  # null: hidden_size / heads, which is the head_dim of all but the Qwen3 fixtures
        return "any" if raw == "null" and which in ("llama", "mistral", "golden") else "fail"
    if (key == "sliding_window" and which != "mistral") or (key == "use_sliding_window" and not qwen3):
        return "any"  # not read for this architecture
    if key == "rope_scaling" and original.get("rope_parameters") is not None:
        return "any"  # rope_parameters (5.x style) wins
    if raw == "null":
        return "any"
    if key in ("architectures", "hidden_act", "quantization_config", "model_type", "attention_bias", "mlp_bias",
               "use_sliding_window"):
        return "fail"
    if key in ("rope_scaling", "rope_parameters"):
        return "any" if raw == "{}" else "fail"
    if key == "tie_word_embeddings":
        return "any" if raw == "true" else "fail"
    if key == "torch_dtype":
        return "any" if raw.startswith('"') else "fail"
    if key in HF_NUMBERS:
        if raw in ('"x"', "true", "[]", "{}"):
            return "fail"
        lo, hi, integer = HF_NUMBERS[key]
        v = float(raw)
        if not lo <= v <= hi or (integer and v != int(v)):
            return "fail"
        if key == "max_position_embeddings" and cmd == "eval" and v < 16:
            return "fail"  # eval --seq-len 16 past the model's positions
        if key == "sliding_window" and v < (16 if cmd == "eval" else 64):
            return "fail"  # below --seq-len 16, or below the run's max_seq_len 64
        return "any"
    return "any"


# config.json numbers: (min, max, integer); the keys read with a range check
HF_NUMBERS = {"max_position_embeddings": (1, 2**24, True), "bos_token_id": (0, 2**24, True),
              "rms_norm_eps": (1e-30, 1, False), "initializer_range": (1e-9, 10, False),
              "rope_theta": (1e-6, 1e12, False), "sliding_window": (1, 2**24, True),
              "eos_token_id": (0, 2**24, True)}


# ---- kvroute export CHECKPOINT --out DIR ----------------------------------------------------------

OUT = "exported"


def export_argv(*extra: str, ck: str = CK, out: str = OUT) -> list:
    return ["export", ck, "--out", out, *extra]


def existing_out(env: Env) -> str:
    """An earlier export in the way (a copy of the golden checkpoint's export)."""
    if not env.p(OUT).exists():
        shutil.copytree(env.ctx.hfgolden, env.p(OUT), symlinks=True)
    return OUT


def export_cases(R: Registry) -> None:
    def add(name: str, desc: str, argv: list, expect: str = "fail", prep: Optional[Callable] = None,
            protect: tuple = ("run", OUT)) -> None:
        def build(env: Env) -> Spec:
            env.run_copy()
            if prep:
                prep(env)
            return Spec(cli_argv(env, argv), protect=list(protect))
        R.add("export", name, desc, expect, build)

    # flags
    for v in ["x", "i32", "BF16", "f8", ""]:
        add(f"dtype-{v or 'empty'}", f"--dtype {v!r}", export_argv("--dtype", v))
    for v in ["abc", "0", "nan", "inf", "1e30", "", "5XB", "5 GB", "1e-9", "0.5", "-0", "99999999999999999999TB"]:
        add(f"shard-size-{v.replace(' ', '_') or 'empty'}", f"--shard-size {v!r}", export_argv("--shard-size", v))
    add("shard-size-neg", "--shard-size=-5", export_argv("--shard-size=-5"))
    add("shard-size-1", "--shard-size 1 (one tensor per file)", export_argv("--shard-size", "1"), expect="pass")
    add("dtype-no-value", "--dtype without a value", export_argv("--dtype"), expect="fail2")
    add("shard-size-no-value", "--shard-size without a value", export_argv("--shard-size"), expect="fail2")
    add("no-out", "no --out", ["export", CK], expect="fail2")
    add("no-checkpoint", "no checkpoint", ["export", "--out", OUT], expect="fail2")
    add("unknown-flag", "an unknown flag", export_argv("--bogus"), expect="fail2")
    add("extra-positional", "a second positional argument", export_argv("garbage"), expect="fail2")
    # the checkpoint
    add("ck-missing", "the checkpoint does not exist", export_argv(ck="/nonexistent/kvroute-ck"))
    add("ck-file", "the checkpoint is a file", export_argv(ck=f"{CK}/model.safetensors"))
    add("ck-empty-dir", "the checkpoint is an empty directory", export_argv(ck="{EMPTYDIR}"))
    add("ck-run-dir", "the checkpoint is the run directory", export_argv(ck="run"))
    add("ck-hf-dir", "the checkpoint is a Hugging Face model directory (no config.yaml)", export_argv(ck="model"),
        prep=lambda env: env.hf_copy("mistral"), protect=("model", OUT))

    def ck_case(name: str, desc: str, mutate: Callable, expect: str = "fail") -> None:
        """A corrupt checkpoint, exported to a new --out (which must not appear) or, every other
        case, over an earlier export with --overwrite (which must survive byte for byte)."""
        idx = R.count.get("export", 0)

        def prep(env: Env) -> None:
            mutate(env, env.p(CK))
            if idx % 2:
                existing_out(env)
        R.add("export", name, desc + (" (--overwrite over an earlier export)" if idx % 2 else ""), expect,
              lambda env: (env.run_copy(), prep(env),
                           Spec(export_argv(*(["--overwrite"] if idx % 2 else [])), protect=["run", OUT]))[2])

    w = "model.safetensors"
    ck_case("weights-trunc", "model.safetensors truncated", lambda env, d: (d / w).write_bytes((d / w).read_bytes()[:1000]))
    ck_case("weights-missing", "no model.safetensors", lambda env, d: (d / w).unlink())
    ck_case("weights-len-huge", "model.safetensors header length 2^63",
            lambda env, d: (d / w).write_bytes(struct.pack("<Q", 1 << 63) + (d / w).read_bytes()[8:]))
    ck_case("weights-nan", "a NaN weight", lambda env, d: st_fill(d / w, NAN["F32"], 1) and None)
    ck_case("weights-transposed", "a weight's shape transposed",
            lambda env, d: st_edit(d / w, lambda h: h[st_weight(h)].__setitem__(
                "shape", list(reversed(h[st_weight(h)]["shape"])))))
    ck_case("weights-missing-tensor", "a weight removed", lambda env, d: st_remove(d / w, st_weight))
    ck_case("weights-i32", "a weight stored as I32", lambda env, d: st_edit(d / w, lambda h: h[st_weight(h)].__setitem__("dtype", "I32")))
    ck_case("weights-fifo", "model.safetensors is a FIFO", lambda env, d: make_fifo(d / w))
    ck_case("config-missing", "no config.yaml", lambda env, d: (d / "config.yaml").unlink())
    ck_case("config-hidden", "config.yaml model.hidden_size 64 (weights are 32)",
            lambda env, d: (d / "config.yaml").write_text((d / "config.yaml").read_text().replace("hidden_size: 32", "hidden_size: 64", 1)))
    ck_case("config-empty", "empty config.yaml", lambda env, d: (d / "config.yaml").write_text(""))
    ck_case("config-fifo", "config.yaml is a FIFO", lambda env, d: make_fifo(d / "config.yaml"))
    ck_case("config-deep", f"config.yaml is {DEEP} nested sequences", lambda env, d: (d / "config.yaml").write_text(deep_yaml()))
    # eval.json (its keep-sets go into config.json) and the tokenizer are read once the export has begun
    ck_case("evaljson-garbage", "eval.json is not JSON", lambda env, d: (d / "eval.json").write_text("{garbage"))
    ck_case("evaljson-no-kept", "an eval.json entry without 'kept'", lambda env, d: (d / "eval.json").write_text('[{"plan": "x"}]'))
    ck_case("evaljson-object", "eval.json is an object", lambda env, d: (d / "eval.json").write_text('{"kept": [0]}'))
    ck_case("evaljson-deep", f"eval.json is {DEEP} nested arrays", lambda env, d: (d / "eval.json").write_text(deep()))
    ck_case("evaljson-fifo", "eval.json is a FIFO", lambda env, d: make_fifo(d / "eval.json"))
    ck_case("evaljson-empty-list", "eval.json is []", lambda env, d: (d / "eval.json").write_text("[]"), expect="pass")

    def broken_tokenizer(env: Env, d: Path) -> None:
        tok = env.tok_copy()
        env.write(f"{tok}/encoder.json", (env.p(tok) / "encoder.json").read_text()[:100])
        cfg = (d / "config.yaml").read_text()
        assert str(env.ctx.tok) in cfg
        (d / "config.yaml").write_text(cfg.replace(str(env.ctx.tok), str(env.p(tok)), 1))
    ck_case("tokenizer-broken", "the checkpoint's data.tokenizer has a truncated encoder.json", broken_tokenizer)
    ck_case("tokenizer-broken-2", "the checkpoint's data.tokenizer has a truncated encoder.json", broken_tokenizer)
    ck_case("tokenizer-missing", "the checkpoint's data.tokenizer does not exist (exported without one)",
            lambda env, d: (d / "config.yaml").write_text((d / "config.yaml").read_text().replace(
                str(env.ctx.tok), "/nonexistent/kvroute-tok", 1)), expect="pass")
    add("cla", "a fixed_groups (CLA) checkpoint: layer 1 has no K/V weights", export_argv(ck=CLA_CK),
        prep=lambda env: env.cla_copy(), protect=("cla", OUT))
    add("cla-overwrite", "a fixed_groups (CLA) checkpoint, --overwrite over an earlier export",
        export_argv("--overwrite", ck=CLA_CK), prep=lambda env: (env.cla_copy(), existing_out(env)), protect=("cla", OUT))
    # --out
    add("out-exists", "--out exists, no --overwrite", export_argv(), prep=existing_out)
    add("out-exists-bf16", "--out exists, no --overwrite, --dtype bf16 --shard-size 1", export_argv("--dtype", "bf16", "--shard-size", "1"),
        prep=existing_out)
    add("out-file", "--out is a regular file, no --overwrite", export_argv(out="afile"),
        prep=lambda env: env.write("afile", "keep me\n"), protect=("run", "afile"))
    add("out-parent-file", "--out under a regular file", export_argv(out="afile/out"),
        prep=lambda env: env.write("afile", "keep me\n"), protect=("run", "afile"))
    add("out-dev-null", "--out /dev/null/x", export_argv(out="/dev/null/x"))
    add("out-is-checkpoint", "--out is the checkpoint itself, no --overwrite", export_argv(out=CK))
    add("out-parent-missing", "--out whose parent does not exist (created)", export_argv(out="nodir/sub/out"),
        expect="any", protect=("run",))

    def dot_tmp(env: Env) -> None:
        env.write(".tmp/keep", "keep me\n")
    add("out-empty", "--out '' with an unrelated ./.tmp directory present", export_argv(out=""), prep=dot_tmp,
        protect=("run", ".tmp"))


SHARD_SIZES = {"1": "any", "20000": "any", "0.5MB": "any", "1KiB": "any", "5GB": "any", "2GiB": "any",
               "1e15": "any", "1TB": "any", "0x10": "any", "1e16": "fail", "0": "fail", "-1": "fail", "nan": "fail",
               "inf": "fail", "abc": "fail", "": "fail", "5 GB": "fail", "1e-3": "fail", "1PB": "fail",
               "9999999999999999999999": "fail", "1gb": "fail", "GB": "fail"}
DTYPES = {"f32": "any", "bf16": "any", "f16": "any", "F32": "fail", "fp16": "fail", "bfloat16": "fail",
          "f64": "fail", "": "fail", "bf16 ": "fail"}


def export_random(env: Env) -> Spec:
    rng = env.rng
    env.run_copy()
    kind = rng.choice(["flags", "flags", "corrupt"])
    if kind == "flags":
        size, dtype = rng.choice(sorted(SHARD_SIZES)), rng.choice(sorted(DTYPES))
        argv = export_argv("--shard-size", size, "--dtype", dtype)
        expect = "fail" if "fail" in (SHARD_SIZES[size], DTYPES[dtype]) else "any"
        overwrite = rng.random() < 0.5
        if overwrite:
            existing_out(env)
            argv.append("--overwrite")
        detail = f"--shard-size {size!r} --dtype {dtype!r}" + (" --overwrite over an earlier export" if overwrite else "")
    else:
        file = rng.choice(["model.safetensors", "model.safetensors", "config.yaml"])
        path = env.p(f"{CK}/{file}")
        if file == "model.safetensors":
            n, _, _ = st_parts(path)
            lo, hi = rng.choice([(0, 8), (8, 8 + n), (8, 8 + n), (8 + n, None)])
            i, o, v = flip_byte(path, rng, lo, hi)
            expect = "fail" if lo == 0 and i >= 1 else "any"
        else:
            i, o, v = flip_byte(path, rng)
            expect = "any"
        existing_out(env)
        argv = export_argv("--overwrite")
        detail = f"{file} byte {i} 0x{o:02x} -> 0x{v:02x}, --overwrite over an earlier export"
    return Spec(argv, protect=["run", OUT], detail=detail, expect=expect)


# ---- supervised fine-tuning: prepare --format sft, sft_*.bin, data.json "format" -----------------

SFT_MAGIC = 20261123
SFT_GOOD = ('{"prompt": "the sun", "response": " is warm"}\n'
            '{"context": "a red bird", "question": "what is red?", "answer": "a bird"}\n')


def sft_prepare_argv(inputs: list, out: str = "sftout", tok: Optional[str] = None, *extra: str) -> list:
    argv = ["prepare", "--format", "sft"]
    for i in inputs:
        argv += ["--input", i]
    return argv + ["--tokenizer", tok or "{TOK}", "--out", out, "--val-fraction", "0.2", "--threads", "1", *extra]


def sft_parse(b: bytes) -> tuple:
    """(header int32[8], [(prompt, response)], width) of a valid sft_*.bin."""
    header = list(struct.unpack("<8i", b[:32]))
    width = header[2]
    code = "H" if width == 2 else "I"
    at, examples = 32, []
    for _ in range(header[3]):
        p, r = struct.unpack_from("<2I", b, at)
        at += 8
        toks = list(struct.unpack_from(f"<{p + r}{code}", b, at))
        at += (p + r) * width
        examples.append((toks[:p], toks[p:]))
    return header, examples, width


def sft_pack(header: list, examples: list, width: int, lengths: Optional[dict] = None) -> bytes:
    """An sft_*.bin; `lengths` {example: (prompt len, response len)} overrides the length fields."""
    code = "H" if width == 2 else "I"
    out = struct.pack("<8i", *header)
    for i, (p, r) in enumerate(examples):
        lp, lr = (lengths or {}).get(i, (len(p), len(r)))
        out += struct.pack("<2I", lp % (1 << 32), lr % (1 << 32)) + struct.pack(f"<{len(p) + len(r)}{code}", *(p + r))
    return out


def sft_reader(env: Env, d: str, which: str) -> Spec:
    """A command that reads the SFT directory `d`: train (sft_train.bin and sft_val.bin) or eval --data
    (sft_val.bin)."""
    if which == "eval":
        env.run_copy()
        return Spec(["eval", "--checkpoint", CK, "--data", d, "--batches", "2", "--threads", "1"], protect=["run", d])
    env.cfg()
    return Spec(["train", "cfg.yaml", f"data.dir={d}"], protect=[d])


def sft_line_ok(obj, task: bool = False) -> bool:
    """Whether one parsed JSONL line is a valid example (data/sft.cpp parse_sft_line; with task, also
    eval/qa.cpp's "answers")."""
    if not isinstance(obj, dict):
        return False
    if task and "answers" in obj:
        a = obj["answers"]
        if not (isinstance(a, list) and 1 <= len(a) <= 64 and all(isinstance(x, str) for x in a)):
            return False
        obj = {k: v for k, v in obj.items() if k != "answers"}
        if "answer" not in obj and "response" not in obj:
            obj["answer"] = a[0]
    if "prompt" in obj or "response" in obj:
        if any(k in obj for k in ("question", "context", "answer")):
            return False
        return isinstance(obj.get("prompt"), str) and isinstance(obj.get("response"), str) and obj["response"] != ""
    return all(isinstance(obj.get(k), str) for k in ("context", "question", "answer"))


# Raw JSON values for a field of a JSONL line (parsed alike by Python and nlohmann::json).
LINE_VALUES = ['""', '"x"', "5", "-1", "null", "true", "[]", '["a"]', "{}", '{"a": "b"}', "1e308", '"\\u0000"',
               '"' + "w" * 3000 + '"']
LINE_KEYS = ["prompt", "response", "context", "question", "answer", "answers"]


def jsonl_value_mutation(rng: random.Random, text: str, task: bool) -> tuple:
    """One field of one line set to a raw value or removed; returns (text, detail, line number, ok)."""
    lines = text.splitlines()
    i = rng.randrange(len(lines))
    obj = json.loads(lines[i])
    key = rng.choice(sorted(set(obj) | set(LINE_KEYS)))
    if rng.random() < 0.25 and key in obj:
        del obj[key]
        lines[i] = json.dumps(obj)
        detail = f"line {i + 1}: '{key}' removed"
    else:
        raw = rng.choice(LINE_VALUES)
        obj[key] = "__RAW__"
        lines[i] = json.dumps(obj).replace('"__RAW__"', raw)
        obj = json.loads(lines[i])
        detail = f"line {i + 1}: {key} = {raw[:20]}"
    return "\n".join(lines) + "\n", detail, i + 1, sft_line_ok(obj, task)


def sft_cases(R: Registry) -> None:
    # -- prepare --format sft: the JSONL inputs (every other case over an earlier SFT dir, --overwrite)
    def prep(name: str, desc: str, text, expect: str = "fail", line: Optional[int] = None,
             extra: tuple = (), val: Optional[str] = None) -> None:
        idx = R.count.get("sft", 0)

        def build(env: Env) -> Spec:
            env.write("in.jsonl", text(env) if callable(text) else text)
            argv = cli_argv(env, sft_prepare_argv(["in.jsonl"], "sftout", None, *extra))
            if val is not None:
                argv = with_opt(argv, "--val-fraction", val)
            protect = []
            if idx % 2:
                env.sft_copy("sftout")
                argv.append("--overwrite")
                protect = ["sftout"]
            return Spec(argv, protect=protect, mention=[f"in.jsonl:{line}"] if line else [],
                        detail="--overwrite over an earlier SFT dir" if idx % 2 else "")
        R.add("sft", name, desc, expect, build)

    good = SFT_GOOD
    prep("bad-json", "line 3 is cut inside an object", good + '{"prompt": "a", "response": \n', line=3)
    prep("array-line", "line 3 is a JSON array", good + '["the sun", " is warm"]\n', line=3)
    prep("missing-response", "prompt without response", good + '{"prompt": "a"}\n', line=3)
    prep("prompt-number", "prompt 5", good + '{"prompt": 5, "response": "b"}\n', line=3)
    prep("response-list", "response [\"b\"]", '{"prompt": "a", "response": ["b"]}\n', line=1)
    prep("mixed-answer", "prompt/response mixed with answer", good + '{"prompt": "a", "response": "b", "answer": "c"}\n',
         line=3)
    prep("qa-missing-context", "question/answer without context", good + '{"question": "q", "answer": "a"}\n', line=3)
    prep("no-known-keys", "{\"text\": ...} (neither layout)", good + '{"text": "hello"}\n', line=3)
    prep("empty-response", "response \"\"", good + '{"prompt": "a", "response": ""}\n', line=3)
    prep("qa-empty-answer", "answer \"\" (the response is then one space)",
         good + '{"context": "c", "question": "q", "answer": ""}\n', expect="any")
    prep("blank-only", "only blank lines", "\n  \n\t\n\r\n")
    prep("deep-line", f"line 2 is {DEEP} nested arrays", lambda env: good.split("\n")[0] + "\n" + deep() + "\n", line=2)
    prep("nul-byte", "a raw NUL byte inside a string", good + '{"prompt": "a\0b", "response": "c"}\n', line=3)
    prep("late-bad-line", "line 61 of 61 is not JSON", good * 30 + "{oops}\n", line=61)
    prep("all-val-one", "one example, --val-fraction 0.5: nothing left to train on", good.split("\n")[0] + "\n", val="0.5")
    prep("format-bogus", "--format bogus", good, expect="fail2", extra=("--format", "bogus"))

    def second_bad(env: Env) -> Spec:
        env.write("a.jsonl", SFT_GOOD)
        env.write("b.jsonl", SFT_GOOD + '{"prompt": "x", "response": 1}\n')
        return Spec(cli_argv(env, sft_prepare_argv(["a.jsonl", "b.jsonl"])), mention=["b.jsonl:3"])
    R.add("sft", "second-input-bad", "two --input files, line 3 of the second bad", "fail", second_bad)

    def input_case(name: str, desc: str, make: Callable) -> None:
        def build(env: Env) -> Spec:
            path = make(env)
            return Spec(cli_argv(env, sft_prepare_argv([path])), mention=[path])
        R.add("sft", name, desc, "fail", build)
    input_case("input-fifo", "--input is a FIFO with no writer", lambda env: (make_fifo(env.p("in.fifo")), "in.fifo")[1])
    input_case("input-dir", "--input is a directory", lambda env: (make_dir(env.p("indir")), "indir")[1])
    R.add("sft", "out-existing", "--out holds token shards (data.json), no --overwrite", "fail",
          lambda env: (env.data_copy(), Spec(cli_argv(env, sft_prepare_argv(["{SFTJSONL}"], "data")),
                                             protect=["data"]))[1])

    # -- sft_*.bin, read by train (train and val) or eval --data (val)
    def bin_case(name: str, desc: str, mutate: Callable, target: str = "train", expect: str = "fail") -> None:
        idx = R.count.get("sft", 0)

        def build(env: Env) -> Spec:
            d = env.sft_copy()
            path = env.p(f"{d}/sft_{target}.bin")
            mutate(env, path)
            spec = sft_reader(env, d, "eval" if target == "val" and idx % 2 else "train")
            spec.mention = [f"sft_{target}.bin"] if expect == "fail" else []
            return spec
        R.add("sft", name, desc + ("" if target == "train" else " (sft_val.bin)"), expect, build)

    def edit(fn: Callable) -> Callable:
        def m(env: Env, path: Path) -> None:
            h, ex, w = sft_parse(path.read_bytes())
            out = fn(h, ex, w)
            path.write_bytes(out if isinstance(out, bytes) else sft_pack(h, ex, w))
        return m

    def header(i: int, v: int) -> Callable:
        return edit(lambda h, ex, w: (h.__setitem__(i, v), sft_pack(h, ex, w))[1])

    def raw(fn: Callable) -> Callable:
        return lambda env, p: p.write_bytes(fn(p.read_bytes()))

    def token(value: int, part: int = 1) -> Callable:
        def fn(h, ex, w):
            ex[1][part][0] = value
            return sft_pack(h, ex, w)
        return edit(fn)

    def widen(value: Optional[int]) -> Callable:
        def fn(h, ex, w):
            h[2] = 4
            if value is not None:
                ex[0][1][0] = value
            return sft_pack(h, ex, 4)
        return edit(fn)

    def drop_part(part: int) -> Callable:  # example 0's prompt or response removed, its length 0
        def fn(h, ex, w):
            p, r = ex[0]
            ex[0] = ([], r) if part == 0 else (p, [])
            return sft_pack(h, ex, w)
        return edit(fn)

    def length(lp: Optional[int], lr: Optional[int]) -> Callable:
        def fn(h, ex, w):
            p, r = ex[0]
            return sft_pack(h, ex, w, {0: (len(p) if lp is None else lp, len(r) if lr is None else lr)})
        return edit(fn)

    bin_case("magic", "magic 20261123 -> 20240520 (a token shard's)", header(0, 20240520))
    bin_case("version", "version 1 -> 2", header(1, 2))
    bin_case("width-3", "token width 3", header(2, 3))
    bin_case("width-4-data-2", "token width 4 over 2-byte tokens", header(2, 4))
    bin_case("count-plus", "example count + 1", edit(lambda h, ex, w: (h.__setitem__(3, h[3] + 1), sft_pack(h, ex, w))[1]))
    bin_case("count-minus", "example count - 1 (trailing bytes)",
             edit(lambda h, ex, w: (h.__setitem__(3, h[3] - 1), sft_pack(h, ex, w))[1]), target="val")
    bin_case("count-neg", "example count -1", header(3, -1))
    bin_case("count-max", "example count INT32_MAX", header(3, 2**31 - 1), target="val")
    bin_case("trunc-header", "only 16 bytes (half a header)", raw(lambda b: b[:16]))
    bin_case("trunc-1", "one byte short", raw(lambda b: b[:-1]), target="val")
    bin_case("trailing", "one trailing byte", raw(lambda b: b + b"\0"), target="val")
    bin_case("zero-prompt", "example 0 with an empty prompt (length 0)", drop_part(0))
    bin_case("zero-response", "example 0 with an empty response (length 0)", drop_part(1), target="val")
    bin_case("len-max", "example 0's prompt length 2^32-1", length(2**32 - 1, None))
    bin_case("len-2e24", "example 0's response length 2^24+1", length(None, 2**24 + 1), target="val")
    bin_case("token-vocab", "a response token = the vocab size (300)", token(300))
    bin_case("u32-negative", "4-byte tokens, one 0x80000000 (negative as int32)", widen(0x80000000))
    bin_case("fifo", "sft_val.bin is a FIFO", lambda env, p: make_fifo(p), target="val")
    bin_case("val-no-examples", "sft_val.bin with 0 examples", edit(lambda h, ex, w: sft_pack(h[:3] + [0] + h[4:], [], w)),
             target="val")

    # -- data.json "format"
    def fmt_case(name: str, desc: str, raw_value: str, base: str = "sft", reader: str = "train",
                 mention: str = "data.json") -> None:
        def build(env: Env) -> Spec:
            d = env.sft_copy() if base == "sft" else env.data_copy()
            path = env.p(f"{d}/data.json")
            path.write_text(json_with_raw(json.loads(path.read_text()), lambda o, v: o.__setitem__("format", v),
                                          raw_value))
            spec = sft_reader(env, d, reader)
            spec.mention = [mention]
            return spec
        R.add("sft", name, desc, "fail", build)
    fmt_case("format-bogus", "data.json format \"bogus\"", '"bogus"')
    fmt_case("format-number", "data.json format 5", "5", reader="eval")
    fmt_case("format-tokens", "an SFT directory whose data.json says \"tokens\" (no token shards)", '"tokens"',
             reader="eval", mention="sft")
    fmt_case("format-sft-shards", "a token-shard directory whose data.json says \"sft\" (no sft_*.bin)", '"sft"',
             base="data", mention="sft_train.bin")


def sft_random(env: Env) -> Spec:
    rng = env.rng
    kind = rng.choice(["jsonl", "jsonl", "bin", "bin", "bin", "format"])
    if kind == "jsonl":
        text = env.ctx.sftjsonl.read_text()
        op = rng.choice(["value", "value", "flip", "trunc"])
        expect, line = "any", None
        if op == "value":
            text, detail, line, ok = jsonl_value_mutation(rng, text, task=False)
            env.write("in.jsonl", text)
            expect = "any" if ok else "fail"
        elif op == "flip":
            env.write("in.jsonl", text)
            i, o, n = flip_byte(env.p("in.jsonl"), rng)
            detail = f"byte {i} 0x{o:02x} -> 0x{n:02x}"
        else:
            n = rng.randrange(len(text))
            env.write("in.jsonl", text[:n])
            partial = text[:n].rsplit("\n", 1)[-1]
            expect = "fail" if partial.strip() and text[n] != "\n" else "any"
            line = text[:n].count("\n") + 1 if expect == "fail" else None
            detail = f"truncated to {n} of {len(text)} bytes"
        argv = cli_argv(env, sft_prepare_argv(["in.jsonl"]))
        protect = []
        if rng.random() < 0.5:
            env.sft_copy("sftout")
            argv.append("--overwrite")
            protect = ["sftout"]
            detail += ", --overwrite over an earlier SFT dir"
        return Spec(argv, protect=protect, detail=f"prepare: {detail}", expect=expect,
                    mention=[f"in.jsonl:{line}"] if line and expect == "fail" else [])
    d = env.sft_copy()
    if kind == "format":
        path = env.p(f"{d}/data.json")
        raw = rng.choice(['"sft"', '"tokens"', '"SFT"', '""', "null", "5", "[]", "{}", "true"])
        path.write_text(json_with_raw(json.loads(path.read_text()), lambda o, v: o.__setitem__("format", v), raw))
        spec = sft_reader(env, d, rng.choice(["train", "eval"]))
        spec.detail, spec.expect = f"data.json format {raw}", "any" if raw == '"sft"' else "fail"
        return spec
    target = rng.choice(["train", "val"])
    path = env.p(f"{d}/sft_{target}.bin")
    size = path.stat().st_size
    part = rng.choice(["header", "reserved", "body", "body", "trunc", "append"])
    expect = "any"
    if part == "header":  # magic, version, width, count: none can change and stay consistent
        i, o, n = flip_byte(path, rng, 0, 16)
        expect, detail = "fail", f"header byte {i} 0x{o:02x} -> 0x{n:02x}"
    elif part == "reserved":
        i, o, n = flip_byte(path, rng, 16, 32)
        detail = f"reserved header byte {i} 0x{o:02x} -> 0x{n:02x}"
    elif part == "body":
        i, o, n = flip_byte(path, rng, 32)
        detail = f"byte {i} 0x{o:02x} -> 0x{n:02x}"
    elif part == "trunc":
        n = rng.randrange(size)
        path.write_bytes(path.read_bytes()[:n])
        expect, detail = "fail", f"truncated to {n} of {size} bytes"
    else:
        k = rng.randrange(1, 16)
        with open(path, "ab") as f:
            f.write(bytes(rng.randrange(256) for _ in range(k)))
        expect, detail = "fail", f"{k} garbage bytes appended"
    which = "eval" if target == "val" and rng.random() < 0.5 else "train"
    spec = sft_reader(env, d, which)
    spec.detail, spec.expect = f"sft_{target}.bin {detail} ({which})", expect
    return spec


# ---- eval --task TASK.jsonl (QA scored by EM, F1, ROUGE-L) -------------------------------------------

TASK_ARGV = ["eval", "--checkpoint", CK, "--task", "task.jsonl", "--retention", "1", "--batches", "1",
             "--max-new-tokens", "4", "--threads", "1"]


def task_cases(R: Registry) -> None:
    def add(name: str, desc: str, text=None, expect: str = "fail", line: Optional[int] = None,
            opts: tuple = (), prep: Optional[Callable] = None) -> None:
        def build(env: Env) -> Spec:
            env.run_copy()
            if text is not None:
                env.write("task.jsonl", text(env) if callable(text) else text)
            else:
                shutil.copy2(env.ctx.task, env.p("task.jsonl"))
            argv = list(TASK_ARGV)
            for flag, value in zip(opts[::2], opts[1::2]):
                argv = with_opt(argv, flag, value)
            if prep:
                prep(env)
            return Spec(cli_argv(env, argv), protect=["run"], mention=[f"task.jsonl:{line}"] if line else [])
        R.add("task", name, desc, expect, build)

    qa = '{"context": "the sun is red", "question": "what is red?", "answer": "the sun"}\n'
    add("bad-json", "line 2 cut inside an object", qa + '{"prompt": "a", \n', line=2)
    add("missing-answer", "context/question without an answer", qa + '{"context": "c", "question": "q"}\n', line=2)
    add("mixed", "prompt/response mixed with a question", qa + '{"prompt": "p", "response": "r", "question": "q"}\n', line=2)
    add("empty-response", "response \"\"", '{"prompt": "p", "response": ""}\n', line=1)
    add("answers-string", "answers is a string", qa + '{"context": "c", "question": "q", "answers": "a"}\n', line=2)
    add("answers-empty", "answers []", '{"context": "c", "question": "q", "answers": []}\n' + qa, line=1)
    add("answers-numbers", "answers [1, 2]", qa + '{"context": "c", "question": "q", "answers": [1, 2]}\n', line=2)
    add("answers-65", "65 answers (at most 64)", qa + json.dumps({"context": "c", "question": "q",
                                                                  "answers": ["a"] * 65}) + "\n", line=2)
    add("answers-with-prompt", "prompt with answers and no response (answer added: mixed layouts)",
        '{"prompt": "p", "answers": ["a"]}\n', line=1)
    add("blank-only", "only blank lines", "\n \n\t\n")
    add("late-bad-line", "line 41 of 41 not JSON", qa * 40 + "nope\n", line=41)
    add("fifo", "--task is a FIFO", opts=("--task", "{FIFO}"))
    for v, e in [("0", "fail2"), ("4097", "fail2"), ("nan", "fail2"), ("127", "fail")]:
        add(f"max-new-{v}", f"--max-new-tokens {v}" + (" (no room for a prompt in max_seq_len 128)" if e == "fail" else ""),
            expect=e, opts=("--max-new-tokens", v))
    add("task-seed-abc", "--task-seed abc", expect="fail2", opts=("--task-seed", "abc"))

    def big_vocab(env: Env) -> None:
        tok = env.hftok_copy()
        path = env.p(f"{tok}/tokenizer.json")
        tj = json.loads(path.read_text())
        tj["added_tokens"].append({"id": 100000, "content": "<|big|>", "special": True, "normalized": False})
        path.write_text(json.dumps(tj, ensure_ascii=False))
    add("tokenizer-bigger-vocab", "--tokenizer with an added token id 100000 (the model has 300) used by the prompt",
        '{"prompt": "the <|big|> sun", "response": " x"}\n', opts=("--tokenizer", "tok"), prep=big_vocab)


def task_random(env: Env) -> Spec:
    rng = env.rng
    env.run_copy()
    text = env.ctx.task.read_text()
    argv = list(TASK_ARGV)
    kind = rng.choice(["value", "value", "flip", "flag"])
    expect, line = "any", None
    if kind == "value":
        text, detail, line, ok = jsonl_value_mutation(rng, text, task=True)
        expect = "any" if ok else "fail"
    elif kind == "flip":
        b = bytearray(text.encode())
        i = rng.randrange(len(b))
        o, b[i] = b[i], rng.choice([x for x in range(256) if x != b[i]])
        text = bytes(b)
        detail = f"byte {i} 0x{o:02x} -> 0x{b[i]:02x}"
    else:
        flag, values = rng.choice([("--max-new-tokens", {"1": "any", "64": "any", "126": "any", "127": "fail",
                                                          "4096": "fail", "4097": "fail2", "0": "fail2", "-5": "fail2",
                                                          I64_MAX: "fail2", "inf": "fail2", "2.5": "fail"}),
                                   ("--task-seed", {"0": "any", I64_MAX: "any", "18446744073709551615": "any",
                                                    "x1": "fail2", "": "fail"})])
        value = rng.choice(sorted(values))
        argv = with_opt(argv, flag, None) + [f"{flag}={value}"]
        expect, detail = values[value], f"{flag}={value}"
    env.write("task.jsonl", text)
    return Spec(argv, protect=["run"], detail=detail, expect=expect,
                mention=[f"task.jsonl:{line}"] if line and expect == "fail" else [])


# ---- Hugging Face tokenizer.json (+ tokenizer_config.json) -------------------------------------------

TJ_CMDS = ["encode", "generate", "prepare", "task"]


def tj_command(env: Env, which: str) -> Spec:
    tok = env.hftok_copy()
    if which == "encode":
        return Spec(["tokenizer", "encode", "--tokenizer", tok, "--text", "hello world, the sun <|endoftext|>"])
    if which == "prepare":
        env.write("in.jsonl", SFT_GOOD)
        return Spec(["prepare", "--format", "sft", "--input", "in.jsonl", "--tokenizer", tok, "--out", "prepared",
                     "--val-fraction", "0.5", "--threads", "1"])
    env.run_copy()
    if which == "generate":
        return Spec(["generate", "--checkpoint", CK, "--tokenizer", tok, "--prompt", "the sun", "--max-new-tokens", "4"],
                    protect=["run"])
    return Spec(["eval", "--checkpoint", CK, "--task", str(env.ctx.task), "--tokenizer", tok, "--retention", "1",
                 "--batches", "1", "--max-new-tokens", "4", "--threads", "1"], protect=["run"])


def tj_get(tj, path: str):
    for k in path.split("."):
        tj = tj[int(k)] if isinstance(tj, list) else tj[k]
    return tj


def tj_set(tj, path: str, value) -> None:
    *head, last = path.split(".")
    parent = tj_get(tj, ".".join(head)) if head else tj
    if isinstance(parent, list):
        parent[int(last)] = value
    else:
        parent[last] = value


def tj_del(tj, path: str) -> None:
    *head, last = path.split(".")
    parent = tj_get(tj, ".".join(head)) if head else tj
    del parent[int(last) if isinstance(parent, list) else last]


def tokenizerjson_cases(R: Registry) -> None:
    def add(name: str, desc: str, mutate: Callable, expect: str = "fail", mention: tuple = ("tokenizer.json",),
            file: str = "tokenizer.json") -> None:
        idx = R.count.get("tokenizerjson", 0)

        def build(env: Env) -> Spec:
            spec = tj_command(env, TJ_CMDS[idx % len(TJ_CMDS)])
            path = env.p(f"tok/{file}")
            out = mutate(env, path)
            if out is not None:
                env.write(f"tok/{file}", out)
            spec.mention = list(mention) if expect == "fail" else []
            return spec
        R.add("tokenizerjson", name, desc, expect, build)

    def edit(fn: Callable) -> Callable:
        def m(env: Env, path: Path) -> str:
            tj = json.loads(path.read_text())
            fn(tj)
            return json.dumps(tj, ensure_ascii=False)
        return m

    def setv(path: str, value, expect: str = "fail", name: Optional[str] = None, key: Optional[str] = None) -> None:
        tag = name or f"{path.replace('.', '-')}-{str(value)[:12]}"
        add(tag, f"{path}: {json.dumps(value)[:50]}", edit(lambda tj: tj_set(tj, path, value)), expect,
            mention=("tokenizer.json", key or path.split(".")[0]))

    def raw(path: str, text: str, name: str, key: Optional[str] = None, expect: str = "fail") -> None:
        add(name, f"{path}: {text[:40]}" + (f"... ({len(text)} chars)" if len(text) > 40 else ""),
            lambda env, p: json_with_raw(json.loads(p.read_text()), lambda o, v: tj_set(o, path, v), text), expect,
            mention=("tokenizer.json",) + ((key,) if key else ()))

    def drop(path: str, expect: str = "fail", key: Optional[str] = None) -> None:
        add(f"no-{path.replace('.', '-')}", f"no {path}", edit(lambda tj: tj_del(tj, path)), expect,
            mention=("tokenizer.json", key or path))

    # the file itself
    add("not-json", "tokenizer.json is not JSON", lambda env, p: "{model: BPE}")
    add("truncated", "cut in half", lambda env, p: p.read_text()[: len(p.read_text()) // 2])
    add("deep", f"{DEEP} nested arrays", lambda env, p: deep())

    def bad_utf8(env: Env, p: Path) -> bytes:
        b = p.read_bytes()
        assert b'"!": 0,' in b
        return b.replace(b'"!": 0,', b'"!\xff": 0,', 1)
    add("bad-utf8", "invalid UTF-8 in a vocab key", bad_utf8)
    add("fifo", "tokenizer.json is a FIFO", lambda env, p: make_fifo(p))
    add("dup-key", "a second \"model\" key (a WordPiece model) at the end",
        lambda env, p: p.read_text().rstrip()[:-1] + ', "model": {"type": "WordPiece", "vocab": {}}}',
        mention=("tokenizer.json", "model"))
    add("broken-beside-gpt2", "a truncated tokenizer.json next to valid encoder.json + vocab.bpe (no fallback)",
        lambda env, p: (shutil.copy2(env.ctx.tok / "encoder.json", p.parent / "encoder.json"),
                        shutil.copy2(env.ctx.tok / "vocab.bpe", p.parent / "vocab.bpe"), p.read_text()[:100])[2])
    # model
    drop("model")
    setv("model.type", "WordPiece", key="model.type")
    raw("model.type", json.dumps("B" * (4 << 20)), "model-type-4mib", key="model.type")
    setv("model.dropout", 0.1, key="model.dropout")
    setv("model.continuing_subword_prefix", "##", key="model.continuing_subword_prefix")
    setv("model.ignore_merges", "yes", key="model.ignore_merges")
    setv("model.vocab", {}, key="model.vocab", name="vocab-empty")
    first, second = "!", '"'  # the byte tokens with ids 0 and 1
    setv(f"model.vocab.{first}", "0", key="model.vocab", name="vocab-id-string")
    setv(f"model.vocab.{first}", 2**24, key="model.vocab", name="vocab-id-2e24")
    setv(f"model.vocab.{first}", 2**64, key="model.vocab", name="vocab-id-2e64")
    setv(f"model.vocab.{second}", 0, key="model.vocab", name="vocab-id-dup")
    add("vocab-no-byte", "the token for byte 'a' removed from model.vocab", edit(lambda tj: tj["model"]["vocab"].pop("a")),
        mention=("tokenizer.json", "model.vocab"))
    add("vocab-not-byte-level", "a token spelled outside the byte-level alphabet",
        edit(lambda tj: tj["model"]["vocab"].__setitem__("\u4e00", 300)), mention=("tokenizer.json", "model.vocab"))
    drop("model.merges")

    def merge(value, name: str, desc: str) -> None:
        add(name, desc, edit(lambda tj: tj["model"]["merges"].append(value)),
            mention=("tokenizer.json", "model.merges["))
    merge("th", "merge-no-space", "a merge \"th\" without a space")
    merge("\u0120zq xq", "merge-unknown", "a merge of tokens missing from model.vocab")
    merge("q x", "merge-result-unknown", "a merge whose result \"qx\" is not a token")
    merge([1, 2], "merge-pair-numbers", "a merge [1, 2]")
    add("merges-as-pairs", "every merge as a [LEFT, RIGHT] pair", edit(lambda tj: tj["model"].__setitem__(
        "merges", [m.split(" ") for m in tj["model"]["merges"]])), expect="any")
    # added_tokens
    drop("added_tokens.0.id", key="added_tokens[0].id")
    setv("added_tokens.0.id", 2**24, key="added_tokens[0].id", name="added-id-2e24")
    setv("added_tokens.0.id", 5, key="added_tokens[0].id", name="added-id-taken")
    setv("added_tokens.0.content", "", key="added_tokens[0].content", name="added-content-empty")
    setv("added_tokens.0.lstrip", True, key="added_tokens[0].lstrip", name="added-lstrip")
    add("added-dup-content", "two added tokens with the same content",
        edit(lambda tj: tj["added_tokens"].append({"id": 300, "content": "<|endoftext|>", "special": True})),
        mention=("tokenizer.json", "added_tokens[1].content"))
    add("added-id-max", "an added token with id 2^24-1 (the largest allowed; a sparse 16M-id table)",
        edit(lambda tj: tj["added_tokens"].append({"id": 2**24 - 1, "content": "<|last|>", "special": True})),
        expect="any")
    # normalizer, pre_tokenizer, decoder
    setv("normalizer", {"type": "Lowercase"}, key="normalizer.type", name="normalizer-lowercase")
    setv("normalizer", {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Strip"}]},
         key="normalizer.normalizers[1].type", name="normalizer-seq-strip")
    setv("normalizer", {"type": "NFC"}, expect="any", name="normalizer-nfc")
    drop("pre_tokenizer")
    setv("pre_tokenizer.type", "Whitespace", key="pre_tokenizer.type", name="pre-whitespace")
    setv("pre_tokenizer.add_prefix_space", True, key="pre_tokenizer.add_prefix_space", name="pre-prefix-space")
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}

    def split(pattern, behavior: str = "Isolated", invert: bool = False) -> dict:
        return {"type": "Split", "pattern": pattern, "behavior": behavior, "invert": invert}

    def seq(steps: list) -> dict:
        return {"type": "Sequence", "pretokenizers": steps}
    sp = "pre_tokenizer.pretokenizers"
    setv("pre_tokenizer", seq([byte_level, split({"Regex": "\\s+"})]), key=f"{sp}[0].type", name="pre-seq-bytelevel-first")
    setv("pre_tokenizer", split({"Regex": "\\s+"}), key="pre_tokenizer.type", name="pre-split-alone")
    setv("pre_tokenizer", seq([split({"Regex": "("}), byte_level]), key=f"{sp}[0].pattern.Regex", name="pre-regex-paren")
    setv("pre_tokenizer", seq([split({"Regex": "(?<=a+)b"}), byte_level]), key=f"{sp}[0].pattern.Regex",
         name="pre-regex-lookbehind")
    setv("pre_tokenizer", seq([split({"Regex": "\\s+"}, invert=True), byte_level]), key=f"{sp}[0].invert",
         name="pre-split-invert")
    setv("pre_tokenizer", seq([split({"Regex": "(a|aa)+$"}), split({"String": ", "}), byte_level]), expect="any",
         name="pre-seq-valid")
    raw("pre_tokenizer", json.dumps(seq([split({"Regex": "(?:ab)" * 50000}), byte_level])), "pre-regex-huge",
        expect="any")
    setv("decoder", {"type": "WordPiece"}, key="decoder.type", name="decoder-wordpiece")

    # tokenizer_config.json
    def cfg(name: str, desc: str, text, expect: str = "fail", key: tuple = ("eos_token",)) -> None:
        add(name, desc, (lambda env, p: text) if not callable(text) else text, expect,
            mention=("tokenizer_config.json",) + key, file="tokenizer_config.json")
    cfg("cfg-eos-number", "eos_token 5", '{"eos_token": 5}')
    cfg("cfg-eos-unknown", "eos_token \"<|nope|>\" (not a token)", '{"eos_token": "<|nope|>"}')
    cfg("cfg-eos-object", "eos_token {\"content\": \"<|endoftext|>\"}", '{"eos_token": {"content": "<|endoftext|>"}}',
        expect="any")
    cfg("cfg-no-eos", "no eos_token", '{"model_max_length": 128}', expect="any")
    cfg("cfg-not-json", "tokenizer_config.json is not JSON", "{eos_token: x}", key=())
    cfg("cfg-fifo", "tokenizer_config.json is a FIFO", lambda env, p: make_fifo(p), key=())


# tokenizer.json paths and raw JSON values for the random cases; tj_oracle says which are certainly refused.
TJ_PATHS = ["model", "model.type", "model.vocab", "model.merges", "model.dropout", "model.byte_fallback",
            "model.ignore_merges", "model.continuing_subword_prefix", "model.end_of_word_suffix", "model.unk_token",
            "normalizer", "pre_tokenizer", "pre_tokenizer.type", "pre_tokenizer.add_prefix_space",
            "pre_tokenizer.use_regex", "decoder", "decoder.type", "added_tokens", "added_tokens.0",
            "added_tokens.0.id", "added_tokens.0.content", "added_tokens.0.special", "added_tokens.0.normalized",
            "added_tokens.0.lstrip", "truncation", "post_processor", "version"]
TJ_VALUES = ["null", "0", "-1", "1.5", "16777216", "true", "false", '""', '"x"', '"BPE"', "[]", "{}", "NaN",
             '"' + "\\u00ff" * 2000 + '"']
TJ_REQUIRED = {"model", "model.type", "model.vocab", "model.merges", "pre_tokenizer", "pre_tokenizer.type",
               "added_tokens.0.id", "added_tokens.0.content"}


def tj_oracle(path: str, raw: Optional[str]) -> str:
    """'fail' where setting `path` to the raw JSON value (None: removing it) certainly makes the
    tokenizer.json invalid, else 'any'."""
    if raw is None:
        return "fail" if path in TJ_REQUIRED else "any"
    if raw == "NaN":
        return "fail"  # not JSON
    ok = {"model.merges": {"[]"}, "model.dropout": {"null"}, "model.byte_fallback": {"null", "false"},
          "model.ignore_merges": {"null", "true", "false"}, "model.continuing_subword_prefix": {"null", '""'},
          "model.end_of_word_suffix": {"null", '""'}, "normalizer": {"null"}, "decoder": {"null"},
          "pre_tokenizer.add_prefix_space": {"null", "false"}, "pre_tokenizer.use_regex": {"null", "true", "false"},
          "added_tokens": {"null", "[]"}, "added_tokens.0.special": {"null", "true", "false"},
          "added_tokens.0.normalized": {"null", "true", "false"}, "added_tokens.0.lstrip": {"null", "false"},
          "model.type": {'"BPE"'}}
    if path in ok:
        return "any" if raw in ok[path] else "fail"
    if path in TJ_REQUIRED or path in ("pre_tokenizer.type", "decoder.type", "added_tokens.0"):
        return "fail"  # no listed value is a valid model, vocab, type, token, id or content here
    return "any"  # not read (unk_token, truncation, post_processor, version)


def tokenizerjson_random(env: Env) -> Spec:
    rng = env.rng
    spec = tj_command(env, rng.choice(TJ_CMDS))
    which = "tokenizer_config.json" if rng.random() < 0.15 else "tokenizer.json"
    path = env.p(f"tok/{which}")
    kind = rng.choice(["flip", "trunc", "value", "value", "value", "drop"])
    expect = "any"
    if which == "tokenizer_config.json":
        eos = {'"<|endoftext|>"': "any", "null": "any", '"x"': "any", '"<|nope|>"': "fail", "5": "fail", "[]": "fail",
               "{}": "fail", '{"content": "<|endoftext|>"}': "any", '{"content": 5}': "fail", "true": "fail",
               "NaN": "fail"}
        raw = rng.choice(sorted(eos))
        path.write_text(json_with_raw(json.loads(path.read_text()), lambda o, v: o.__setitem__("eos_token", v), raw))
        spec.detail, spec.expect = f"tokenizer_config.json eos_token {raw}", eos[raw]
        return spec
    if kind == "flip":
        i, o, n = flip_byte(path, rng)
        detail = f"byte {i} 0x{o:02x} -> 0x{n:02x}"
    elif kind == "trunc":
        b = path.read_bytes()
        n = rng.randrange(len(b))
        path.write_bytes(b[:n])
        expect = "any" if b[n:].strip() == b"" else "fail"
        detail = f"truncated to {n} of {len(b)} bytes"
    else:
        tj = json.loads(path.read_text())
        key = rng.choice(TJ_PATHS)
        if kind == "drop":
            tj_del(tj, key)
            path.write_text(json.dumps(tj, ensure_ascii=False))
            expect, detail = tj_oracle(key, None), f"{key} removed"
        else:
            raw = rng.choice(TJ_VALUES)
            path.write_text(json_with_raw(tj, lambda o, v: tj_set(o, key, v), raw))
            expect, detail = tj_oracle(key, raw), f"{key} = {raw[:20]}"
    spec.detail, spec.expect = f"tokenizer.json {detail}", expect
    return spec


# ---- command-line flags -------------------------------------------------------------------------

TEMPLATES = {
    "train": ["train", "cfg.yaml"],
    "eval": ["eval", "--checkpoint", "{CK}", "--batches", "1", "--threads", "1"],
    "generate": ["generate", "--checkpoint", "{CK}", "--prompt", "the sun", "--max-new-tokens", "4"],
    "tok-train": ["tokenizer", "train", "--input", "{CORPUS}", "--vocab", "280", "--out", "tokout", "--threads", "1"],
    "encode": ["tokenizer", "encode", "--tokenizer", "{TOK}", "--text", "hello"],
    "decode": ["tokenizer", "decode", "--tokenizer", "{TOK}", "--ids", "104 101"],
    "prepare": ["prepare", "--input", "{CORPUS}", "--tokenizer", "{TOK}", "--out", "dataout", "--threads", "1"],
    "sweep": ["sweep", "study.yaml", "--threads", "1"],
    "bench-train": ["bench", "train", "cfg.yaml", "--steps", "1", "--no-peer"],
    "bench-gen": ["bench", "generate", "--checkpoint", "{CK}", "--prompt-lengths", "4", "--batch-sizes", "1",
                  "--new-tokens", "2", "--repeats", "1", "--threads", "1"],
}
# Numeric options per template, for the random cases.
NUMERIC = {
    "train": ["--threads"], "eval": ["--batches", "--batch", "--seq-len", "--threads", "--retention", "--groups"],
    "generate": ["--max-new-tokens", "--temperature", "--top-k", "--top-p", "--retention", "--groups", "--seed",
                 "--threads"],
    "tok-train": ["--vocab", "--threads"], "encode": [], "decode": [], "prepare": ["--val-fraction", "--shard-tokens", "--seed", "--threads"],
    "sweep": ["--threads"], "bench-train": ["--steps", "--threads"],
    "bench-gen": ["--prompt-lengths", "--batch-sizes", "--new-tokens", "--repeats", "--retention", "--threads"],
}


def with_opt(argv: list, flag: str, value: Optional[str]) -> list:
    """argv with `flag` set to `value` (replacing an existing value; None drops the flag)."""
    out = list(argv)
    if flag in out:
        i = out.index(flag)
        if value is None:
            del out[i:i + 2]
        else:
            out[i + 1] = value
    elif value is not None:
        out += [flag, value]
    return out


def cli_cases(R: Registry) -> None:
    def add(name: str, argv: list, expect: str, desc: Optional[str] = None, protect: tuple = (),
            prep: Optional[Callable] = None) -> None:
        R.add("cli", name, desc or shlex.join(argv)[:80], expect, simple(argv, list(protect), prep))

    def opt(t: str, flag: str, value: str, expect: str, name: Optional[str] = None) -> None:
        argv = (with_opt(TEMPLATES[t], flag, value) if not flag.endswith("=")
                else with_opt(TEMPLATES[t], flag[:-1], None) + [f"{flag}{value}"])
        protect = ("run",) if "{CK}" in " ".join(argv) else ()
        tag = name or f"{t}-{flag.strip('-=')}-{value[:10]}".replace("/", "_").replace(" ", "_")
        add(tag, argv, expect, protect=protect)

    # subcommands and structure
    add("none", [], "fail2", "no subcommand")
    add("unknown-sub", ["bogus"], "fail2")
    add("unknown-global-flag", ["--bogus"], "fail2")
    add("train-no-config", ["train"], "fail2")
    add("bench-no-sub", ["bench"], "fail2")
    add("bench-unknown-sub", ["bench", "bogus"], "fail2")
    add("tokenizer-no-sub", ["tokenizer"], "fail2")
    add("eval-no-checkpoint", ["eval"], "fail2")
    add("generate-no-prompt", ["generate", "--checkpoint", "{CK}"], "fail2")
    add("encode-no-text", ["tokenizer", "encode", "--tokenizer", "{TOK}"], "fail2")
    add("tok-train-no-out", ["tokenizer", "train", "--input", "{CORPUS}", "--vocab", "280"], "fail2")
    add("sweep-no-study", ["sweep"], "fail2")
    for t in TEMPLATES:
        add(f"{t}-unknown-flag", TEMPLATES[t] + ["--bogus-flag"], "fail2",
            protect=("run",) if "{CK}" in TEMPLATES[t] else ())
    add("train-resume-no-value", ["train", "cfg.yaml", "--resume"], "fail2")
    add("eval-keep-no-value", TEMPLATES["eval"] + ["--keep"], "fail2", protect=("run",))
    add("generate-max-no-value", ["generate", "--checkpoint", "{CK}", "--prompt", "x", "--max-new-tokens"], "fail2")
    # train
    opt("train", "--threads", "abc", "fail2")
    opt("train", "--threads=", "-1", "fail")
    opt("train", "--threads", "1000000", "fail")
    opt("train", "--threads", "99999999999999999999", "fail")
    add("train-missing-config", ["train", "missing.yaml"], "fail")
    add("train-garbage-positional", ["train", "cfg.yaml", "garbage"], "fail")
    # eval
    for v, e in [("0,1x", "fail"), ("0,1.9", "fail"), ("5", "fail"), ("0,,1", "fail"), ("99999999999", "fail"),
                 ("", "any")]:
        opt("eval", "--keep", v, e)
    opt("eval", "--keep=", "-1", "fail")
    for v in ["abc", "", "-1", "1.5", "99999999999", "1;2", " , "]:
        opt("decode", "--ids", v, "fail2", name=f"decode-ids-{v.strip() or 'blank'}")
    opt("decode", "--ids", "5000", "fail", name="decode-ids-beyond-vocab")
    opt("decode", "--tokenizer", "/nonexistent", "fail")
    # Every flag value checked as it is parsed: a usage error (exit 2) naming the flag.
    for v in ["abc", "0,1,1", "0,0", "0,,1", ",0"]:
        opt("eval", "--keep", v, "fail2")
    for v in ["0.5,,1", ",1", "1,", "0.5,abc"]:
        opt("eval", "--retention", v, "fail2")
    for v in ["2,,4", "2.5", "0"]:
        opt("eval", "--groups", v, "fail2")
    opt("eval", "--plan-split", "0.5", "fail2", name="eval-plan-split-without-greedy")
    opt("eval", "--data", "", "fail2", name="eval-data-empty")
    opt("eval", "--out", "", "fail2", name="eval-out-empty")
    opt("eval", "--seq-len", "100000", "fail", name="eval-seq-len-above-max")
    for v in ["abc", "", "0.5", "-1GB", "5XB", "nan", "1e30"]:
        opt("bench-gen", "--memory-budget", v, "fail2", name=f"bench-gen-memory-budget-{v or 'empty'}")
    for v in ["0.5,,1", "1,"]:
        opt("bench-gen", "--retention", v, "fail2")
    opt("bench-gen", "--prompt-lengths", "4,,8", "fail2")
    opt("bench-gen", "--batch-sizes", "1.5", "fail2")
    opt("bench-gen", "--csv", "", "fail2", name="bench-gen-csv-empty")
    for v in ["-1", "18446744073709551616", "1e30", "abc"]:
        opt("generate", "--seed", v, "fail2", name=f"generate-seed-{v[:10]}")
        opt("prepare", "--seed", v, "fail2", name=f"prepare-seed-{v[:10]}")
    opt("prepare", "--out", "", "fail2", name="prepare-out-empty")
    opt("tok-train", "--out", "", "fail2", name="tok-train-out-empty")
    for flag, v in [("--dtype", "f8"), ("--dtype", ""), ("--shard-size", "abc"), ("--shard-size", ""),
                    ("--shard-size", "0.5"), ("--out", "")]:
        add(f"export-{flag.strip('-')}-{v or 'empty'}", ["export", "{CK}", "--out", "exp", flag, v]
            if flag != "--out" else ["export", "{CK}", "--out", v], "fail2", protect=("run",))
    opt("eval", "--batches=", "-1", "fail")
    opt("eval", "--batches", "abc", "fail2")
    for v in ["2", "0", "nan", "inf"]:
        opt("eval", "--retention", v, "fail")
    opt("eval", "--retention=", "-0.5", "fail")
    opt("eval", "--retention", "0.5,abc", "fail2")
    opt("eval", "--groups", "0", "fail")
    opt("eval", "--groups=", "-1", "fail")
    opt("eval", "--batch", "0", "fail")
    opt("eval", "--batch", I64_MAX, "any")  # may be clamped to the validation windows
    opt("eval", "--seq-len", "100000", "fail")
    opt("eval", "--seq-len=", "-5", "fail")
    opt("eval", "--seq-len", I64_MAX, "fail")
    opt("eval", "--strategy", "bogus", "fail2")
    opt("eval", "--data", "/nonexistent/kvroute", "fail")
    opt("eval", "--data", "{EMPTYDIR}", "fail")
    opt("eval", "--checkpoint", "/nonexistent/kvroute", "fail")
    opt("eval", "--checkpoint", "{CK}/model.safetensors", "fail", name="eval-checkpoint-file")
    opt("eval", "--out", "/dev/null/sub", "fail")
    opt("eval", "--device", "tpu", "fail2")
    opt("eval", "--precision", "fp8", "fail2")
    opt("eval", "--precision", "bf16", "any")  # bf16 GEMMs, or f32 with a notice on a CPU without bf16
    opt("eval", "--threads", "1000000", "fail")
    # generate
    for v in [I64_MAX, "0", "1000"]:
        opt("generate", "--max-new-tokens", v, "fail")
    opt("generate", "--max-new-tokens=", "-1", "fail")
    for v in ["nan", "inf", "1e308"]:
        opt("generate", "--temperature", v, "fail")
    opt("generate", "--temperature=", "-1", "fail")
    opt("generate", "--top-p", "nan", "fail")
    opt("generate", "--top-p", "1.5", "fail")
    opt("generate", "--top-p=", "-0.1", "fail")
    opt("generate", "--top-k=", "-1", "fail")
    opt("generate", "--top-k", "abc", "fail2")
    opt("generate", "--retention", "nan", "fail")
    opt("generate", "--retention", "2", "fail")
    opt("generate", "--groups", "0", "fail")
    add("generate-retention-and-groups", TEMPLATES["generate"] + ["--retention", "0.5", "--groups", "2"], "fail2",
        protect=("run",))
    opt("generate", "--tokenizer", "/nonexistent/kvroute", "fail")
    opt("generate", "--tokenizer", "{EMPTYDIR}", "fail")
    opt("generate", "--seed", "abc", "fail2")
    opt("generate", "--prompt", "", "any")
    opt("generate", "--prompt", " ".join(["the sun"] * 200), "fail", name="generate-prompt-too-long")
    opt("generate", "--checkpoint", "/nonexistent/kvroute", "fail")
    opt("generate", "--threads", "1000000", "fail")
    # tokenizer train / encode
    for v in ["256", "0", I64_MAX]:
        opt("tok-train", "--vocab", v, "fail")
    opt("tok-train", "--vocab=", "-1", "fail")
    opt("tok-train", "--vocab", "abc", "fail2")
    for v in ["/nonexistent/kvroute", "{EMPTYDIR}", "{FIFO}", "/dev/zero"]:
        opt("tok-train", "--input", v, "fail")

    def jsonl(name: str, text: str, expect: str = "fail", t: str = "tok-train") -> None:
        argv = with_opt(TEMPLATES[t], "--input", "in.jsonl")
        prep = lambda env: env.write("in.jsonl", text)
        add(f"{t}-jsonl-{name}", argv, expect, f"{t} --input a .jsonl with {name}", prep=prep)
    jsonl("bad-line", '{"text": "hello"}\n{"text": \n')
    jsonl("number-text", '{"text": 5}\n')
    jsonl("no-text", '{"body": "hello"}\n')
    jsonl("deep", deep() + "\n")
    jsonl("deep-meta", json.dumps({"text": "hello there"})[:-1] + ', "meta": ' + deep(kind="object") + "}\n", "any")
    jsonl("bad-utf8", b'{"text": "\xff"}\n', "any")
    opt("tok-train", "--out", "/dev/null/x", "fail")
    add("tok-train-out-file", with_opt(TEMPLATES["tok-train"], "--out", "afile"), "fail",
        prep=lambda env: env.write("afile", "keep\n"), protect=("afile",))
    add("tok-train-out-existing", with_opt(with_opt(TEMPLATES["tok-train"], "--out", "tok"), "--vocab", "10"), "fail",
        "tokenizer train --vocab 10 into an existing tokenizer dir", prep=lambda env: env.tok_copy(), protect=("tok",))
    opt("tok-train", "--threads", "1000000", "fail")
    opt("encode", "--tokenizer", "/nonexistent/kvroute", "fail")
    opt("encode", "--tokenizer", "{CORPUS}", "fail")
    # prepare
    for v in ["1", "nan"]:
        opt("prepare", "--val-fraction", v, "fail")
    opt("prepare", "--val-fraction=", "-0.1", "fail")
    opt("prepare", "--val-fraction", "abc", "fail2")
    opt("prepare", "--shard-tokens", "0", "fail")
    opt("prepare", "--shard-tokens=", "-5", "fail")
    opt("prepare", "--seed", "abc", "fail2")
    for v in ["/nonexistent/kvroute", "{FIFO}"]:
        opt("prepare", "--input", v, "fail")
    def over_existing(name: str, desc: str, argv: list, prep: Callable) -> None:
        """A failing prepare aimed at an existing shard dir, with --overwrite where the binary has it
        (so that the replacement, not the refusal, is what has to keep the old shards)."""
        def build(env: Env) -> Spec:
            prep(env)
            env.data_copy()
            extra = ["--overwrite"] if "--overwrite" in env.ctx.prepare_help else []
            return Spec(cli_argv(env, argv + extra), protect=["data"], detail=" ".join(extra))
        R.add("cli", name, desc, "fail", build)
    over_existing("prepare-bad-jsonl-existing-out", "prepare a bad .jsonl into an existing shard dir",
                  with_opt(with_opt(TEMPLATES["prepare"], "--input", "in.jsonl"), "--out", "data"),
                  lambda env: env.write("in.jsonl", '{"text": "fine"}\n{"text": 5}\n'))
    over_existing("prepare-bad-tokenizer-existing-out", "prepare with a missing tokenizer into an existing shard dir",
                  with_opt(with_opt(TEMPLATES["prepare"], "--tokenizer", "/nonexistent/kvroute"), "--out", "data"),
                  lambda env: None)
    over_existing("prepare-bad-vocab-existing-out", "prepare with a broken vocab.bpe into an existing shard dir",
                  with_opt(with_opt(TEMPLATES["prepare"], "--tokenizer", "tok"), "--out", "data"),
                  lambda env: (env.tok_copy(), env.write("tok/vocab.bpe", "#version: 0.2\na b c\n")))
    opt("prepare", "--out", "/dev/null/x", "fail")
    add("prepare-out-file", with_opt(TEMPLATES["prepare"], "--out", "afile"), "fail",
        prep=lambda env: env.write("afile", "keep\n"), protect=("afile",))
    opt("prepare", "--threads", "1000000", "fail")
    # sweep
    add("sweep-missing", ["sweep", "missing.yaml"], "fail")
    opt("sweep", "--threads", "1000000", "fail")
    # bench train / generate
    opt("bench-train", "--steps", "0", "fail")
    opt("bench-train", "--steps=", "-1", "fail")
    opt("bench-train", "--steps", I64_MAX, "fail")
    opt("bench-train", "--steps", "abc", "fail2")
    opt("bench-train", "--threads", "1000000", "fail")
    add("bench-train-missing-config", ["bench", "train", "missing.yaml", "--no-peer"], "fail")
    add("bench-train-bad-override", TEMPLATES["bench-train"] + ["model.hidden_size=abc"], "fail")
    add("bench-gen-neither", ["bench", "generate", "--repeats", "1"], "fail")
    add("bench-gen-both", TEMPLATES["bench-gen"] + ["--config", "cfg.yaml"], "fail2", protect=("run",))
    for v in ["2", "nan"]:
        opt("bench-gen", "--retention", v, "fail")
    for flag in ["--prompt-lengths", "--batch-sizes"]:
        opt("bench-gen", flag, "0", "fail")
        opt("bench-gen", flag + "=", "-1", "fail")
    opt("bench-gen", "--prompt-lengths", "1000000", "fail")
    opt("bench-gen", "--prompt-lengths", I64_MAX, "fail")
    opt("bench-gen", "--new-tokens", "0", "fail")
    opt("bench-gen", "--new-tokens", I64_MAX, "fail")
    opt("bench-gen", "--repeats", "0", "fail")
    add("bench-gen-config-missing", ["bench", "generate", "--config", "missing.yaml"], "fail")


CLI_VALUES = ["-1", "0", "1e308", "nan", "inf", I64_MAX, "99999999999999999999", "0x10", "1.5", "", "abc", "1,2"]


def cli_random(env: Env) -> Spec:
    rng = env.rng
    t = rng.choice(sorted(TEMPLATES))
    argv = list(TEMPLATES[t])
    kind = rng.choice(["unknown", "missing", "value", "value", "value", "positional"])
    if kind in ("missing", "value") and not NUMERIC[t]:
        kind = "unknown"
    expect = "any"
    if kind == "unknown":
        flag = "--" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz-") for _ in range(rng.randint(3, 12))).strip("-")
        first = 2 if argv[0] in ("bench", "tokenizer") else 1
        argv.insert(rng.randint(first, len(argv)), flag + "x")
        expect = "fail2"
        detail = f"unknown flag {flag}x"
    elif kind == "missing":
        flag = rng.choice(NUMERIC[t])
        argv = with_opt(argv, flag, None) + [flag]
        expect = "fail2"
        detail = f"{flag} without a value"
    elif kind == "value":
        flag = rng.choice(NUMERIC[t])
        value = rng.choice(CLI_VALUES)
        argv = with_opt(argv, flag, None) + [f"{flag}={value}"]
        expect = "fail2" if value in ("abc",) else "any"
        detail = f"{flag}={value}"
        if flag == "--threads" and value in (I64_MAX, "1e308", "inf"):
            expect = "fail"
        if flag in ("--steps", "--new-tokens", "--max-new-tokens") and value == I64_MAX:
            expect = "fail"
    else:
        argv.append("garbage")
        expect = "fail" if t in ("train", "bench-train") else "fail2"
        detail = "an extra positional argument"
    protect = ["run"] if any("{CK}" in a for a in argv) else []
    return Spec(cli_argv(env, argv), protect=protect, detail=detail, expect=expect)


RANDOM_BUILDERS = {"config": config_random, "override": override_random, "shard": shard_random,
                   "datajson": datajson_random, "tokenizer": tokenizer_random, "safetensors": safetensors_random,
                   "state": state_random, "ckptconfig": ckptconfig_random, "cli": cli_random,
                   "hfmodel": hfmodel_random, "export": export_random, "sft": sft_random, "task": task_random,
                   "tokenizerjson": tokenizerjson_random}


def stratified_sample(cases: list, n: int, seed: int) -> list:
    base = [c for c in cases if c.category == "baseline"]
    rest = [c for c in cases if c.category != "baseline"]
    budget = max(0, n - len(base))
    by_cat = {}
    for c in rest:
        by_cat.setdefault(c.category, []).append(c)
    quota = {cat: max(1, round(len(cs) * budget / len(rest))) for cat, cs in by_cat.items()}
    while sum(quota.values()) > budget and any(q > 1 for q in quota.values()):
        quota[max(quota, key=lambda k: quota[k])] -= 1
    keep = {c.id for c in base}
    for cat, cs in by_cat.items():
        keep.update(c.id for c in random.Random(f"{seed}:sample:{cat}").sample(cs, min(len(cs), quota[cat])))
    return [c for c in cases if c.id in keep]


# ---- output paths -------------------------------------------------------------------------------

def output_cases(R: Registry) -> None:
    """Every output path given something of the wrong kind: nothing is written into or over a FIFO,
    device, link or a file/directory of the other kind; one error line, the target left as it was.
    Generated: each output x each wrong kind for it."""
    # (name, argv with {T} for the target, what it is: file | dir-into (files written inside) |
    # dir-replaced (published whole, so a link to a directory is refused too))
    outputs = [
        ("bench-csv", TEMPLATES["bench-gen"] + ["--csv", "{T}"], "file"),
        ("eval-out", TEMPLATES["eval"] + ["--out", "{T}"], "dir-into"),
        ("prepare-out", with_opt(TEMPLATES["prepare"], "--out", "{T}"), "dir-replaced"),
        ("tok-train-out", with_opt(TEMPLATES["tok-train"], "--out", "{T}"), "dir-into"),
        ("export-out", ["export", "{CK}", "--out", "{T}"], "dir-replaced"),
        ("export-overwrite", ["export", "{CK}", "--out", "{T}", "--overwrite"], "dir-replaced"),
        ("train-run-dir", ["train", "cfg.yaml", "train.run_dir={T}"], "dir-into"),
    ]
    def fifo(env: Env) -> None:
        make_fifo(env.p("target"))
    def file_(env: Env) -> None:
        env.write("target", "a file of the user's\n")
    def dir_(env: Env) -> None:
        make_dir(env.p("target"))
        env.write("target/keep.txt", "a file of the user's\n")
    def link_file(env: Env) -> None:
        env.write("elsewhere.txt", "a file of the user's\n")
        make_link(env.p("target"), "elsewhere.txt")
    def link_dir(env: Env) -> None:
        make_dir(env.p("elsewhere"))
        env.write("elsewhere/keep.txt", "a file of the user's\n")
        make_link(env.p("target"), "elsewhere")
    def devnull(env: Env) -> None:
        make_link(env.p("target"), "/dev/null")
    kinds = {"file": [("fifo", fifo), ("dir", dir_), ("link-file", link_file), ("link-devnull", devnull)],
             "dir-into": [("fifo", fifo), ("file", file_), ("link-devnull", devnull)],
             "dir-replaced": [("fifo", fifo), ("file", file_), ("link-dir", link_dir), ("link-devnull", devnull)]}
    for name, argv, what in outputs:
        for kind, make in kinds[what]:
            def build(env: Env, argv=argv, make=make) -> Spec:
                make(env)
                spec = Spec(cli_argv(env, [a.replace("{T}", "target") for a in argv]),
                            protect=["target", "elsewhere", "elsewhere.txt"])
                if "{CK}" in " ".join(argv):
                    spec.protect.append("run")
                return spec
            R.add("output", f"{name}-{kind}", f"{name}: the target is a {kind}", "fail", build)
    # prepare replaces its --out whole: a directory holding anything but prepared data is refused.
    def foreign(env: Env) -> Spec:
        dir_(env)
        return Spec(cli_argv(env, with_opt(TEMPLATES["prepare"], "--out", "target")), protect=["target"])
    R.add("output", "prepare-out-foreign-file", "prepare --out: a directory holding a file prepare did not write",
          "fail", foreign)


def all_cases(n_cases: int, seed: int) -> tuple:
    R = Registry()
    baseline_cases(R)
    config_cases(R)
    override_cases(R)
    shard_cases(R)
    datajson_cases(R)
    tokenizer_cases(R)
    safetensors_cases(R)
    state_cases(R)
    ckptconfig_cases(R)
    rundir_cases(R)
    study_cases(R)
    cli_cases(R)
    hfmodel_cases(R)
    export_cases(R)
    sft_cases(R)
    task_cases(R)
    tokenizerjson_cases(R)
    output_cases(R)
    fixed = R.cases
    note = ""
    if n_cases < len(fixed):
        fixed = stratified_sample(fixed, n_cases, seed)
        note = (f"--cases {n_cases} is below the {len(R.cases)} targeted cases: running a seeded sample of "
                f"{len(fixed)} of them, in proportion per category (all baseline cases included)")
    cats = sorted(RANDOM_WEIGHTS)
    pick = random.Random(f"{seed}:categories")
    randoms = []
    for i in range(max(0, n_cases - len(fixed))):
        cat = pick.choices(cats, weights=[RANDOM_WEIGHTS[c] for c in cats])[0]
        randoms.append(Case(f"{cat}-r{i:03d}-random", cat, "seeded random mutation", "any", RANDOM_BUILDERS[cat]))
    return fixed + randoms, note


# ------------------------------------------------------------------------------------------------
# Running one case
# ------------------------------------------------------------------------------------------------

@dataclass
class Result:
    case: Case
    expect: str
    outcome: str            # ok-failed-cleanly | accepted-valid | passed | VIOLATION | setup-error
    reasons: list
    argv: list
    cwd: str
    rc: Optional[int]
    stderr: str
    detail: str
    seconds: float


def classify(expect: str, rc: Optional[int], timed_out: bool, stderr: bytes, changed: dict) -> tuple:
    reasons = []
    if timed_out:
        return "VIOLATION", ["timeout (killed by the harness)"]
    if rc is not None and rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return "VIOLATION", [f"killed by {name}"]
    if rc == 0:
        if expect in ("fail", "fail2"):
            extra = "; it changed " + "; ".join(f"{k} ({v})" for k, v in changed.items()) if changed else ""
            return "VIOLATION", ["exit 0 on invalid input" + extra]
        return ("passed" if expect == "pass" else "accepted-valid"), []
    # a failure: must be clean
    if expect == "pass":
        reasons.append(f"a valid command failed (exit {rc})")
    text = stderr.decode("utf-8", errors="replace")
    body = text[:-1] if text.endswith("\n") else text
    if body == "":
        reasons.append("empty stderr")
    else:
        lines = body.split("\n")
        if len(lines) > 1:
            reasons.append(f"stderr has {len(lines)} lines")
        controls = sorted({c for c in body if (ord(c) < 32 and c not in "\n\t") or ord(c) == 127})
        if controls:
            reasons.append("stderr holds raw control characters " + "".join(repr(c)[1:-1] for c in controls[:6])
                           + " (file bytes echoed unescaped)")
        if not body.startswith(PREFIX):
            reasons.append(f"stderr does not start with {PREFIX!r}")
        elif body.strip() == PREFIX.strip():
            reasons.append("empty error message")
    if "bad_alloc" in text or "std::length_error" in text or "vector::_M" in text:
        reasons.append("ran out of memory / size overflow instead of a validation error")
    if expect == "fail2" and rc != 2:
        reasons.append(f"a command-line parse error must exit 2, got {rc}")
    if changed:
        reasons.append("existing files changed: " + "; ".join(f"{k} ({v})" for k, v in changed.items()))
    return ("VIOLATION" if reasons else "ok-failed-cleanly"), reasons


def run_case(ctx: Ctx, case: Case, seed: int, timeout: float, case_root: Path) -> Result:
    d = case_root / case.id
    d.mkdir(parents=True)
    env = Env(ctx, d, random.Random(f"{seed}:{case.id}"))
    t0 = time.monotonic()
    try:
        spec = case.build(env)
    except Exception as e:  # a bug in the harness or a fixture that changed shape
        return Result(case, case.expect, "setup-error", [f"{type(e).__name__}: {e}"], [], str(d), None, "", "", 0.0)
    expect = spec.expect or case.expect
    before = {p: tree_hash(d / p) for p in spec.protect}
    cmd = ctx.wrapper + [ctx.kvroute] + spec.argv
    timed_out = False
    try:
        p = subprocess.Popen(cmd, cwd=d, env=ctx.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        return Result(case, expect, "setup-error", [f"cannot start the command: {e}"], spec.argv, str(d), None, "",
                      spec.detail, 0.0)
    try:
        out, err = p.communicate(timeout=spec.timeout or timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(p.pid, signal.SIGKILL)  # the case's own process group (start_new_session)
        except ProcessLookupError:
            pass
        out, err = p.communicate()
    rc = None if timed_out else p.returncode
    changed = {}
    for path, h in before.items():
        after = tree_hash(d / path)
        if after != h:
            changed[path] = tree_diff(h, after)
    outcome, reasons = classify(expect, rc, timed_out, err, changed)
    if outcome == "ok-failed-cleanly" and expect in ("fail", "fail2"):
        text = err.decode("utf-8", errors="replace")
        missing = [m for m in spec.mention if m not in text]
        if missing:
            outcome, reasons = "VIOLATION", [f"the error does not name {', '.join(map(repr, missing))}"]
    return Result(case, expect, outcome, reasons, spec.argv, str(d), rc, err.decode("utf-8", errors="replace"),
                  spec.detail, time.monotonic() - t0)


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------

def is_asan(path: str) -> bool:
    needle = b"__asan_init"
    with open(path, "rb") as f:
        tail = b""
        for chunk in iter(lambda: f.read(1 << 22), b""):
            if needle in tail + chunk:
                return True
            tail = chunk[-len(needle):]
    return False


def snapshot_binary(src: str, dest: Path, wait: float = 180.0) -> None:
    """Copies the executable once it exists and has stopped changing (it may be relinked while we start)."""
    deadline = time.monotonic() + wait
    last = None
    while True:
        try:
            st = os.stat(src)
            sig = (st.st_size, st.st_mtime_ns)
            if sig == last and st.st_size > 0:
                break
            last = sig
        except FileNotFoundError:
            last = None
        if time.monotonic() > deadline:
            raise FixtureError(f"{src}: no stable executable after {wait:.0f} s")
        time.sleep(1.0)
    shutil.copy2(src, dest)
    os.chmod(dest, 0o755)


def clip(s: str, n: int = 300) -> str:
    return s if len(s) <= n else s[:n] + f"... [{len(s)} chars]"


def reason_kinds(results: list) -> dict:
    """A coarse tally of why cases failed the contract (one case can count under several kinds)."""
    kinds = {}
    for r in results:
        seen = set()
        for reason in r.reasons:
            if reason.startswith("stderr does not start"):
                first = r.stderr.splitlines()[0] if r.stderr else ""
                k = ("stderr prefix 'kvroute: error (rank N): ' instead of 'kvroute: error: '"
                     if first.startswith("kvroute: error (rank") else "stderr without the 'kvroute: error: ' prefix")
            elif reason.startswith("stderr has"):
                k = "stderr of more than one line"
            elif reason.startswith("the error does not name"):
                k = "error line does not name the file:line / key at fault"
            elif reason.startswith("exit 0"):
                k = "exit 0 on invalid input"
            elif reason.startswith("a command-line parse error"):
                k = "command-line parse error with an exit code other than 2"
            elif reason.startswith("killed by"):
                k = reason
            elif reason.startswith("existing files changed") or "; it changed" in reason:
                k = "existing files changed by a failed command"
            else:
                k = reason.split(" (")[0].split(":")[0]
            if k not in seen:
                seen.add(k)
                kinds[k] = kinds.get(k, 0) + 1
            if "; it changed" in reason and "existing files changed" not in seen:
                seen.add("existing files changed")
                kinds["exit 0 on invalid input that also changed existing files"] = kinds.get(
                    "exit 0 on invalid input that also changed existing files", 0) + 1
    return kinds


def main() -> int:
    ap = argparse.ArgumentParser(description="Seeded bad-input harness for kvroute (see the module docstring).")
    ap.add_argument("--kvroute", required=False, help="the kvroute executable")
    ap.add_argument("--cases", type=int, default=300, help="total cases (fixed + seeded random); default 300")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep-going", action="store_true", help="run every case (default: stop at the first violation)")
    ap.add_argument("--only", default="", help="comma-separated categories: " + ",".join(CATEGORIES))
    ap.add_argument("--case", action="append", default=[], help="run only this case id (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--jobs", type=int, default=4, help="cases run at once (default 4; FIFO cases mostly wait)")
    ap.add_argument("--timeout", type=float, default=0, help="seconds per case (default 15; 30 for an ASan build)")
    ap.add_argument("--budget", type=float, default=540.0, help="stop starting cases after this many seconds")
    ap.add_argument("--mem-limit-mb", type=int, default=2048,
                    help="address-space limit per case (ulimit -v; ASan builds get hard_rss_limit_mb instead); 0: none")
    ap.add_argument("--workdir", help="use this (new or empty) directory instead of a fresh temporary one")
    ap.add_argument("--keep-workdir", action="store_true", help="keep the fixtures and case directories")
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per case")
    ap.add_argument("--json", help="also write every result (case, expectation, outcome, reasons, command, exit, "
                                   "stderr) to this JSON file")
    args = ap.parse_args()

    only = [c for c in args.only.split(",") if c]
    bad = [c for c in only if c not in CATEGORIES]
    if bad:
        ap.error(f"--only: unknown categories {bad}; known: {', '.join(CATEGORIES)}")
    cases, note = all_cases(args.cases, args.seed)
    if only:
        cases = [c for c in cases if c.category in only]
    if args.case:
        known = {c.id for c in cases}
        missing = [c for c in args.case if c not in known]
        if missing:
            ap.error(f"--case: no such case {missing} (see --list with the same --cases/--seed)")
        cases = [c for c in cases if c.id in args.case]
    if args.list:
        for c in cases:
            print(f"{c.id:48s} {c.category:12s} {c.expect:5s} {c.desc}")
        print(f"{len(cases)} cases" + (f" ({note})" if note else ""))
        return 0
    if not args.kvroute:
        ap.error("--kvroute is required")

    start = time.monotonic()
    if args.workdir:
        work = Path(args.workdir).resolve()
        work.mkdir(parents=True, exist_ok=True)
        if any(work.iterdir()):
            ap.error(f"--workdir {work} is not empty")
    else:
        work = Path(tempfile.mkdtemp(prefix="kvroute-badinput-"))
    (work / "bin").mkdir()
    fixtures = work / "fixtures"
    fixtures.mkdir()
    ctx = Ctx(kvroute=str(work / "bin/kvroute"), kvroute_shown=args.kvroute, work=work, fixtures=fixtures,
              corpus=fixtures / "corpus", tok=fixtures / "tok", data=fixtures / "data", golden=fixtures / "golden")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMI_", "PMIX_", "MPI_"))}
    env.update({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "LC_ALL": "C"})
    keep_workdir = args.keep_workdir
    try:
        snapshot_binary(args.kvroute, Path(ctx.kvroute))
        asan = is_asan(ctx.kvroute)
        if asan:
            opts = env.get("ASAN_OPTIONS", "")
            extra = "allocator_may_return_null=1:max_allocation_size_mb=2048:hard_rss_limit_mb=3072"
            env["ASAN_OPTIONS"] = f"{opts}:{extra}" if opts else extra
            ctx.wrapper = ["/bin/sh", "-c", 'ulimit -c 0; exec "$0" "$@"']
        elif args.mem_limit_mb > 0:
            ctx.wrapper = ["/bin/sh", "-c", f'ulimit -c 0; ulimit -v {args.mem_limit_mb * 1024}; exec "$0" "$@"']
        else:
            ctx.wrapper = ["/bin/sh", "-c", 'ulimit -c 0; exec "$0" "$@"']
        ctx.env = env
        if args.timeout <= 0:
            args.timeout = 30.0 if asan else 15.0
        try:
            build_fixtures(ctx)
        except (FixtureError, subprocess.TimeoutExpired, OSError) as e:
            print(f"badinput: cannot build the fixtures: {e}", file=sys.stderr)
            keep_workdir = True
            print(f"badinput: fixtures left in {work}", file=sys.stderr)
            return 3
        fixture_hash = tree_hash(fixtures)
        t_fix = time.monotonic() - start
        print(f"badinput: {args.kvroute}{' (ASan)' if asan else ''}; fixtures in {t_fix:.1f} s "
              f"(vocab {ctx.vocab}); {len(cases)} cases, seed {args.seed}, jobs {args.jobs}, timeout {args.timeout:g} s")
        if note:
            print(f"badinput: note: {note}")

        stop = threading.Event()
        results = []
        lock = threading.Lock()
        case_root = work / "cases"
        skipped = []

        def task(case: Case) -> Optional[Result]:
            if stop.is_set() or time.monotonic() - start > args.budget:
                skipped.append(case.id)
                return None
            res = run_case(ctx, case, args.seed, args.timeout, case_root)
            with lock:
                results.append(res)
                if args.verbose:
                    print(f"  {res.outcome:18s} {res.case.id} ({res.seconds:.1f} s) rc={res.rc} {res.detail}", flush=True)
                if res.outcome in ("VIOLATION", "setup-error"):
                    if not args.verbose:
                        print(f"  {res.outcome}: {res.case.id}: {'; '.join(res.reasons)}", flush=True)
                    if not args.keep_going:
                        stop.set()
            if not keep_workdir:
                shutil.rmtree(res.cwd, ignore_errors=True)
            return res

        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(task, cases))

        after = tree_hash(fixtures)
        fixture_changed = after != fixture_hash
        elapsed = time.monotonic() - start

        # ---- report ----
        order = {c.id: i for i, c in enumerate(cases)}
        results.sort(key=lambda r: order[r.case.id])
        outcomes = ["ok-failed-cleanly", "accepted-valid", "passed", "VIOLATION", "setup-error"]
        print()
        print(f"{'category':12s} " + " ".join(f"{o:>17s}" for o in outcomes) + f" {'total':>6s}")
        totals = {o: 0 for o in outcomes}
        for cat in CATEGORIES:
            rs = [r for r in results if r.case.category == cat]
            if not rs:
                continue
            counts = {o: sum(1 for r in rs if r.outcome == o) for o in outcomes}
            for o in outcomes:
                totals[o] += counts[o]
            print(f"{cat:12s} " + " ".join(f"{counts[o]:>17d}" for o in outcomes) + f" {len(rs):>6d}")
        print(f"{'all':12s} " + " ".join(f"{totals[o]:>17d}" for o in outcomes) + f" {len(results):>6d}")
        bad_results = [r for r in results if r.outcome in ("VIOLATION", "setup-error")]
        if bad_results:
            print(f"\n{len(bad_results)} violation(s) of the bad-input contract:")
            for r in bad_results:
                print(f"\n[{r.case.id}] {r.case.desc}" + (f" -- {r.detail}" if r.detail else ""))
                print(f"  expect:  {r.expect}")
                print(f"  reason:  {'; '.join(r.reasons)}")
                if r.argv:
                    print(f"  command: {clip(shlex.join([ctx.kvroute_shown] + r.argv), 400)}")
                    print(f"  in:      {r.cwd}" + ("" if keep_workdir else " (removed; --case ID --keep-workdir keeps it)"))
                    print(f"  exit:    {r.rc if r.rc is not None else ('not run' if r.outcome == 'setup-error' else 'timeout')}")
                    lines = r.stderr.splitlines()
                    for line in lines[:3]:
                        print(f"  stderr:  {clip(line)}")
                    if len(lines) > 3:
                        print(f"  stderr:  ... ({len(lines)} lines)")
            print("\nviolations by kind:")
            for kind, n in sorted(reason_kinds(bad_results).items(), key=lambda kv: -kv[1]):
                print(f"  {n:4d}  {kind}")
            print(f"\nreproduce one: {shlex.join([sys.argv[0], '--kvroute', args.kvroute, '--cases', str(args.cases), '--seed', str(args.seed)])}"
                  " --case ID --keep-workdir")
        if args.json:
            with open(args.json, "w") as f:
                json.dump([{"id": r.case.id, "category": r.case.category, "desc": r.case.desc, "detail": r.detail,
                            "expect": r.expect, "outcome": r.outcome, "reasons": r.reasons,
                            "argv": [args.kvroute] + r.argv, "cwd": r.cwd, "rc": r.rc, "stderr": r.stderr[:2000],
                            "seconds": round(r.seconds, 3)} for r in results], f, indent=1)
        if fixture_changed:
            print("\nVIOLATION: the shared fixtures (golden run, shards, tokenizer) changed during the run: "
                  + tree_diff(fixture_hash, after))
        if skipped:
            why = "after the first violation (use --keep-going)" if stop.is_set() else f"past the {args.budget:g} s budget"
            print(f"\n{len(skipped)} case(s) not run {why}")
        print(f"\nbadinput: {len(results)} cases in {elapsed:.1f} s: {totals['VIOLATION'] + totals['setup-error']} violation(s)")
        if bad_results and keep_workdir:
            print(f"badinput: case directories kept in {work}")
        ok = not bad_results and not fixture_changed and not (skipped and not stop.is_set())
        return 0 if ok else 1
    finally:
        if not keep_workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
