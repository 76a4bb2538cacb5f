// Corpus input: text files (one document each), directories (every regular file inside, in sorted
// order, recursively) and JSONL files (one document per line, from its text field, "text" unless
// told otherwise), each also gzip- (.gz) or zstd-compressed (.zst), as OpenWebText and FineWeb
// samples are distributed. Files are read as streams: a JSONL file, compressed or not, never has
// to fit in memory; a text file holds one document, which does.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace kvroute::data {

// A line of spaces, tabs and carriage returns only: JSONL readers skip it.
bool blank_line(std::string_view line);
// The files an input list expands to, sorted within each directory; an error naming a missing path.
std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs);
// How many documents for_each_document will visit (the non-blank lines of JSONL files, one per other
// file), without parsing or holding them.
int64_t count_documents(const std::vector<std::string>& inputs);
// Calls fn(text) for every document, in a deterministic order. Errors name the file (and line).
void for_each_document(const std::vector<std::string>& inputs, const std::function<void(std::string_view)>& fn,
                       const std::string& text_key = "text");

}  // namespace kvroute::data
