#include "train/export.h"

#include <filesystem>
#include <set>

#include "core/error.h"
#include "core/io.h"
#include "core/json.h"
#include "data/tokenizer.h"
#include "train/hf.h"

namespace kvroute::train::hf {

namespace fs = std::filesystem;
using json::Json;
using layers::Architecture;

namespace {

using io::exists;

// The keep-sets of the checkpoint's eval.json (kvroute eval), as [{plan, kept, val_loss}], or "".
std::string evaluated_keep_sets(const std::string& checkpoint_dir) {
  const std::string path = checkpoint_dir + "/eval.json";
  if (!exists(path)) return "";
  const Json results = json::parse_file(path);
  KV_CHECK(results.is_array(), "{}: expected a list of evaluated plans", path);
  Json out = Json::array();
  for (const Json& r : results) {
    KV_CHECK(r.is_object() && r.contains("kept") && r["kept"].is_array(), "{}: an entry without 'kept': {}", path,
             json::excerpt(r));
    out.push_back({{"plan", r.value("plan", "")}, {"kept", r["kept"]}, {"val_loss", r.value("val_loss", 0.0)}});
  }
  return out.dump();
}

void copy_file(const std::string& from, const std::string& to) {
  io::write_file_durable(to, io::read_file(from));
}

// Tokenizer files next to the model: a Hugging Face tokenizer.json as is; GPT-2-format files under
// the names transformers' GPT2Tokenizer reads (vocab.json, merges.txt). Returns what was written.
std::string export_tokenizer(const RunConfig& config, const std::string& out, int64_t& eos_id) {
  const std::string& dir = config.data.tokenizer;
  if (dir.empty() || !exists(dir)) return "no tokenizer (data.tokenizer '" + dir + "' not found)";
  const data::Tokenizer tok = data::Tokenizer::load(dir);
  eos_id = tok.eot_id();
  if (exists(dir + "/tokenizer.json")) {
    std::string copied = "tokenizer.json";
    copy_file(dir + "/tokenizer.json", out + "/tokenizer.json");
    for (const char* extra : {"tokenizer_config.json", "special_tokens_map.json"}) {
      if (exists(dir + "/" + extra)) {
        copy_file(dir + "/" + extra, out + "/" + extra);
        copied += std::string(", ") + extra;
      }
    }
    return "tokenizer: " + copied;
  }
  copy_file(dir + "/encoder.json", out + "/vocab.json");
  copy_file(dir + "/vocab.bpe", out + "/merges.txt");
  const std::string eot = data::kEndOfText;
  Json tc = {{"tokenizer_class", "GPT2Tokenizer"}, {"bos_token", eot},  {"eos_token", eot},
             {"unk_token", eot},                  {"add_prefix_space", false}, {"model_max_length", config.model.max_seq_len}};
  io::write_file_durable(out + "/tokenizer_config.json", tc.dump(2) + "\n");
  return "tokenizer: vocab.json, merges.txt, tokenizer_config.json (GPT-2 format)";
}

std::string shard_name(size_t i, size_t n) { return fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, n); }

}  // namespace

