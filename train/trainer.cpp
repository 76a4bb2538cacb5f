#include "train/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "autograd/variable.h"
#include "core/allocator.h"
#include "core/device_runtime.h"
#include "core/error.h"
#include "core/io.h"
#include "core/json.h"
#include "core/threading.h"
#include "data/prepare.h"
#include "kernels/ops.h"
#include "layers/inference_plan.h"
#include "train/init_from.h"
#include "kernels/profile.h"
#include "train/execution.h"

namespace kvroute::train {

namespace fs = std::filesystem;

namespace {

std::atomic<int> g_signal{0};
void on_signal(int sig) { g_signal.store(sig); }

// Keeps metrics.jsonl consistent with a resumed step: drops lines of steps after it (rewritten
// atomically, so a failure leaves the old file).
void truncate_metrics(const std::string& path, int64_t step) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return;
  std::istringstream in(io::read_file(path, uint64_t{4} << 30));
  std::string kept, line;
  while (std::getline(in, line)) {
    // A torn last line from a crash (invalid JSON) is dropped; the parse is the bounded one.
    json::Json j;
    try {
      j = json::parse(line, path);
    } catch (const Error&) {
      continue;
    }
    if (j.is_object() && j.contains("step") && j["step"].is_number_integer() && j["step"].get<int64_t>() <= step) {
      kept += line + "\n";
    }
  }
  io::write_file_atomic(path, kept);
}

std::string format_duration(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds);
  return s >= 3600 ? fmt::format("{}h{:02d}m", s / 3600, (s % 3600) / 60) : fmt::format("{}m{:02d}s", s / 60, s % 60);
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

// ---- Signals -------------------------------------------------------------------------------------

SignalGuard::SignalGuard() {
  g_signal.store(0);
  old_int_ = std::signal(SIGINT, on_signal);
  old_term_ = std::signal(SIGTERM, on_signal);
}

SignalGuard::~SignalGuard() {
  std::signal(SIGINT, old_int_);
  std::signal(SIGTERM, old_term_);
}

bool SignalGuard::raised() const { return g_signal.load() != 0; }

// ---- Free helpers --------------------------------------------------------------------------------

double flops_per_token(const layers::ModelConfig& m, int64_t parameters, int64_t seq_len) {
  return 6.0 * static_cast<double>(parameters) +
         12.0 * static_cast<double>(m.num_layers * m.num_heads * m.head_dim) * static_cast<double>(seq_len);
}

int threads_per_rank(int64_t configured, int local_ranks) {
  if (configured > 0) return static_cast<int>(configured);
  if (local_ranks <= 1) return 0;  // all cores
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / local_ranks);
}

std::pair<double, int64_t> validation_loss(const layers::Transformer& model, data::ValidationLoader& loader,
                                           const layers::RoutingPlan& plan, int64_t max_batches,
                                           dist::Communicator& comm, const std::function<bool()>& stop) {
  autograd::NoGradGuard no_grad;
  loader.reset();
  std::vector<double> sums = {0.0, 0.0};  // loss x tokens, tokens
  data::Batch batch;
  for (int64_t b = 0; (max_batches == 0 || b < max_batches) && loader.next(batch); ++b) {
    if (stop && stop()) break;
    if (batch.inputs.size(0) == 0) continue;
    // Scored targets only (supervised data leaves prompts and padding out).
    const Tensor& t = batch.targets;
    const double tokens = static_cast<double>(
        std::count_if(t.data<int32_t>(), t.data<int32_t>() + t.numel(), [](int32_t v) { return v != data::kIgnoreIndex; }));
    if (tokens == 0) continue;
    sums[0] += model.loss(batch.inputs, batch.targets, plan).data().item() * tokens;
    sums[1] += tokens;
  }
  comm.allreduce_sum(sums);
  return {sums[1] > 0 ? sums[0] / sums[1] : 0.0, static_cast<int64_t>(sums[1])};
}

TrainResult run_training(const RunConfig& config, dist::Communicator& comm, const TrainOptions& options) {
  Trainer trainer(config, comm, options);
  return trainer.run();
}

// ---- Trainer: construction -----------------------------------------------------------------------

