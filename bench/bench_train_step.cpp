// End-to-end CPU training step (forward + backward + AdamW) of the quickstart-sized model with
// stochastic KV routing: tokens/s, median over timed steps. Its PyTorch peer is
// bench/peer_train_step.py; bench/train_step_vs_torch.sh runs both and prints the ratio.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "bench/bench_util.h"
#include "core/rng.h"
#include "core/threading.h"
#include "layers/transformer.h"

int main(int argc, char** argv) {
  using namespace kvroute;
  CLI::App app{"kvroute training-step benchmark (quickstart model)"};
  int threads = 2, steps = 10, batch = 8, seq = 256;
  double share_prob = 0.5;
  app.add_option("--threads", threads)->check(CLI::PositiveNumber);
  app.add_option("--steps", steps, "timed steps (median reported)")->check(CLI::PositiveNumber);
  app.add_option("--batch", batch)->check(CLI::PositiveNumber);
  app.add_option("--seq", seq)->check(CLI::PositiveNumber);
  app.add_option("--share-prob", share_prob)->check(CLI::Range(0.0, 1.0));
  CLI11_PARSE(app, argc, argv);
  set_num_threads(threads);

  layers::ModelConfig config;  // the quickstart shape: 6 layers, hidden 256, 8/4 heads, head_dim 32
  config.max_seq_len = seq;
  layers::Transformer model(config, 1);
  layers::RouterConfig router_config;
  router_config.policy = layers::RouterConfig::Policy::Stochastic;
  router_config.share_prob = share_prob;
  router_config.seed = 1;
  layers::KVRouter router(router_config, model.num_layers());

  Tensor stream = Tensor::empty({batch, seq + 1}, DType::I32);
  Philox rng(2);
  for (int64_t i = 0; i < stream.numel(); ++i)
    stream.data<int32_t>()[i] = static_cast<int32_t>(rng.uniform_int(config.vocab_size));
  Tensor inputs = stream.slice(1, 0, seq).contiguous(), targets = stream.slice(1, 1, seq + 1).contiguous();
  Tensor m = Tensor::zeros(model.flat_parameters().shape()), v = Tensor::zeros(model.flat_parameters().shape());
  const ops::AdamWConfig adamw{3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f};
  const std::vector<ops::DecaySegment> segments = model.decay_segments();

  int64_t step = 0;
  double last_loss = 0;
  auto train_step = [&] {
    ++step;
    model.zero_grad();
    autograd::Variable loss = model.loss(inputs, targets, router.training_plan(static_cast<uint64_t>(step), 0, 0));
    loss.backward();
    ops::adamw_step(model.flat_parameters(), model.flat_gradients(), m, v, adamw, step, segments);
    last_loss = loss.data().item();
  };
  const double ms = bench::median_ms(train_step, steps, 2);
  const double tokens_per_s = batch * seq / (ms * 1e-3);
  std::printf("kvroute train step: params=%ld B=%d T=%d share_prob=%.2f threads=%d  %.1f ms/step  %.0f tok/s  "
              "(loss %.3f, peak %.0f MiB)\n",
              static_cast<long>(model.parameter_count()), batch, seq, share_prob, threads, ms, tokens_per_s, last_loss,
              static_cast<double>(cpu_allocator().stats().peak_bytes) / (1 << 20));
  return 0;
}
