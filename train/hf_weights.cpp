#include "train/hf.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "core/error.h"
#include "core/io.h"
#include "core/json.h"
#include "core/text.h"

namespace kvroute::train::hf {

namespace fs = std::filesystem;
using json::Json;
using layers::Architecture;

namespace {

using io::exists;

// The tensor as F32 (a host copy); F16/BF16 convert exactly.
Tensor to_f32(const Tensor& t, const std::string& file, const std::string& name) {
  KV_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::BF16 || t.dtype() == DType::F16,
           "{}: tensor '{}' is {}, expected floating-point weights (F32, BF16 or F16)", file, name, t.dtype());
  return t.dtype() == DType::F32 ? t : t.to(DType::F32);
}

// A shard file name from an index: one plain component ending in .safetensors.
void check_shard_name(const std::string& name, const std::string& index_path, const std::string& tensor) {
  const bool plain = !name.empty() && name.size() <= 255 && name.find('/') == std::string::npos &&
                     name.find('\0') == std::string::npos && name != "." && name != ".." &&
                     name.size() > 12 && name.compare(name.size() - 12, 12, ".safetensors") == 0;
  KV_CHECK(plain, "{}: weight_map: '{}' maps to '{}', which is not a .safetensors file name in the model directory",
           index_path, kvroute::excerpt(tensor, 120), kvroute::excerpt(name, 120));
}

}  // namespace

safetensors::NamedTensors read_weights(const std::string& dir, bool tie_embeddings) {
  safetensors::NamedTensors out;
  std::set<std::string> names;
  auto take = [&](const std::string& file, const std::string& name, const Tensor& t) {
    if (name.ends_with("rotary_emb.inv_freq")) return;
    KV_CHECK(names.insert(name).second, "{}: tensor '{}' appears in more than one file", file, name);
    if (tie_embeddings && name == "lm_head.weight") return;  // transformers ties it to embed_tokens
    out.emplace_back(name, to_f32(t, file, name));
  };
  const std::string index_path = dir + "/model.safetensors.index.json";
  if (exists(index_path)) {
    const Json index = json::parse_file(index_path);
    KV_CHECK(index.is_object(), "{}: expected a JSON object", index_path);
    const Json& map = json::get_object(index, "weight_map", index_path);
    KV_CHECK(!map.empty(), "{}: weight_map is empty", index_path);
    std::vector<std::string> files;  // in first-mention order
    std::map<std::string, std::string> file_of;
    for (const auto& [name, file] : map.items()) {
      KV_CHECK(file.is_string(), "{}: weight_map: '{}' maps to {}, expected a file name", index_path,
               kvroute::excerpt(name, 120), json::excerpt(file));
      const std::string f = file.get<std::string>();
      check_shard_name(f, index_path, name);
      if (std::find(files.begin(), files.end(), f) == files.end()) files.push_back(f);
      file_of[name] = f;
    }
    for (const std::string& f : files) {
      KV_CHECK(exists(dir + "/" + f), "{}: weight_map names '{}', which does not exist", index_path, f);
    }
    for (const std::string& f : files) {
      const std::string shard = dir + "/" + f;
      safetensors::File file = safetensors::load(shard);
      for (const auto& [name, t] : file.tensors) {
        auto it = file_of.find(name);
        KV_CHECK(it != file_of.end() && it->second == f, "{}: tensor '{}' is not listed for this file in {}", shard,
                 name, index_path);
        take(shard, name, t);
        file_of.erase(it);
      }
    }
    KV_CHECK(file_of.empty(), "{}: tensor '{}' is listed in weight_map but missing from {}", index_path,
             file_of.empty() ? "" : file_of.begin()->first, file_of.empty() ? "" : file_of.begin()->second);
  } else {
    const std::string single = dir + "/model.safetensors";
    KV_CHECK(exists(single), "{}: no model.safetensors or model.safetensors.index.json", dir);
    safetensors::File file = safetensors::load(single);
    for (const auto& [name, t] : file.tensors) take(single, name, t);
  }
  return out;
}

}  // namespace kvroute::train::hf
