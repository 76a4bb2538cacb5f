#!/usr/bin/env node
// Writes tests/data/unicode_cases.json: strings with letters and digits that Unicode 15.0, 15.1 and
// 16.0 added, and U+180E, with the ids that Hugging Face's Rust `tokenizers` library (through its
// Node bindings, the npm package @anush008/tokenizers) gives them with data/raw/cl100k/tokenizer.json.
// Same layout as cl100k_cases.json: a JSON array of {"text", "ids"}, special tokens not in the texts
// (this library renumbers the file's added tokens, 100257..100260 and 100276, to 100256..100260).
//
//   mkdir -p /tmp/unicode-fixture && (cd /tmp/unicode-fixture && npm install @anush008/tokenizers@0.6.0)
//   node tests/data/make_unicode_cases.js --tokenizers /tmp/unicode-fixture/node_modules/@anush008/tokenizers
//   # or: NODE_PATH=/tmp/unicode-fixture/node_modules node tests/data/make_unicode_cases.js
//
// Options: --kvroute BIN (e.g. build/kvroute) also runs `BIN tokenizer encode --tokenizer data/raw/cl100k
// --text=T` on every string and prints the ones where kvroute disagrees (the fixture is not changed);
// --kvroute-report FILE writes those results as JSON; --check compares with the committed file
// instead of writing it.
//
// @anush008/tokenizers 0.6.0 is built on tokenizers 0.22.2, whose Split pre-tokenizer runs Oniguruma
// (the onig crate 6.5.1; Oniguruma 6.9.10's tables): its \p{L} and \p{N} are exactly Unicode 16.0's
// Letter and Number, and its \s is White_Space (25 code points; U+180E is not in it since Unicode
// 6.3). PCRE2 10.42 (Unicode 14.0) has none of the letters and digits below and counts U+180E as \s.
// The script checks, for every non-ASCII code point in the strings, that the library's \p{L}, \p{N}
// and \s give what Node's own Unicode tables say (Node's ICU must know Unicode 16 or later:
// `node -p process.versions.unicode`), Unicode 17.0's additions excepted (the library does not have
// them: they must stay non-letters), and stops if a library of another Unicode version is used.
'use strict';
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');
const root = path.join(__dirname, '..', '..');

function arg(name) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const pkgDir = arg('--tokenizers');
let Tokenizer;
try {
  ({ Tokenizer } = require(pkgDir ? path.resolve(pkgDir) : '@anush008/tokenizers'));
} catch (e) {
  console.error('make_unicode_cases: @anush008/tokenizers not found: give --tokenizers DIR or NODE_PATH (see the top of this file)');
  process.exit(1);
}
const tokenizerJson = path.join(root, 'data/raw/cl100k/tokenizer.json');
if (!fs.existsSync(tokenizerJson)) {
  console.error('make_unicode_cases: data/raw/cl100k/tokenizer.json missing: run scripts/fetch_data.sh --tokenizer-only');
  process.exit(1);
}

const u = (...cps) => String.fromCodePoint(...cps);
const run = (from, n, step = 1) => u(...Array.from({ length: n }, (_, i) => from + i * step));

// Unicode 17.0 letters and digits that Node may know and tokenizers 0.22.2 does not.
const kUnicode17 = [[0x088f, 0x088f], [0x0c5c, 0x0c5c], [0x0cdc, 0x0cdc], [0xa7ce, 0xa7cf], [0xa7d2, 0xa7d2],
  [0xa7d4, 0xa7d4], [0xa7f1, 0xa7f1], [0x10940, 0x10959], [0x10ec5, 0x10ec7], [0x11db0, 0x11ddb], [0x11de0, 0x11de9],
  [0x16ea0, 0x16ed3], [0x16ff2, 0x16ff6], [0x187f8, 0x187ff], [0x18d09, 0x18d1e], [0x18d80, 0x18df2],
  [0x1e6c0, 0x1e6ff], [0x2b73a, 0x2b73f], [0x2cea2, 0x2cead], [0x323b0, 0x33479]];
const inUnicode17 = (c) => kUnicode17.some(([a, b]) => c >= a && c <= b);

