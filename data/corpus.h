// Corpus input: text files (one document each), directories (every regular file inside, in sorted
// order, recursively) and JSONL files (one document per line, from its "text" field).
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace kvroute::data {

// The files an input list expands to, sorted within each directory; an error naming a missing path.
std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs);
// Calls fn(text) for every document, in a deterministic order. Errors name the file (and line).
void for_each_document(const std::vector<std::string>& inputs, const std::function<void(std::string_view)>& fn);

}  // namespace kvroute::data
