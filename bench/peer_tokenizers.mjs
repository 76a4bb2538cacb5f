// The prepare benchmark's peers: Hugging Face's Rust `tokenizers` (npm @anush008/tokenizers, a
// NAPI binding) and js-tiktoken, each reading the same JSONL corpus and encoding every document
// with GPT-2's vocabulary on one thread. Prints MB/s of text and the token count (which must match
// kvroute's: the same vocabulary and pre-tokenizer).
// Usage: node bench/peer_tokenizers.mjs hf|tiktoken CORPUS.jsonl [TOKENIZER_JSON]
import fs from "node:fs";
import readline from "node:readline";
import { createRequire } from "node:module";

const require = createRequire(process.env.KVROUTE_PEER_MODULES + "/");
const [which, corpus, tokenizerJson] = process.argv.slice(2);
let encodeBatch;
if (which === "hf") {
  const { Tokenizer } = require("@anush008/tokenizers");
  const tok = Tokenizer.fromFile(tokenizerJson);
  encodeBatch = async (texts) => {
    const encodings = await tok.encodeBatch(texts, false);
    return encodings.reduce((n, e) => n + e.getIds().length, 0);
  };
} else {
  const { Tiktoken } = require("js-tiktoken/lite");
  const gpt2 = require("js-tiktoken/ranks/gpt2");
  const enc = new Tiktoken(gpt2.default ?? gpt2);
  encodeBatch = async (texts) => texts.reduce((n, t) => n + enc.encode(t).length, 0);
}
const start = process.hrtime.bigint();
let bytes = 0, tokens = 0, batch = [];
const lines = readline.createInterface({ input: fs.createReadStream(corpus), crlfDelay: Infinity });
for await (const line of lines) {
  if (!line.trim()) continue;
  const text = JSON.parse(line).text;
  bytes += Buffer.byteLength(text);
  batch.push(text);
  if (batch.length === 256) { tokens += await encodeBatch(batch); batch = []; }
}
if (batch.length) tokens += await encodeBatch(batch);
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
console.log(`${which}: ${(bytes / 1e6).toFixed(0)} MB, ${tokens} tokens, ${seconds.toFixed(1)} s, ${(bytes / 1e6 / seconds).toFixed(2)} MB/s`);
