#include "core/safetensors.h"

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

namespace kvroute::safetensors {

namespace {

const char* dtype_tag(DType dtype) {
  switch (dtype) {
    case DType::F32: return "F32";
    case DType::BF16: return "BF16";
    case DType::I32: return "I32";
    case DType::U16: return "U16";
    case DType::U32: return "U32";
  }
  return "?";
}

bool parse_dtype_tag(const std::string& tag, DType& out) {
  for (DType d : {DType::F32, DType::BF16, DType::I32, DType::U16, DType::U32}) {
    if (tag == dtype_tag(d)) {
      out = d;
      return true;
    }
  }
  return false;
}

}  // namespace


const Tensor& File::get(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return t;
  KV_FAIL("{}: no tensor named '{}'", path, name);
}

void save(const std::string& path, const NamedTensors& tensors, const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> names;
  uint64_t offset = 0;
  std::vector<Tensor> packed;
  for (const auto& [name, tensor] : tensors) {
    KV_CHECK(names.insert(name).second, "{}: duplicate tensor name '{}'", path, name);
    KV_CHECK(tensor.defined(), "{}: tensor '{}' is undefined", path, name);
    Tensor host = tensor.to(Device::cpu()).contiguous();
    header[name] = {{"dtype", dtype_tag(host.dtype())},
                    {"shape", host.shape()},
                    {"data_offsets", {offset, offset + host.nbytes()}}};
    offset += host.nbytes();
    packed.push_back(std::move(host));
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // align the data section to 8 bytes, as the reference writer does
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  KV_CHECK(out.good(), "{}: cannot open for writing: {}", path, std::strerror(errno));
  uint64_t header_len = json.size();
  out.write(reinterpret_cast<const char*>(&header_len), 8);
  out.write(json.data(), static_cast<std::streamsize>(json.size()));
  for (const Tensor& t : packed) out.write(static_cast<const char*>(t.raw_data()), static_cast<std::streamsize>(t.nbytes()));
  out.close();
  KV_CHECK(!out.fail(), "{}: write failed (disk full?): {}", path, std::strerror(errno));
}

File load(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  KV_CHECK(in.good(), "{}: cannot open: {}", path, std::strerror(errno));
  const uint64_t file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  KV_CHECK(file_size >= 8, "{}: not a safetensors file ({} bytes, shorter than the 8-byte header length)", path,
           file_size);
  uint64_t header_len = 0;
  in.read(reinterpret_cast<char*>(&header_len), 8);
  KV_CHECK(header_len <= file_size - 8 && header_len <= (100u << 20),
           "{}: corrupt safetensors header length {} (file is {} bytes)", path, header_len, file_size);
  std::string json(header_len, '\0');
  in.read(json.data(), static_cast<std::streamsize>(header_len));
  KV_CHECK(in.good(), "{}: truncated safetensors header", path);
  nlohmann::ordered_json header;
  try {
    header = nlohmann::ordered_json::parse(json);
  } catch (const nlohmann::json::exception& e) {
    KV_FAIL("{}: corrupt safetensors header (invalid JSON: {})", path, e.what());
  }
  KV_CHECK(header.is_object(), "{}: corrupt safetensors header (not a JSON object)", path);

  File file;
  file.path = path;
  const uint64_t data_start = 8 + header_len, data_size = file_size - data_start;
  std::vector<char> data(static_cast<size_t>(data_size));
  in.read(data.data(), static_cast<std::streamsize>(data_size));
  KV_CHECK(in.good() || data_size == 0, "{}: truncated data section", path);
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      KV_CHECK(entry.is_object(), "{}: __metadata__ must be an object", path);
      for (const auto& [k, v] : entry.items()) {
        KV_CHECK(v.is_string(), "{}: __metadata__.{} must be a string", path, k);
        file.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    KV_CHECK(entry.is_object() && entry.contains("dtype") && entry.contains("shape") && entry.contains("data_offsets"),
             "{}: tensor '{}' lacks dtype, shape or data_offsets", path, name);
    DType dtype;
    KV_CHECK(entry["dtype"].is_string() && parse_dtype_tag(entry["dtype"].get<std::string>(), dtype),
             "{}: tensor '{}' has unsupported dtype {} (kvroute reads F32, BF16, I32, U16, U32)", path, name,
             entry["dtype"].dump());
    Shape shape;
    KV_CHECK(entry["shape"].is_array(), "{}: tensor '{}' shape is not an array", path, name);
    for (const auto& d : entry["shape"]) {
      KV_CHECK(d.is_number_unsigned(), "{}: tensor '{}' has a bad dimension {}", path, name, d.dump());
      shape.push_back(d.get<int64_t>());
    }
    const auto& offsets = entry["data_offsets"];
    KV_CHECK(offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() &&
                 offsets[1].is_number_unsigned(),
             "{}: tensor '{}' has bad data_offsets {}", path, name, offsets.dump());
    const uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
    KV_CHECK(begin <= end && end <= data_size, "{}: tensor '{}' data [{}, {}) lies outside the {}-byte data section",
             path, name, begin, end, data_size);
    Tensor t = Tensor::empty(shape, dtype);
    KV_CHECK(end - begin == t.nbytes(), "{}: tensor '{}' {}{} needs {} bytes but its data_offsets span {}", path, name,
             dtype_name(dtype), shape, t.nbytes(), end - begin);
    if (t.nbytes() > 0) std::memcpy(t.raw_data(), data.data() + begin, t.nbytes());
    file.tensors.emplace_back(name, std::move(t));
  }
  return file;
}

}  // namespace kvroute::safetensors
