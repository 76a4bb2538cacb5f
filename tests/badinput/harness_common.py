"""What every case module of the bad-input harness shares: constants, the fixtures (corpus,
tokenizer, shards, golden runs, Hugging Face models, SFT data), tree hashing, Spec/Case/Env, file
mutation helpers (JSON, bytes, safetensors), the value oracle, the case Registry and argv helpers.
See harness.py for the contract and the driver; cases/<kind>.py for each kind of input."""


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


# ---- token shards (llm.c format) ------------------------------------------------------------------

def shard_bytes(path: Path) -> tuple:
    b = path.read_bytes()
    return list(struct.unpack("<256i", b[:1024])), b[1024:]


def write_shard(path: Path, header: list, body: bytes) -> None:
    path.write_bytes(struct.pack("<256i", *header) + body)