const MVS = '\u180e';  // MONGOLIAN VOWEL SEPARATOR: Cf; \s in PCRE2, not White_Space
// Where a letter or digit run meets ASCII punctuation, a contraction or ASCII digits, the pieces (and
// so the ids) depend on \p{L}/\p{N}: "X.com" is X + ".com" when X is a letter, "X." + "com" when not.
const cases = [
  // CJK Unified Ideographs Extension H (15.0, U+31350..U+323AF, Lo)
  run(0x31350, 3), ' ' + u(0x31360, 0x3136a), u(0x31350) + "'s", u(0x31351, 0x31352) + '.com',
  u(0x323af) + '(x)',
  // CJK Unified Ideographs Extension I (15.1, U+2EBF0..U+2EE5D, Lo)
  run(0x2ebf0, 3), '中' + u(0x2ebf5) + '文', u(0x2ebf0) + "'t", u(0x2ee5d) + '_id', u(0x2ec00, 0x2ec01) + '-based',
  // Kawi (15.0): letters U+11F04.., U+11F12.., a vowel sign (Mc), danda (Po), digits U+11F50..U+11F59
  run(0x11f04, 3), u(0x11f12, 0x11f34, 0x11f13), u(0x11f06) + "'re", u(0x11f12, 0x11f13) + '.get()',
  run(0x11f50, 5), u(0x11f50) + '123', '1' + u(0x11f51) + '2345', u(0x11f52) + "'s",
  'year ' + u(0x11f52, 0x11f50, 0x11f52, 0x11f54) + u(0x11f43),
  // Nag Mundari (15.0): letters U+1E4D0.., modifier letter U+1E4EB, marks, digits U+1E4F0..U+1E4F9
  run(0x1e4d0, 3), u(0x1e4d5, 0x1e4eb), u(0x1e4d2, 0x1e4d3) + '(x)', run(0x1e4f0, 4),
  u(0x1e4f3) + '123', '1' + u(0x1e4f0) + '2345', u(0x1e4f9) + "'d",
  // Kaktovik Numerals (15.0, U+1D2C0..U+1D2D3, No)
  u(0x1d2c0, 0x1d2c1, 0x1d2c2, 0x1d2c3, 0x1d2d3), ' ' + u(0x1d2c5, 0x1d2c6), u(0x1d2c1) + '123', '1' + u(0x1d2c4) + '2345',
  // Other 15.0 letters: Cyrillic Extended-D modifier letters, Latin Extended-G, Khojki, Ext-B, small kana
  'а' + u(0x1e030) + 'б', u(0x1e030, 0x1e031) + "'ll", u(0x1df27) + '.com', u(0x1123f, 0x11240),
  u(0x2b739) + '字', u(0x1b132, 0x1b155) + '_id', u(0x1342f) + ' ' + u(0x13441, 0x13442),
  // Garay (16.0): digits U+10D40..U+10D49, letters U+10D4A.., capitals U+10D50.., small U+10D70.., hyphen (Pd)
  run(0x10d40, 4), u(0x10d50, 0x10d71, 0x10d72), ' ' + u(0x10d4a, 0x10d4b, 0x10d6e, 0x10d4c), u(0x10d4e, 0x10d4f) + '.com',
  u(0x10d50) + "'S", u(0x10d41) + '123', '1' + u(0x10d49) + '2345',
  // Gurung Khema (16.0): letters U+16100..U+1611D, vowel signs, digits U+16130..U+16139
  run(0x16100, 3), 'abc' + u(0x16100, 0x16101) + 'def', u(0x16107) + '-based',
  run(0x16130, 5), u(0x16139) + '123', u(0x16131) + "'t",
  // Kirat Rai (16.0): modifier letters U+16D40.., letters U+16D43..U+16D6A, U+16D6B..C, punctuation, digits U+16D70..
  run(0x16d43, 3), u(0x16d40, 0x16d43, 0x16d6b), u(0x16d44) + "'ve  " + u(0x16d70, 0x16d71),
  u(0x16d46, 0x16d47) + '.get()', run(0x16d70, 7), '1' + u(0x16d72) + '2345',
  // Ol Onal (16.0): letters U+1E5D0..U+1E5ED, U+1E5F0, marks, digits U+1E5F1..U+1E5FA, U+1E5FF (Po)
  run(0x1e5d0, 3), u(0x1e5f0, 0x1e5d1), u(0x1e5d0) + "'ll\n",
  'email: ' + u(0x1e5d0, 0x1e5d1) + '@example.com', run(0x1e5f1, 4), u(0x1e5f5) + '123',
  // Sunuwar (16.0): letters U+11BC0..U+11BE0, U+11BE1 (Po), digits U+11BF0..U+11BF9
  run(0x11bc0, 3), u(0x11bc0) + "'re 42", u(0x11bc5) + '(x)', run(0x11bf0, 10),
  'x=' + u(0x11bf1, 0x11bf2) + '+1', '1' + u(0x11bf9) + '2345',
  // Todhri (16.0, U+105C0..U+105F3, Lo)
  run(0x105c0, 3), u(0x105c0, 0x105c1) + "'s", 'C++' + u(0x105c0), u(0x105c2, 0x105c3) + '_id',
  // Tulu-Tigalari (16.0): letters U+11380..U+11389, U+11390..U+113B5, vowel signs, U+113D4 (Po)
  run(0x11380, 3), '\t' + u(0x11390, 0x11391), u(0x113b7, 0x113d1, 0x113d3), u(0x11395, 0x11396) + '.com',
  // Other 16.0 digits and letters: Myanmar Extended-C digits, outlined digits, Egyptian Hieroglyphs
  // Extended-A, Latin and Cyrillic additions, Arabic Extended-C letters, Khitan
  run(0x116d0, 4), u(0x116da) + '123', run(0x1ccf0, 3), 'v' + u(0x1ccf1) + '.' + u(0x1ccf2), u(0x1ccf5) + "'s",
  run(0x13460, 3), u(0x13470) + '-based', u(0xa7cb, 0xa7cd) + 'ab', u(0xa7da, 0xa7db, 0xa7dc) + '(x)',
  'Т' + u(0x1c89, 0x1c8a) + 'а', u(0x10ec2, 0x10ec3, 0x10ec4), u(0x18cff) + '1',
  // Mixtures with ASCII
  'The Kawi word ' + run(0x11f04, 3) + ' means 3.', 'id_' + u(0x31350) + '_42', '2024' + u(0x31350) + '年',
  u(0x2ebf0) + '\n' + u(0x2ebf1) + '\r\n', 'Ол' + u(0x1e5d0) + ' ' + u(0x105c0) + '!? ' + u(0x11bf1),
  u(0x16100) + '🙂' + u(0x16d43), "it's " + u(0x31350) + "'s " + u(0x2ebf0) + "'D",
  'import ' + u(0x105c0, 0x105c1) + '.get(' + u(0x11f50, 0x11f51) + '123)',
  // U+180E (Mongolian vowel separator)
  'a' + MVS + 'b', 'word' + MVS + ' word', MVS + MVS, 'x' + MVS + '!', 'ᠮᠣᠩᠭᠣᠯ' + MVS + 'ᠠ', 'ᠬᠠᠷ' + MVS + 'ᠠ ᠨᠣᠮ' + MVS + 'ᠠ',
  ' ' + MVS, MVS + '\n', 'end' + MVS, ' ' + MVS + 'b', 'word ' + MVS + 'ᠠ', MVS + "'s", MVS + "'t",
  MVS + '.com', MVS + '(x)', MVS + '_id', ' ' + MVS + '123', 'hello ' + MVS + MVS + ' world',
  // Unicode 17.0 letters and digits: not \p{L}/\p{N} to tokenizers 0.22.2 (nor to PCRE2 10.42)
  u(0xa7ce, 0xa7cf), run(0x10940, 2) + '.com', run(0x323b0, 2) + "'s", run(0x11de0, 4), '1' + u(0x11de1) + '2345',
];

