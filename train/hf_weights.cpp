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

// A shard file name from an index: one plain component ending in .safetensors.
void check_shard_name(const std::string& name, const std::string& index_path, const std::string& tensor) {
  const bool plain = !name.empty() && name.size() <= 255 && name.find('/') == std::string::npos &&
                     name.find('\0') == std::string::npos && name != "." && name != ".." &&
                     name.size() > 12 && name.compare(name.size() - 12, 12, ".safetensors") == 0;
  KV_CHECK(plain, "{}: weight_map: '{}' maps to '{}', which is not a .safetensors file name in the model directory",
           index_path, kvroute::excerpt(tensor, 120), kvroute::excerpt(name, 120));
}

}  // namespace

void WeightSource::add_file(const std::string& path, const std::function<bool(const std::string&)>& keep) {
  files_.push_back(std::make_unique<safetensors::Reader>(path));
  const safetensors::Reader& reader = *files_.back();
  for (const safetensors::Entry& e : reader.entries()) {
    if (!keep(e.name)) continue;
    KV_CHECK(e.dtype == DType::F32 || e.dtype == DType::BF16 || e.dtype == DType::F16,
             "{}: tensor '{}' is {}, expected floating-point weights (F32, BF16 or F16)", path, e.name, e.dtype);
    KV_CHECK(where_.emplace(e.name, std::make_pair(files_.size() - 1, &e)).second,
             "{}: tensor '{}' appears in more than one file", path, e.name);
    names_.push_back(e.name);
  }
}

Tensor WeightSource::read(const std::string& name) const {
  auto it = where_.find(name);
  KV_CHECK(it != where_.end(), "{}: no tensor named '{}'", origin_, name);
  Tensor t = files_[it->second.first]->read(*it->second.second);
  return t.dtype() == DType::F16 ? t.to(DType::F32) : t;
}

void WeightSource::load_into(layers::Transformer& model) const {
  model.load_parameters(names_, [this](const std::string& name) { return read(name); }, origin_);
}

WeightSource WeightSource::file(const std::string& path) {
  WeightSource source;
  source.origin_ = path;
  source.add_file(path, [](const std::string&) { return true; });
  return source;
}

WeightSource WeightSource::model_dir(const std::string& dir, bool tie_embeddings) {
  WeightSource source;
  source.origin_ = dir;
  std::set<std::string> seen;  // every stored name, skipped ones included, appears once
  auto keep = [&](const std::string& file) {
    return [&, file](const std::string& name) {
      KV_CHECK(seen.insert(name).second, "{}: tensor '{}' appears in more than one file", file, name);
      if (name.ends_with("rotary_emb.inv_freq")) return false;
      return !(tie_embeddings && name == "lm_head.weight");  // transformers ties it to embed_tokens
    };
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
      source.add_file(shard, keep(shard));
      for (const safetensors::Entry& e : source.files_.back()->entries()) {
        auto it = file_of.find(e.name);
        KV_CHECK(it != file_of.end() && it->second == f, "{}: tensor '{}' is not listed for this file in {}", shard,
                 e.name, index_path);
        file_of.erase(it);
      }
    }
    KV_CHECK(file_of.empty(), "{}: tensor '{}' is listed in weight_map but missing from {}", index_path,
             file_of.empty() ? "" : file_of.begin()->first, file_of.empty() ? "" : file_of.begin()->second);
  } else {
    const std::string single = dir + "/model.safetensors";
    KV_CHECK(exists(single), "{}: no model.safetensors or model.safetensors.index.json", dir);
    source.add_file(single, keep(single));
  }
  return source;
}

safetensors::NamedTensors read_weights(const std::string& dir, bool tie_embeddings) {
  const WeightSource source = WeightSource::model_dir(dir, tie_embeddings);
  safetensors::NamedTensors out;
  for (const std::string& name : source.names()) out.emplace_back(name, source.read(name).to(DType::F32));
  return out;
}

}  // namespace kvroute::train::hf
