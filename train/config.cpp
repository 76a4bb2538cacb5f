#include "train/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <set>

#include "core/text.h"
#include "core/error.h"
#include "core/io.h"
#include "train/yaml_schema.h"

namespace kvroute::train {

const char* precision_name(Precision precision) { return precision == Precision::BF16 ? "bf16" : "fp32"; }
const char* recompute_name(Recompute recompute) { return recompute == Recompute::Layer ? "layer" : "none"; }


const char* device_kind_name(Device::Kind kind) { return kind == Device::Kind::CUDA ? "cuda" : "cpu"; }

const char* kv_init_name(KvInit kv_init) { return kv_init == KvInit::Average ? "average" : "drop"; }

std::string yaml_text(const YAML::Node& node) {
  if (node.IsScalar()) return node.Scalar();
  YAML::Emitter out;
  out << YAML::Flow << node;
  return out.c_str();
}

layers::ModelConfig RunConfig::model_config() const {
  // A programming error, not a user's: every path that builds a model resolves init_from first.
  KV_CHECK(!init_from_pending, "{}: model.init_from {} was not read yet (train::resolve_init_from)", source, init_from);
  layers::ModelConfig m = model;
  m.kv_weight_layers = layers::KVRouter(router.config, static_cast<int>(model.num_layers)).layers_with_kv_weights();
  return m;
}

namespace {

constexpr uint64_t kMaxConfigBytes = 16 << 20;

using ConfigField = Field<RunConfig>;  // a key of the run config (train/yaml_schema.h)
struct Section {
  std::string name;
  std::vector<ConfigField> fields;
};

// train.name becomes a directory under runs/: one plain path component.
void check_run_name(const std::string& v, const std::string& where) {
  const bool plain = !v.empty() && v.size() <= 128 && v != "." && v != ".." &&
                     v.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+=@,") ==
                         std::string::npos;
  KV_CHECK(plain, "{}: '{}' is not a plain name (letters, digits, . _ - + = @ , ; not '.' or '..'; set train.run_dir "
           "for another location)", where, kvroute::excerpt(v, 60));
}

void check_nonempty(const std::string& v, const std::string& where) {
  KV_CHECK(!v.empty(), "{}: must not be empty", where);
}

constexpr int64_t kMaxSize = int64_t{1} << 20;  // widths, heads, layers: far beyond any real model

#define REF(type, expr) +[](RunConfig& c) -> type& { return expr; }

const std::vector<Section>& schema() {
  static const std::vector<Section> sections = {
      {"model",
       {string_field("init_from", REF(std::string, c.init_from)),
        enum_field("architecture", REF(layers::Architecture, c.model.architecture),
                   {layers::Architecture::Qwen3, layers::Architecture::Llama, layers::Architecture::Mistral},
                   layers::architecture_name),
        int_field("vocab_size", REF(int64_t, c.model.vocab_size), 1, int64_t{1} << 24),
        int_field("hidden_size", REF(int64_t, c.model.hidden_size), 1, kMaxSize),
        int_field("num_layers", REF(int64_t, c.model.num_layers), 1, 4096),
        int_field("num_heads", REF(int64_t, c.model.num_heads), 1, 4096),
        int_field("num_kv_heads", REF(int64_t, c.model.num_kv_heads), 1, 4096),
        int_field("head_dim", REF(int64_t, c.model.head_dim), 2, 4096),
        int_field("intermediate_size", REF(int64_t, c.model.intermediate_size), 1, kMaxSize * 4),
        float_field("rope_theta", REF(double, c.model.rope_theta), 0, 1e12, true),
        enum_field("rope_scaling", REF(layers::RopeScaling, c.model.rope_scaling),
                   {layers::RopeScaling::None, layers::RopeScaling::Llama3}, layers::rope_scaling_name),
        float_field("rope_factor", REF(double, c.model.rope_factor), 1, 1e6),
        float_field("rope_low_freq_factor", REF(double, c.model.rope_low_freq_factor), 0, 1e6, true),
        float_field("rope_high_freq_factor", REF(double, c.model.rope_high_freq_factor), 0, 1e6, true),
        int_field("rope_original_max_position", REF(int64_t, c.model.rope_original_max_position), 1, int64_t{1} << 24),
        int_field("sliding_window", REF(int64_t, c.model.sliding_window), 0, int64_t{1} << 24),
        float_field("rms_norm_eps", REF(double, c.model.rms_norm_eps), 0, 1, true),
        int_field("max_seq_len", REF(int64_t, c.model.max_seq_len), 1, int64_t{1} << 24),
        bool_field("tie_embeddings", REF(bool, c.model.tie_embeddings)),
        bool_field("qk_norm", REF(bool, c.model.qk_norm)),
        float_field("init_std", REF(double, c.model.init_std), 0, 10, true),
        bool_field("scaled_residual_init", REF(bool, c.model.scaled_residual_init))}},
      {"router",
       {enum_field("policy", REF(layers::RouterConfig::Policy, c.router.config.policy),
                   {layers::RouterConfig::Policy::None, layers::RouterConfig::Policy::Stochastic,
                    layers::RouterConfig::Policy::FixedGroups, layers::RouterConfig::Policy::RandomFixedGroups},
                   layers::policy_name),
        float_field("share_prob", REF(double, c.router.config.share_prob), 0, 1),
        enum_field("source", REF(layers::RouterConfig::Source, c.router.config.source),
                   {layers::RouterConfig::Source::Uniform, layers::RouterConfig::Source::Previous}, layers::source_name),
        int_field("group_size", REF(int, c.router.config.group_size), 1, 1 << 20),
        float_field("group_share_prob", REF(double, c.router.config.group_share_prob), 0, 1),
        int_field("seed", REF(uint64_t, c.router.config.seed), 0, INT64_MAX),
        bool_field("same_plan_all_ranks", REF(bool, c.router.same_plan_all_ranks)),
        enum_field("kv_init", REF(KvInit, c.router.kv_init), {KvInit::Drop, KvInit::Average}, kv_init_name)}},
      {"data", {string_field("dir", REF(std::string, c.data.dir), check_nonempty), string_field("tokenizer", REF(std::string, c.data.tokenizer), check_nonempty),
                bool_field("pack", REF(bool, c.data.pack))}},
      {"optim",
       {float_field("lr", REF(double, c.optim.lr), 0, 10), float_field("min_lr", REF(double, c.optim.min_lr), 0, 10),
        float_field("beta1", REF(double, c.optim.beta1), 0, 0.999999), float_field("beta2", REF(double, c.optim.beta2), 0, 0.999999),
        float_field("eps", REF(double, c.optim.eps), 1.1754943508222875e-38, 1), float_field("weight_decay", REF(double, c.optim.weight_decay), 0, 10),
        float_field("grad_clip", REF(double, c.optim.grad_clip), 0, 1e9),
        enum_field("schedule", REF(ScheduleKind, c.optim.schedule),
                   {ScheduleKind::Cosine, ScheduleKind::Constant, ScheduleKind::Wsd}, schedule_name),
        float_field("warmup_fraction", REF(double, c.optim.warmup_fraction), 0, 1),
        float_field("decay_fraction", REF(double, c.optim.decay_fraction), 0, 1)}},
      {"train",
       {string_field("name", REF(std::string, c.train.name), check_run_name), string_field("run_dir", REF(std::string, c.train.run_dir)),
        int_field("steps", REF(int64_t, c.train.steps), 1, kMaxSteps), int_field("batch_size", REF(int64_t, c.train.batch_size), 1, kMaxSize),
        int_field("seq_len", REF(int64_t, c.train.seq_len), 1, int64_t{1} << 24),
        int_field("global_batch_tokens", REF(int64_t, c.train.global_batch_tokens), 0, int64_t{1} << 40),
        int_field("seed", REF(uint64_t, c.train.seed), 0, INT64_MAX), int_field("log_interval", REF(int64_t, c.train.log_interval), 1, kMaxSteps),
        int_field("checkpoint_interval", REF(int64_t, c.train.checkpoint_interval), 0, kMaxSteps),
        int_field("keep_checkpoints", REF(int64_t, c.train.keep_checkpoints), 1, kMaxSteps),
        int_field("threads", REF(int64_t, c.train.threads), 0, 1024),
        enum_field("device", REF(Device::Kind, c.train.device), {Device::Kind::CPU, Device::Kind::CUDA},
                   device_kind_name),
        enum_field("precision", REF(Precision, c.train.precision), {Precision::FP32, Precision::BF16}, precision_name),
        enum_field("attention", REF(ops::AttentionKernel, c.train.attention),
                   {ops::AttentionKernel::CudaCores, ops::AttentionKernel::TensorCores}, ops::attention_kernel_name),
        enum_field("recompute", REF(Recompute, c.train.recompute), {Recompute::None, Recompute::Layer}, recompute_name),
        float_field("peak_tflops", REF(double, c.train.peak_tflops), 0, 1e6)}},
      {"eval",
       {int_field("interval", REF(int64_t, c.eval.interval), 0, kMaxSteps),
        {"retention",
         [](RunConfig& c, const YAML::Node& n, const std::string& where) {
           KV_CHECK(n.IsSequence() && n.size() > 0 && n.size() <= 4096,
                    "{}: expected a list of 1 to 4096 retention fractions, got '{}'", where, excerpt(n));
           c.eval.retention.clear();
           for (size_t i = 0; i < n.size(); ++i) {
             const double r = read_as<double>(n[i], fmt::format("{}[{}]", where, i), "a number");
             KV_CHECK(r > 0 && r <= 1, "{}[{}]: {} is out of range (0, 1]", where, i, r);
             c.eval.retention.push_back(r);
           }
         },
         [](const RunConfig& c) {
           YAML::Node n(YAML::NodeType::Sequence);
           for (double r : c.eval.retention) n.push_back(r);
           n.SetStyle(YAML::EmitterStyle::Flow);
           return n;
         }},
        int_field("batches", REF(int64_t, c.eval.batches), 0, int64_t{1} << 40)}},
      {"dist",
       {enum_field("backend", REF(dist::Backend, c.dist.backend), {dist::Backend::Auto, dist::Backend::Mpi, dist::Backend::None},
                   dist::backend_name),
        float_field("bucket_mb", REF(double, c.dist.bucket_mb), 0, 1 << 16, true),
        int_field("zero", REF(int64_t, c.dist.zero), 0, 2)}},
  };
  return sections;
}

#undef REF

void apply_override(YAML::Node& root, const std::string& override_text) {
  KV_CHECK(override_text.size() <= 4096, "override '{}...': longer than 4096 characters", kvroute::excerpt(override_text, 40));
  const size_t eq = override_text.find('=');
  const std::string path = override_text.substr(0, eq);
  const size_t dot = path.find('.');
  KV_CHECK(eq != std::string::npos && dot != std::string::npos && dot > 0 && dot + 1 < path.size() &&
               path.find('.', dot + 1) == std::string::npos,
           "override '{}': expected section.key=value", override_text);
  YAML::Node value;
  try {
    value = load_yaml(override_text.substr(eq + 1), fmt::format("override '{}'", override_text));
  } catch (const Error& e) {
    KV_FAIL("override '{}': cannot parse the value: {}", override_text, e.what());
  }
  const std::string section = path.substr(0, dot), key = path.substr(dot + 1);
  if (!root[section]) root[section] = YAML::Node(YAML::NodeType::Map);
  KV_CHECK(root[section].IsMap(), "override '{}': section '{}' is not a mapping", override_text, section);
  root[section][key] = value.IsNull() ? YAML::Node(std::string()) : value;
}

// Model keys a fresh run takes from model.init_from (all but these) and compares when given.
bool follows_init_source(const std::string& key) {
  return key != "init_from" && key != "init_std" && key != "scaled_residual_init" && key != "max_seq_len";
}

// qk_norm follows the architecture unless given. With model.init_from, the keys left out come from
// the source later (take_model_from); parsing only notes that it must be read.
void complete_model_section(RunConfig& c) {
  if (!c.model_keys_given.count("qk_norm")) c.model.qk_norm = c.model.architecture == layers::Architecture::Qwen3;
  if (c.init_from.empty()) return;
  const Section& model = schema().front();
  bool all_given = true;
  for (const ConfigField& f : model.fields) {
    all_given = all_given && (c.model_keys_given.count(f.key) || !follows_init_source(f.key));
  }
  // A run's own config.yaml gives every key: its source need not exist any more (eval, export).
  c.init_from_pending = !all_given;
}

void validate_cross_fields(const RunConfig& c, const std::string& src) {
  try {
    c.model.validate();
    layers::KVRouter(c.router.config, static_cast<int>(c.model.num_layers));
  } catch (const Error& e) {
    KV_FAIL("{}: {}", src, e.what());
  }
  // Sizes that pass each key's range can still multiply into an absurd model or batch: estimate the
  // parameter count and the largest activation (the logits) in doubles, before anything allocates.
  // (Each key's range keeps the count below 2^60, so it cannot overflow.)
  const layers::ModelConfig& m = c.model;
  const double params = static_cast<double>(c.model_config().parameter_count());
  KV_CHECK(params <= 1e12,
           "{}: the model would have {:.3g} parameters (limit 1e12): model.vocab_size {}, hidden_size {}, num_layers {}, "
           "intermediate_size {}, num_heads {} x head_dim {}", src, params, m.vocab_size, m.hidden_size, m.num_layers,
           m.intermediate_size, m.num_heads, m.head_dim);
  const double logits = static_cast<double>(c.train.batch_size) * static_cast<double>(c.train.seq_len) *
                        static_cast<double>(m.vocab_size);
  KV_CHECK(logits <= 1e12, "{}: train.batch_size x train.seq_len x model.vocab_size = {:.3g} logits per micro-batch "
           "(limit 1e12)", src, logits);
  KV_CHECK(c.model.sliding_window == 0 || c.train.seq_len <= c.model.sliding_window,
           "{}: train.seq_len {} exceeds the model's sliding window {} (model.sliding_window): kvroute attends over "
           "the whole context, which equals Mistral's windowed attention only within the window", src, c.train.seq_len,
           c.model.sliding_window);
  KV_CHECK(c.train.seq_len <= c.model.max_seq_len, "{}: train.seq_len {} exceeds model.max_seq_len {}", src,
           c.train.seq_len, c.model.max_seq_len);
  KV_CHECK(c.optim.min_lr <= c.optim.lr, "{}: optim.min_lr {} exceeds optim.lr {}", src, c.optim.min_lr, c.optim.lr);
  KV_CHECK(c.optim.schedule != ScheduleKind::Wsd || c.optim.warmup_fraction + c.optim.decay_fraction <= 1.0,
           "{}: optim.warmup_fraction {} + optim.decay_fraction {} exceed 1", src, c.optim.warmup_fraction,
           c.optim.decay_fraction);
  KV_CHECK(c.train.global_batch_tokens == 0 || c.train.global_batch_tokens % (c.train.batch_size * c.train.seq_len) == 0,
           "{}: train.global_batch_tokens {} is not a multiple of train.batch_size x train.seq_len = {}", src,
           c.train.global_batch_tokens, c.train.batch_size * c.train.seq_len);
}

}  // namespace

namespace {

// The line (1-based) where a second YAML document starts, or 0: a "---" after content, or content
// after a "..." end marker. Read from the text, because yaml-cpp's LoadAll can loop without end on
// some malformed input (found by the config fuzzer) where Load stops after the first document.
int second_document_line(const std::string& text) {
  bool content = false, ended = false;
  int line_no = 0;
  for (size_t pos = 0; pos <= text.size();) {
    const size_t end = std::min(text.find('\n', pos), text.size());
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    auto marker = [&](std::string_view m) {
      return line.substr(0, 3) == m && (line.size() == 3 || line[3] == ' ' || line[3] == '\t');
    };
    const size_t first = line.find_first_not_of(" \t");
    const bool blank = first == std::string_view::npos || line[first] == '#';
    if (marker("---")) {
      if (content || ended) return line_no;
      const size_t rest = line.find_first_not_of(" \t", 3);
      content = rest != std::string_view::npos && line[rest] != '#';
    } else if (marker("...")) {
      ended = ended || content;
    } else if (!blank && line[0] != '%') {
      if (ended) return line_no;
      content = true;
    }
    if (end == text.size()) break;
  }
  return 0;
}

}  // namespace

YAML::Node load_yaml(const std::string& text, const std::string& source) {
  if (const int line = second_document_line(text); line > 0)
    KV_FAIL("{}: a second YAML document at line {} ('---' or content after '...'): give one document", source, line);
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    KV_FAIL("{}: invalid YAML at line {}, column {}: {}", source, e.mark.line + 1, e.mark.column + 1, e.msg);
  }
}

