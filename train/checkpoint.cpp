#include "train/checkpoint.h"

#include <algorithm>
#include <filesystem>

#include "core/text.h"
#include "core/error.h"
#include "core/io.h"
#include "core/json.h"
#include "core/safetensors.h"
#include "train/hf.h"

namespace kvroute::train {

namespace fs = std::filesystem;

namespace {

// step_NNNNNNNN (at least 8 digits): a finished checkpoint; anything else (staging directories,
// *.deleting.tmp, stray files) is not one.
bool parse_step_name(const std::string& name, int64_t& step) {
  if (name.size() < 13 || name.size() > 23 || name.rfind("step_", 0) != 0) return false;
  step = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
    step = step * 10 + (name[i] - '0');
  }
  return true;
}

std::vector<std::string> complete_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return {};
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    int64_t step = 0;
    if (entry.is_directory(ec) && parse_step_name(entry.path().filename().string(), step)) {
      found.emplace_back(step, entry.path().string());
    }
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& [step, path] : found) out.push_back(std::move(path));
  return out;
}

// Host copies of the tensors a checkpoint holds, each checked finite: a NaN/inf in the weights or
// the optimizer state is never written (keep-last-K would then delete the good checkpoints).
safetensors::NamedTensors finite_host_copies(const safetensors::NamedTensors& tensors, const std::string& final_dir) {
  safetensors::NamedTensors out;
  for (const auto& [name, t] : tensors) {
    Tensor host = t.to(Device::cpu()).contiguous();
    const int64_t bad = first_nonfinite(host);
    KV_CHECK(bad < 0, "{}: not written: '{}' holds a non-finite value (NaN or inf) at element {}", final_dir, name, bad);
    out.emplace_back(name, std::move(host));
  }
  return out;
}

}  // namespace

std::string checkpoint_path(const std::string& checkpoints_dir, int64_t step) {
  return fmt::format("{}/step_{:08d}", checkpoints_dir, step);
}

