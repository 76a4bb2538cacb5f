#!/usr/bin/python3
"""English prose from Debian documentation packages, as plain-text documents for `kvroute prepare`:
a second, larger corpus (the quickstart corpus is 6.9M tokens) for studies that need tens of
millions of tokens without many passes over the same text. Run by `scripts/fetch_data.sh --docs`
after it installed the packages.

Sources (Debian packages; each file becomes one document):
  python3-doc        /usr/share/doc/python3.*/html         HTML (Sphinx) -> text
  postgresql-doc     /usr/share/doc/postgresql-doc-*/html  HTML (DocBook) -> text
  linux-doc          /usr/share/doc/linux-doc-*/Documentation  reStructuredText / plain text, as is
  debian-reference-en /usr/share/debian-reference/          HTML -> text
  perl-doc           /usr/share/perl/5.*/pod                POD, as is
Not used: bible-kjv and fortune (reserved for independent evaluation).

Cleaning: scripts, styles and navigation are dropped from HTML; runs of blank lines collapse;
documents under 500 characters are skipped. Deduplication: exact duplicate documents, then any
paragraph (>= 200 characters) seen before in an earlier document is dropped, so boilerplate
repeated across pages (licence notices, navigation text) appears once.

    scripts/make_docs_corpus.py --out data/raw/docs   # writes <out>/<source>/*.txt and <out>-sources.md
"""
import argparse
import glob
import gzip
import hashlib
import html.parser
import os
import re
import sys
from pathlib import Path

SOURCES = [
    ("python", "python3-doc", "/usr/share/doc/python3.*/html", "html"),
    ("postgresql", "postgresql-doc", "/usr/share/doc/postgresql-doc-*/html", "html"),
    ("linux", "linux-doc", "/usr/share/doc/linux-doc-*/Documentation", "rst"),
    ("debian-reference", "debian-reference-en", "/usr/share/debian-reference", "html"),
    ("perl", "perl-doc", "/usr/share/perl/5.*/pod", "pod"),
]
SKIP_TAGS = {"script", "style", "nav", "head", "footer"}
BLOCK_TAGS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "dd", "dt", "table",
              "section", "blockquote", "title"}


VOID_TAGS = {"br", "img", "hr", "meta", "link", "input", "col", "area", "base", "wbr", "source"}


class Text(html.parser.HTMLParser):
    """Text of an HTML page: a stack of open elements, each marked skipped (scripts, styles,
    navigation, sidebars) or not; text counts only when no open element is skipped."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out, self.stack = [], []  # stack: (tag, skipped)

    def skipping(self):
        return any(skipped for _, skipped in self.stack)

    def handle_starttag(self, tag, attrs):
        classes = dict(attrs).get("class") or ""
        skipped = tag in SKIP_TAGS or any(c in classes for c in ("related", "sphinxsidebar", "navheader",
                                                                  "navfooter", "headerlink"))
        if tag not in VOID_TAGS:
            self.stack.append((tag, skipped))
        if tag in BLOCK_TAGS:
            self.out.append("\n")

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):  # close up to the matching element
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break
        if tag in BLOCK_TAGS:
            self.out.append("\n")

    def handle_data(self, data):
        if not self.skipping():
            self.out.append(data)


def html_text(raw):
    p = Text()
    p.feed(raw)
    return "".join(p.out)


def clean(text):
    text = text.replace("\r\n", "\n").replace("\u00b6", "")  # Sphinx's pilcrow anchors
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def read(path):
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


def files_of(root, kind):
    for dirpath, _, names in os.walk(root):
        for name in sorted(names):
            p = Path(dirpath) / name
            stem = name[:-3] if name.endswith(".gz") else name
            if kind == "html" and stem.endswith((".html", ".htm")):
                yield p
            elif kind == "rst" and (stem.endswith((".rst", ".txt")) or "." not in stem):
                yield p
            elif kind == "pod" and stem.endswith(".pod"):
                yield p


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    seen_docs, seen_paras = set(), set()
    summary = []
    for name, package, pattern, kind in SOURCES:
        roots = sorted(glob.glob(pattern))
        root = roots[-1] if roots else pattern  # the newest version installed
        if not os.path.isdir(root):
            print(f"make_docs_corpus: error: {root} not found (Debian package {package}); run scripts/fetch_data.sh --docs",
                  file=sys.stderr)
            return 1
        dest = out / name
        dest.mkdir(parents=True, exist_ok=True)
        docs = chars = dropped_docs = dropped_paras = 0
        for i, path in enumerate(sorted(files_of(root, kind))):
            try:
                raw = read(path)
            except (OSError, EOFError, gzip.BadGzipFile):
                continue
            text = clean(html_text(raw) if kind == "html" else raw)
            digest = hashlib.sha256(text.encode()).digest()
            if digest in seen_docs:
                dropped_docs += 1
                continue
            seen_docs.add(digest)
            kept = []
            for para in text.split("\n\n"):
                if len(para) >= 200:
                    h = hashlib.sha256(para.encode()).digest()
                    if h in seen_paras:
                        dropped_paras += 1
                        continue
                    seen_paras.add(h)
                kept.append(para)
            text = "\n\n".join(kept).strip() + "\n"
            if len(text) < 500:
                continue
            rel = str(path.relative_to(root)).replace("/", "__")
            (dest / f"{i:05d}-{rel[:120]}.txt").write_text(text, encoding="utf-8")
            docs += 1
            chars += len(text.encode())
        summary.append((name, package, root, docs, chars, dropped_docs, dropped_paras))
        print(f"make_docs_corpus: {name}: {docs} documents, {chars / 1e6:.1f} MB "
              f"({dropped_docs} duplicate documents, {dropped_paras} repeated paragraphs dropped)")
    with open(out.parent / (out.name + "-sources.md"), "w") as f:  # beside, not inside: prepare reads every file
        f.write("| source | Debian package | path | documents | MB | duplicate docs | repeated paragraphs |\n")
        f.write("|---|---|---|---|---|---|---|\n")
        for name, package, root, docs, chars, dd, dp in summary:
            f.write(f"| {name} | {package} | {root} | {docs} | {chars / 1e6:.1f} | {dd} | {dp} |\n")
    total = sum(s[4] for s in summary)
    print(f"make_docs_corpus: {sum(s[3] for s in summary)} documents, {total / 1e6:.1f} MB -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
