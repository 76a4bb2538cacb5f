// Data loader throughput: batches/s and the time next() blocks, for a given shard directory.
// Compare with the training step time (bench_train_step): the loader must never be the bottleneck.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>

#include "data/loader.h"

int main(int argc, char** argv) {
  using namespace kvroute;
  CLI::App app{"kvroute data loader benchmark"};
  std::string dir;
  int64_t batch = 8, seq = 256, batches = 2000;
  app.add_option("--data", dir, "directory with train_*.bin shards")->required();
  app.add_option("--batch", batch)->check(CLI::PositiveNumber);
  app.add_option("--seq", seq)->check(CLI::PositiveNumber);
  app.add_option("--batches", batches)->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  try {
    for (bool prefetch : {false, true}) {
      data::DataLoader loader({dir, batch, seq, 0, 1, 1, prefetch});
      auto start = std::chrono::steady_clock::now();
      for (int64_t i = 0; i < batches; ++i) loader.next();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::printf("loader %s: B=%ld T=%ld  %.0f batches/s  %.3f ms/batch  %.1f M tokens/s\n",
                  prefetch ? "with prefetch" : "no prefetch  ", static_cast<long>(batch), static_cast<long>(seq),
                  static_cast<double>(batches) / s, 1e3 * s / static_cast<double>(batches),
                  static_cast<double>(batches * batch * seq) / s / 1e6);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_loader: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
