"""Bad-input cases: Hugging Face model directories."""

from __future__ import annotations

from harness_common import *  # noqa: F401,F403


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