namespace {
// The config with its model section completed from model.init_from, when it waits for it.
RunConfig resolved(RunConfig config) {
  resolve_init_from(config);
  return config;
}
}  // namespace

Trainer::Trainer(const RunConfig& config, dist::Communicator& comm, const TrainOptions& options)
    : config_(resolved(config)),
      comm_(comm),
      options_(options),
      leader_(comm.rank() == 0),
      verbose_(leader_ && !options.quiet),
      model_config_(config_.model_config()),
      router_(config_.router.config, static_cast<int>(config_.model.num_layers)) {
  const int world = comm_.world_size();
  check_fresh_run_directory();  // before anything is built or written
  device_ = config_.train.device == Device::Kind::CUDA
                ? device_runtime::select_cuda_device(comm_.local_rank(), config_.source + ": train.device cuda")
                : Device::cpu();
  set_num_threads(threads_per_rank(config_.train.threads, world > 1 ? comm_.local_size() : 1));
  // CPU bf16: the model stays f32 (master weights, activations); GEMM operands are rounded to
  // bf16 and accumulated in f32 (oneDNN), or stay f32 with a notice where the CPU lacks bf16.
  const Execution execution = train::execution(config_.train.device, config_.train.precision, config_.train.attention);
  if (!execution.notice.empty() && leader_) std::fprintf(stderr, "kvroute: notice: %s\n", execution.notice.c_str());

  // Model: rank 0's initial weights go to everyone (on the host, before the model moves).
  model_config_.check_fits_in_memory(16, "f32 weights, gradients and AdamW moments");
  model_ = std::make_unique<layers::Transformer>(model_config_, config_.train.seed);
  comm_.broadcast(model_->flat_parameters(), 0);
  model_->to(device_, execution.compute_dtype);
  model_->set_execution(execution.ops);
  model_->set_recompute(config_.train.recompute == Recompute::Layer);
  // GPU ranks reduce gradients with NCCL, bucket by bucket while the backward pass runs; so do
  // ZeRO stage 2's reduce-scatters on any device.
  if (device_.is_cuda() && world > 1) nccl_ = dist::make_nccl_communicator(comm_);
  zero_ = config_.dist.zero;
  shard_ = dist::ShardLayout(model_->parameter_count(), zero_ > 0 ? world : 1, zero_ > 0 ? comm_.rank() : 0);
  // Where the layers read a bf16 compute copy, the f32 master weights are only the optimizer's:
  // each rank keeps its piece (on the CPU the masters are the weights themselves).
  if (zero_ > 0 && world > 1 && model_->compute_copy() != nullptr) {
    model_->shard_master_weights(shard_.begin(), shard_.end());
  }
  if (zero_ == 2) {
    shard_grads_ = Tensor::zeros({shard_.count()}, DType::F32, device_);
    reducer_ = std::make_unique<dist::GradientReducer>(*model_, tensor_comm(), config_.dist.bucket_elements(), shard_,
                                                       shard_grads_);
  } else if (nccl_) {
    reducer_ = std::make_unique<dist::GradientReducer>(*model_, *nccl_, config_.dist.bucket_elements());
  }

  // Batch geometry.
  const int64_t B = config_.train.batch_size, T = config_.train.seq_len;
  const int64_t micro_tokens = static_cast<int64_t>(world) * B * T;
  global_tokens_ = config_.train.global_batch_tokens > 0 ? config_.train.global_batch_tokens : micro_tokens;
  KV_CHECK(global_tokens_ % micro_tokens == 0,
           "{}: train.global_batch_tokens {} is not a multiple of world size {} x batch_size {} x seq_len {} = {}",
           config_.source, global_tokens_, world, B, T, micro_tokens);
  accum_ = global_tokens_ / micro_tokens;

  // Data: the tokenizer's vocabulary must fit the model's (data.json, when the shards came from
  // kvroute prepare); every token read is checked against the model's vocabulary as well.
  {
    std::error_code ec;
    if (fs::exists(config_.data.dir + "/data.json", ec)) {
      const data::DataInfo info = data::read_data_info(config_.data.dir);
      KV_CHECK(info.vocab_size <= config_.model.vocab_size, "{}: data {} has vocab_size {} but model.vocab_size is {}",
               config_.source, config_.data.dir, info.vocab_size, config_.model.vocab_size);
    }
  }
  const int64_t vocab = config_.model.vocab_size;
  loader_ = std::make_unique<data::DataLoader>(
      data::DataLoader::Options{config_.data.dir, B, T, comm_.rank(), world, config_.train.seed, true, vocab,
                                config_.data.pack});
  val_loader_ = std::make_unique<data::ValidationLoader>(config_.data.dir, B, T, comm_.rank(), world, vocab);

  adam_m_ = Tensor::zeros({shard_.count()}, DType::F32, device_);
  adam_v_ = Tensor::zeros({shard_.count()}, DType::F32, device_);
  segments_ = shard_.segments(model_->decay_segments());
  schedule_ = Schedule{config_.optim.schedule, config_.optim.lr, config_.optim.min_lr, config_.train.steps,
                       static_cast<int64_t>(
                           std::llround(config_.optim.warmup_fraction * static_cast<double>(config_.train.steps))),
                       config_.optim.decay_fraction};

  state_.world_size = world;
  state_.global_batch_tokens = global_tokens_;
  state_.fingerprint = config_.model_fingerprint();
  result_.global_batch_tokens = global_tokens_;
  result_.parameters = model_->parameter_count();
  const std::string from = options_.resume == "auto" ? latest_checkpoint(config_.checkpoints_dir()) : options_.resume;
  if (!from.empty()) {
    resume(from);
  } else if (!config_.init_from.empty()) {
    // A fresh run from existing weights: step 0, a fresh optimizer, the run's schedule.
    load_initial_weights(config_, *model_);
    if (verbose_) {
      std::printf("initialised from %s (%s, router.kv_init %s)\n", config_.init_from.c_str(),
                  layers::architecture_name(config_.model.architecture), kv_init_name(config_.router.kv_init));
    }
  }
  check_first_forward();
  if (zero_ == 2) model_->release_gradient_buffer();  // gradients per parameter, then reduce-scattered
  open_run_directory();
}