std::string export_checkpoint(const std::string& checkpoint_dir, const std::string& out_dir,
                              const ExportOptions& options) {
  std::error_code ec;
  KV_CHECK(fs::is_directory(checkpoint_dir, ec), "{}: no such checkpoint directory", checkpoint_dir);
  KV_CHECK(options.dtype == DType::F32 || options.dtype == DType::BF16 || options.dtype == DType::F16,
           "export: --dtype {} is not a weight dtype (f32, bf16, f16)", options.dtype);
  KV_CHECK(options.shard_bytes > 0, "export: --shard-size must be positive, got {}", options.shard_bytes);
  const RunConfig config = load_config(checkpoint_dir + "/config.yaml");
  const std::string weights_path = checkpoint_dir + "/model.safetensors";
  // Streaming: the header now, each tensor when its shard is written (one tensor in memory).
  const safetensors::Reader weights(weights_path);
  // The checkpoint must be complete for the model its config describes (every shape checked).
  const layers::ModelConfig m = config.model_config();
  for (int64_t l = 0; l < m.num_layers; ++l) {
    KV_CHECK(m.layer_has_kv_weights(l),
             "{}: layer {} has no K/V projections (router.policy {} with group_size {}): {} cannot represent a "
             "model whose layers share K/V weights; export a model trained with router.policy stochastic, "
             "random_fixed_groups or none", checkpoint_dir, l, layers::policy_name(config.router.config.policy),
             config.router.config.group_size, architecture_class_name(m.architecture));
  }
  {
    // Every parameter of the model, with its shape, and nothing else (checked on the header, without
    // building the model); the values are checked finite as they are converted below.
    std::set<std::string> stored;
    for (const safetensors::Entry& e : weights.entries()) stored.insert(e.name);
    for (const auto& [name, shape] : m.parameter_shapes()) {
      const safetensors::Entry* e = weights.find(name);
      KV_CHECK(e != nullptr, "{}: missing parameter '{}' {}", weights_path, name, shape);
      KV_CHECK(e->shape == shape, "{}: parameter '{}' has shape {} but the model expects {}", weights_path, name,
               e->shape, shape);
      KV_CHECK(e->dtype == DType::F32 || e->dtype == DType::BF16,
               "{}: parameter '{}' is {}, expected floating-point weights (F32 or BF16)", weights_path, name, e->dtype);
      stored.erase(name);
    }
    KV_CHECK(stored.empty(), "{}: unknown parameter '{}' (not in this model's configuration)", weights_path,
             stored.empty() ? "" : *stored.begin());
  }

  KV_CHECK(!out_dir.empty() && fs::path(out_dir).filename() != "." && fs::path(out_dir).filename() != "..",
           "export: --out '{}' is not a directory name", out_dir);
  const std::string out_path = fs::path(out_dir).lexically_normal().string();
  const std::string checkpoint_path = fs::path(checkpoint_dir).lexically_normal().string();
  KV_CHECK(out_path != checkpoint_path, "export: --out {} is the checkpoint itself", out_dir);
  KV_CHECK(options.overwrite || !exists(out_dir), "{}: already exists (pass --overwrite to replace it)", out_dir);
  io::check_output_directory(out_path);  // a file, FIFO, device or link is never replaced
  const std::string parent = io::parent_dir(out_path);
  KV_CHECK(fs::is_directory(parent, ec), "export: the parent directory {} of --out does not exist", parent);
  // A private staging directory next to OUT, swapped into place whole (io::StagedDirectory).
  io::StagedDirectory staged(out_path);
  const std::string& tmp = staged.path();
  std::string summary;
  {
    // Shards: tensors in checkpoint (Hugging Face) order, a new file when the next would overflow.
    std::vector<std::vector<safetensors::Entry>> shards(1);
    std::vector<int64_t> shard_sizes(1, 0);
    int64_t total = 0;
    for (const safetensors::Entry& e : weights.entries()) {
      const int64_t bytes = shape_numel(e.shape) * static_cast<int64_t>(dtype_size(options.dtype));
      if (!shards.back().empty() && shard_sizes.back() + bytes > options.shard_bytes) {
        shards.emplace_back();
        shard_sizes.push_back(0);
      }
      shards.back().push_back(safetensors::Entry{e.name, options.dtype, e.shape});
      shard_sizes.back() += bytes;
      total += bytes;
    }
    // Each shard written tensor by tensor: read, checked finite, converted, written, dropped.
    auto write_shard = [&](const std::string& path, const std::vector<safetensors::Entry>& entries) {
      safetensors::Writer writer(path, entries, {{"format", "pt"}});
      for (const safetensors::Entry& e : entries) {
        const Tensor t = weights.read(*weights.find(e.name));
        const int64_t bad = first_nonfinite(t);
        KV_CHECK(bad < 0, "{}: parameter '{}' holds a non-finite value (NaN or inf) at element {}", weights_path,
                 e.name, bad);
        writer.write(t.dtype() == options.dtype ? t : t.to(options.dtype));
      }
      writer.close();
    };
    if (shards.size() == 1) {
      write_shard(tmp + "/model.safetensors", shards[0]);
    } else {
      Json map = Json::object();
      for (size_t i = 0; i < shards.size(); ++i) {
        write_shard(tmp + "/" + shard_name(i, shards.size()), shards[i]);
        for (const safetensors::Entry& e : shards[i]) map[e.name] = shard_name(i, shards.size());
      }
      Json index = {{"metadata", {{"total_size", total}}}, {"weight_map", map}};
      io::write_file_staged(tmp + "/model.safetensors.index.json", index.dump(2) + "\n");
    }
    int64_t eos = -1;
    const std::string tokenizer_note = export_tokenizer(config, tmp, eos);
    io::write_file_staged(tmp + "/config.json", config_json(config, options.dtype, evaluated_keep_sets(checkpoint_dir)));
    Json gen = {{"do_sample", false}};
    if (eos >= 0) gen = {{"bos_token_id", eos}, {"eos_token_id", eos}, {"do_sample", false}};
    io::write_file_staged(tmp + "/generation_config.json", gen.dump(2) + "\n");
    summary = fmt::format("exported {} as {} ({}, {} tensors, {:.1f} MB in {} file{}; {}) to {}", checkpoint_dir,
                          architecture_class_name(m.architecture), dtype_name(options.dtype), weights.entries().size(),
                          static_cast<double>(total) / 1e6, shards.size(), shards.size() == 1 ? "" : "s",
                          tokenizer_note, out_dir);
  }
  staged.publish();
  return summary;
}

}  // namespace kvroute::train::hf