// ---- the library's \p{L}, \p{N}, \s -------------------------------------------------------------

function regexMembers(pattern, cps) {
  const tok = Tokenizer.fromString(JSON.stringify({
    version: '1.0', truncation: null, padding: null, added_tokens: [], normalizer: null,
    pre_tokenizer: { type: 'Split', pattern: { Regex: pattern }, behavior: 'Removed', invert: false },
    post_processor: null, decoder: null, model: { type: 'WordLevel', vocab: { '[UNK]': 0 }, unk_token: '[UNK]' },
  }));
  // What is left after removing the matches, in char (code point) offsets.
  const keep = new Uint8Array(cps.length);
  for (const [, [s, e]] of tok.getPreTokenizer().preTokenizeString(u(...cps))) keep.fill(1, s, e);
  return new Set(cps.filter((_, i) => !keep[i]));
}

function checkUnicode() {
  const cps = [...new Set(cases.flatMap((t) => Array.from(t, (ch) => ch.codePointAt(0))))].filter((c) => c > 0x7f);
  cps.push(0x180e, 0x85, 0xa0, 0x3000, 0xfeff);
  const nodeVersion = parseFloat(process.versions.unicode || '0');
  if (!(nodeVersion >= 16)) {
    console.error(`make_unicode_cases: Node's Unicode is ${process.versions.unicode}: need 16.0 or later to check`);
    process.exit(1);
  }
  const hex = (c) => 'U+' + c.toString(16).toUpperCase().padStart(4, '0');
  const problems = [];
  for (const [name, pattern, nodeRe] of [['\\p{L}', '\\p{L}', /\p{L}/u], ['\\p{N}', '\\p{N}', /\p{N}/u],
                                         ['\\s', '\\s', /\p{White_Space}/u]]) {
    const hf = regexMembers(pattern, cps);
    for (const c of cps) {
      const expected = nodeRe.test(u(c)) && !inUnicode17(c);
      if (hf.has(c) !== expected) problems.push(`${hex(c)} ${hf.has(c) ? 'is' : 'is not'} ${name} to the library`);
    }
  }
  if (problems.length) {
    console.error('make_unicode_cases: the library is not at Unicode 16.0:\n  ' + problems.slice(0, 20).join('\n  '));
    process.exit(1);
  }
  return cps.length;
}

