// Supervised fine-tuning data: JSONL examples -> tokenized (prompt, response) pairs in sft_*.bin
// files (docs/formats.md). Each example is trained as one row: [<|endoftext|>] prompt response
// [<|endoftext|>], right-padded; only the response tokens and the closing <|endoftext|> are
// targets, so the prompt is context, never a prediction, and examples never attend to one another.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kvroute::data {

// One JSONL line: {"prompt", "response"} as is, or {"context", "question", "answer"} through the
// QA template, with context and question in a random order per example (Philox(seed, line)):
//   "Context: C\nQuestion: Q\nAnswer:" or "Question: Q\nContext: C\nAnswer:", response " A".
struct SftText {
  std::string prompt, response;
};
// Parses one line (`where` names the file and line in errors).
SftText parse_sft_line(const std::string& line, const std::string& where, uint64_t seed, uint64_t line_index);

struct SftExample {
  std::vector<int32_t> prompt, response;  // the prompt starts with <|endoftext|>, the response ends with it
};

// sft_<split>.bin: header int32[8] {magic 20261123, version 1, token bytes 2|4, examples, 0...},
// then per example uint32 prompt length, uint32 response length, the tokens.
void write_sft_file(const std::string& path, const std::vector<SftExample>& examples, int token_bytes);
// Reads and validates a whole file (sizes, counts, tokens < vocab_size when > 0); errors name it.
std::vector<SftExample> read_sft_file(const std::string& path, int64_t vocab_size = 0);

// A row of `seq_len` inputs/targets from one example: inputs = tokens[:-1], targets = tokens[1:]
// with the prompt's targets and the padding at `ignore_index`. An example longer than seq_len + 1
// loses prompt tokens from the left (after the leading <|endoftext|>); the response is never cut
// unless it alone is longer than seq_len, in which case its end is.
void sft_row(const SftExample& example, int64_t seq_len, int32_t pad_token, int32_t ignore_index, int32_t* inputs,
             int32_t* targets);

// Packed rows (data.pack): several examples per row, so a row is not mostly padding.
// The row positions an example takes: its tokens after sft_row's cut, less one (the last token is
// only a target), at most seq_len.
int64_t sft_packed_length(const SftExample& example, int64_t seq_len);
// Groups examples (by their packed lengths, each <= seq_len) into rows of at most seq_len
// positions: best fit in decreasing length order, ties by index; deterministic. Each group lists
// its examples in increasing index order.
std::vector<std::vector<int64_t>> pack_sft_rows(const std::vector<int64_t>& lengths, int64_t seq_len);
// One packed row: the examples one after another, each as sft_row would score it (prompt targets
// ignored), positions restarting at 0 and key_begin at the example's first position, so no example
// sees another; the rest of the row is padding (a sequence of its own, targets ignored).
void sft_packed_row(const std::vector<const SftExample*>& examples, int64_t seq_len, int32_t pad_token,
                    int32_t ignore_index, int32_t* inputs, int32_t* targets, int32_t* positions, int32_t* key_begin);

}  // namespace kvroute::data