Trainer::~Trainer() = default;

void Trainer::check_first_forward() {
  if (options_.benchmark) return;
  // Tokens 0, 1, 2, ... (no loader, no RNG: the run's state is untouched), under the full-cache
  // plan (CLA@k models read their group leaders).
  const int64_t T = std::min<int64_t>(config_.train.seq_len, 64);
  Tensor inputs = Tensor::empty({1, T}, DType::I32), targets = Tensor::empty({1, T}, DType::I32);
  for (int64_t t = 0; t < T; ++t) {
    inputs.data<int32_t>()[t] = static_cast<int32_t>(t % config_.model.vocab_size);
    targets.data<int32_t>()[t] = static_cast<int32_t>((t + 1) % config_.model.vocab_size);
  }
  // Forward and backward: weights can give a finite loss and non-finite gradients. The gradient
  // buffer is zeroed again after (every step starts from zero anyway).
  autograd::Variable loss_var =
      model_->loss(inputs.to(model_->device()), targets.to(model_->device()),
                   layers::inference_plan(model_->config(), layers::keep_retention(model_->num_layers(), 1.0)).plan);
  double loss = loss_var.data().item();
  loss_var.backward();
  if (std::isfinite(loss)) {  // the gradient's norm on its device (no host copy of the buffer)
    const double norm = ops::squared_norm(model_->flat_gradients()).item();
    if (!std::isfinite(norm)) loss = norm;
  }
  model_->zero_grad();
  const std::string source = !result_.last_checkpoint.empty() ? "checkpoint " + result_.last_checkpoint
                             : !config_.init_from.empty()     ? "model.init_from " + config_.init_from
                                                              : "the initialisation (model.init_std)";
  KV_CHECK(std::isfinite(loss), "{}: the first forward and backward pass give a non-finite {} ({}); the weights of "
           "{} are not usable (nothing in the run directory was changed)", config_.source,
           std::isfinite(loss_var.data().item()) ? "gradient" : "loss", loss, source);
}