RunConfig parse_config(const std::string& yaml_text, const std::string& source, const std::vector<std::string>& overrides) {
  YAML::Node root = load_yaml(yaml_text, source);
  if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  KV_CHECK(root.IsMap(), "{}: expected a mapping of sections (model, router, data, optim, train, eval, dist)", source);
  for (const std::string& o : overrides) apply_override(root, o);

  RunConfig config;
  config.source = source;
  std::vector<std::string> section_names;
  for (const Section& s : schema()) section_names.push_back(s.name);
  std::set<std::string> seen_sections;
  for (const auto& entry : root) {
    KV_CHECK(entry.first.IsScalar(), "{}: a section name must be a plain word, got '{}'", source, excerpt(entry.first));
    const std::string name = entry.first.as<std::string>();
    KV_CHECK(seen_sections.insert(name).second, "{}: section '{}' appears twice", source, name);
    auto section = std::find_if(schema().begin(), schema().end(), [&](const Section& s) { return s.name == name; });
    KV_CHECK(section != schema().end(), "{}: unknown section '{}' (did you mean '{}'?)", source, kvroute::excerpt(name, 60),
             nearest(name, section_names));
    KV_CHECK(entry.second.IsMap() || entry.second.IsNull(), "{}: section '{}' must be a mapping of keys", source, name);
    read_keys(entry.second, section->fields, config, source, name, name == "model" ? &config.model_keys_given : nullptr);
  }
  complete_model_section(config);
  // A model section still to be completed from init_from is checked once it is (take_model_from).
  if (!config.init_from_pending) validate_cross_fields(config, source);
  return config;
}

