#include "train/trainer.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <thread>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "autograd/variable.h"
#include "core/allocator.h"
#include "core/device_runtime.h"
#include "core/error.h"
#include "core/threading.h"
#include "kernels/ops.h"
#include "train/checkpoint.h"
#include "train/grad_reducer.h"
#include "train/schedule.h"

namespace kvroute::train {

namespace fs = std::filesystem;

namespace {

std::atomic<int> g_signal{0};
void on_signal(int sig) { g_signal.store(sig); }

// Keeps metrics.jsonl consistent with a resumed step: drops lines of steps after it.
void truncate_metrics(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in.good()) return;
  std::vector<std::string> keep;
  std::string line;
  while (std::getline(in, line)) {
    try {
      if (nlohmann::json::parse(line).value("step", int64_t{0}) <= step) keep.push_back(line);
    } catch (const nlohmann::json::exception&) {
      // a torn last line from a crash: dropped
    }
  }
  in.close();
  std::ofstream out(path, std::ios::trunc);
  for (const std::string& l : keep) out << l << "\n";
}

std::string format_duration(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds);
  return s >= 3600 ? fmt::format("{}h{:02d}m", s / 3600, (s % 3600) / 60) : fmt::format("{}m{:02d}s", s / 60, s % 60);
}

}  // namespace

double flops_per_token(const layers::ModelConfig& m, int64_t parameters, int64_t seq_len) {
  return 6.0 * static_cast<double>(parameters) +
         12.0 * static_cast<double>(m.num_layers * m.num_heads * m.head_dim) * static_cast<double>(seq_len);
}

std::pair<double, int64_t> validation_loss(const layers::Transformer& model, data::ValidationLoader& loader,
                                           const layers::RoutingPlan& plan, int64_t max_batches, Communicator& comm) {
  autograd::NoGradGuard no_grad;
  loader.reset();
  std::vector<double> sums = {0.0, 0.0};  // loss x tokens, tokens
  data::Batch batch;
  for (int64_t b = 0; (max_batches == 0 || b < max_batches) && loader.next(batch); ++b) {
    if (batch.inputs.size(0) == 0) continue;
    const double tokens = static_cast<double>(batch.targets.numel());
    sums[0] += model.loss(batch.inputs, batch.targets, plan).data().item() * tokens;
    sums[1] += tokens;
  }
  comm.allreduce_sum(sums);
  return {sums[1] > 0 ? sums[0] / sums[1] : 0.0, static_cast<int64_t>(sums[1])};
}

