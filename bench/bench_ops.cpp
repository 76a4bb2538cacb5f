// Op micro-benchmarks at the quickstart model's shapes (hidden 256, 8 heads / 4 KV heads, head_dim
// 32, intermediate 768, vocab 8192, B=8, T=256): our matmul against raw OpenBLAS sgemm and Eigen,
// attention forward+backward, fused cross-entropy. One line per case: what, size, median, ratio.
#include <cblas.h>

#include <CLI/CLI.hpp>
#include <Eigen/Core>
#include <cmath>
#include <cstdio>
#include <functional>

#include "bench/bench_util.h"
#include "core/device_runtime.h"
#include "core/rng.h"
#include "core/threading.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/ops.h"

namespace kvroute {
namespace {

Tensor random(const Shape& shape, uint64_t seed) {
  Tensor t = Tensor::empty(shape);
  fill_uniform(t, seed, 0, -1.0f, 1.0f);
  return t;
}

struct GemmShape {
  const char* what;
  int64_t m, n, k;
  bool ta, tb;
};

// The quickstart's GEMMs. Forward y = x W^T (NT), input grad dx = dy W (NN), weight grad
// dW = dy^T x (TN).
const std::vector<GemmShape>& quickstart_gemms() {
  const int64_t N = 8 * 256;  // tokens per micro-batch
  static const std::vector<GemmShape> shapes = {
      {"q/o proj fwd", N, 256, 256, false, true},   {"kv proj fwd", N, 128, 256, false, true},
      {"gate/up fwd", N, 768, 256, false, true},    {"down fwd", N, 256, 768, false, true},
      {"lm head fwd", N, 8192, 256, false, true},   {"lm head dx", N, 256, 8192, false, false},
      {"lm head dW", 8192, 256, N, true, false},    {"gate/up dW", 768, 256, N, true, false},
      {"down dx", N, 768, 256, false, false},
  };
  return shapes;
}

void bench_gemm(int reps) {
  const std::vector<GemmShape>& shapes = quickstart_gemms();
  std::printf("%-14s %-22s %10s %10s %10s %8s %10s %8s\n", "gemm", "m x n x k", "ours ms", "sgemm ms", "GFLOP/s",
              "ours/sgemm", "eigen ms", "eigen/sgemm");
  double worst = 1e9;
  for (const GemmShape& s : shapes) {
    Tensor a = random(s.ta ? Shape{s.k, s.m} : Shape{s.m, s.k}, 1);
    Tensor b = random(s.tb ? Shape{s.n, s.k} : Shape{s.k, s.n}, 2);
    Tensor c = Tensor::empty({s.m, s.n});
    const float* ap = a.data<float>();
    const float* bp = b.data<float>();
    float* cp = c.data<float>();
    const int lda = static_cast<int>(a.size(1)), ldb = static_cast<int>(b.size(1));
    auto [ours, raw] = bench::median_ms_interleaved(
        [&] { ops::matmul_into(a, b, c, s.ta, s.tb); },
        [&] {
          cblas_sgemm(CblasRowMajor, s.ta ? CblasTrans : CblasNoTrans, s.tb ? CblasTrans : CblasNoTrans,
                      static_cast<int>(s.m), static_cast<int>(s.n), static_cast<int>(s.k), 1.0f, ap, lda, bp, ldb,
                      0.0f, cp, static_cast<int>(s.n));
        },
        reps);
    using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    Eigen::Map<const RowMatrix> ea(ap, a.size(0), a.size(1)), eb(bp, b.size(0), b.size(1));
    Eigen::Map<RowMatrix> ec(cp, s.m, s.n);
    double eigen = bench::median_ms(
        [&] {
          if (s.ta && !s.tb) ec.noalias() = ea.transpose() * eb;
          else if (!s.ta && s.tb) ec.noalias() = ea * eb.transpose();
          else ec.noalias() = ea * eb;
        },
        reps);
    const double gflop = 2.0 * static_cast<double>(s.m) * s.n * s.k * 1e-9;
    const double ratio = raw / ours;  // >= 1 means ours is at least as fast
    worst = std::min(worst, ratio);
    std::printf("%-14s %-22s %10.3f %10.3f %10.1f %8.1f%% %10.3f %8.1f%%\n", s.what,
                fmt::format("{}x{}x{}{}{}", s.m, s.n, s.k, s.ta ? " T" : " N", s.tb ? "T" : "N").c_str(), ours, raw,
                gflop / (ours * 1e-3), 100.0 * ratio, eigen, 100.0 * raw / eigen);
  }
  std::printf("matmul: worst ours/sgemm throughput ratio %.1f%% (target >= 95%%)\n\n", 100.0 * worst);
}

// Causal GQA attention forward and backward at the quickstart's shape, f32 tiles (OpenBLAS sgemm)
// and, where the CPU has AVX512-BF16, bf16 tiles (ops::Execution::cpu_bf16_gemm), interleaved.
void bench_attention(int reps) {
  const int64_t B = 8, T = 256, Hq = 8, Hkv = 4, D = 32;
  Tensor q = random({B, T, Hq, D}, 3), k = random({B, T, Hkv, D}, 4), v = random({B, T, Hkv, D}, 5);
  Tensor dout = random({B, T, Hq, D}, 6);
  Tensor out = Tensor::empty(q.shape()), lse = Tensor::empty({B, Hq, T});
  Tensor dq = Tensor::empty(q.shape()), dk = Tensor::empty(k.shape()), dv = Tensor::empty(v.shape());
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  // Causal: half the T x T scores. Forward 2 GEMMs, backward 5 (one recomputes the scores).
  const double causal_pairs = static_cast<double>(B) * Hq * T * (T + 1) / 2;
  const double fwd_gflop = 4.0 * causal_pairs * D * 1e-9, bwd_gflop = 10.0 * causal_pairs * D * 1e-9;
  auto report = [&](const char* tiles, double fwd, double bwd) {
    std::printf("attention %s tiles  B=%ld T=%ld Hq=%ld Hkv=%ld D=%ld  fwd %.3f ms (%.1f GFLOP/s)  bwd %.3f ms "
                "(%.1f GFLOP/s)  fwd+bwd %.3f ms\n",
                tiles, static_cast<long>(B), static_cast<long>(T), static_cast<long>(Hq), static_cast<long>(Hkv),
                static_cast<long>(D), fwd, fwd_gflop / (fwd * 1e-3), bwd, bwd_gflop / (bwd * 1e-3), fwd + bwd);
  };
  const ops::Execution f32{}, bf16{.cpu_bf16_gemm = true};
  auto forward = [&](const ops::Execution& ex) { ops::attention_forward(q, k, v, scale, out, lse, ex); };
  auto backward = [&](const ops::Execution& ex) {
    ops::attention_backward(dout, q, k, v, out, lse, scale, dq, dk, dv, ex);
  };
  if (!ops::cpu_bf16_supported()) {
    report("f32", bench::median_ms([&] { forward(f32); }, reps), bench::median_ms([&] { backward(f32); }, reps));
    std::printf("attention bf16 tiles: skipped: %s\n\n", ops::cpu_bf16_fallback_notice().c_str());
    return;
  }
  auto [fwd32, fwd16] = bench::median_ms_interleaved([&] { forward(f32); }, [&] { forward(bf16); }, reps);
  forward(f32);
  auto [bwd32, bwd16] = bench::median_ms_interleaved([&] { backward(f32); }, [&] { backward(bf16); }, reps);
  report("f32", fwd32, bwd32);
  report("bf16", fwd16, bwd16);
  std::printf("attention bf16 tiles / f32 tiles: fwd %.2fx, bwd %.2fx, fwd+bwd %.2fx\n\n", fwd32 / fwd16,
              bwd32 / bwd16, (fwd32 + bwd32) / (fwd16 + bwd16));
}

void bench_cross_entropy(int reps) {
  const int64_t N = 8 * 256, V = 8192;
  Tensor logits = random({N, V}, 7);
  Tensor targets = Tensor::empty({N}, DType::I32);
  Philox rng(8);
  for (int64_t i = 0; i < N; ++i) targets.data<int32_t>()[i] = static_cast<int32_t>(rng.uniform_int(V));
  Tensor dlogits = Tensor::empty({N, V});
  double fused = bench::median_ms([&] { (void)ops::cross_entropy(logits, targets, -100, &dlogits); }, reps);
  double loss_only = bench::median_ms([&] { (void)ops::cross_entropy(logits, targets, -100); }, reps);
  const double gbytes = 2.0 * static_cast<double>(N) * V * 4 * 1e-9;  // read logits + write dlogits
  std::printf("cross_entropy  N=%ld V=%ld  loss+dlogits %.3f ms (%.1f GB/s)  loss only %.3f ms\n\n",
              static_cast<long>(N), static_cast<long>(V), fused, gbytes / (fused * 1e-3), loss_only);
}

// The classifier and its loss, forward + both gradients, at the quickstart's and pretrain-cpu's
// shapes (N = 2048 rows of hidden 256; N = 4096 rows of hidden 128; vocab 8192): the unfused
// composition the model used before (logits GEMM, cross_entropy in place, dh and dW GEMMs) against
// ops::linear_cross_entropy (blocks of rows, no [N, V] tensor), interleaved; f32 and bf16 GEMMs.
void bench_linear_cross_entropy(int reps) {
  struct Shape3 {
    const char* what;
    int64_t n, h, v;
  };
  std::vector<ops::Execution> modes{ops::Execution{}};
  if (ops::cpu_bf16_supported()) modes.push_back(ops::Execution{.cpu_bf16_gemm = true});
  for (const ops::Execution& ex : modes) {
    for (const Shape3& s : {Shape3{"quickstart", 2048, 256, 8192}, Shape3{"pretrain-cpu", 4096, 128, 8192}}) {
      Tensor h = random({s.n, s.h}, 11), w = random({s.v, s.h}, 12);
      Tensor targets = Tensor::empty({s.n}, DType::I32);
      Philox rng(13);
      for (int64_t i = 0; i < s.n; ++i) targets.data<int32_t>()[i] = static_cast<int32_t>(rng.uniform_int(s.v));
      Tensor logits = Tensor::empty({s.n, s.v}), dh = Tensor::empty({s.n, s.h}), dw = Tensor::empty({s.v, s.h});
      auto [unfused, fused] = bench::median_ms_interleaved(
          [&] {
            ops::matmul_into(h, w, logits, false, true, 1.0f, 0.0f, ex);
            (void)ops::cross_entropy(logits, targets, -100, &logits);
            ops::matmul_into(logits, w, dh, false, false, 1.0f, 0.0f, ex);
            ops::matmul_into(logits, h, dw, true, false, 1.0f, 0.0f, ex);
          },
          [&] { (void)ops::linear_cross_entropy(h, w, targets, -100, ex, &dh, &dw); }, reps);
      std::printf("classifier+loss %-4s %-12s N=%ld H=%ld V=%ld  unfused %.3f ms  fused %.3f ms  %.2fx\n",
                  ex.cpu_bf16_gemm ? "bf16" : "f32", s.what, static_cast<long>(s.n), static_cast<long>(s.h),
                  static_cast<long>(s.v), unfused, fused, unfused / fused);
    }
  }
  std::printf("\n");
}

// The GPU ops at the 124M benchmark model's shapes (B=16, T=1024, hidden 768, 12/4 heads, D=64,
// intermediate 2048, vocab 50304), bf16 storage: the numbers that choose between the two
// attention kernels (ops::Execution::attention, train.attention) and show where a step's time goes.
void bench_gpu(int reps) {
  if (device_runtime::cuda_device_count() == 0) {
    std::printf("gpu: no CUDA device%s; skipped\n\n", device_runtime::cuda_built() ? "" : " (built without CUDA)");
    return;
  }
  const Device gpu = Device::cuda(0);
  auto timed = [&](const std::function<void()>& fn) {
    return bench::median_ms(
        [&] {
          fn();
          device_runtime::cuda_synchronize(0);
        },
        reps);
  };
  auto dev = [&](const Shape& shape, uint64_t seed) { return random(shape, seed).to(DType::BF16).to(gpu); };
  const int64_t B = 16, T = 1024, C = 768, F = 2048, V = 50304, Hq = 12, Hkv = 4, D = 64, N = B * T;
  struct Gemm {
    const char* what;
    int64_t m, n, k;
  };
  for (const Gemm& g : {Gemm{"qkv/o proj x@W^T", N, C, C}, Gemm{"mlp up x@W^T", N, F, C},
                        Gemm{"mlp down x@W^T", N, C, F}, Gemm{"lm head x@E^T", N, V, C}}) {
    Tensor a = dev({g.m, g.k}, 20), w = dev({g.n, g.k}, 21), out = Tensor::empty({g.m, g.n}, DType::BF16, gpu);
    const double ms = timed([&] { ops::matmul_into(a, w, out, false, true); });
    std::printf("gpu gemm bf16 %-18s M=%ld N=%ld K=%ld  %.3f ms  %.0f TFLOP/s\n", g.what, static_cast<long>(g.m),
                static_cast<long>(g.n), static_cast<long>(g.k), ms, 2.0 * g.m * g.n * g.k / (ms * 1e-3) / 1e12);
  }
  Tensor q = dev({B, T, Hq, D}, 22), k = dev({B, T, Hkv, D}, 23), v = dev({B, T, Hkv, D}, 24);
  Tensor dout = dev({B, T, Hq, D}, 25);
  Tensor out = Tensor::empty(q.shape(), DType::BF16, gpu), lse = Tensor::empty({B, Hq, T}, DType::F32, gpu);
  Tensor dq = Tensor::empty(q.shape(), DType::BF16, gpu), dk = Tensor::empty(k.shape(), DType::BF16, gpu),
         dv = Tensor::empty(v.shape(), DType::BF16, gpu);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const double causal_pairs = static_cast<double>(B) * Hq * T * (T + 1) / 2;
  for (ops::AttentionKernel attention : {ops::AttentionKernel::CudaCores, ops::AttentionKernel::TensorCores}) {
    const ops::Execution ex{.attention = attention};
    const double fwd = timed([&] { ops::attention_forward(q, k, v, scale, out, lse, ex); });
    const double bwd = timed([&] { ops::attention_backward(dout, q, k, v, out, lse, scale, dq, dk, dv, ex); });
    std::printf("gpu attention bf16 %-12s B=%ld T=%ld Hq=%ld Hkv=%ld D=%ld  fwd %.3f ms (%.0f TFLOP/s)  bwd %.3f ms "
                "(%.0f TFLOP/s, 2.5x fwd FLOPs)\n",
                ops::attention_kernel_name(attention), static_cast<long>(B), static_cast<long>(T),
                static_cast<long>(Hq), static_cast<long>(Hkv), static_cast<long>(D), fwd,
                4.0 * causal_pairs * D / (fwd * 1e-3) / 1e12, bwd, 10.0 * causal_pairs * D / (bwd * 1e-3) / 1e12);
  }
  Tensor logits = dev({N, V}, 26);
  Tensor targets = Tensor::empty({N}, DType::I32);
  Philox rng(27);
  for (int64_t i = 0; i < N; ++i) targets.data<int32_t>()[i] = static_cast<int32_t>(rng.uniform_int(V));
  const double ce = timed([&] { (void)ops::cross_entropy(logits, targets, -100, &logits); });
  std::printf("gpu cross_entropy bf16 in place N=%ld V=%ld  %.3f ms (%.0f GB/s)\n\n", static_cast<long>(N),
              static_cast<long>(V), ce, 3.0 * N * V * 2 / (ce * 1e-3) / 1e9);
}

// bf16 GEMMs (ops::Execution::cpu_bf16_gemm: operands rounded to bf16, f32 accumulation, oneDNN) against
// f32 (OpenBLAS) through the same entry point, interleaved; the rounding of the operands is
// included, as in training.
void bench_gemm_bf16(int reps) {
  if (!ops::cpu_bf16_supported()) {
    std::printf("gemm bf16: skipped: %s\n\n", ops::cpu_bf16_fallback_notice().c_str());
    return;
  }
  const ops::Execution bf16_gemm{.cpu_bf16_gemm = true};
  std::printf("%s\n", ops::cpu_matmul_description(bf16_gemm).c_str());
  std::printf("%-14s %-22s %10s %10s %10s %10s %8s\n", "gemm", "m x n x k", "f32 ms", "bf16 ms", "f32 GF/s",
              "bf16 GF/s", "speedup");
  double total32 = 0, total16 = 0;
  for (const GemmShape& s : quickstart_gemms()) {
    Tensor a = random(s.ta ? Shape{s.k, s.m} : Shape{s.m, s.k}, 1);
    Tensor b = random(s.tb ? Shape{s.n, s.k} : Shape{s.k, s.n}, 2);
    Tensor c = Tensor::empty({s.m, s.n});
    auto [f32, bf16] = bench::median_ms_interleaved(
        [&] { ops::matmul_into(a, b, c, s.ta, s.tb); }, [&] { ops::matmul_into(a, b, c, s.ta, s.tb, 1.0f, 0.0f, bf16_gemm); },
        reps);
    total32 += f32;
    total16 += bf16;
    const double gflop = 2.0 * static_cast<double>(s.m) * s.n * s.k * 1e-9;
    std::printf("%-14s %-22s %10.3f %10.3f %10.1f %10.1f %7.2fx\n", s.what,
                fmt::format("{}x{}x{}{}{}", s.m, s.n, s.k, s.ta ? " T" : " N", s.tb ? "T" : "N").c_str(), f32, bf16,
                gflop / (f32 * 1e-3), gflop / (bf16 * 1e-3), f32 / bf16);
  }
  std::printf("gemm bf16: all shapes %.3f ms f32, %.3f ms bf16: %.2fx\n\n", total32, total16, total32 / total16);
}

// f32 GEMMs: OpenBLAS sgemm against oneDNN's f32 matmul (cpu::gemm_batched_f32_dnnl), interleaved.
void bench_gemm_f32_dnnl(int reps) {
  std::printf("f32 GEMMs: OpenBLAS vs oneDNN %s (ISA %s)\n", cpu::f32_gemm_impl().c_str(), cpu::cpu_isa_name().c_str());
  std::printf("%-14s %-22s %10s %10s %8s\n", "gemm", "m x n x k", "sgemm ms", "dnnl ms", "speedup");
  double total_blas = 0, total_dnnl = 0;
  for (const GemmShape& s : quickstart_gemms()) {
    Tensor a = random(s.ta ? Shape{s.k, s.m} : Shape{s.m, s.k}, 1);
    Tensor b = random(s.tb ? Shape{s.n, s.k} : Shape{s.k, s.n}, 2);
    Tensor c = Tensor::empty({s.m, s.n});
    const int64_t lda = s.ta ? s.m : s.k, ldb = s.tb ? s.k : s.n;
    auto [blas, dnnl] = bench::median_ms_interleaved(
        [&] {
          cpu::gemm_batched(s.ta, s.tb, s.m, s.n, s.k, 1.0f, a.data<float>(), lda, 0, b.data<float>(), ldb, 0, 0.0f,
                            c.data<float>(), s.n, 0, 1);
        },
        [&] {
          cpu::gemm_batched_f32_dnnl(s.ta, s.tb, s.m, s.n, s.k, 1.0f, a.data<float>(), lda, 0, b.data<float>(), ldb, 0,
                                     0.0f, c.data<float>(), s.n, 0, 1);
        },
        reps);
    total_blas += blas;
    total_dnnl += dnnl;
    std::printf("%-14s %-22s %10.3f %10.3f %7.2fx\n", s.what,
                fmt::format("{}x{}x{}{}{}", s.m, s.n, s.k, s.ta ? " T" : " N", s.tb ? "T" : "N").c_str(), blas, dnnl,
                blas / dnnl);
  }
  std::printf("gemm f32: all shapes %.3f ms OpenBLAS, %.3f ms oneDNN: %.2fx\n\n", total_blas, total_dnnl,
              total_blas / total_dnnl);
}

}  // namespace
}  // namespace kvroute

