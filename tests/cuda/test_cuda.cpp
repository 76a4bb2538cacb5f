// CUDA backend tests: every op against the CPU op on random inputs (f32 and bf16 storage), a full
// training step GPU vs CPU, bf16 against f32 training, and run-to-run determinism. They run where
// a GPU is present and skip cleanly elsewhere (and in CPU-only builds).
#include <gtest/gtest.h>

#include <dlfcn.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "autograd/variable.h"
#include "core/device_runtime.h"
#include "core/rng.h"
#include "data/shard.h"
#include "distributed/shard.h"
#include "eval/generate.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/ops.h"
#include "layers/transformer.h"
#include "tests/test_util.h"
#include "distributed/communicator.h"
#include "train/config.h"
#include "distributed/grad_reducer.h"
#include "train/trainer.h"

namespace kvroute {
namespace {

using testing::random_tensor;
using testing::scaled_max_error;
using testing::to_double;

#define SKIP_WITHOUT_GPU()                                                              \
  do {                                                                                  \
    if (!device_runtime::cuda_built()) GTEST_SKIP() << "built without CUDA";            \
    if (device_runtime::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";     \
  } while (0)

const Device kGpu = Device::cuda(0);

// The CPU reference sees the same (bf16-rounded) input values as the GPU.
Tensor rounded(const Tensor& cpu, DType dtype) { return cpu.to(dtype).to(DType::F32); }
Tensor on_gpu(const Tensor& cpu, DType dtype) { return cpu.to(dtype).to(kGpu); }
double error(const Tensor& gpu_result, const Tensor& cpu_result) {
  return scaled_max_error(gpu_result.to(Device::cpu()).to(DType::F32), to_double(cpu_result));
}
// Output rounding to bf16 costs up to 2^-8 relative; arithmetic stays f32.
double tolerance(DType dtype, double f32_tol = 2e-5) { return dtype == DType::BF16 ? 1e-2 : f32_tol; }

class CudaOps : public ::testing::TestWithParam<DType> {};
INSTANTIATE_TEST_SUITE_P(Dtypes, CudaOps, ::testing::Values(DType::F32, DType::BF16),
                         [](const auto& info) { return info.param == DType::F32 ? "f32" : "bf16"; });

TEST(Cuda, NoDeviceIsAClearError) {
  if (device_runtime::cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is present";
  testing::expect_error([] { (void)Tensor::empty({4}, DType::F32, Device::cuda(0)); }, {"cuda:0"});
}

// cuBLASLt is dlopen'ed on the first CUDA GEMM, not loaded at program start (its initialisers cost
// ~0.4 s): without a GPU nothing has loaded it yet; loading it resolves every function kvroute uses.
TEST(Cuda, CublasLtIsLoadedOnFirstUseWithEveryFunction) {
  if (!device_runtime::cuda_built()) {
    testing::expect_error([] { cuda::load_cublaslt(); }, {"cuBLASLt", "CUDA backend"});
    return;
  }
  const bool fresh = device_runtime::cuda_device_count() == 0;  // no GEMM can have loaded it yet
  void* before = dlopen("libcublasLt.so.13", RTLD_NOW | RTLD_NOLOAD);  // the toolkit of CI and the GPU machine
  if (before) dlclose(before);
  const std::string name = cuda::load_cublaslt();
  if (fresh && name == "libcublasLt.so.13") {
    EXPECT_EQ(before, nullptr) << name << " was loaded at program start";
  }
  void* handle = dlopen(name.c_str(), RTLD_NOW | RTLD_NOLOAD);
  EXPECT_NE(handle, nullptr) << name;
  if (handle) dlclose(handle);
}

TEST(Cuda, CpuKernelsRefuseBf16Clearly) {
  Tensor a = Tensor::zeros({4}, DType::BF16);
  testing::expect_error([&] { (void)ops::add(a, a); }, {"add", "bf16", "CUDA"});
}

TEST(Cuda, AllocatorCachesAndCountsPeak) {
  SKIP_WITHOUT_GPU();
  Allocator& alloc = cuda_allocator(0);
  alloc.reset_peak();
  size_t base = alloc.stats().current_bytes;
  { Tensor a = Tensor::empty({1 << 20}, DType::F32, kGpu); }
  EXPECT_EQ(alloc.stats().current_bytes, base);
  EXPECT_GE(alloc.stats().peak_bytes, base + (4u << 20));
  uint64_t hits = alloc.stats().cache_hits;
  Tensor b = Tensor::empty({1 << 20}, DType::F32, kGpu);
  EXPECT_EQ(alloc.stats().cache_hits, hits + 1);
}

TEST(Cuda, CopiesCastsAndFillRoundTrip) {
  SKIP_WITHOUT_GPU();
  Tensor host = random_tensor({3, 5, 7}, 1, -10, 10);
  Tensor dev = host.to(kGpu);
  EXPECT_EQ(dev.to(Device::cpu()).to_vector<float>(), host.to_vector<float>());
  Tensor dev_t = dev.transpose(0, 2).contiguous();
  EXPECT_EQ(dev_t.to(Device::cpu()).to_vector<float>(), host.transpose(0, 2).contiguous().to_vector<float>());
  EXPECT_EQ(dev.to(DType::BF16).to(DType::F32).to(Device::cpu()).to_vector<float>(),
            host.to(DType::BF16).to(DType::F32).to_vector<float>());
  Tensor filled = Tensor::full({100}, 2.5, DType::F32, kGpu);
  EXPECT_EQ(filled.to_vector<float>(), std::vector<float>(100, 2.5f));
  // Many uploads in a row reuse the pinned staging buffers; every one must arrive intact.
  for (int i = 0; i < 12; ++i) {
    Tensor h = random_tensor({1000 + i}, 100 + static_cast<uint64_t>(i));
    EXPECT_EQ(h.to(kGpu).to_vector<float>(), h.to_vector<float>()) << "upload " << i;
  }
}

TEST(Cuda, CublasLtGemmMatchesCpu) {
  SKIP_WITHOUT_GPU();
  struct Case {
    Shape a, b;
    bool ta, tb;
  };
  for (const Case& c : {Case{{64, 48}, {48, 80}, false, false}, Case{{48, 64}, {80, 48}, true, true},
                        Case{{3, 17, 9}, {3, 9, 31}, false, false}, Case{{4, 33, 65}, {65, 129}, false, false},
                        Case{{2, 9, 17}, {2, 31, 9}, true, true}}) {
    Tensor a = random_tensor(c.a, 2), b = random_tensor(c.b, 3);
    Tensor cpu = ops::matmul(a, b, c.ta, c.tb);
    Tensor gpu = ops::matmul(a.to(kGpu), b.to(kGpu), c.ta, c.tb);
    EXPECT_EQ(gpu.device(), kGpu);
    EXPECT_LT(error(gpu, cpu), 1e-5);
  }
}

TEST(Cuda, Bf16GemmAccumulatesInF32) {
  SKIP_WITHOUT_GPU();
  Tensor a = random_tensor({96, 256}, 4), b = random_tensor({128, 256}, 5);
  Tensor cpu = ops::matmul(rounded(a, DType::BF16), rounded(b, DType::BF16), false, true);
  Tensor ga = on_gpu(a, DType::BF16), gb = on_gpu(b, DType::BF16);
  Tensor f32_out = ops::matmul(ga, gb, false, true, DType::F32);
  Tensor bf16_out = ops::matmul(ga, gb, false, true);
  EXPECT_EQ(f32_out.dtype(), DType::F32);
  EXPECT_EQ(bf16_out.dtype(), DType::BF16);
  EXPECT_LT(error(f32_out, cpu), 1e-5);  // exact bf16 inputs, f32 accumulation
  EXPECT_LT(error(bf16_out, cpu), 1e-2);
}

TEST_P(CudaOps, ElementwiseAndSwiglu) {
  SKIP_WITHOUT_GPU();
  const DType dt = GetParam();
  Tensor a = rounded(random_tensor({1000, 7}, 10, -3, 3), dt), b = rounded(random_tensor({1000, 7}, 11, -3, 3), dt);
  Tensor ga = on_gpu(a, dt), gb = on_gpu(b, dt);
  EXPECT_LT(error(ops::add(ga, gb), ops::add(a, b)), tolerance(dt));
  EXPECT_LT(error(ops::mul(ga, gb), ops::mul(a, b)), tolerance(dt));
  EXPECT_LT(error(ops::scale(ga, -0.37f), ops::scale(a, -0.37f)), tolerance(dt));
  Tensor y = random_tensor({1000, 7}, 12), gy = y.to(kGpu);
  ops::axpy_(0.5f, ga, gy);  // a bf16 gradient into an f32 accumulator
  ops::axpy_(0.5f, a, y);
  EXPECT_LT(error(gy, y), 2e-6);

  Tensor out = ops::mul(a, b), gout = ops::mul(ga, gb);
  ops::swiglu_forward(a, b, out);
  ops::swiglu_forward(ga, gb, gout);
  EXPECT_LT(error(gout, out), tolerance(dt, 1e-5));
  Tensor dout = rounded(random_tensor({1000, 7}, 13), dt);
  Tensor dg = ops::mul(a, b), du = ops::mul(a, b), gdg = ops::mul(ga, gb), gdu = ops::mul(ga, gb);
  ops::swiglu_backward(dout, a, b, dg, du);
  ops::swiglu_backward(on_gpu(dout, dt), ga, gb, gdg, gdu);
  EXPECT_LT(error(gdg, dg), tolerance(dt, 1e-5));
  EXPECT_LT(error(gdu, du), tolerance(dt, 1e-5));
}

TEST_P(CudaOps, ReductionsAreExactAndRepeatable) {
  SKIP_WITHOUT_GPU();
  const DType dt = GetParam();
  Tensor a = rounded(random_tensor({300007}, 20), dt);
  Tensor ga = on_gpu(a, dt);
  EXPECT_NEAR(ops::sum(ga).item(), ops::sum(a).item(), 1e-6 * 300007);
  EXPECT_NEAR(ops::squared_norm(ga).item(), ops::squared_norm(a).item(), 1e-5 * ops::squared_norm(a).item());
  EXPECT_EQ(ops::squared_norm(ga).item(), ops::squared_norm(ga).item());
  Tensor m = rounded(random_tensor({37, 301}, 21), dt);
  EXPECT_LT(error(ops::sum_last_dim(on_gpu(m, dt)), ops::sum_last_dim(m)), 1e-6);
}

TEST_P(CudaOps, EmbeddingForwardAndDeterministicBackward) {
  SKIP_WITHOUT_GPU();
  const DType dt = GetParam();
  const int64_t vocab = 50, channels = 300;
  Tensor weight = rounded(random_tensor({vocab, channels}, 30), dt);
  std::vector<int32_t> ids;
  for (int i = 0; i < 64; ++i) ids.push_back((i * 7) % 13 + (i % 5 == 0 ? 37 : 0));
  Tensor tokens = Tensor::from_vector(ids, {8, 8});
  EXPECT_LT(error(ops::embedding_forward(on_gpu(weight, dt), tokens), ops::embedding_forward(weight, tokens)), 0.0 + 1e-30);
  // Token ids may also live on the GPU.
  EXPECT_LT(error(ops::embedding_forward(on_gpu(weight, dt), tokens.to(kGpu)), ops::embedding_forward(weight, tokens)),
            1e-30);
  Tensor dout = rounded(random_tensor({8, 8, channels}, 31), dt);
  Tensor dw = Tensor::zeros({vocab, channels});
  ops::embedding_backward(dout, tokens, dw);
  Tensor gdw1 = Tensor::zeros({vocab, channels}, DType::F32, kGpu), gdw2 = gdw1.clone();
  ops::embedding_backward(on_gpu(dout, dt), tokens, gdw1);
  ops::embedding_backward(on_gpu(dout, dt), tokens, gdw2);
  EXPECT_LT(error(gdw1, dw), 1e-6);
  EXPECT_EQ(gdw1.to_vector<float>(), gdw2.to_vector<float>());
}

TEST_P(CudaOps, RmsNormForwardBackward) {
  SKIP_WITHOUT_GPU();
  const DType dt = GetParam();
  for (int64_t channels : {8, 200, 768}) {
    Tensor x = rounded(random_tensor({37, channels}, 40, -2, 2), dt);
    Tensor w = rounded(random_tensor({channels}, 41, 0.5f, 1.5f), dt);
    Tensor out = Tensor::empty({37, channels}), rstd = Tensor::empty({37});
    ops::rms_norm_forward(x, w, 1e-6f, out, rstd);
    Tensor gout = Tensor::empty({37, channels}, dt, kGpu), grstd = Tensor::empty({37}, DType::F32, kGpu);
    ops::rms_norm_forward(on_gpu(x, dt), on_gpu(w, dt), 1e-6f, gout, grstd);
    EXPECT_LT(error(gout, out), tolerance(dt, 1e-5)) << channels;
    EXPECT_LT(error(grstd, rstd), 1e-5) << channels;

    Tensor dout = rounded(random_tensor({37, channels}, 42), dt);
    Tensor dx = Tensor::empty({37, channels}), dw = Tensor::zeros({channels});
    ops::rms_norm_backward(dout, x, w, rstd, dx, dw);
    Tensor gdx = Tensor::empty({37, channels}, dt, kGpu), gdw = Tensor::zeros({channels}, DType::F32, kGpu);
    ops::rms_norm_backward(on_gpu(dout, dt), on_gpu(x, dt), on_gpu(w, dt), grstd, gdx, gdw);
    EXPECT_LT(error(gdx, dx), tolerance(dt, 1e-4)) << channels;
    EXPECT_LT(error(gdw, dw), 1e-4) << channels;
  }
}

TEST_P(CudaOps, RopeForwardBackward) {
  SKIP_WITHOUT_GPU();
  const DType dt = GetParam();
  Tensor x = rounded(random_tensor({2, 19, 3, 32}, 50), dt);
  for (int64_t offset : {0, 1000}) {
    Tensor out = Tensor::empty(x.shape()), gout = Tensor::empty(x.shape(), dt, kGpu);
    ops::rope_forward(x, {1e6}, offset, out);
    ops::rope_forward(on_gpu(x, dt), {1e6}, offset, gout);
    EXPECT_LT(error(gout, out), tolerance(dt, 1e-6));
    ops::rope_backward(x, {1e4}, offset, out);
    ops::rope_backward(on_gpu(x, dt), {1e4}, offset, gout);
    EXPECT_LT(error(gout, out), tolerance(dt, 1e-6));
  }
}

struct AttentionCase {
  int64_t batch, q_len, kv_len, q_heads, kv_heads, head_dim;
};

// `kernel` is the CUDA kernel under test (the CPU has one).
void check_attention_against_cpu(DType dt, const std::vector<AttentionCase>& cases, uint64_t seed,
                                 ops::AttentionKernel kernel = ops::AttentionKernel::CudaCores) {
  const ops::Execution ex{.attention = kernel};
  for (const AttentionCase& c : cases) {
    SCOPED_TRACE(::testing::Message() << "B=" << c.batch << " Tq=" << c.q_len << " Tk=" << c.kv_len << " Hq="
                                      << c.q_heads << " Hkv=" << c.kv_heads << " D=" << c.head_dim);
    Tensor q = rounded(random_tensor({c.batch, c.q_len, c.q_heads, c.head_dim}, seed++, -2, 2), dt);
    Tensor k = rounded(random_tensor({c.batch, c.kv_len, c.kv_heads, c.head_dim}, seed++, -2, 2), dt);
    Tensor v = rounded(random_tensor({c.batch, c.kv_len, c.kv_heads, c.head_dim}, seed++), dt);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    Tensor out = Tensor::empty(q.shape()), lse = Tensor::empty({c.batch, c.q_heads, c.q_len});
    ops::attention_forward(q, k, v, scale, out, lse);
    Tensor gq = on_gpu(q, dt), gk = on_gpu(k, dt), gv = on_gpu(v, dt);
    Tensor gout = Tensor::empty(q.shape(), dt, kGpu), glse = Tensor::empty(lse.shape(), DType::F32, kGpu);
    ops::attention_forward(gq, gk, gv, scale, gout, glse, ex);
    EXPECT_LT(error(gout, out), tolerance(dt, 1e-5));
    EXPECT_LT(error(glse, lse), dt == DType::BF16 ? 1e-3 : 1e-5);  // bf16 P in the tensor-core kernel

    Tensor dout = rounded(random_tensor(q.shape(), seed++), dt);
    Tensor dq = Tensor::empty(q.shape()), dk = Tensor::empty(k.shape()), dv = Tensor::empty(v.shape());
    ops::attention_backward(dout, q, k, v, out, lse, scale, dq, dk, dv);
    // The GPU backward reads the GPU forward's own output (what training does).
    Tensor gdq = Tensor::empty(q.shape(), dt, kGpu), gdk = Tensor::empty(k.shape(), dt, kGpu),
           gdv = Tensor::empty(v.shape(), dt, kGpu);
    ops::attention_backward(on_gpu(dout, dt), gq, gk, gv, gout, glse, scale, gdq, gdk, gdv, ex);
    // bf16: the products of the backward round P and dS to bf16 on the tensor cores.
    EXPECT_LT(error(gdq, dq), tolerance(dt, 1e-4) * 2);
    EXPECT_LT(error(gdk, dk), tolerance(dt, 1e-4) * 2);
    EXPECT_LT(error(gdv, dv), tolerance(dt, 1e-4) * 2);
    // Deterministic: a second backward is bit-identical.
    Tensor gdq2 = Tensor::empty(q.shape(), dt, kGpu), gdk2 = Tensor::empty(k.shape(), dt, kGpu),
           gdv2 = Tensor::empty(v.shape(), dt, kGpu);
    ops::attention_backward(on_gpu(dout, dt), gq, gk, gv, gout, glse, scale, gdq2, gdk2, gdv2, ex);
    EXPECT_EQ(gdk2.to_vector<float>(), gdk.to_vector<float>());
    EXPECT_EQ(gdv2.to_vector<float>(), gdv.to_vector<float>());
    EXPECT_EQ(gdq2.to_vector<float>(), gdq.to_vector<float>());
  }
}

TEST_P(CudaOps, AttentionForwardBackward) {
  SKIP_WITHOUT_GPU();
  check_attention_against_cpu(GetParam(),
                              {AttentionCase{2, 37, 37, 4, 2, 32}, AttentionCase{1, 5, 70, 4, 1, 64},
                               AttentionCase{2, 64, 64, 6, 6, 128}, AttentionCase{1, 33, 33, 2, 2, 16},
                               AttentionCase{3, 17, 17, 4, 1, 8}, AttentionCase{1, 1, 129, 8, 2, 64},
                               AttentionCase{1, 200, 200, 2, 1, 64}},
                              60);
}

TEST(Cuda, TensorCoreAttentionMatchesCpu) {
  SKIP_WITHOUT_GPU();
  // Block edges (64-row blocks, 64-key tiles, 32-query tiles), GQA groups, decoding shapes.
  check_attention_against_cpu(DType::BF16,
                              {AttentionCase{2, 37, 37, 4, 2, 32}, AttentionCase{1, 5, 70, 4, 1, 64},
                               AttentionCase{2, 64, 64, 6, 6, 128}, AttentionCase{1, 130, 130, 4, 2, 64},
                               AttentionCase{1, 1, 129, 8, 2, 64}, AttentionCase{2, 200, 257, 6, 2, 128},
                               AttentionCase{1, 96, 96, 3, 1, 32}},
                              160, ops::AttentionKernel::TensorCores);
  testing::expect_error([] { (void)ops::parse_attention_kernel("fastest"); },
                        {"'fastest'", "cuda_cores, tensor_cores"});
}

// Packed rows (data.pack): per-token positions for RoPE and per-query key bounds for attention
// (host memory, uploaded by the kernels) give the CPU's results; with the tensor-core kernel asked
// for, packed calls run on the CUDA-core kernel.
TEST_P(CudaOps, PackedRowsMatchCpu) {
  SKIP_WITHOUT_GPU();
  const DType dt = GetParam();
  const int64_t B = 2, T = 150, Hq = 4, Hkv = 2, D = 64;
  const std::vector<std::vector<int64_t>> lengths = {{1, 40, 75, 34}, {150}};
  Tensor positions = Tensor::empty({B, T}, DType::I32), key_begin = Tensor::empty({B, T}, DType::I32);
  for (int64_t b = 0; b < B; ++b) {
    int64_t start = 0;
    for (int64_t len : lengths[static_cast<size_t>(b)]) {
      for (int64_t t = start; t < start + len; ++t) {
        positions.data<int32_t>()[b * T + t] = static_cast<int32_t>(t - start);
        key_begin.data<int32_t>()[b * T + t] = static_cast<int32_t>(start);
      }
      start += len;
    }
  }
  Tensor x = rounded(random_tensor({B, T, Hq, D}, 70), dt);
  Tensor out = Tensor::empty(x.shape()), gout = Tensor::empty(x.shape(), dt, kGpu);
  ops::rope_forward(x, {1e4}, 0, out, positions);
  ops::rope_forward(on_gpu(x, dt), {1e4}, 0, gout, positions);
  EXPECT_LT(error(gout, out), tolerance(dt, 1e-6));
  Tensor q = rounded(random_tensor({B, T, Hq, D}, 71, -2, 2), dt), k = rounded(random_tensor({B, T, Hkv, D}, 72, -2, 2), dt);
  Tensor v = rounded(random_tensor({B, T, Hkv, D}, 73), dt), dout = rounded(random_tensor(q.shape(), 74), dt);
  const float scale = 0.125f;
  Tensor o = Tensor::empty(q.shape()), lse = Tensor::empty({B, Hq, T});
  ops::attention_forward(q, k, v, scale, o, lse, {}, key_begin);
  Tensor dq = Tensor::empty(q.shape()), dk = Tensor::empty(k.shape()), dv = Tensor::empty(v.shape());
  ops::attention_backward(dout, q, k, v, o, lse, scale, dq, dk, dv, {}, key_begin);
  for (ops::AttentionKernel kernel : {ops::AttentionKernel::CudaCores, ops::AttentionKernel::TensorCores}) {
    const ops::Execution ex{.attention = kernel};
    Tensor gq = on_gpu(q, dt), gk = on_gpu(k, dt), gv = on_gpu(v, dt);
    Tensor go = Tensor::empty(q.shape(), dt, kGpu), glse = Tensor::empty(lse.shape(), DType::F32, kGpu);
    ops::attention_forward(gq, gk, gv, scale, go, glse, ex, key_begin);
    EXPECT_LT(error(go, o), tolerance(dt, 1e-5));
    EXPECT_LT(error(glse, lse), 1e-5);
    Tensor gdq = Tensor::empty(q.shape(), dt, kGpu), gdk = Tensor::empty(k.shape(), dt, kGpu),
           gdv = Tensor::empty(v.shape(), dt, kGpu);
    ops::attention_backward(on_gpu(dout, dt), gq, gk, gv, go, glse, scale, gdq, gdk, gdv, ex, key_begin);
    EXPECT_LT(error(gdq, dq), tolerance(dt, 1e-4) * 2);
    EXPECT_LT(error(gdk, dk), tolerance(dt, 1e-4) * 2);
    EXPECT_LT(error(gdv, dv), tolerance(dt, 1e-4) * 2);
  }
}

TEST(Cuda, AttentionReadsAKvCachePrefixInPlace) {
  SKIP_WITHOUT_GPU();
  Tensor q = random_tensor({2, 3, 4, 32}, 70), cache_k = random_tensor({2, 50, 2, 32}, 71),
         cache_v = random_tensor({2, 50, 2, 32}, 72);
  Tensor k = cache_k.to(kGpu).slice(1, 0, 20), v = cache_v.to(kGpu).slice(1, 0, 20);
  ASSERT_FALSE(k.is_contiguous());
  Tensor out = Tensor::empty(q.shape(), DType::F32, kGpu), lse = Tensor::empty({2, 4, 3}, DType::F32, kGpu);
  ops::attention_forward(q.to(kGpu), k, v, 0.2f, out, lse);
  Tensor ref = Tensor::empty(q.shape()), ref_lse = Tensor::empty({2, 4, 3});
  ops::attention_forward(q, cache_k.slice(1, 0, 20).contiguous(), cache_v.slice(1, 0, 20).contiguous(), 0.2f, ref,
                         ref_lse);
  EXPECT_LT(error(out, ref), 1e-5);
}

TEST_P(CudaOps, FusedCrossEntropy) {
  SKIP_WITHOUT_GPU();
  const DType dt = GetParam();
  const int64_t rows = 37, vocab = 1000;
  Tensor logits = rounded(random_tensor({rows, vocab}, 80, -5, 5), dt);
  std::vector<int32_t> t;
  for (int64_t r = 0; r < rows; ++r) t.push_back(r == 3 ? -100 : static_cast<int32_t>((r * 97) % vocab));
  Tensor targets = Tensor::from_vector(t, {rows});
  Tensor dl = Tensor::empty({rows, vocab});
  const double loss = ops::cross_entropy(logits, targets, -100, &dl, 0.5f).item();
  Tensor glogits = on_gpu(logits, dt), gdl = Tensor::empty({rows, vocab}, dt, kGpu);
  EXPECT_NEAR(ops::cross_entropy(glogits, targets, -100, &gdl, 0.5f).item(), loss, 1e-5 * std::abs(loss));
  EXPECT_LT(error(gdl, dl), tolerance(dt, 1e-5));
  // In place: d(logits) overwrites the logits.
  EXPECT_NEAR(ops::cross_entropy(glogits, targets, -100, &glogits, 0.5f).item(), loss, 1e-5 * std::abs(loss));
  EXPECT_LT(error(glogits, dl), tolerance(dt, 1e-5));
  EXPECT_NEAR(ops::cross_entropy(on_gpu(logits, dt), targets.to(kGpu), -100).item(), loss, 1e-5 * std::abs(loss));
}

TEST(Cuda, AdamWMatchesCpuAndWritesTheBf16Copy) {
  SKIP_WITHOUT_GPU();
  const int64_t n = 10007;
  Tensor p = random_tensor({n}, 90), g = random_tensor({n}, 91);
  Tensor m = Tensor::zeros({n}), v = Tensor::zeros({n});
  Tensor gp = p.to(kGpu), gg = g.to(kGpu), gm = m.to(kGpu), gv = v.to(kGpu);
  Tensor copy = Tensor::empty({n}, DType::BF16, kGpu);
  const std::vector<ops::DecaySegment> segments = {{0, 3000, true}, {3000, 7, false}, {3007, 7000, true}};
  const ops::AdamWConfig config{1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f};
  for (int64_t step = 1; step <= 3; ++step) {
    ops::adamw_step(p, g, m, v, config, step, segments);
    ops::adamw_step(gp, gg, gm, gv, config, step, segments, &copy);
  }
  EXPECT_LT(error(gp, p), 1e-6);
  EXPECT_LT(error(gm, m), 1e-6);
  EXPECT_LT(error(gv, v), 1e-6);
  EXPECT_EQ(copy.to_vector<float>(), gp.to(DType::BF16).to_vector<float>());
}

layers::ModelConfig gpu_model_config() {
  layers::ModelConfig c;
  c.vocab_size = 97;
  c.hidden_size = 64;
  c.num_layers = 4;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.intermediate_size = 96;
  c.max_seq_len = 64;
  c.init_std = 0.05;
  return c;
}

Tensor random_tokens(const Shape& shape, int64_t vocab, uint64_t seed) {
  Philox rng(seed);
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < shape_numel(shape); ++i) ids.push_back(static_cast<int32_t>(rng.uniform_int(vocab)));
  return Tensor::from_vector(ids, shape);
}

TEST(Cuda, Fp32TrainingStepMatchesCpu) {
  SKIP_WITHOUT_GPU();
  layers::Transformer cpu_model(gpu_model_config(), 7), gpu_model(gpu_model_config(), 7);
  gpu_model.to(kGpu);
  Tensor inputs = random_tokens({3, 24}, 97, 1), targets = random_tokens({3, 24}, 97, 2);
  const layers::RoutingPlan plan = {0, 0, 1, 3};
  autograd::Variable cpu_loss = cpu_model.loss(inputs, targets, plan);
  cpu_loss.backward();
  autograd::Variable gpu_loss = gpu_model.loss(inputs, targets, plan);
  gpu_loss.backward();
  EXPECT_NEAR(gpu_loss.data().item(), cpu_loss.data().item(), 1e-5 * cpu_loss.data().item());
  EXPECT_LT(error(gpu_model.flat_gradients(), cpu_model.flat_gradients()), 1e-4);
  Tensor m = Tensor::zeros(cpu_model.flat_parameters().shape()), v = m.clone();
  Tensor gm = m.to(kGpu), gv = m.to(kGpu);
  const ops::AdamWConfig config{1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f};
  ops::adamw_step(cpu_model.flat_parameters(), cpu_model.flat_gradients(), m, v, config, 1, cpu_model.decay_segments());
  ops::adamw_step(gpu_model.flat_parameters(), gpu_model.flat_gradients(), gm, gv, config, 1,
                  gpu_model.decay_segments(), gpu_model.compute_copy());
  EXPECT_LT(error(gpu_model.flat_parameters(), cpu_model.flat_parameters()), 1e-5);
}

TEST(Cuda, Bf16GradientsFollowF32) {
  SKIP_WITHOUT_GPU();
  layers::Transformer f32_model(gpu_model_config(), 7), bf16_model(gpu_model_config(), 7);
  f32_model.to(kGpu);
  bf16_model.to(kGpu, DType::BF16);
  ASSERT_NE(bf16_model.compute_copy(), nullptr);
  EXPECT_EQ(bf16_model.parameters()[0].second.data().dtype(), DType::BF16);
  EXPECT_EQ(bf16_model.master_parameters()[0].second.dtype(), DType::F32);
  Tensor inputs = random_tokens({4, 32}, 97, 3), targets = random_tokens({4, 32}, 97, 4);
  const layers::RoutingPlan plan = {0, 1, 1, 2};
  autograd::Variable a = f32_model.loss(inputs, targets, plan);
  a.backward();
  autograd::Variable b = bf16_model.loss(inputs, targets, plan);
  b.backward();
  EXPECT_NEAR(b.data().item(), a.data().item(), 2e-2 * a.data().item());
  EXPECT_EQ(bf16_model.flat_gradients().dtype(), DType::F32);
  EXPECT_LT(error(bf16_model.flat_gradients(), f32_model.flat_gradients().to(Device::cpu())), 5e-2);
}

// ZeRO's sharded f32 masters with the bf16 compute copy, two ranks simulated on one GPU (what the
// trainer does with dist.zero >= 1 on GPUs): each updates its piece of the masters and of the copy
// and takes the other's piece of the copy; both copies equal the unsharded model's, bit for bit.
TEST(Cuda, ShardedMasterWeightsWithTheBf16CopyFollowTheUnshardedModel) {
  SKIP_WITHOUT_GPU();
  layers::Transformer whole(gpu_model_config(), 7), rank0(gpu_model_config(), 7), rank1(gpu_model_config(), 7);
  for (layers::Transformer* t : {&whole, &rank0, &rank1}) t->to(kGpu, DType::BF16);
  const int64_t P = whole.parameter_count();
  const dist::ShardLayout piece0(P, 2, 0), piece1(P, 2, 1);
  const int64_t split = piece0.end();
  rank0.shard_master_weights(0, split);
  rank1.shard_master_weights(split, P);
  EXPECT_EQ(rank1.flat_parameters().numel(), P - split);
  EXPECT_EQ(rank1.compute_copy()->dtype(), DType::BF16);
  Tensor inputs = random_tokens({2, 16}, 97, 5), targets = random_tokens({2, 16}, 97, 6);
  const layers::RoutingPlan plan = {0, 0, 2, 3};
  const ops::AdamWConfig config{1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f};
  Tensor m = Tensor::zeros({P}, DType::F32, kGpu), v = m.clone();
  Tensor m0 = Tensor::zeros({split}, DType::F32, kGpu), v0 = m0.clone();
  Tensor m1 = Tensor::zeros({P - split}, DType::F32, kGpu), v1 = m1.clone();
  for (int64_t step = 1; step <= 2; ++step) {
    // The forward reads each rank's compute copy; the gradients are the unsharded model's (the
    // update is under test, not the determinism of the backward kernels).
    whole.zero_grad();
    whole.loss(inputs, targets, plan).backward();
    for (layers::Transformer* t : {&rank0, &rank1}) {
      EXPECT_NEAR(t->loss(inputs, targets, plan).data().item(), whole.loss(inputs, targets, plan).data().item(), 1e-6);
      t->flat_gradients().copy_(whole.flat_gradients());
    }
    ops::adamw_step(whole.flat_parameters(), whole.flat_gradients(), m, v, config, step, whole.decay_segments(),
                    whole.compute_copy());
    Tensor c0 = rank0.compute_copy()->slice(0, 0, split), c1 = rank1.compute_copy()->slice(0, split, P);
    ops::adamw_step(rank0.flat_parameters(), rank0.flat_gradients().slice(0, 0, split), m0, v0, config, step,
                    piece0.segments(whole.decay_segments()), &c0);
    ops::adamw_step(rank1.flat_parameters(), rank1.flat_gradients().slice(0, split, P), m1, v1, config, step,
                    piece1.segments(whole.decay_segments()), &c1);
    rank0.compute_copy()->slice(0, split, P).copy_(c1);
    rank1.compute_copy()->slice(0, 0, split).copy_(c0);
    const std::vector<float> want = whole.compute_copy()->to(DType::F32).to_vector<float>();
    EXPECT_EQ(rank0.compute_copy()->to(DType::F32).to_vector<float>(), want) << step;
    EXPECT_EQ(rank1.compute_copy()->to(DType::F32).to_vector<float>(), want) << step;
  }
}

TEST(Cuda, Bf16ModelWithTensorCoreAttentionFollowsF32) {
  SKIP_WITHOUT_GPU();
  layers::ModelConfig c = gpu_model_config();
  c.head_dim = 32;
  layers::Transformer f32_model(c, 9), bf16_model(c, 9);
  f32_model.to(kGpu);
  bf16_model.to(kGpu, DType::BF16);
  bf16_model.set_execution({.attention = ops::AttentionKernel::TensorCores});
  Tensor inputs = random_tokens({4, 48}, 97, 5), targets = random_tokens({4, 48}, 97, 6);
  const layers::RoutingPlan plan = {0, 0, 2, 1};
  autograd::Variable a = f32_model.loss(inputs, targets, plan);
  a.backward();
  autograd::Variable b = bf16_model.loss(inputs, targets, plan);
  b.backward();
  EXPECT_NEAR(b.data().item(), a.data().item(), 2e-2 * a.data().item());
  EXPECT_LT(error(bf16_model.flat_gradients(), f32_model.flat_gradients().to(Device::cpu())), 5e-2);
}

TEST(Cuda, CachedGenerationOnTheGpu) {
  SKIP_WITHOUT_GPU();
  layers::Transformer cpu_model(gpu_model_config(), 11), gpu_model(gpu_model_config(), 11), bf16_model(gpu_model_config(), 11);
  gpu_model.to(kGpu);
  bf16_model.to(kGpu, DType::BF16);
  const layers::RoutingPlan plan = layers::plan_from_keep_set(4, {0, 2});
  eval::SamplingOptions greedy;
  greedy.temperature = 0;
  greedy.max_new_tokens = 12;
  const std::vector<std::vector<int32_t>> prompts = {{1, 5, 9, 13, 17}, {2, 4, 8, 16, 32}};
  eval::GenerationStats cpu_stats, gpu_stats, bf16_stats;
  const auto cpu_out = eval::generate(cpu_model, prompts, plan, greedy, &cpu_stats);
  const auto gpu_out = eval::generate(gpu_model, prompts, plan, greedy, &gpu_stats);
  EXPECT_EQ(gpu_out, cpu_out);
  EXPECT_EQ(gpu_stats.kv_bytes, cpu_stats.kv_bytes);
  // The cached decode on the GPU equals full uncached forwards on the GPU.
  EXPECT_EQ(eval::generate_uncached_greedy(gpu_model, prompts[0], plan, 12), gpu_out[0]);
  (void)eval::generate(bf16_model, prompts, plan, greedy, &bf16_stats);
  EXPECT_EQ(bf16_stats.kv_bytes * 2, cpu_stats.kv_bytes);  // bf16 cache: half the bytes
  EXPECT_EQ(bf16_stats.kept_layers, 2);
}

TEST(Cuda, NcclCommunicatorOfOneRankAndTheOverlappedReducer) {
  SKIP_WITHOUT_GPU();
  auto host = dist::make_local_communicator();
  auto nccl = dist::make_nccl_communicator(*host);
  EXPECT_EQ(nccl->world_size(), 1);
  Tensor values = random_tensor({10001}, 120);
  Tensor buffer = values.to(kGpu);
  nccl->allreduce_sum(buffer, 1000);  // a sum over one rank: unchanged, in buckets
  EXPECT_EQ(buffer.to_vector<float>(), values.to_vector<float>());
  nccl->broadcast(buffer, 0);
  EXPECT_EQ(buffer.to_vector<float>(), values.to_vector<float>());
  // The reducer starts buckets on the communication stream during the backward pass; the
  // gradients after finish() are those of a plain backward pass.
  layers::Transformer model(gpu_model_config(), 3), reference(gpu_model_config(), 3);
  model.to(kGpu, DType::BF16);
  reference.to(kGpu, DType::BF16);
  Tensor inputs = random_tokens({2, 16}, 97, 7), targets = random_tokens({2, 16}, 97, 8);
  const layers::RoutingPlan plan = {0, 0, 2, 0};
  reference.loss(inputs, targets, plan).backward();
  dist::GradientReducer reducer(model, *nccl, 5000);
  reducer.arm();
  model.loss(inputs, targets, plan).backward();
  EXPECT_GT(reducer.buckets_started_during_backward(), 0);
  reducer.finish();
  EXPECT_EQ(model.flat_gradients().to_vector<float>(), reference.flat_gradients().to_vector<float>());
}

// ---- Whole training runs through the trainer ----------------------------------------------------

std::string make_data(const std::string& name) {
  const std::string dir = testing::temp_dir(name);
  Philox rng(42);
  std::vector<int32_t> train_tokens, val_tokens;
  for (int i = 0; i < 80000; ++i) {
    train_tokens.push_back(static_cast<int32_t>(i % 7 == 0 ? rng.uniform_int(97) : (i * 13) % 97));
  }
  for (int i = 0; i < 4000; ++i) val_tokens.push_back(static_cast<int32_t>((i * 13) % 97));
  return testing::write_token_data(dir, train_tokens, val_tokens);
}

// The GPU tests' model: the tiny one, wider (head_dim 16, so the tensor-core kernels apply).
std::string gpu_model_yaml() {
  return testing::tiny_model_yaml({.vocab = 97, .hidden = 64, .head_dim = 16, .intermediate = 96, .max_seq_len = 64},
                                  ", init_std: 0.05");
}

train::RunConfig gpu_run_config(const std::string& data, const std::string& name, const std::string& run_dir,
                                const std::string& device, const std::string& precision, int steps) {
  const std::string yaml = gpu_model_yaml() + fmt::format(R"(router: {{policy: stochastic, share_prob: 0.5, seed: 3}}
data: {{dir: {}}}
optim: {{lr: 3.0e-3, min_lr: 3.0e-4, warmup_fraction: 0.1}}
train: {{name: {}, run_dir: {}, steps: {}, batch_size: 8, seq_len: 32, log_interval: 10, device: {},
        precision: {}, global_batch_tokens: 512}}
eval: {{retention: [1.0], batches: 2}}
dist: {{backend: none}}
)",
                                       data, name, run_dir, steps, device, precision);
  return train::parse_config(yaml, name + ".yaml");
}

std::vector<double> train_losses(const std::string& data, const std::string& name, const std::string& device,
                                 const std::string& precision, int steps) {
  train::RunConfig config = gpu_run_config(data, name, testing::temp_dir(name), device, precision, steps);
  auto comm = dist::make_local_communicator();
  return train::run_training(config, *comm, {"", 0, true, true}).losses;
}

TEST(Cuda, Bf16ResumeFromACheckpointIsBitIdentical) {
  SKIP_WITHOUT_GPU();
  const std::string data = make_data("cuda_resume_data");
  auto comm = dist::make_local_communicator();
  const train::RunConfig straight = gpu_run_config(data, "straight", testing::temp_dir("cuda_straight"), "cuda", "bf16", 8);
  const train::RunConfig split = gpu_run_config(data, "split", testing::temp_dir("cuda_split"), "cuda", "bf16", 8);
  std::vector<double> all = train::run_training(straight, *comm, {"", 0, true}).losses;
  std::vector<double> first = train::run_training(split, *comm, {"", 4, true}).losses;
  std::vector<double> second = train::run_training(split, *comm, {"auto", 0, true}).losses;
  ASSERT_EQ(all.size(), 8u);
  ASSERT_EQ(first.size() + second.size(), 8u);
  first.insert(first.end(), second.begin(), second.end());
  EXPECT_EQ(first, all) << "f32 master weights, AdamW state and the bf16 copy all come back from the checkpoint";
}

TEST(Cuda, TrainerFp32OnGpuFollowsCpu) {
  SKIP_WITHOUT_GPU();
  const std::string data = make_data("cuda_trainer_data");
  std::vector<double> cpu = train_losses(data, "cuda_cpu", "cpu", "fp32", 5);
  std::vector<double> gpu = train_losses(data, "cuda_gpu", "cuda", "fp32", 5);
  ASSERT_EQ(cpu.size(), gpu.size());
  for (size_t i = 0; i < cpu.size(); ++i) EXPECT_NEAR(gpu[i], cpu[i], 1e-3 * cpu[i]) << "step " << i + 1;
}

TEST(Cuda, Bf16LossCurveTracksFp32AndRunsAreDeterministic) {
  SKIP_WITHOUT_GPU();
  const std::string data = make_data("cuda_bf16_data");
  std::vector<double> fp32 = train_losses(data, "cuda_fp32", "cuda", "fp32", 50);
  std::vector<double> bf16 = train_losses(data, "cuda_bf16", "cuda", "bf16", 50);
  std::vector<double> again = train_losses(data, "cuda_bf16_again", "cuda", "bf16", 50);
  ASSERT_EQ(fp32.size(), 50u);
  ASSERT_EQ(bf16.size(), 50u);
  EXPECT_LT(fp32.back(), fp32.front() - 0.5) << "the model learns";
  for (size_t i = 0; i < fp32.size(); ++i) EXPECT_NEAR(bf16[i], fp32[i], 0.03 * fp32[i] + 0.02) << "step " << i + 1;
  EXPECT_EQ(again, bf16) << "two identical GPU runs give identical losses";
}

TEST(Cuda, TwoGpusMatchOneGpuWithTheDoubledBatch) {
  SKIP_WITHOUT_GPU();
  if (device_runtime::cuda_device_count() < 2) GTEST_SKIP() << "needs two GPUs";
  const std::string data = make_data("cuda_mpi_data");
  const std::string dir = testing::temp_dir("cuda_mpi");
  const std::string cfg = dir + "/run.yaml";
  std::ofstream(cfg) << gpu_model_yaml() << fmt::format(R"(router: {{policy: none}}
data: {{dir: {}}}
train: {{name: m, steps: 10, batch_size: 4, seq_len: 32, log_interval: 1, device: cuda, precision: fp32}}
eval: {{retention: [1.0], batches: 2}}
dist: {{backend: auto}}
)",
                                    data);
  const std::string bin = KVROUTE_BINARY;
  ASSERT_EQ(testing::run_status(bin + " train " + cfg + " train.run_dir=" + dir + "/one"), 0);
  ASSERT_EQ(testing::run_status(std::string(KVROUTE_MPIEXEC) + " --allow-run-as-root -np 2 " + bin + " train " + cfg +
                                " train.batch_size=2 train.run_dir=" + dir + "/two"),
            0);
  std::vector<double> one = testing::logged_losses(dir + "/one"), two = testing::logged_losses(dir + "/two");
  ASSERT_EQ(one.size(), 10u);
  ASSERT_EQ(two.size(), 10u);
  for (size_t i = 0; i < one.size(); ++i) EXPECT_NEAR(two[i], one[i], 1e-4 * one[i]) << "step " << i + 1;
}

}  // namespace
}  // namespace kvroute