void Trainer::resume(const std::string& from) {
  TrainState loaded = load_checkpoint(from, *model_, adam_m_, adam_v_, config_, shard_.begin());
  KV_CHECK(loaded.step <= config_.train.steps,
           "{}: the checkpoint is at step {}, past train.steps {} (raise train.steps to train further)", from,
           loaded.step, config_.train.steps);
  KV_CHECK(loaded.global_batch_tokens == global_tokens_,
           "{}: checkpoint global batch is {} tokens, this run's is {} (resuming needs the same global batch)", from,
           loaded.global_batch_tokens, global_tokens_);
  state_.step = loaded.step;
  state_.tokens_seen = loaded.tokens_seen;
  state_.cursor = loaded.cursor;
  try {
    loader_->set_cursor(state_.cursor);
  } catch (const Error& e) {  // name the file the cursor came from
    KV_FAIL("{}/state.json: data_cursor: {}", from, e.what());
  }
  result_.last_checkpoint = from;
  if (verbose_) {
    std::printf("resumed from %s at step %ld (world size %d -> %d)\n", from.c_str(), static_cast<long>(state_.step),
                loaded.world_size, comm_.world_size());
  }
}

void Trainer::check_fresh_run_directory() const {
  if (!leader_ || options_.benchmark || !options_.resume.empty()) return;
  // A fresh run into a directory that already holds a run would overwrite its checkpoints and
  // metrics: refused, nothing touched.
  const std::string run_dir = config_.run_dir();
  std::error_code ec;
  const bool has_metrics = fs::exists(run_dir + "/metrics.jsonl", ec);
  const bool has_checkpoints = fs::is_directory(config_.checkpoints_dir(), ec) &&
                               fs::directory_iterator(config_.checkpoints_dir(), ec) != fs::directory_iterator();
  KV_CHECK(!has_metrics && !has_checkpoints,
           "{}: already holds a run ({}); continue it with --resume auto, or start a new one with another "
           "train.name", run_dir, has_checkpoints ? "checkpoints/" : "metrics.jsonl");
}

void Trainer::open_run_directory() {
  if (!leader_ || options_.benchmark) return;
  const std::string run_dir = config_.run_dir(), metrics_path = run_dir + "/metrics.jsonl";
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  KV_CHECK(!ec, "{}: cannot create the run directory: {}", run_dir, ec.message());
  truncate_metrics(metrics_path, state_.step);  // first: it fails on a metrics.jsonl that is not a file
  metrics_ = io::OutputFile(metrics_path, io::OutputFile::Mode::Append);
  io::write_file_atomic(run_dir + "/config.yaml", config_.to_yaml());
}

bool Trainer::stop_agreed() {
  std::vector<double> flag = {static_cast<double>(signals_ && signals_->raised())};
  comm_.allreduce_sum(flag);
  return flag[0] > 0;
}

// ---- Trainer: one step ---------------------------------------------------------------------------

double Trainer::micro_batches(int64_t step) {
  const int world = comm_.world_size(), rank = comm_.rank();
  model_->zero_grad();
  double loss_sum = 0.0;
  scored_tokens_ = 0;
  for (int64_t micro = 0; micro < accum_; ++micro) {
    data::Batch batch = loader_->next();
    const int32_t* targets = batch.targets.data<int32_t>();
    scored_tokens_ += std::count_if(targets, targets + batch.targets.numel(),
                                    [](int32_t t) { return t != data::kIgnoreIndex; });
    // Plans are keyed by the slice of the global batch (micro-step x world + rank), so a run
    // resumed at another world size with the same global batch draws the same plans.
    const uint64_t slice = static_cast<uint64_t>(micro * world + rank);
    layers::RoutingPlan plan = router_.training_plan(
        static_cast<uint64_t>(step), static_cast<uint32_t>(config_.router.same_plan_all_ranks ? micro : slice), 0);
    // Reduce while the last backward runs; ZeRO stage 2 reduces every micro-batch into its piece
    // (the whole gradients are never kept across micro-batches).
    if (zero_ == 2) {
      reducer_->arm(micro > 0);
    } else if (reducer_ && micro == accum_ - 1) {
      reducer_->arm();
    }
    const layers::Positions at = batch.positions.defined() ? layers::Positions(batch.positions, batch.key_begin)
                                                            : layers::Positions();
    autograd::Variable loss = model_->loss(batch.inputs, batch.targets, plan, data::kIgnoreIndex, at);
    loss.backward();
    loss_sum += loss.data().item();
    if (zero_ == 2 && micro < accum_ - 1) reducer_->finish();  // the last one finishes in reduce()
  }
  return loss_sum;
}

