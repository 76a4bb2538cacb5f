#!/usr/bin/env python3
"""Writes a JSONL corpus of about SIZE_MB megabytes ({"text": ...} per line) for the prepare
benchmark: documents of 5-40 paragraphs drawn (seeded) from the text files under SOURCE (the
Debian documentation corpus of scripts/fetch_data.sh --docs), so the words follow real prose.
Usage: bench/gen_corpus.py OUT.jsonl SIZE_MB [SOURCE] [SEED]"""
import json, os, random, sys

out, size_mb = sys.argv[1], float(sys.argv[2])
source = sys.argv[3] if len(sys.argv) > 3 else "data/raw/docs"
rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
paragraphs = []
for root, _, files in sorted(os.walk(source)):
    for name in sorted(files):
        with open(os.path.join(root, name), encoding="utf-8", errors="replace") as f:
            paragraphs += [p.strip() for p in f.read().split("\n\n") if len(p.strip()) > 40]
if not paragraphs:
    sys.exit(f"gen_corpus: no text under {source} (run scripts/fetch_data.sh --docs)")
target, written = int(size_mb * 1e6), 0
with open(out, "w", encoding="utf-8") as f:
    while written < target:
        doc = "\n\n".join(rng.choice(paragraphs) for _ in range(rng.randint(5, 40)))
        line = json.dumps({"text": doc}, ensure_ascii=False) + "\n"
        f.write(line)
        written += len(doc.encode("utf-8"))
print(f"gen_corpus: {out}: {written / 1e6:.0f} MB of text from {len(paragraphs)} paragraphs")