void take_model_from(RunConfig& c, const layers::ModelConfig& source, const std::string& origin) {
  RunConfig theirs;
  theirs.model = source;
  for (const ConfigField& f : schema().front().fields) {
    if (!follows_init_source(f.key) && f.key != "max_seq_len") continue;
    const YAML::Node value = f.write(theirs);
    if (!c.model_keys_given.count(f.key)) {
      f.read(c, value, fmt::format("{}: model.{}", origin, f.key));
    } else if (follows_init_source(f.key) && yaml_text(f.write(c)) != yaml_text(value)) {
      KV_FAIL("{}: model.{} is {} but model.init_from {} has {} (leave model.{} out to take the model's)", c.source,
              f.key, yaml_text(f.write(c)), origin, yaml_text(value), f.key);
    }
  }
  c.init_from_pending = false;
  validate_cross_fields(c, c.source);
}

RunConfig load_config(const std::string& path, const std::vector<std::string>& overrides) {
  return parse_config(io::read_file(path, kMaxConfigBytes), path, overrides);
}

std::string RunConfig::to_yaml() const {
  YAML::Emitter out;
  out << YAML::BeginMap;
  for (const Section& s : schema()) {
    out << YAML::Key << s.name << YAML::Value << YAML::BeginMap;
    for (const ConfigField& f : s.fields) out << YAML::Key << f.key << YAML::Value << f.write(*this);
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

std::string RunConfig::model_fingerprint() const {
  YAML::Emitter out;
  out << YAML::Flow << YAML::BeginMap;
  // Keys added after the first checkpoints appear only when they differ from their defaults, so
  // those checkpoints keep their fingerprint; where the weights came from is not the model's shape.
  static const std::set<std::string> later_keys = {"architecture", "rope_scaling", "rope_factor",
                                                   "rope_low_freq_factor", "rope_high_freq_factor",
                                                   "rope_original_max_position", "sliding_window",
                                                   "scaled_residual_init"};
  const RunConfig defaults;
  for (const Section& s : schema()) {
    if (s.name != "model") continue;
    for (const ConfigField& f : s.fields) {
      if (f.key == "init_from") continue;
      if (later_keys.count(f.key) && yaml_text(f.write(*this)) == yaml_text(f.write(defaults))) continue;
      out << YAML::Key << f.key << YAML::Value << f.write(*this);
    }
  }
  // Which layers own K/V weights (CLA@k removes them) is part of the parameter set.
  std::string kv_layers;
  for (bool owns : model_config().kv_weight_layers) kv_layers += owns ? '1' : '0';
  out << YAML::Key << "kv_weight_layers" << YAML::Value << kv_layers;
  out << YAML::EndMap;
  return out.c_str();
}

}  // namespace kvroute::train
