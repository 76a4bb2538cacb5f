#!/usr/bin/env node
// cl100k_base (GPT-4's tokenizer) from js-tiktoken, an independent JavaScript port of tiktoken,
// for the tokenizer.json parity test (tests/data/test_tokenizer.cpp).
//
//   node tests/data/make_cl100k_fixture.js --tokenizer  # data/raw/cl100k/tokenizer.json (scripts/fetch_data.sh runs this)
//   node tests/data/make_cl100k_fixture.js --cases      # tests/data/cl100k_cases.json (committed)
//   node tests/data/make_cl100k_fixture.js              # both
//
// (a) tokenizer.json: js-tiktoken's ranks converted the way transformers' TikTokenConverter does:
// vocab = every rank's bytes through GPT-2's bytes_to_unicode map; merges = for every token (in
// rank order), each split into two pieces that are both tokens, ordered by the pieces' ranks;
// pre_tokenizer = Sequence[Split(cl100k's pattern, Isolated), ByteLevel(use_regex false)];
// ignore_merges true (a pre-token that is a token is emitted whole, as tiktoken does); the special
// tokens are added_tokens. The pattern is tiktoken's current one (case-insensitive group,
// possessive quantifiers); js-tiktoken's own spelling (no (?i:), no possessives) matches the same.
//
// (b) cl100k_cases.json: strings and the ids js-tiktoken's encoder gives them, special tokens not
// allowed (the strings contain none). Left out, where JavaScript's regex differs from PCRE2:
// U+0085 (\s in PCRE2 and tiktoken's Rust regex, not in JavaScript), U+FEFF (\s in JavaScript
// only), U+017F (long s: the case-insensitive 's of tiktoken's pattern matches 'ſ in PCRE2 and Rust,
// js-tiktoken's spelled-out case variants do not) and U+180E (\s in PCRE2 only). Lone surrogates
// cannot be encoded as UTF-8.
'use strict';
const fs = require('fs');
const path = require('path');
const root = path.join(__dirname, '..', '..');
const pkg = path.join(root, 'data/raw/pkg/js-tiktoken');
if (!fs.existsSync(path.join(pkg, 'dist/lite.cjs'))) {
  console.error('make_cl100k_fixture: js-tiktoken missing: run scripts/fetch_data.sh --tokenizer-only');
  process.exit(1);
}
const ranksFile = require(path.join(pkg, 'dist/ranks/cl100k_base.cjs'));
const { Tiktoken } = require(path.join(pkg, 'dist/lite.cjs'));

const kPattern =
  "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+";

// ---- (a) tokenizer.json -------------------------------------------------------------------------

function bytesToUnicode() {
  const bs = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  const map = new Array(256);
  bs.forEach((b, i) => (map[b] = String.fromCodePoint(cs[i])));
  return map;
}

function makeTokenizerJson() {
  // js-tiktoken's compressed ranks: lines "<first char> <offset> <base64 token> <base64 token> ...".
  const tokens = [];  // rank -> Buffer
  for (const line of ranksFile.bpe_ranks.split('\n')) {
    if (!line) continue;
    const [, offsetStr, ...b64] = line.split(' ');
    const offset = Number.parseInt(offsetStr, 10);
    b64.forEach((t, i) => (tokens[offset + i] = Buffer.from(t, 'base64')));
  }
  const rankOf = new Map();  // latin1 spelling -> rank
  tokens.forEach((t, rank) => {
    if (t === undefined) throw new Error(`rank ${rank} missing`);
    rankOf.set(t.toString('latin1'), rank);
  });
  const map = bytesToUnicode();
  const spell = (buf) => Array.from(buf, (b) => map[b]).join('');
  const vocab = {};
  const merges = [];
  let higherRankPieces = 0;
  tokens.forEach((t, rank) => {
    vocab[spell(t)] = rank;
    if (t.length < 2) return;
    const key = t.toString('latin1');
    const local = [];
    for (let i = 1; i < key.length; i++) {
      const l = rankOf.get(key.slice(0, i)), r = rankOf.get(key.slice(i));
      if (l !== undefined && r !== undefined) local.push([l, r]);
    }
    local.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
    for (const [l, r] of local) {
      if (l > rank || r > rank) higherRankPieces++;
      merges.push([spell(tokens[l]), spell(tokens[r])]);
    }
  });
  const added = Object.entries(ranksFile.special_tokens)
    .sort((a, b) => a[1] - b[1])
    .map(([content, id]) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }));
  const tok = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: kPattern }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: true, vocab, merges,
    },
  };
  const dir = path.join(root, 'data/raw/cl100k');
  fs.mkdirSync(dir, { recursive: true });
  const out = path.join(dir, 'tokenizer.json');
  fs.writeFileSync(out + '.tmp', JSON.stringify(tok) + '\n');
  fs.renameSync(out + '.tmp', out);
  console.log(`make_cl100k_fixture: wrote ${path.relative(root, out)}: ${tokens.length} tokens, ${merges.length} merges ` +
              `(${higherRankPieces} with a piece ranked above the merged token), ${added.length} added tokens`);
}