std::string save_checkpoint(const std::string& checkpoints_dir, const TrainState& state, const layers::Transformer& model,
                            const Tensor& adam_m, const Tensor& adam_v, const RunConfig& config, int64_t keep,
                            const Tensor* gathered_masters) {
  const std::string final_dir = checkpoint_path(checkpoints_dir, state.step);
  safetensors::NamedTensors weights;
  for (const auto& [name, master] : gathered_masters != nullptr ? model.views_of(*gathered_masters)
                                                                 : model.master_parameters()) {
    weights.emplace_back(name, master);  // f32, any device
  }
  weights = finite_host_copies(weights, final_dir);
  const safetensors::NamedTensors optimizer = finite_host_copies({{"exp_avg", adam_m}, {"exp_avg_sq", adam_v}}, final_dir);

  // Written into a private staging directory and swapped into place (io::StagedDirectory): a
  // crash, a kill -9, a full disk or a power loss leaves the previous checkpoints intact (a
  // checkpoint of the same step, after a signal right after an interval checkpoint, included) and
  // at most a staging directory that nothing reads.
  std::error_code ec;
  fs::create_directories(checkpoints_dir, ec);
  KV_CHECK(!ec, "{}: cannot create the checkpoint directory: {}", checkpoints_dir, ec.message());
  {
    io::StagedDirectory staged(final_dir);
    const std::string& tmp = staged.path();
    safetensors::save(tmp + "/model.safetensors", weights, {{"format", "pt"}});
    safetensors::save(tmp + "/optimizer.safetensors", optimizer, {{"optimizer", "adamw"}});
    nlohmann::ordered_json s = {{"step", state.step},
                                {"tokens_seen", state.tokens_seen},
                                {"data_cursor", {{"epoch", state.cursor.epoch}, {"position", state.cursor.position}}},
                                {"world_size", state.world_size},
                                {"global_batch_tokens", state.global_batch_tokens},
                                {"fingerprint", state.fingerprint}};
    io::write_file_staged(tmp + "/state.json", s.dump(2) + "\n");
    io::write_file_staged(tmp + "/config.yaml", config.to_yaml());
    io::write_file_staged(tmp + "/config.json", hf::config_json(config, DType::F32));
    staged.publish();
  }
  io::fsync_path(io::parent_dir(checkpoints_dir));
  // Pruning renames a checkpoint out of the step_N namespace before deleting it, so a kill in the
  // middle of a deletion never leaves a half-deleted directory under a checkpoint's name.
  std::vector<std::string> all = complete_checkpoints(checkpoints_dir);
  for (size_t i = 0; i + static_cast<size_t>(keep) < all.size(); ++i) {
    const std::string doomed = all[i] + ".deleting.tmp";
    fs::rename(all[i], doomed, ec);
    if (!ec) fs::remove_all(doomed, ec);
  }
  // Leftovers of killed writes or deletions (*.tmp) take a checkpoint's space each: this process is
  // the run's only writer, so any that remain now are stale.
  for (const auto& entry : fs::directory_iterator(checkpoints_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if ((name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0) || io::is_staging_name(name))
      fs::remove_all(entry.path(), ec);
  }
  io::fsync_path(checkpoints_dir);
  return final_dir;
}

std::string latest_checkpoint(const std::string& checkpoints_dir) {
  std::error_code ec;
  KV_CHECK(!fs::exists(checkpoints_dir, ec) || fs::is_directory(checkpoints_dir, ec),
           "{}: exists but is not a directory of checkpoints", checkpoints_dir);
  std::vector<std::string> all = complete_checkpoints(checkpoints_dir);
  return all.empty() ? std::string() : all.back();
}

TrainState read_train_state(const std::string& dir) {
  const std::string path = dir + "/state.json";
  const json::Json s = json::parse_file(path);
  KV_CHECK(s.is_object(), "{}: corrupt checkpoint state: expected a JSON object", path);
  TrainState state;
  state.step = json::get_int(s, "step", path, 0, kMaxSteps);
  state.tokens_seen = json::get_int(s, "tokens_seen", path, 0, INT64_MAX);
  const json::Json& cursor = json::get_object(s, "data_cursor", path);
  state.cursor.epoch = json::get_int(cursor, "epoch", path + ": data_cursor", 0, INT32_MAX);
  state.cursor.position = json::get_int(cursor, "position", path + ": data_cursor", 0, INT64_MAX / 2);
  state.world_size = static_cast<int>(json::get_int(s, "world_size", path, 1, 1 << 20));
  state.global_batch_tokens = json::get_int(s, "global_batch_tokens", path, 1, INT64_MAX / 2);
  state.fingerprint = json::get_string(s, "fingerprint", path);
  // A directory named step_N holds step N: anything else is a tampered or misplaced state.
  int64_t named = 0;
  if (parse_step_name(fs::path(dir).lexically_normal().filename().string(), named) ||
      parse_step_name(fs::path(dir).lexically_normal().parent_path().filename().string(), named)) {
    KV_CHECK(named == state.step, "{}: step {} does not match the checkpoint directory's step {}", path, state.step,
             named);
  }
  return state;
}

TrainState load_checkpoint(const std::string& dir, layers::Transformer& model, Tensor& adam_m, Tensor& adam_v,
                           const RunConfig& config, int64_t moments_offset) {
  std::error_code ec;
  KV_CHECK(fs::is_directory(dir, ec), "{}: no such checkpoint directory", dir);
  TrainState state = read_train_state(dir);
  KV_CHECK(state.fingerprint == config.model_fingerprint(),
           "{}: checkpoint does not match the config's model ({} vs {})", dir, kvroute::excerpt(state.fingerprint, 300),
           config.model_fingerprint());
  // Streaming: one tensor at a time (the model's weights, then each AdamW moment).
  const hf::WeightSource weights = hf::WeightSource::file(dir + "/model.safetensors");
  weights.load_into(model);
  const std::string optim_path = dir + "/optimizer.safetensors";
  const safetensors::Reader optim(optim_path);
  for (auto [name, target] : {std::pair<const char*, Tensor*>{"exp_avg", &adam_m}, {"exp_avg_sq", &adam_v}}) {
    const safetensors::Entry* e = optim.find(name);
    KV_CHECK(e != nullptr, "{}: no tensor named '{}'", optim_path, name);
    KV_CHECK(e->dtype == DType::F32, "{}: tensor '{}' is {}, expected {}", optim_path, name, e->dtype, DType::F32);
    const Shape whole = {model.parameter_count()};
    KV_CHECK(e->shape == whole, "{}/optimizer.safetensors: {} has shape {} but the model needs {}", dir, name,
             e->shape, whole);
    KV_CHECK(target->dim() == 1 && moments_offset >= 0 && moments_offset + target->numel() <= whole[0],
             "load_checkpoint: moments [{}, +{}) outside {} parameters", moments_offset, target->numel(), whole[0]);
    const Tensor t = optim.read(*e);
    const int64_t bad = first_nonfinite(t);
    KV_CHECK(bad < 0, "{}/optimizer.safetensors: {} holds a non-finite value at element {}", dir, name, bad);
    if (std::string(name) == "exp_avg_sq") {  // a second moment is a mean of squares
      const Tensor host = t.to(Device::cpu()).contiguous();
      const float* v = host.data<float>();
      for (int64_t i = 0; i < host.numel(); ++i)
        KV_CHECK(v[i] >= 0.0f, "{}/optimizer.safetensors: exp_avg_sq holds a negative second moment ({}) at element "
                 "{}", dir, v[i], i);
    }
    target->copy_(target->numel() == whole[0] ? t : t.slice(0, moments_offset, moments_offset + target->numel()));
  }
  return state;
}

}  // namespace kvroute::train
