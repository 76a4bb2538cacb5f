#include "data/corpus.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"

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
  for (const std::string& path : expand_inputs(inputs)) {
    std::ifstream in(path, std::ios::binary);
    KV_CHECK(in.good(), "{}: cannot open", path);
    if (path.size() > 6 && path.substr(path.size() - 6) == ".jsonl") {
      std::string line;
      int64_t line_no = 0;
      while (std::getline(in, line)) {
        ++line_no;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        nlohmann::json j;
        try {
          j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception& e) {
          KV_FAIL("{}:{}: invalid JSON: {}", path, line_no, e.what());
        }
        KV_CHECK(j.is_object() && j.contains("text") && j["text"].is_string(),
                 "{}:{}: expected an object with a string field \"text\"", path, line_no);
        fn(j["text"].get_ref<const std::string&>());
      }
    } else {
      std::stringstream buffer;
      buffer << in.rdbuf();
      fn(buffer.str());
    }
  }
}

}  // namespace kvroute::data