void Trainer::reduce() {
  if (reducer_) {
    reducer_->finish();
  } else if (comm_.world_size() > 1) {
    comm_.allreduce_sum(model_->flat_gradients(), config_.dist.bucket_elements());
  }
}

Tensor Trainer::optimizer_gradients() {
  return zero_ == 2 ? shard_grads_ : model_->flat_gradients().slice(0, shard_.begin(), shard_.end());
}

double Trainer::clip() {
  ops::profile::PhaseScope phase(ops::profile::Phase::Optimizer);
  Tensor grads = optimizer_gradients();
  if (grads.numel() > 0) ops::scale_(grads, 1.0f / static_cast<float>(accum_ * comm_.world_size()));
  // The sum of squares in f64 (per piece, then over ranks), rounded to f32 as with one buffer.
  double squares = ops::squared_norm_f64(grads);
  if (shard_.world > 1) {
    std::vector<double> total = {squares};
    comm_.allreduce_sum(total);
    squares = total[0];
  }
  const double grad_norm = std::sqrt(static_cast<double>(static_cast<float>(squares)));
  if (std::isfinite(grad_norm) && config_.optim.grad_clip > 0 && grad_norm > config_.optim.grad_clip &&
      grads.numel() > 0) {
    ops::scale_(grads, static_cast<float>(config_.optim.grad_clip / grad_norm));
  }
  return grad_norm;
}

void Trainer::update(int64_t step, double lr) {
  ops::profile::PhaseScope phase(ops::profile::Phase::Optimizer);
  ops::AdamWConfig adamw{static_cast<float>(lr), static_cast<float>(config_.optim.beta1),
                         static_cast<float>(config_.optim.beta2), static_cast<float>(config_.optim.eps),
                         static_cast<float>(config_.optim.weight_decay)};
  // This rank's piece of the master weights (and of the compute copy): all of them without ZeRO.
  // With ZeRO every rank's piece then goes to all ranks (of the compute copy only, where the
  // masters are sharded).
  const bool sharded_masters = model_->masters_sharded();
  Tensor params =
      sharded_masters ? model_->flat_parameters() : model_->flat_parameters().slice(0, shard_.begin(), shard_.end());
  Tensor grads = optimizer_gradients();
  Tensor* copy = model_->compute_copy();
  Tensor copy_piece = copy != nullptr ? copy->slice(0, shard_.begin(), shard_.end()) : Tensor();
  if (shard_.count() > 0) {
    ops::adamw_step(params, grads, adam_m_, adam_v_, adamw, step, segments_, copy != nullptr ? &copy_piece : nullptr);
  }
  if (shard_.world == 1) return;
  if (!sharded_masters) tensor_comm().all_gather(model_->flat_parameters(), shard_.counts());
  if (copy != nullptr) tensor_comm().all_gather(*copy, shard_.counts());
}

