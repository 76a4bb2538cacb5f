#include "core/text.h"
#include "core/safetensors.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include "core/io.h"
#include "core/json.h"

namespace kvroute::safetensors {

namespace {

constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;  // the reference implementation's limit
constexpr size_t kMaxRank = 8;

const char* dtype_tag(DType dtype) {
  switch (dtype) {
    case DType::F32: return "F32";
    case DType::BF16: return "BF16";
    case DType::I32: return "I32";
    case DType::U16: return "U16";
    case DType::U32: return "U32";
    case DType::F16: return "F16";
  }
  return "?";
}

bool parse_dtype_tag(const std::string& tag, DType& out) {
  for (DType d : {DType::F32, DType::BF16, DType::I32, DType::U16, DType::U32, DType::F16}) {
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

Writer::Writer(const std::string& path, std::vector<Entry> entries, const std::map<std::string, std::string>& metadata)
    : path_(path), entries_(std::move(entries)) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (Entry& e : entries_) {
    KV_CHECK(names.insert(e.name).second, "{}: duplicate tensor name '{}'", path, e.name);
    e.begin = offset;
    e.nbytes = static_cast<uint64_t>(shape_numel(e.shape)) * dtype_size(e.dtype);
    header[e.name] = {{"dtype", dtype_tag(e.dtype)}, {"shape", e.shape}, {"data_offsets", {offset, offset + e.nbytes}}};
    offset += e.nbytes;
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // align the data section to 8 bytes, as the reference writer does
  out_ = io::OutputFile(path, io::OutputFile::Mode::Truncate);
  const uint64_t header_len = json.size();
  out_.write(&header_len, 8);
  out_.write(json);
}

void Writer::write(const Tensor& tensor) {
  KV_CHECK(next_ < entries_.size(), "{}: more tensors written than the header lists ({})", path_, entries_.size());
  const Entry& e = entries_[next_];
  KV_CHECK(tensor.defined(), "{}: tensor '{}' is undefined", path_, e.name);
  KV_CHECK(tensor.dtype() == e.dtype && tensor.shape() == e.shape, "{}: tensor '{}' is {}{} but the header says {}{}",
           path_, e.name, tensor.dtype(), tensor.shape(), e.dtype, e.shape);
  const Tensor host = tensor.to(Device::cpu()).contiguous();
  out_.write(host.raw_data(), host.nbytes());
  ++next_;
}

void Writer::close() {
  KV_CHECK(next_ == entries_.size(), "{}: {} of the header's {} tensors were written", path_, next_, entries_.size());
  out_.close();  // fsynced: the caller renames the directory holding it only once it is durable
}

void save(const std::string& path, const NamedTensors& tensors, const std::map<std::string, std::string>& metadata) {
  std::vector<Entry> entries;
  for (const auto& [name, tensor] : tensors) {
    KV_CHECK(tensor.defined(), "{}: tensor '{}' is undefined", path, name);
    entries.push_back(Entry{name, tensor.dtype(), tensor.shape()});
  }
  Writer writer(path, std::move(entries), metadata);
  for (const auto& [name, tensor] : tensors) writer.write(tensor);
  writer.close();
}

Reader::Reader(const std::string& path) : path_(path) {
  // A regular file only (a FIFO would block); the header is read, the tensors stay on disk.
  uint64_t file_size = 0;
  fd_ = io::open_regular(path, file_size);
  try {
    KV_CHECK(file_size >= 8, "{}: not a safetensors file ({} bytes, shorter than the 8-byte header length)", path,
             file_size);
    uint64_t header_len = 0;
    read_exactly(0, &header_len, 8);
    KV_CHECK(header_len <= file_size - 8 && header_len <= kMaxHeaderBytes,
             "{}: corrupt safetensors header length {} (file is {} bytes, limit {} bytes)", path, header_len, file_size,
             kMaxHeaderBytes);
    std::string header_bytes(static_cast<size_t>(header_len), '\0');
    read_exactly(8, header_bytes.data(), header_len);
    parse_header(header_bytes, file_size);
  } catch (...) {
    ::close(fd_);
    throw;
  }
}

Reader::~Reader() {
  if (fd_ >= 0) ::close(fd_);
}

void Reader::read_exactly(uint64_t offset, void* out, uint64_t nbytes) const {
  auto* p = static_cast<char*>(out);
  uint64_t got = 0;
  while (got < nbytes) {
    const ssize_t n = ::pread(fd_, p + got, static_cast<size_t>(std::min<uint64_t>(nbytes - got, uint64_t{1} << 30)),
                              static_cast<off_t>(offset + got));
    if (n < 0 && errno == EINTR) continue;
    KV_CHECK(n >= 0, "{}: read failed: {}", path_, std::strerror(errno));
    KV_CHECK(n > 0, "{}: the file ended at byte {} while reading it (truncated while being read?)", path_,
             offset + got);
    got += static_cast<uint64_t>(n);
  }
}

void Reader::parse_header(const std::string& bytes, uint64_t file_size) {
  const std::string& path = path_;
  const uint64_t header_len = bytes.size();
  // Three levels: {name: {"shape": [...]}}; anything deeper is not a safetensors header.
  const json::Json header = json::parse(bytes, fmt::format("{}: safetensors header", path), 4);
  KV_CHECK(header.is_object(), "{}: corrupt safetensors header (not a JSON object)", path);

  data_start_ = 8 + header_len;
  const uint64_t data_size = file_size - data_start_;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [begin, end) of every tensor, to check coverage
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      KV_CHECK(entry.is_object(), "{}: __metadata__ must be an object of strings", path);
      for (const auto& [k, v] : entry.items()) {
        KV_CHECK(v.is_string(), "{}: __metadata__.{} must be a string, got {}", path, k, json::excerpt(v));
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string what = fmt::format("{}: tensor '{}'", path, kvroute::excerpt(name, 200));
    KV_CHECK(entry.is_object() && entry.size() == 3 && entry.contains("dtype") && entry.contains("shape") &&
                 entry.contains("data_offsets"),
             "{} must be an object of exactly dtype, shape and data_offsets, got {}", what, json::excerpt(entry));
    const json::Json& tag = entry["dtype"];
    DType dtype;
    KV_CHECK(tag.is_string() && parse_dtype_tag(tag.get<std::string>(), dtype),
             "{} has unsupported dtype {} (kvroute reads F32, BF16, F16, I32, U16, U32)", what, json::excerpt(tag));
    const json::Json& dims = entry["shape"];
    KV_CHECK(dims.is_array() && dims.size() <= kMaxRank, "{}: shape must be an array of at most {} sizes, got {}", what,
             kMaxRank, json::excerpt(dims));
    Shape shape;
    uint64_t numel = 1;
    for (const auto& d : dims) {
      KV_CHECK(d.is_number_unsigned() && d.get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX),
               "{} has a bad dimension {} in shape {}", what, json::excerpt(d), json::excerpt(dims));
      const uint64_t n = d.get<uint64_t>();
      KV_CHECK(!__builtin_mul_overflow(numel, n, &numel) && numel <= data_size,
               "{}: shape {} has more elements than the {}-byte data section holds", what, json::excerpt(dims), data_size);
      shape.push_back(static_cast<int64_t>(n));
    }
    const uint64_t nbytes = numel * dtype_size(dtype);
    const json::Json& offsets = entry["data_offsets"];
    KV_CHECK(offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() &&
                 offsets[1].is_number_unsigned(),
             "{} has bad data_offsets {} (expected [begin, end])", what, json::excerpt(offsets));
    const uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
    KV_CHECK(begin <= end && end <= data_size, "{} data [{}, {}) lies outside the {}-byte data section", what, begin,
             end, data_size);
    KV_CHECK(end - begin == nbytes, "{} {}{} needs {} bytes but its data_offsets span {}", what, dtype_name(dtype),
             json::excerpt(dims), nbytes, end - begin);
    ranges.emplace_back(begin, end);
    index_[name] = entries_.size();
    entries_.push_back(Entry{name, dtype, std::move(shape), begin, nbytes});
  }
  // As the reference implementation demands: the tensors tile the data section exactly, with no
  // overlap, gap or trailing bytes (a shifted header or offset shows up here).
  std::sort(ranges.begin(), ranges.end());
  uint64_t covered = 0;
  for (const auto& [begin, end] : ranges) {
    KV_CHECK(begin == covered, "{}: corrupt safetensors data offsets: {} at byte {} of the data section", path,
             begin < covered ? "tensors overlap" : "a gap", begin < covered ? begin : covered);
    covered = end;
  }
  KV_CHECK(covered == data_size, "{}: corrupt safetensors file: the tensors cover {} bytes but the data section has {}",
           path, covered, data_size);
}

const Entry* Reader::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

Tensor Reader::read(const Entry& entry) const {
  Tensor t = Tensor::empty(entry.shape, entry.dtype);
  if (entry.nbytes > 0) read_exactly(data_start_ + entry.begin, t.raw_data(), entry.nbytes);
  return t;
}

File load(const std::string& path) {
  Reader reader(path);
  File file;
  file.path = path;
  file.metadata = reader.metadata();
  for (const Entry& e : reader.entries()) file.tensors.emplace_back(e.name, reader.read(e));
  return file;
}

const Tensor& File::get(const std::string& name, DType dtype) const {
  const Tensor& t = get(name);
  KV_CHECK(t.dtype() == dtype, "{}: tensor '{}' is {}, expected {}", path, name, t.dtype(), dtype);
  return t;
}

}  // namespace kvroute::safetensors
