"""Bad-input cases: Hugging Face tokenizer.json."""

from __future__ import annotations

from harness_common import *  # noqa: F401,F403
from cases.hfmodel import json_with_raw
from cases.sft import SFT_GOOD


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