StepStats Trainer::step() {
  const auto start = std::chrono::steady_clock::now();
  // Tensor memory: what is live between steps (weights, gradients, optimizer state), and the peak
  // above it during the step (activations and every other temporary).
  Allocator& memory = allocator_for(device_);
  const size_t live_before = memory.stats().current_bytes;
  memory.reset_peak();
  StepStats s;
  s.step = state_.step + 1;
  s.lr = schedule_.at(s.step);
  const double loss_sum = micro_batches(s.step);
  reduce();
  // One collective carries the loss and whether any rank was signalled, so all stop at one step.
  std::vector<double> scalars = {loss_sum, static_cast<double>(signals_ && signals_->raised())};
  comm_.allreduce_sum(scalars);
  s.loss = scalars[0] / static_cast<double>(accum_ * comm_.world_size());
  s.stop_requested = scalars[1] > 0;
  s.grad_norm = clip();
  if (!std::isfinite(s.loss) || !std::isfinite(s.grad_norm)) {
    KV_FAIL("step {}: {} is {}; stopping without saving this state (last good checkpoint: {})", s.step,
            std::isfinite(s.loss) ? "the gradient norm" : "the loss", std::isfinite(s.loss) ? s.grad_norm : s.loss,
            result_.last_checkpoint.empty() ? "none" : result_.last_checkpoint);
  }
  update(s.step, s.lr);
  state_.step = s.step;
  state_.tokens_seen += global_tokens_;
  s.seconds = seconds_since(start);
  result_.losses.push_back(s.loss);
  result_.step_seconds.push_back(s.seconds);
  result_.step_scored_tokens.push_back(scored_tokens_);
  result_.state_bytes = static_cast<int64_t>(live_before);
  const size_t peak = memory.stats().peak_bytes;
  result_.step_peak_bytes.push_back(static_cast<int64_t>(peak - std::min(live_before, peak)));
  ++result_.steps_done;
  ++window_steps_;
  return s;
}

// ---- Trainer: around the step --------------------------------------------------------------------

void Trainer::log(const StepStats& s) {
  const int64_t steps = config_.train.steps;
  if (s.step % config_.train.log_interval != 0 && s.step != steps) return;
  const auto now = std::chrono::steady_clock::now();
  const double window = std::chrono::duration<double>(now - window_start_).count();
  const double tok_s = static_cast<double>(window_steps_ * global_tokens_) / window;
  const double elapsed = std::chrono::duration<double>(now - run_start_).count();
  const double eta = elapsed / static_cast<double>(s.step - first_step_) * static_cast<double>(steps - s.step);
  const double tflops = tok_s * flops_per_token(config_.model, model_->parameter_count(), config_.train.seq_len) / 1e12;
  const int64_t peak_bytes = static_cast<int64_t>(allocator_for(device_).stats().peak_bytes);
  if (verbose_) {
    const std::string mfu = config_.train.peak_tflops > 0
                                ? fmt::format("{:.1f}%", 100.0 * tflops / (config_.train.peak_tflops * comm_.world_size()))
                                : fmt::format("{:.3f} TFLOP/s", tflops);
    const int width = 20;
    const int filled = static_cast<int>(width * s.step / steps);
    const std::string bar = isatty(STDOUT_FILENO) ? fmt::format("[{}{}] ", std::string(static_cast<size_t>(filled), '#'),
                                                                std::string(static_cast<size_t>(width - filled), '.'))
                                                  : "";
    // On a GPU the line also shows the caching allocator's peak (what bounds the batch size).
    const std::string memory =
        device_.is_cuda() ? fmt::format(" | peak {:.1f} GiB", static_cast<double>(peak_bytes) / (1 << 30)) : "";
    // The first line also names the CPU GEMM path (instruction set and library) the numbers come from.
    const std::string gemm = !device_.is_cuda() && !logged_once_ ? " | " + ops::cpu_matmul_description(model_->execution()) : "";
    logged_once_ = true;
    std::printf("%sstep %ld/%ld | loss %.4f | lr %.3e | grad norm %.3f | %.0f tok/s | %s%s | ETA %s%s\n", bar.c_str(),
                static_cast<long>(s.step), static_cast<long>(steps), s.loss, s.lr, s.grad_norm, tok_s, mfu.c_str(),
                memory.c_str(), format_duration(eta).c_str(), gemm.c_str());
    std::fflush(stdout);
  }
  if (metrics_.is_open()) {
    metrics_.write(nlohmann::ordered_json{{"step", s.step},         {"loss", s.loss},   {"lr", s.lr},
                                          {"grad_norm", s.grad_norm}, {"tok_s", tok_s},   {"tflops", tflops},
                                          {"tokens", state_.tokens_seen}, {"elapsed_s", elapsed},
                                          {"peak_bytes", peak_bytes}, {"state_bytes", result_.state_bytes}}
                       .dump() +
                   "\n");
  }
  window_start_ = now;
  window_steps_ = 0;
}