// ---- (b) cases ----------------------------------------------------------------------------------

// mulberry32: a small seeded generator, so the fixture is reproducible.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const kExcluded = /[\u0085\u180e\ufeff\u017f]/;

function makeCases() {
  const cases = [
    '', ' ', '  ', '\n', '\n\n', '\t', ' \t\n ', '\r\n', '\r\n\r\n', ' \r\n', '\n \n', 'a', 'A', '!', '?!', '...', '—',
    'Hello', ' Hello', 'Hello world', 'Hello  world', 'Hello   world   ', 'Hello\nworld', 'Hello\n\n\nworld',
    'Hello \n world', 'Hello\t \tworld', '   leading', 'trailing   ', 'trailing\n', 'trailing \n', 'tab\tseparated\tvalues',
    "it's", "It's", "IT'S", "don't", "DON'T", "I'm", "I'M", "you're", "YOU'RE", "You'Re", "we've", "WE'VE", "they'll",
    "THEY'LL", "They'Ll", "he'd", "HE'D", "rock'n'roll", "'s", "'S", "''", "'tis", "y'all'd've", "o'clock", " 's", "'ss",
    "'llama", "'vegan", "'real", "'mmm", "'dd", "l'amour", "it’s (curly)", "Jones's", "Jones'", "'123", "''s",
    '0', '1', '12', '123', '1234', '12345', '123456', '1234567', '12345678', '123456789', '1234567890',
    ' 1', ' 12', ' 1234', 'x1234567y', 'v1.2.3', '3.14159', '1,000,000', '-273.15', '1e10', '0x1F', '12:30',
    '2026-11-23', '$100', '100%', '#1', '٣٤٥٦', '１２３４', '²³', 'Ⅻ', '१२३४५', 'a1b2c3', 'ABC123def',
    'foo_bar', 'foo-bar', 'foo.bar', 'foo/bar', 'foo\\bar', 'C++', 'x=y+z*2', 'f(x) = x^2', '!!!???', '***', '---', '===',
    '<html><body>hi</body></html>', '{"key": [1, 2, 3]}', 'http://example.com/path?q=1&r=2', 'user@example.com',
    '@mention #hashtag', '(((nested)))', '[a]{b}<c>', '<|endoftext', 'endoftext|>', '<|im_start|>',
    'naïve café', 'Ünïcödé', 'façade', 'jalapeño', 'São Paulo', 'Zürich', 'Ελληνικά', 'Русский текст', 'עברית',
    'العربية', 'مرحبا بالعالم، كيف حالك؟', 'هذا نص عربي ١٢٣', 'हिन्दी', 'नमस्ते दुनिया', '日本語のテキスト', '中文文本',
    '你好，世界！', '今天天气很好。我们去公园吧', '한국어', '안녕하세요 세계', 'ไทย', 'ภาษาไทยไม่มีช่องว่าง',
    'カタカナとひらがな', '🙂', '😀😃😄', '👍🏽', '🇺🇸', '🇺🇸🇬🇧', '👨‍👩‍👧‍👦', '❤️', '🧑🏾‍💻 coding', 'emoji 🎉 in text',
    'e\u0301', 'cafe\u0301', 'a\u0308\u0301', 'Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324',
    '\u0928\u093f', 'n\u0303o', '\u00a0nbsp', 'a\u2003em space', 'zero\u200bwidth', 'joiner\u200dtext', 'ideo\u3000space',
    'mixed English и русский', 'English日本語mixed', 'αβγ123абв', 'Ωmega−minus', 'tab\t\ttabs', 'CRLF\r\nline',
    '    indented code', 'def f(x):\n    return x + 1\n', 'SELECT * FROM t WHERE a = 1;',
    '#include <stdio.h>\nint main(void) {\n\tprintf("%d\\n", 42);\n\treturn 0;\n}\n',
    'for (let i = 0; i < n; ++i) {\n  sum += a[i] * b[i];\n}',
    'if x != None and len(xs) >= 10:\n        print(f"{x!r:>10}")\n\n\n',
    '    \n    \n', '\n\n\n\n\n', '          ', '  \t  \t', ' \n\n ', 'a\n\n\n\nb', 'x  \n  y', 'end.  \n',
    'The quick brown fox jumps over the lazy dog.', 'THE QUICK BROWN FOX', 'tHe QuIcK bRoWn',
    'supercalifragilisticexpialidocious', 'antidisestablishmentarianism', 'pneumonoultramicroscopicsilicovolcanoconiosis',
    'Donaudampfschifffahrtselektrizitätenhauptbetriebswerkbauunterbeamtengesellschaft',
    'a b c d e f g', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'zzzzzzzz', '  multiple   spaces   between   words  ',
    'Mr. Smith went to Washington.', 'U.S.A.', 'e.g., i.e., etc.', 'He said, "Hello!"', "She said, 'Goodbye.'",
    '“smart quotes”', '‘single’', '« guillemets »', 'ellipsis…', 'em—dash', 'en–dash', '½ ¼ ¾', '© ® ™', '°C', 'µs',
    '±5', '×÷', '∑∫√∞', '→ ← ↑ ↓', '♠♥♦♣', '★☆', '𝔘𝔫𝔦𝔠𝔬𝔡𝔢', '𝟙𝟚𝟛', '𠀀𠀁𠀂',
  ];
  // Digit runs of every length 1..12, alone and after letters and spaces.
  for (let n = 1; n <= 12; n++) {
    const d = '9876543210987'.slice(0, n);
    cases.push(d, ` ${d}`, `x${d}`, `${d}px`);
  }
  // Whitespace runs before words, newlines and the end.
  for (let n = 1; n <= 8; n++) {
    const s = ' '.repeat(n);
    cases.push(`a${s}b`, `a${s}`, `${s}\nb`, `a${s}\t${s}b`);
  }
  // Long words and runs.
  cases.push('a'.repeat(300), 'ab'.repeat(150), 'Lorem'.repeat(60), '1'.repeat(100), ' '.repeat(200) + 'x',
             '\n'.repeat(100), '!'.repeat(100), '日本'.repeat(100), '🙂'.repeat(50));
  // Seeded random strings: weighted mixes of scripts, marks, digits, whitespace and punctuation.
  const ranges = [
    [0x20, 0x7e, 30], [0x09, 0x0d, 3], [0x30, 0x39, 5], [0xa0, 0xff, 3], [0x100, 0x24f, 3], [0x300, 0x36f, 3],
    [0x370, 0x3ff, 2], [0x400, 0x4ff, 3], [0x590, 0x5ff, 1], [0x600, 0x6ff, 3], [0x900, 0x97f, 2], [0xe00, 0xe7f, 1],
    [0x1100, 0x11ff, 1], [0x2000, 0x206f, 2], [0x2070, 0x2bff, 2], [0x3000, 0x30ff, 3], [0x4e00, 0x9fff, 4],
    [0xac00, 0xd7a3, 2], [0xff00, 0xffef, 1], [0x1f300, 0x1f64f, 3], [0x1f900, 0x1f9ff, 1], [0x1d400, 0x1d7ff, 1],
    [0x20000, 0x2a6df, 1], [0x0, 0xffff, 4],  // the last: any BMP code point
  ];
  const total = ranges.reduce((s, r) => s + r[2], 0);
  const random = rng(20241123);
  const pick = () => {
    let x = random() * total;
    for (const [lo, hi, w] of ranges) {
      if ((x -= w) < 0) return lo + Math.floor(random() * (hi - lo + 1));
    }
    return 0x20;
  };
  const extra = ["'s", "'ll", "'VE", ' ', '  ', '\n', '\r\n', '123456', ' the'];
  for (let i = 0; i < 160; i++) {
    const len = 1 + Math.floor(random() * (i < 120 ? 24 : 120));
    let s = '';
    while ([...s].length < len) {
      if (random() < 0.1) {
        s += extra[Math.floor(random() * extra.length)];
        continue;
      }
      const cp = pick();
      if (cp >= 0xd800 && cp <= 0xdfff) continue;  // surrogates are not characters
      s += String.fromCodePoint(cp);
    }
    cases.push(s);
  }
  const enc = new Tiktoken(ranksFile);
  const specials = Object.keys(ranksFile.special_tokens);
  const seen = new Set();
  const out = [];
  for (const text of cases) {
    if (kExcluded.test(text) || seen.has(text) || specials.some((t) => text.includes(t))) continue;
    seen.add(text);
    const ids = enc.encode(text, [], []);  // no special token allowed (and none in the text)
    if (enc.decode(ids) !== text) throw new Error(`js-tiktoken does not round-trip ${JSON.stringify(text)}`);
    out.push({ text, ids });
  }
  const file = path.join(__dirname, 'cl100k_cases.json');
  fs.writeFileSync(file, '[\n' + out.map((c) => JSON.stringify(c)).join(',\n') + '\n]\n');
  console.log(`make_cl100k_fixture: wrote ${out.length} cases to ${path.relative(root, file)}`);
}

const args = process.argv.slice(2);
for (const a of args) {
  if (a !== '--tokenizer' && a !== '--cases') {
    console.error(`make_cl100k_fixture: unknown option '${a}' (expected --tokenizer or --cases)`);
    process.exit(2);
  }
}
if (args.length === 0 || args.includes('--tokenizer')) makeTokenizerJson();
if (args.length === 0 || args.includes('--cases')) makeCases();
