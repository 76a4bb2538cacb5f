#!/usr/bin/env python3
"""Regenerates the binary seed inputs in fuzz/corpus/ (they are checked in; the fuzzers do not need
Python). Run from anywhere: python3 fuzz/make_corpus.py"""
import json
import pathlib
import shutil
import struct

root = pathlib.Path(__file__).resolve().parent
corpus = root / "corpus"


def write(target, name, data):
    path = corpus / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, raw bytes)] -> a file as kvroute/Hugging Face write it."""
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


write("safetensors", "three_tensors.safetensors", safetensors(
    [("w", "F32", [2, 3], struct.pack("<6f", 1, -2, 0.5, 3, 4, -0.25)),
     ("ids", "I32", [4], struct.pack("<4i", 0, 1, -7, 2**31 - 1)),
     ("h", "BF16", [2, 2], struct.pack("<4H", 0x3F80, 0xC000, 0, 0x7F80))],
    {"format": "pt", "step": "12"}))
write("safetensors", "scalar_u16_u32.safetensors", safetensors(
    [("s", "F32", [], struct.pack("<f", 2.5)), ("u", "U16", [3], struct.pack("<3H", 1, 2, 65535)),
     ("v", "U32", [1, 1], struct.pack("<I", 7)), ("e", "F32", [0, 4], b"")]))
write("safetensors", "empty.safetensors", safetensors([]))


def shard(tokens, width):
    magic, version = (20240520, 1) if width == 2 else (20240801, 7)
    header = struct.pack("<3i", magic, version, len(tokens)) + b"\0" * (256 * 4 - 12)
    return header + struct.pack(f"<{len(tokens)}{'H' if width == 2 else 'I'}", *tokens)


write("shard", "u16.bin", shard([50256, 15496, 995, 0, 65535, 11, 12, 13], 2))
write("shard", "u32.bin", shard([100000, 0, 151643, 7], 4))
write("shard", "empty_u16.bin", shard([], 2))


def gpt2_byte_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}, bs


# A tokenizer input: encoder.json, a NUL byte, vocab.bpe (fuzz_tokenizer.cpp splits there).
to_unicode, order = gpt2_byte_to_unicode()
encoder = {to_unicode[b]: i for i, b in enumerate(order)}
merges = [(" ", "t"), ("h", "e"), (" t", "he"), ("i", "n")]
for left, right in merges:
    encoder["".join(to_unicode[b] for b in (left + right).encode())] = len(encoder)
encoder["<|endoftext|>"] = len(encoder)
bpe = "#version: 0.2\n" + "".join(
    "".join(to_unicode[b] for b in l.encode()) + " " + "".join(to_unicode[b] for b in r.encode()) + "\n"
    for l, r in merges)
write("tokenizer", "tiny.txt", json.dumps(encoder, ensure_ascii=False, separators=(",", ":")).encode() + b"\0" + bpe.encode())

# Configs: the tiny run, and the same with overrides (after NUL bytes, as fuzz_config.cpp reads them).
tiny = (root.parent / "configs" / "tiny.yaml").read_bytes()
write("config", "tiny.yaml", tiny)
write("config", "tiny_overrides.yaml", tiny + b"\0train.steps=5\0router.policy=fixed_groups\0router.group_size=2\0eval.retention=[0.25]")
write("config", "empty.yaml", b"")