// ---- kvroute ------------------------------------------------------------------------------------

function kvrouteIds(bin, text) {
  for (let attempt = 1; ; attempt++) {
    try {
      const out = execFileSync(bin, ['tokenizer', 'encode', '--tokenizer', path.join(root, 'data/raw/cl100k'), `--text=${text}`],
                               { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      const s = out.trim();
      return s === '' ? [] : s.split(/\s+/).map(Number);
    } catch (e) {
      // A build relinking the binary meanwhile: wait and try again.
      if (attempt >= 10 || !['EACCES', 'ETXTBSY', 'ENOENT'].includes(e.code)) throw e;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 3000);
    }
  }
}

// ---- main ---------------------------------------------------------------------------------------

(async () => {
  const checked = checkUnicode();
  const tok = Tokenizer.fromFile(tokenizerJson);
  const out = [];
  const seen = new Set();
  for (const text of cases) {
    if (seen.has(text)) throw new Error(`duplicate case ${JSON.stringify(text)}`);
    seen.add(text);
    if (text.includes('<|')) throw new Error(`special token in ${JSON.stringify(text)}`);
    const ids = (await tok.encode(text, null, { addSpecialTokens: false })).getIds();
    if ((await tok.decode(ids, false)) !== text) throw new Error(`no round trip for ${JSON.stringify(text)}`);
    out.push({ text, ids });
  }
  const json = '[\n' + out.map((c) => JSON.stringify(c)).join(',\n') + '\n]\n';
  const file = path.join(__dirname, 'unicode_cases.json');
  console.log(`make_unicode_cases: ${out.length} cases, ${Buffer.byteLength(json)} bytes; ${checked} code points ` +
              `checked against Node's Unicode ${process.versions.unicode} (ICU ${process.versions.icu})`);
  if (process.argv.includes('--check')) {
    const same = fs.existsSync(file) && fs.readFileSync(file, 'utf8') === json;
    console.log(same ? 'make_unicode_cases: unicode_cases.json is up to date' : 'make_unicode_cases: unicode_cases.json differs');
    if (!same) process.exitCode = 1;
  } else {
    fs.writeFileSync(file + '.tmp', json);
    fs.renameSync(file + '.tmp', file);
    console.log(`make_unicode_cases: wrote ${path.relative(root, file)}`);
  }

  const bin = arg('--kvroute');
  if (bin) {
    const report = [];
    for (const c of out) {
      const kv = kvrouteIds(bin, c.text);
      const agree = JSON.stringify(kv) === JSON.stringify(c.ids);
      report.push({ text: c.text, hf: c.ids, kvroute: kv, agree });
      if (!agree) console.log(`differs: ${JSON.stringify(c.text)} hf ${JSON.stringify(c.ids)} kvroute ${JSON.stringify(kv)}`);
    }
    const n = report.filter((r) => !r.agree).length;
    console.log(`make_unicode_cases: kvroute disagrees on ${n} of ${report.length} strings`);
    const reportFile = arg('--kvroute-report');
    if (reportFile) fs.writeFileSync(reportFile, '[\n' + report.map((r) => JSON.stringify(r)).join(',\n') + '\n]\n');
  }
})().catch((e) => {
  console.error('make_unicode_cases:', e.message);
  process.exit(1);
});
