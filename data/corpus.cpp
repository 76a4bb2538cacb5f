#include "data/corpus.h"

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "core/error.h"
#include "core/io.h"
#include "core/json.h"

namespace kvroute::data {

namespace fs = std::filesystem;

std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const std::string& input : inputs) {
    std::error_code ec;
    if (fs::is_directory(input, ec)) {
      std::vector<std::string> found;
      for (const auto& entry : fs::recursive_directory_iterator(input)) {
        if (entry.is_regular_file() && entry.path().filename().string().front() != '.') found.push_back(entry.path().string());
      }
      std::sort(found.begin(), found.end());
      KV_CHECK(!found.empty(), "{}: directory has no files", input);
      files.insert(files.end(), found.begin(), found.end());
    } else {
      KV_CHECK(fs::is_regular_file(input, ec), "{}: no such file or directory", input);
      files.push_back(input);
    }
  }
  return files;
}

void for_each_document(const std::vector<std::string>& inputs, const std::function<void(std::string_view)>& fn) {
  constexpr uint64_t kMaxInputFile = uint64_t{64} << 30;
  for (const std::string& path : expand_inputs(inputs)) {
    const std::string text = io::read_file(path, kMaxInputFile);  // regular files only: a FIFO is an error
    if (path.size() > 6 && path.substr(path.size() - 6) == ".jsonl") {
      std::istringstream in(text);
      std::string line;
      int64_t line_no = 0;
      while (std::getline(in, line)) {
        ++line_no;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        const json::Json j = json::parse(line, fmt::format("{}:{}", path, line_no));
        KV_CHECK(j.is_object() && j.contains("text") && j["text"].is_string(),
                 "{}:{}: expected an object with a string field \"text\"", path, line_no);
        fn(j["text"].get_ref<const std::string&>());
      }
    } else {
      fn(text);
    }
  }
}

}  // namespace kvroute::data