int main(int argc, char** argv) {
  CLI::App app{"kvroute op benchmarks at the quickstart model's shapes"};
  int threads = 2, reps = 20;
  std::string only = "all";
  app.add_option("--threads", threads, "OpenMP/OpenBLAS threads")->check(CLI::PositiveNumber);
  app.add_option("--reps", reps, "timed repetitions per case (median reported)")->check(CLI::PositiveNumber);
  app.add_option("--only", only, "gemm | gemm_bf16 | gemm_f32_dnnl | attention | cross_entropy | linear_cross_entropy | gpu | all")
      ->check(CLI::IsMember({"gemm", "gemm_bf16", "gemm_f32_dnnl", "attention", "cross_entropy", "linear_cross_entropy", "gpu", "all"}));
  CLI11_PARSE(app, argc, argv);
  kvroute::set_num_threads(threads);
  Eigen::setNbThreads(threads);
  std::printf("kvroute op benchmarks: threads=%d reps=%d (median)\n\n", threads, reps);
  if (only == "all" || only == "gemm") kvroute::bench_gemm(reps);
  if (only == "all" || only == "gemm_bf16") kvroute::bench_gemm_bf16(reps);
  if (only == "all" || only == "gemm_f32_dnnl") kvroute::bench_gemm_f32_dnnl(reps);
  if (only == "all" || only == "attention") kvroute::bench_attention(reps);
  if (only == "all" || only == "cross_entropy") kvroute::bench_cross_entropy(reps);
  if (only == "all" || only == "linear_cross_entropy") kvroute::bench_linear_cross_entropy(reps);
  if (only == "all" || only == "gpu") kvroute::bench_gpu(reps);
  return 0;
}
