"""Bad-input cases: GPT-2 tokenizer files."""

from __future__ import annotations

from harness_common import *  # noqa: F401,F403


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