TrainResult run_training(const RunConfig& config, Communicator& comm, const TrainOptions& options) {
  const int rank = comm.rank(), world = comm.world_size();
  const bool leader = rank == 0;
  const bool verbose = leader && !options.quiet;
  // Device: one GPU per rank, picked by the rank's index on its host.
  Device device = Device::cpu();
  if (config.train.device == "cuda") {
    KV_CHECK(device_runtime::cuda_built(),
             "{}: train.device cuda: this build of kvroute has no CUDA backend (build where nvcc is installed)",
             config.source);
    const int gpus = device_runtime::cuda_device_count();
    KV_CHECK(gpus > 0, "{}: train.device cuda: no CUDA device is visible to this process", config.source);
    KV_CHECK(comm.local_rank() < gpus, "{}: train.device cuda: rank {} is local rank {} but this host has {} GPU(s)",
             config.source, rank, comm.local_rank(), gpus);
    device = Device::cuda(comm.local_rank());
  }
  const DType compute_dtype = config.train.precision == "bf16" ? DType::BF16 : DType::F32;
  // train.threads 0 means all cores of this process's share of the machine: with several ranks
  // on one host (mpirun), the cores are divided among them instead of oversubscribed.
  int threads = static_cast<int>(config.train.threads);
  if (threads == 0 && world > 1) {
    const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    const int local_ranks = local != nullptr ? std::max(1, std::atoi(local)) : 1;
    threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / local_ranks);
  }
  set_num_threads(threads);

  // Model: CLA@k leaves non-leaders without K/V weights. Rank 0's initial weights go to everyone.
  layers::KVRouter router(config.router.config, static_cast<int>(config.model.num_layers));
  layers::ModelConfig model_config = config.model;
  model_config.kv_weight_layers = router.layers_with_kv_weights();
  layers::Transformer model(model_config, config.train.seed);
  comm.broadcast(model.flat_parameters(), 0);  // on the host, before the model moves
  model.to(device, compute_dtype);
  // GPU ranks reduce gradients with NCCL, bucket by bucket while the backward pass runs.
  std::unique_ptr<Communicator> nccl;
  std::unique_ptr<GradientReducer> reducer;
  if (device.is_cuda() && world > 1) {
    nccl = make_nccl_communicator(comm, device.index);
    reducer = std::make_unique<GradientReducer>(model, *nccl,
                                                static_cast<int64_t>(config.dist.bucket_mb * 1024 * 1024 / 4));
  }

  // Batch geometry.
  const int64_t B = config.train.batch_size, T = config.train.seq_len;
  const int64_t micro_tokens = static_cast<int64_t>(world) * B * T;
  const int64_t global_tokens = config.train.global_batch_tokens > 0 ? config.train.global_batch_tokens : micro_tokens;
  KV_CHECK(global_tokens % micro_tokens == 0,
           "{}: train.global_batch_tokens {} is not a multiple of world size {} x batch_size {} x seq_len {} = {}",
           config.source, global_tokens, world, B, T, micro_tokens);
  const int64_t accum = global_tokens / micro_tokens;

  // Data: the tokenizer's vocabulary must fit the model's.
  {
    std::ifstream meta(config.data.dir + "/data.json");
    if (meta.good()) {
      const int64_t vocab = nlohmann::json::parse(meta).value("vocab_size", int64_t{0});
      KV_CHECK(vocab <= config.model.vocab_size, "{}: data {} has vocab_size {} but model.vocab_size is {}",
               config.source, config.data.dir, vocab, config.model.vocab_size);
    }
  }
  data::DataLoader loader({config.data.dir, B, T, rank, world, config.train.seed, true});
  data::ValidationLoader val_loader(config.data.dir, B, T, rank, world);

  Tensor adam_m = Tensor::zeros(model.flat_parameters().shape(), DType::F32, device);
  Tensor adam_v = Tensor::zeros(model.flat_parameters().shape(), DType::F32, device);
  const std::vector<ops::DecaySegment> segments = model.decay_segments();
  const std::string run_dir = config.run_dir(), ckpt_dir = run_dir + "/checkpoints";
  const std::string metrics_path = run_dir + "/metrics.jsonl";

  TrainState state;
  state.world_size = world;
  state.global_batch_tokens = global_tokens;
  state.fingerprint = config.model_fingerprint();
  TrainResult result;
  std::string resume_from = options.resume == "auto" ? latest_checkpoint(ckpt_dir) : options.resume;
  if (!resume_from.empty()) {
    TrainState loaded = load_checkpoint(resume_from, model, adam_m, adam_v, config);
    KV_CHECK(loaded.global_batch_tokens == global_tokens,
             "{}: checkpoint global batch is {} tokens, this run's is {} (resuming needs the same global batch)",
             resume_from, loaded.global_batch_tokens, global_tokens);
    state.step = loaded.step;
    state.tokens_seen = loaded.tokens_seen;
    state.cursor = loaded.cursor;
    loader.set_cursor(state.cursor);
    result.last_checkpoint = resume_from;
    if (verbose) {
      std::printf("resumed from %s at step %ld (world size %d -> %d)\n", resume_from.c_str(), static_cast<long>(state.step),
                  loaded.world_size, world);
    }
  }
  if (leader && !options.benchmark) {
    fs::create_directories(run_dir);
    std::ofstream(run_dir + "/config.yaml") << config.to_yaml();
    truncate_metrics(metrics_path, state.step);
  }
  std::ofstream metrics;
  if (leader && !options.benchmark) metrics.open(metrics_path, std::ios::app);

  Schedule schedule{config.optim.schedule, config.optim.lr, config.optim.min_lr, config.train.steps,
                    static_cast<int64_t>(std::llround(config.optim.warmup_fraction * static_cast<double>(config.train.steps))),
                    config.optim.decay_fraction};
  const int64_t bucket = static_cast<int64_t>(config.dist.bucket_mb * 1024 * 1024 / 4);
  const double flops_token = flops_per_token(config.model, model.parameter_count(), T);
  const bool tty = isatty(STDOUT_FILENO);
  auto peak_bytes = [&] { return static_cast<int64_t>(allocator_for(device).stats().peak_bytes); };

  result.global_batch_tokens = global_tokens;
  result.parameters = model.parameter_count();
  auto checkpoint = [&] {
    if (options.benchmark) return;
    if (leader) {
      state.cursor = loader.cursor();
      result.last_checkpoint =
          save_checkpoint(ckpt_dir, state, model, adam_m, adam_v, config, config.train.keep_checkpoints);
    }
    comm.barrier();
  };
  auto evaluate = [&] {
    if (options.benchmark) return;
    nlohmann::ordered_json levels = nlohmann::ordered_json::object();
    std::string line = fmt::format("eval step {}:", state.step);
    for (double r : config.eval.retention) {
      layers::RoutingPlan plan =
          layers::plan_from_keep_set(model.num_layers(), layers::keep_retention(model.num_layers(), r));
      // CLA@k models can only read leaders: snap each kept layer down to its group leader.
      for (int& src : plan) {
        while (!model_config.layer_has_kv_weights(src)) --src;
      }
      auto [loss, tokens] = validation_loss(model, val_loader, plan, config.eval.batches, comm);
      levels[fmt::format("{:g}", r)] = loss;
      line += fmt::format("  retention {:g}: {:.4f}", r, loss);
    }
    if (leader) metrics << nlohmann::ordered_json{{"step", state.step}, {"val_loss", levels}}.dump() << "\n" << std::flush;
    if (verbose) std::printf("%s\n", line.c_str());
  };

  g_signal.store(0);
  auto old_int = std::signal(SIGINT, on_signal);
  auto old_term = std::signal(SIGTERM, on_signal);
  const auto run_start = std::chrono::steady_clock::now();
  const int64_t first_step = state.step;
  auto window_start = std::chrono::steady_clock::now();
  int64_t window_steps = 0;
  try {
    while (state.step < config.train.steps) {
      const auto step_start = std::chrono::steady_clock::now();
      const int64_t step = state.step + 1;
      const double lr = schedule.at(step);
      model.zero_grad();
      double loss_sum = 0.0;
      for (int64_t micro = 0; micro < accum; ++micro) {
        data::Batch batch = loader.next();
        // Plans are keyed by the slice of the global batch (micro-step x world + rank), so a run
        // resumed at another world size with the same global batch draws the same plans.
        const uint64_t slice = static_cast<uint64_t>(micro * world + rank);
        layers::RoutingPlan plan = router.training_plan(
            static_cast<uint64_t>(step), static_cast<uint32_t>(config.router.same_plan_all_ranks ? micro : slice), 0);
        if (reducer && micro == accum - 1) reducer->arm();  // reduce while the last backward runs
        autograd::Variable loss = model.loss(batch.inputs, batch.targets, plan);
        loss.backward();
        loss_sum += loss.data().item();
      }
      if (reducer) {
        reducer->finish();
      } else if (world > 1) {
        comm.allreduce_sum(model.flat_gradients(), bucket);
      }
      std::vector<double> scalars = {loss_sum, static_cast<double>(g_signal.load() != 0)};
      comm.allreduce_sum(scalars);
      const double mean_loss = scalars[0] / static_cast<double>(accum * world);
      ops::scale_(model.flat_gradients(), 1.0f / static_cast<float>(accum * world));
      const double grad_norm = std::sqrt(ops::squared_norm(model.flat_gradients()).item());
      if (!std::isfinite(mean_loss) || !std::isfinite(grad_norm)) {
        KV_FAIL("step {}: {} is {}; stopping without saving this state (last good checkpoint: {})", step,
                std::isfinite(mean_loss) ? "the gradient norm" : "the loss", std::isfinite(mean_loss) ? grad_norm : mean_loss,
                result.last_checkpoint.empty() ? "none" : result.last_checkpoint);
      }
      if (config.optim.grad_clip > 0 && grad_norm > config.optim.grad_clip) {
        ops::scale_(model.flat_gradients(), static_cast<float>(config.optim.grad_clip / grad_norm));
      }
      ops::AdamWConfig adamw{static_cast<float>(lr), static_cast<float>(config.optim.beta1),
                             static_cast<float>(config.optim.beta2), static_cast<float>(config.optim.eps),
                             static_cast<float>(config.optim.weight_decay)};
      ops::adamw_step(model.flat_parameters(), model.flat_gradients(), adam_m, adam_v, adamw, step, segments,
                      model.compute_copy());
      state.step = step;
      state.tokens_seen += global_tokens;
      result.losses.push_back(mean_loss);
      result.step_seconds.push_back(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count());
      ++result.steps_done;
      ++window_steps;

      if (step % config.train.log_interval == 0 || step == config.train.steps) {
        const auto now = std::chrono::steady_clock::now();
        const double window = std::chrono::duration<double>(now - window_start).count();
        const double tok_s = static_cast<double>(window_steps * global_tokens) / window;
        const double elapsed = std::chrono::duration<double>(now - run_start).count();
        const double eta = elapsed / static_cast<double>(step - first_step) * static_cast<double>(config.train.steps - step);
        const double tflops = tok_s * flops_token / 1e12;
        const std::string mfu = config.train.peak_tflops > 0
                                    ? fmt::format("{:.1f}%", 100.0 * tflops / (config.train.peak_tflops * world))
                                    : fmt::format("{:.3f} TFLOP/s", tflops);
        if (verbose) {
          const int width = 20;
          const int filled = static_cast<int>(width * step / config.train.steps);
          const std::string bar = tty ? fmt::format("[{}{}] ", std::string(static_cast<size_t>(filled), '#'),
                                                    std::string(static_cast<size_t>(width - filled), '.'))
                                      : "";
          // On a GPU the line also shows the caching allocator's peak (what bounds the batch size).
          const std::string memory =
              device.is_cuda() ? fmt::format(" | peak {:.1f} GiB", static_cast<double>(peak_bytes()) / (1 << 30)) : "";
          std::printf("%sstep %ld/%ld | loss %.4f | lr %.3e | grad norm %.3f | %.0f tok/s | %s%s | ETA %s\n", bar.c_str(),
                      static_cast<long>(step), static_cast<long>(config.train.steps), mean_loss, lr, grad_norm, tok_s,
                      mfu.c_str(), memory.c_str(), format_duration(eta).c_str());
          std::fflush(stdout);
        }
        if (leader && !options.benchmark) {
          metrics << nlohmann::ordered_json{{"step", step},          {"loss", mean_loss}, {"lr", lr},
                                            {"grad_norm", grad_norm}, {"tok_s", tok_s},    {"tflops", tflops},
                                            {"tokens", state.tokens_seen}, {"elapsed_s", elapsed},
                                            {"peak_bytes", peak_bytes()}}
                         .dump()
                  << "\n"
                  << std::flush;
        }
        window_start = now;
        window_steps = 0;
      }
      if (config.eval.interval > 0 && step % config.eval.interval == 0 && step != config.train.steps) evaluate();
      if (config.train.checkpoint_interval > 0 && step % config.train.checkpoint_interval == 0 &&
          step != config.train.steps) {
        checkpoint();
      }
      if (scalars[1] > 0) {  // some rank got SIGINT/SIGTERM: all stop at this same step
        checkpoint();
        result.interrupted = true;
        if (verbose) {
          std::printf("interrupted at step %ld: checkpoint %s (continue with --resume auto)\n", static_cast<long>(step),
                      result.last_checkpoint.c_str());
        }
        break;
      }
      if (options.stop_after > 0 && result.steps_done >= options.stop_after) {
        checkpoint();
        break;
      }
    }
    if (state.step >= config.train.steps && !result.interrupted) {
      evaluate();
      checkpoint();
      if (verbose) std::printf("done: %ld steps, checkpoint %s\n", static_cast<long>(state.step), result.last_checkpoint.c_str());
    }
  } catch (...) {
    std::signal(SIGINT, old_int);
    std::signal(SIGTERM, old_term);
    throw;
  }
  std::signal(SIGINT, old_int);
  std::signal(SIGTERM, old_term);
  return result;
}

}  // namespace kvroute::train
