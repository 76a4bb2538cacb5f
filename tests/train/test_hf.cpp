// Hugging Face interop (train/hf.h) on the model directories tests/reference/make_hf_models.py
// wrote (tests/reference/fixtures/hf/): Llama 3 (llama3 RoPE scaling, 3 shards, BF16), Qwen3 in
// the transformers 5.x config style (F16, tied), Qwen3 with a stored tied lm_head (F32), Mistral
// (sliding window, BF16). Imported logits against the reference's float64 logits; import ->
// export -> import bit-exact; sharded = single file; each bad input one error naming file and key.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "core/safetensors.h"
#include "data/shard.h"
#include "distributed/communicator.h"
#include "layers/transformer.h"
#include "tests/test_util.h"
#include "train/config.h"
#include "train/export.h"
#include "train/hf.h"
#include "train/init_from.h"
#include "train/trainer.h"

#ifndef KVROUTE_FIXTURE_DIR
#error "KVROUTE_FIXTURE_DIR must point at tests/reference/fixtures"
#endif

namespace kvroute::train {
namespace {

namespace fs = std::filesystem;
using testing::expect_error;

const std::string kHf = std::string(KVROUTE_FIXTURE_DIR) + "/hf";
const std::vector<std::string> kModels = {"llama-4x-bf16-sharded", "qwen3-5x-f16", "qwen3-4x-f32-tied-lmhead",
                                          "mistral-4x-bf16"};

std::unique_ptr<layers::Transformer> import_model(const std::string& dir) {
  hf::ModelInfo info = hf::read_config(dir);
  auto model = std::make_unique<layers::Transformer>(info.model, 0);
  model->load_parameters(hf::read_weights(dir, info.model.tie_embeddings), dir);
  return model;
}

double relative_error(const Tensor& actual, const Tensor& expected) {
  std::vector<float> a = actual.to_vector<float>(), e = expected.to_vector<float>();
  double scale = 0, err = 0;
  for (size_t i = 0; i < e.size(); ++i) {
    scale = std::max(scale, std::abs(static_cast<double>(e[i])));
    err = std::max(err, std::abs(static_cast<double>(a[i]) - e[i]));
  }
  return err / std::max(scale, 1e-6);
}

// A copy of a fixture directory to edit.
std::string copy_model(const std::string& name, const std::string& tag) {
  const std::string dir = testing::temp_dir("hf_" + tag) + "/" + name;
  fs::copy(kHf + "/" + name, dir, fs::copy_options::recursive);
  return dir;
}

void edit_json(const std::string& path, const std::function<void(nlohmann::ordered_json&)>& edit) {
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(testing::read_file(path));
  edit(j);
  std::ofstream(path) << j.dump(2);
}

// A config with model.init_from read, as the trainer, sweep and bench see it.
RunConfig resolved_config(const std::string& yaml, const std::string& source) {
  RunConfig config = parse_config(yaml, source);
  resolve_init_from(config);
  return config;
}

// A kvroute checkpoint (config.yaml + model.safetensors) holding an imported model, for export.
std::string make_checkpoint(const std::string& hf_dir, const std::string& out, const std::string& extra_yaml = "") {
  fs::create_directories(out);
  RunConfig config = resolved_config("model: {init_from: " + hf_dir + "}\ntrain: {seq_len: 16}\n" + extra_yaml, "test.yaml");
  layers::Transformer model(config.model_config(), 0);
  load_initial_weights(config, model);
  std::ofstream(out + "/config.yaml") << config.to_yaml();
  safetensors::save(out + "/model.safetensors", model.master_parameters());
  return out;
}

void expect_same_weights(const safetensors::NamedTensors& a, const safetensors::NamedTensors& b) {
  ASSERT_EQ(a.size(), b.size());
  std::map<std::string, Tensor> by_name(b.begin(), b.end());
  for (const auto& [name, t] : a) {
    ASSERT_TRUE(by_name.count(name)) << name;
    EXPECT_EQ(t.shape(), by_name[name].shape()) << name;
    EXPECT_EQ(t.to_vector<float>(), by_name[name].to_vector<float>()) << name;  // bit-exact
  }
}

class HfModel : public ::testing::TestWithParam<std::string> {};

TEST_P(HfModel, ImportedLogitsMatchTheReference) {
  const std::string dir = kHf + "/" + GetParam();
  auto model = import_model(dir);
  safetensors::File ref = safetensors::load(dir + "/reference.safetensors");
  autograd::NoGradGuard no_grad;
  Tensor logits = model->logits(ref.get("inputs"), layers::self_plan(model->num_layers())).data();
  const double err = relative_error(logits, ref.get("logits"));
  EXPECT_LT(err, 1e-4);
  std::printf("[hf %s] logits relative error %.2e\n", GetParam().c_str(), err);
}

TEST_P(HfModel, ImportExportImportIsBitExact) {
  const std::string dir = kHf + "/" + GetParam();
  const std::string tmp = testing::temp_dir("hf_roundtrip");
  const hf::ModelInfo info = hf::read_config(dir);
  make_checkpoint(dir, tmp + "/ckpt");
  hf::ExportOptions options;
  options.dtype = info.torch_dtype == "bfloat16" ? DType::BF16 : info.torch_dtype == "float16" ? DType::F16 : DType::F32;
  hf::export_checkpoint(tmp + "/ckpt", tmp + "/out", options);
  expect_same_weights(hf::read_weights(dir, info.model.tie_embeddings),
                      hf::read_weights(tmp + "/out", info.model.tie_embeddings));
  // The stored dtype is the one asked for.
  for (const auto& [name, t] : safetensors::load(fs::exists(tmp + "/out/model.safetensors")
                                                     ? tmp + "/out/model.safetensors"
                                                     : tmp + "/out/model-00001-of-00001.safetensors")
                                   .tensors) {
    EXPECT_EQ(t.dtype(), options.dtype) << name;
  }
  const hf::ModelInfo back = hf::read_config(tmp + "/out");
  RunConfig a, b;
  a.model = info.model;
  b.model = back.model;
  EXPECT_EQ(a.model_fingerprint(), b.model_fingerprint());
  EXPECT_TRUE(fs::exists(tmp + "/out/generation_config.json"));
  const auto config = nlohmann::json::parse(testing::read_file(tmp + "/out/config.json"));
  EXPECT_EQ(config.at("architectures")[0], nlohmann::json::parse(testing::read_file(dir + "/config.json")).at("architectures")[0]);
  EXPECT_EQ(config.at("kvroute").at("router_policy"), "none");
  fs::remove_all(tmp);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfModel, ::testing::ValuesIn(kModels),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

TEST(HfConfig, ReadsEveryStyleAndArchitecture) {
  const hf::ModelInfo llama = hf::read_config(kHf + "/llama-4x-bf16-sharded");
  EXPECT_EQ(llama.model.architecture, layers::Architecture::Llama);
  EXPECT_FALSE(llama.model.qk_norm);
  EXPECT_EQ(llama.model.rope_scaling, layers::RopeScaling::Llama3);
  EXPECT_EQ(llama.model.rope_original_max_position, 64);
  EXPECT_EQ(llama.model.rope_theta, 500.0);
  const hf::ModelInfo qwen5 = hf::read_config(kHf + "/qwen3-5x-f16");
  EXPECT_EQ(qwen5.model.architecture, layers::Architecture::Qwen3);
  EXPECT_TRUE(qwen5.model.qk_norm);
  EXPECT_TRUE(qwen5.model.tie_embeddings);
  EXPECT_EQ(qwen5.model.rope_theta, 1e6);  // from rope_parameters
  EXPECT_EQ(qwen5.torch_dtype, "float16");  // from "dtype"
  const hf::ModelInfo mistral = hf::read_config(kHf + "/mistral-4x-bf16");
  EXPECT_EQ(mistral.model.sliding_window, 4096);
  EXPECT_EQ(mistral.model.max_seq_len, 4096);  // the whole-context attention matches up to the window
}

TEST(HfExport, ShardedAndSingleFileGiveTheSameModel) {
  const std::string dir = kHf + "/llama-4x-bf16-sharded";
  const std::string tmp = testing::temp_dir("hf_shards");
  make_checkpoint(dir, tmp + "/ckpt");
  hf::ExportOptions sharded;
  sharded.dtype = DType::BF16;
  sharded.shard_bytes = 8000;
  hf::export_checkpoint(tmp + "/ckpt", tmp + "/sharded", sharded);
  hf::ExportOptions single;
  single.dtype = DType::BF16;
  hf::export_checkpoint(tmp + "/ckpt", tmp + "/single", single);
  EXPECT_TRUE(fs::exists(tmp + "/single/model.safetensors"));
  EXPECT_FALSE(fs::exists(tmp + "/single/model.safetensors.index.json"));
  const auto index = nlohmann::json::parse(testing::read_file(tmp + "/sharded/model.safetensors.index.json"));
  std::set<std::string> files;
  for (const auto& [name, file] : index.at("weight_map").items()) files.insert(file.get<std::string>());
  EXPECT_GT(files.size(), 2u);
  int64_t bytes = 0;
  for (const std::string& f : files) {
    for (const auto& [name, t] : safetensors::load(tmp + "/sharded/" + f).tensors) bytes += t.numel() * 2;
  }
  EXPECT_EQ(index.at("metadata").at("total_size").get<int64_t>(), bytes);
  expect_same_weights(hf::read_weights(tmp + "/sharded", false), hf::read_weights(tmp + "/single", false));
  expect_same_weights(hf::read_weights(tmp + "/sharded", false), hf::read_weights(dir, false));
  // An existing export is never replaced by mistake, and stays intact.
  const std::string before = testing::read_file(tmp + "/single/model.safetensors");
  expect_error([&] { hf::export_checkpoint(tmp + "/ckpt", tmp + "/single", single); },
               {tmp + "/single", "already exists", "--overwrite"});
  EXPECT_EQ(testing::read_file(tmp + "/single/model.safetensors"), before);
  single.overwrite = true;
  single.dtype = DType::F32;
  hf::export_checkpoint(tmp + "/ckpt", tmp + "/single", single);
  expect_same_weights(hf::read_weights(tmp + "/single", false), hf::read_weights(dir, false));
  fs::remove_all(tmp);
}

TEST(HfExport, RefusesAModelWhoseLayersShareKVWeights) {
  const std::string tmp = testing::temp_dir("hf_cla_export");
  make_checkpoint(kHf + "/llama-4x-bf16-sharded", tmp + "/ckpt", "router: {policy: fixed_groups, group_size: 2}\n");
  expect_error([&] { hf::export_checkpoint(tmp + "/ckpt", tmp + "/out", {}); },
               {tmp + "/ckpt", "layer 1 has no K/V projections", "LlamaForCausalLM"});
  EXPECT_FALSE(fs::exists(tmp + "/out"));
  fs::remove_all(tmp);
}

TEST(HfInit, ModelKeysComeFromTheSourceAndConflictsAreErrors) {
  const std::string dir = kHf + "/llama-4x-bf16-sharded";
  RunConfig c = resolved_config("model: {init_from: " + dir + "}\ntrain: {seq_len: 16}\n", "run.yaml");
  EXPECT_EQ(c.model.architecture, layers::Architecture::Llama);
  EXPECT_EQ(c.model.vocab_size, 64);
  EXPECT_FALSE(c.model.qk_norm);
  EXPECT_EQ(c.model.rope_scaling, layers::RopeScaling::Llama3);
  // The resolved config round-trips without the source (what eval reads from a run directory).
  RunConfig again = parse_config(c.to_yaml(), "config.yaml");
  EXPECT_EQ(again.model_fingerprint(), c.model_fingerprint());
  // A smaller context is fine; a different shape is not.
  EXPECT_EQ(resolved_config("model: {init_from: " + dir + ", max_seq_len: 64}\ntrain: {seq_len: 16}\n", "run.yaml")
                .model.max_seq_len,
            64);
  expect_error([&] { resolved_config("model: {init_from: " + dir + ", hidden_size: 64}\ntrain: {seq_len: 16}\n", "run.yaml"); },
               {"run.yaml", "model.hidden_size is 64", dir + "/config.json", "32"});
  expect_error([&] { resolved_config("model: {init_from: /nonexistent/model}\n", "run.yaml"); },
               {"run.yaml", "model.init_from", "/nonexistent/model", "not a directory"});
  // Parsing alone never reads the source: the model waits for it, and cannot be built before.
  RunConfig pending = parse_config("model: {init_from: /nonexistent/model}\n", "run.yaml");
  EXPECT_TRUE(pending.init_from_pending);
  expect_error([&] { (void)pending.model_config(); }, {"run.yaml", "/nonexistent/model", "resolve_init_from"});
  RunConfig direct = parse_config("model: {init_from: " + dir + "}\ntrain: {seq_len: 16}\n", "run.yaml");
  EXPECT_TRUE(direct.init_from_pending);
  resolve_init_from(direct);
  EXPECT_FALSE(direct.init_from_pending);
  EXPECT_EQ(direct.model_fingerprint(), c.model_fingerprint());
  resolve_init_from(direct);  // a no-op once resolved
  EXPECT_EQ(direct.model_fingerprint(), c.model_fingerprint());
}

TEST(HfInit, ConvertingToClaDropsOrAveragesTheNonLeadersKV) {
  const std::string dir = kHf + "/qwen3-4x-f32-tied-lmhead";
  std::map<std::string, Tensor> source;
  for (auto& [name, t] : hf::read_weights(dir, true)) source[name] = t;
  for (const char* kv_init : {"drop", "average"}) {
    RunConfig c = resolved_config("model: {init_from: " + dir + "}\ntrain: {seq_len: 16}\nrouter: {policy: fixed_groups, "
                               "group_size: 2, kv_init: " + std::string(kv_init) + "}\n", "run.yaml");
    layers::Transformer model(c.model_config(), 0);
    load_initial_weights(c, model);
    std::map<std::string, Tensor> loaded;
    for (auto& [name, t] : model.master_parameters()) loaded[name] = t;
    EXPECT_FALSE(loaded.count("model.layers.1.self_attn.k_proj.weight"));
    for (const char* suffix : {"k_proj.weight", "v_proj.weight", "k_norm.weight"}) {
      for (int leader : {0, 2}) {
        const std::string l0 = fmt::format("model.layers.{}.self_attn.{}", leader, suffix);
        const std::string l1 = fmt::format("model.layers.{}.self_attn.{}", leader + 1, suffix);
        std::vector<float> got = loaded.at(l0).to_vector<float>(), a = source.at(l0).to_vector<float>(),
                           b = source.at(l1).to_vector<float>();
        for (size_t i = 0; i < got.size(); ++i) {
          const float want = std::string(kv_init) == "drop" ? a[i] : (a[i] + b[i]) * 0.5f;
          ASSERT_FLOAT_EQ(got[i], want) << kv_init << " " << l0 << "[" << i << "]";
        }
      }
    }
    // Everything else is copied as is.
    EXPECT_EQ(loaded.at("model.layers.1.self_attn.q_proj.weight").to_vector<float>(),
              source.at("model.layers.1.self_attn.q_proj.weight").to_vector<float>());
  }
  // From a CLA model to one that needs every layer's K/V: an error naming the missing tensor.
  const std::string tmp = testing::temp_dir("hf_cla_source");
  make_checkpoint(dir, tmp + "/cla", "router: {policy: fixed_groups, group_size: 2}\n");
  RunConfig dense = resolved_config("model: {init_from: " + tmp + "/cla}\ntrain: {seq_len: 16}\n", "run.yaml");
  layers::Transformer model(dense.model_config(), 0);
  expect_error([&] { load_initial_weights(dense, model); },
               {tmp + "/cla/model.safetensors", "layer 1", "model.layers.1.self_attn.k_proj.weight"});
  fs::remove_all(tmp);
}

// Each bad model directory: one error naming the file and the key or tensor.
TEST(HfErrors, EachBadInputNamesTheFileAndTheKey) {
  auto config_error = [](const std::string& model, const std::function<void(nlohmann::ordered_json&)>& edit,
                         const std::vector<std::string>& fragments) {
    const std::string dir = copy_model(model, "cfg");
    edit_json(dir + "/config.json", edit);
    std::vector<std::string> all = fragments;
    all.push_back(dir + "/config.json");
    expect_error([&] { hf::read_config(dir); }, all);
    fs::remove_all(fs::path(dir).parent_path());
  };
  config_error("qwen3-5x-f16", [](auto& j) { j["architectures"] = {"GPT2LMHeadModel"}; },
               {"architecture 'GPT2LMHeadModel' is not supported", "Qwen3ForCausalLM", "LlamaForCausalLM"});
  config_error("qwen3-5x-f16", [](auto& j) { j["model_type"] = "llama"; }, {"model_type 'llama'"});
  config_error("llama-4x-bf16-sharded", [](auto& j) { j["rope_scaling"]["rope_type"] = "yarn"; },
               {"rope_scaling", "rope_type 'yarn' is not supported"});
  config_error("llama-4x-bf16-sharded", [](auto& j) { j["attention_bias"] = true; }, {"attention_bias"});
  config_error("llama-4x-bf16-sharded", [](auto& j) { j["hidden_act"] = "gelu"; }, {"hidden_act 'gelu'"});
  config_error("llama-4x-bf16-sharded", [](auto& j) { j["hidden_size"] = "32"; }, {"hidden_size"});
  config_error("llama-4x-bf16-sharded", [](auto& j) { j["num_key_value_heads"] = 3; }, {"num_heads"});
  config_error("llama-4x-bf16-sharded", [](auto& j) { j.erase("vocab_size"); }, {"vocab_size"});
  config_error("qwen3-5x-f16", [](auto& j) { j["use_sliding_window"] = true; }, {"use_sliding_window"});
  config_error("qwen3-5x-f16", [](auto& j) { j["quantization_config"] = {{"quant_method", "gptq"}}; },
               {"quantization_config"});

  auto weights_error = [](const std::string& model, const std::function<void(const std::string&)>& edit,
                          const std::vector<std::string>& fragments) {
    const std::string dir = copy_model(model, "w");
    edit(dir);
    expect_error([&] { import_model(dir); }, fragments);
    fs::remove_all(fs::path(dir).parent_path());
  };
  const std::string index = "/model.safetensors.index.json";
  weights_error("llama-4x-bf16-sharded",
                [&](const std::string& d) { edit_json(d + index, [](auto& j) { j["weight_map"]["model.norm.weight"] = "../x.safetensors"; }); },
                {index, "model.norm.weight", "../x.safetensors"});
  weights_error("llama-4x-bf16-sharded",
                [&](const std::string& d) { edit_json(d + index, [](auto& j) { j["weight_map"]["model.extra.weight"] = "model-00001-of-00003.safetensors"; }); },
                {index, "model.extra.weight", "missing"});
  weights_error("llama-4x-bf16-sharded",
                [&](const std::string& d) { edit_json(d + index, [](auto& j) { j["weight_map"].erase("model.norm.weight"); }); },
                {"model.norm.weight", "not listed"});
  weights_error("llama-4x-bf16-sharded",
                [&](const std::string& d) { edit_json(d + index, [](auto& j) { j["weight_map"]["model.norm.weight"] = "model-00009-of-00009.safetensors"; }); },
                {index, "model-00009-of-00009.safetensors", "does not exist"});
  weights_error("llama-4x-bf16-sharded", [&](const std::string& d) { std::ofstream(d + index) << "{\"weight_map\": "; },
                {index});
  weights_error("qwen3-5x-f16",  // a tensor missing from the file
                [](const std::string& d) {
                  safetensors::File f = safetensors::load(d + "/model.safetensors");
                  safetensors::NamedTensors kept;
                  for (auto& [n, t] : f.tensors)
                    if (n != "model.layers.1.mlp.up_proj.weight") kept.emplace_back(n, t);
                  safetensors::save(d + "/model.safetensors", kept);
                },
                {"missing parameter 'model.layers.1.mlp.up_proj.weight'"});
  weights_error("qwen3-5x-f16",  // the config disagrees with the tensors
                [](const std::string& d) { edit_json(d + "/config.json", [](auto& j) { j["intermediate_size"] = 48; }); },
                {"model.layers.0.mlp.gate_proj.weight", "[64, 32]", "[48, 32]"});
  weights_error("qwen3-5x-f16", [](const std::string& d) { fs::remove(d + "/model.safetensors"); },
                {"no model.safetensors or model.safetensors.index.json"});

  // A sliding window shorter than the run's sequence length.
  const std::string dir = copy_model("mistral-4x-bf16", "window");
  edit_json(dir + "/config.json", [](auto& j) { j["sliding_window"] = 8; });
  expect_error([&] { resolved_config("model: {init_from: " + dir + "}\ntrain: {seq_len: 16}\n", "run.yaml"); },
               {"run.yaml", "train.seq_len 16", "sliding window 8"});
  expect_error([&] { resolved_config("model: {init_from: " + dir + ", max_seq_len: 16}\ntrain: {seq_len: 8}\n", "run.yaml"); },
               {"model.sliding_window 8 is shorter than model.max_seq_len 16"});
  fs::remove_all(fs::path(dir).parent_path());
}

// The whole path a user takes: a Hugging Face model -> a fresh R-CLA run from its weights -> a
// checkpoint -> export -> the exported directory holds exactly the checkpoint's weights.
TEST(HfInit, FineTuneFromAHuggingFaceModelAndExportIt) {
  const std::string dir = kHf + "/llama-4x-bf16-sharded";
  const std::string tmp = testing::temp_dir("hf_finetune");
  Philox rng(5);
  std::vector<int32_t> train, val;
  for (int i = 0; i < 4000; ++i) train.push_back(static_cast<int32_t>(rng.uniform_int(64)));
  for (int i = 0; i < 1000; ++i) val.push_back(static_cast<int32_t>(rng.uniform_int(64)));
  testing::write_token_data(tmp + "/data", train, val);
  auto yaml = [&](const std::string& run, int steps, double lr) {
    return fmt::format("model: {{init_from: {}}}\nrouter: {{policy: stochastic, share_prob: 0.5, seed: 3}}\n"
                       "data: {{dir: {}/data, tokenizer: {}/none}}\noptim: {{lr: {}, min_lr: 0}}\n"
                       "train: {{name: t, run_dir: {}/{}, steps: {}, batch_size: 2, seq_len: 16, threads: 1}}\n"
                       "eval: {{retention: [1.0, 0.5], batches: 2}}\ndist: {{backend: none}}\n",
                       dir, tmp, tmp, lr, tmp, run, steps);
  };
  auto comm = dist::make_local_communicator();
  // lr 0: the run starts from exactly the imported weights (step 0, fresh optimizer).
  run_training(parse_config(yaml("frozen", 1, 0.0), "frozen.yaml"), *comm, {"", 0, true});
  expect_same_weights(safetensors::load(tmp + "/frozen/checkpoints/step_00000001/model.safetensors").tensors,
                      hf::read_weights(dir, false));
  // A few real steps, then export and re-import.
  TrainResult r = run_training(parse_config(yaml("tuned", 4, 1e-3), "tuned.yaml"), *comm, {"", 0, true});
  ASSERT_EQ(r.losses.size(), 4u);
  const std::string ckpt = tmp + "/tuned/checkpoints/step_00000004";
  const RunConfig saved = load_config(ckpt + "/config.yaml");
  EXPECT_EQ(saved.model.architecture, layers::Architecture::Llama);
  EXPECT_EQ(saved.init_from, dir);
  hf::ExportOptions options;
  options.shard_bytes = 10000;
  const std::string summary = hf::export_checkpoint(ckpt, tmp + "/exported", options);
  EXPECT_NE(summary.find("LlamaForCausalLM"), std::string::npos) << summary;
  EXPECT_NE(summary.find("no tokenizer"), std::string::npos) << summary;
  const safetensors::NamedTensors trained = safetensors::load(ckpt + "/model.safetensors").tensors;
  expect_same_weights(hf::read_weights(tmp + "/exported", false), trained);
  bool changed = false;
  for (const auto& [name, t] : hf::read_weights(dir, false)) {
    for (const auto& [n2, t2] : trained)
      if (n2 == name && t.to_vector<float>() != t2.to_vector<float>()) changed = true;
  }
  EXPECT_TRUE(changed) << "training did not move the weights";
  fs::remove_all(tmp);
}

TEST(HfDtype, F16ConvertsExactlyAndRoundsToNearestEven) {
  // Every finite f16 value survives f16 -> f32 -> f16.
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const f16 h{static_cast<uint16_t>(bits)};
    const float f = f16_to_float(h);
    if (std::isnan(f)) continue;
    ASSERT_EQ(float_to_f16(f).bits, h.bits) << bits;
  }
  EXPECT_EQ(f16_to_float(f16{0x3c00}), 1.0f);
  EXPECT_EQ(f16_to_float(f16{0x0001}), 5.9604644775390625e-8f);  // smallest subnormal
  EXPECT_EQ(float_to_f16(65504.0f).bits, 0x7bff);
  EXPECT_EQ(float_to_f16(65520.0f).bits, 0x7c00);            // halfway above the largest: to inf
  EXPECT_EQ(float_to_f16(1.0f + 1.0f / 2048).bits, 0x3c00);  // tie to even (down)
  EXPECT_EQ(float_to_f16(1.0f + 3.0f / 2048).bits, 0x3c02);  // tie to even (up)
}

}  // namespace
}  // namespace kvroute::train
