#!/usr/bin/env python3
"""GPT-2's encoder.json + vocab.bpe as a Hugging Face tokenizer.json (byte-level BPE, GPT-2's
pre-tokenizer regex), so the Rust `tokenizers` peer encodes with the same vocabulary as kvroute.
Usage: bench/gpt2_tokenizer_json.py GPT2_DIR OUT.json"""
import json, sys

src, out = sys.argv[1], sys.argv[2]
vocab = json.load(open(f"{src}/encoder.json", encoding="utf-8"))
merges = [l.rstrip("\n") for l in open(f"{src}/vocab.bpe", encoding="utf-8") if l.strip() and not l.startswith("#version")]
byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
json.dump({"version": "1.0", "truncation": None, "padding": None,
           "added_tokens": [{"id": vocab["<|endoftext|>"], "content": "<|endoftext|>", "single_word": False,
                             "lstrip": False, "rstrip": False, "normalized": True, "special": True}],
           "normalizer": None, "pre_tokenizer": byte_level, "post_processor": None, "decoder": byte_level,
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                     "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
                     "merges": merges}}, open(out, "w", encoding="utf-8"))