void Trainer::evaluate() {
  if (options_.benchmark) return;
  const int L = static_cast<int>(model_config_.num_layers);
  nlohmann::ordered_json losses = nlohmann::ordered_json::object(), plans = nlohmann::ordered_json::object();
  std::string line = fmt::format("eval step {}:", state_.step);
  for (double r : config_.eval.retention) {
    const layers::InferencePlan p = layers::inference_plan(model_config_, layers::keep_retention(L, r));
    auto [loss, tokens] = validation_loss(*model_, *val_loader_, p.plan, config_.eval.batches, comm_,
                                          [this] { return signals_ && signals_->raised(); });
    if (signals_ && signals_->raised()) return;  // interrupted: no partial record; run() stops
    const std::string key = fmt::format("{:g}", r);
    losses[key] = loss;
    plans[key] = layers::format_plan(p.plan);
    line += fmt::format("  retention {:g}: {:.4f}", r, loss);
  }
  if (metrics_.is_open()) {
    metrics_.write(nlohmann::ordered_json{{"step", state_.step}, {"val_loss", losses}, {"routing_plan", plans}}.dump() +
                   "\n");
  }
  if (verbose_) std::printf("%s\n", line.c_str());
}

void Trainer::checkpoint() {
  if (options_.benchmark) return;
  // ZeRO: the moments (and sharded master weights) are gathered on rank 0, in host memory, and saved
  // whole, in the format of an unsharded run, so a run resumes at any world size, with or without ZeRO.
  auto gathered = [&](const Tensor& piece) {
    Tensor whole = leader_ ? Tensor::empty({shard_.total}, DType::F32) : Tensor();
    comm_.gather(piece.to(Device::cpu()), whole, shard_.counts(), 0);
    return whole;
  };
  const bool sharded = shard_.world > 1;
  const Tensor m = sharded ? gathered(adam_m_) : adam_m_, v = sharded ? gathered(adam_v_) : adam_v_;
  const Tensor masters = model_->masters_sharded() ? gathered(model_->flat_parameters()) : Tensor();
  if (leader_) {
    state_.cursor = loader_->cursor();
    if (metrics_.is_open()) metrics_.sync();  // the metrics up to a checkpoint are as durable as it is
    result_.last_checkpoint = save_checkpoint(config_.checkpoints_dir(), state_, *model_, m, v, config_,
                                              config_.train.keep_checkpoints, masters.defined() ? &masters : nullptr);
  }
  comm_.barrier();
}

TrainResult Trainer::run() {
  signals_ = std::make_unique<SignalGuard>();
  run_start_ = window_start_ = std::chrono::steady_clock::now();
  first_step_ = state_.step;
  window_steps_ = 0;
  const int64_t steps = config_.train.steps;
  while (state_.step < steps) {
    StepStats s = step();
    log(s);
    if (config_.eval.interval > 0 && s.step % config_.eval.interval == 0 && s.step != steps) {
      evaluate();
      s.stop_requested = s.stop_requested || stop_agreed();  // a signal during the evaluation
    }
    if (config_.train.checkpoint_interval > 0 && s.step % config_.train.checkpoint_interval == 0 && s.step != steps) {
      checkpoint();
    }
    if (s.stop_requested) {
      checkpoint();
      result_.interrupted = true;
      if (verbose_) {
        std::printf("interrupted at step %ld: checkpoint %s (continue with --resume auto)\n", static_cast<long>(s.step),
                    result_.last_checkpoint.c_str());
      }
      break;
    }
    if (options_.stop_after > 0 && result_.steps_done >= options_.stop_after) {
      checkpoint();
      break;
    }
  }
  if (state_.step >= steps && !result_.interrupted) {
    evaluate();  // a signal here cuts the evaluation short; the final checkpoint is written either way
    checkpoint();
    if (verbose_) std::printf("done: %ld steps, checkpoint %s\n", static_cast<long>(state_.step), result_.last_checkpoint.c_str());
  }
  signals_.reset();
  return result_;
}

}  // namespace kvroute::train
