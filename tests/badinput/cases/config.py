"""Bad-input cases: config files."""

from __future__ import annotations

from harness_common import *  # noqa: F401,F403


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
