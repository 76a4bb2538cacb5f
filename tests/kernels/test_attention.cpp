#include <gtest/gtest.h>

#include <cmath>

#include "core/threading.h"
#include "kernels/ops.h"
#include "tests/test_util.h"

namespace kvroute {
namespace {

using testing::cancel_scaled_error;
using testing::expect_error;
using testing::random_tensor;
using testing::to_double;

struct Reference {
  std::vector<double> out, lse, dq, dk, dv;
  // The size of the terms that cancel in dq and dk: sum of |scale P (|dP| + |P.dP|) K| (resp. Q).
  // dS = P (dP - P.dP) is a difference; with one visible key it is exactly 0, and any float
  // rounding of dP - P.dP is relative to these terms, not to the (zero) result.
  double dq_terms = 0, dk_terms = 0;
  // Likewise for the sums the kernel rounds (BLAS tiles, in a CPU-dependent order): lse from the
  // scores scale q.k (terms scale |q|.|k|), out = P V (terms P |V|), dv = P^T dO (terms P^T |dO|).
  double lse_terms = 0, out_terms = 0, dv_terms = 0;
};

// Naive attention in double: full score rows, explicit softmax, explicit gradients.
Reference reference_attention(const Tensor& q_t, const Tensor& k_t, const Tensor& v_t, const Tensor& dout_t,
                              double scale) {
  const int64_t B = q_t.size(0), Tq = q_t.size(1), Hq = q_t.size(2), D = q_t.size(3);
  const int64_t Tk = k_t.size(1), Hkv = k_t.size(2), group = Hq / Hkv, shift = Tk - Tq;
  std::vector<double> q = to_double(q_t), k = to_double(k_t), v = to_double(v_t), dout = to_double(dout_t);
  Reference r;
  r.out.assign(q.size(), 0.0);
  r.dq.assign(q.size(), 0.0);
  r.dk.assign(k.size(), 0.0);
  r.dv.assign(v.size(), 0.0);
  std::vector<double> dv_abs(v.size(), 0.0);
  r.lse.assign(static_cast<size_t>(B * Hq * Tq), 0.0);
  auto qi = [&](int64_t b, int64_t t, int64_t h) { return static_cast<size_t>(((b * Tq + t) * Hq + h) * D); };
  auto ki = [&](int64_t b, int64_t t, int64_t h) { return static_cast<size_t>(((b * Tk + t) * Hkv + h) * D); };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t hk = h / group;
      for (int64_t t = 0; t < Tq; ++t) {
        const int64_t n = shift + t + 1;
        std::vector<double> p(static_cast<size_t>(n));
        double m = -1e300;
        for (int64_t j = 0; j < n; ++j) {
          double s = 0, s_abs = 0;
          for (int64_t d = 0; d < D; ++d) {
            s += q[qi(b, t, h) + d] * k[ki(b, j, hk) + d];
            s_abs += std::abs(q[qi(b, t, h) + d] * k[ki(b, j, hk) + d]);
          }
          p[j] = s * scale;
          m = std::max(m, p[j]);
          r.lse_terms = std::max(r.lse_terms, s_abs * scale);
        }
        double z = 0;
        for (double& x : p) z += std::exp(x - m);
        for (double& x : p) x = std::exp(x - m) / z;
        r.lse[static_cast<size_t>((b * Hq + h) * Tq + t)] = m + std::log(z);
        for (int64_t d = 0; d < D; ++d) {
          double out_abs = 0;
          for (int64_t j = 0; j < n; ++j) {
            r.out[qi(b, t, h) + d] += p[j] * v[ki(b, j, hk) + d];
            out_abs += p[j] * std::abs(v[ki(b, j, hk) + d]);
          }
          r.out_terms = std::max(r.out_terms, out_abs);
        }
        // Backward: dP = dO V^T; dS = P (dP - sum P dP); dQ = scale dS K; dK = scale dS^T Q; dV = P^T dO.
        std::vector<double> dp(static_cast<size_t>(n));
        double dot = 0;
        for (int64_t j = 0; j < n; ++j) {
          double s = 0;
          for (int64_t d = 0; d < D; ++d) s += dout[qi(b, t, h) + d] * v[ki(b, j, hk) + d];
          dp[j] = s;
          dot += p[j] * s;
        }
        for (int64_t j = 0; j < n; ++j) {
          double ds = p[j] * (dp[j] - dot);
          const double ds_terms = p[j] * (std::abs(dp[j]) + std::abs(dot));
          for (int64_t d = 0; d < D; ++d) {
            r.dq_terms = std::max(r.dq_terms, scale * ds_terms * std::abs(k[ki(b, j, hk) + d]));
            r.dk_terms = std::max(r.dk_terms, scale * ds_terms * std::abs(q[qi(b, t, h) + d]));
            r.dq[qi(b, t, h) + d] += scale * ds * k[ki(b, j, hk) + d];
            r.dk[ki(b, j, hk) + d] += scale * ds * q[qi(b, t, h) + d];
            r.dv[ki(b, j, hk) + d] += p[j] * dout[qi(b, t, h) + d];
            dv_abs[ki(b, j, hk) + d] += p[j] * std::abs(dout[qi(b, t, h) + d]);
          }
        }
      }
    }
  for (double x : dv_abs) r.dv_terms = std::max(r.dv_terms, x);
  return r;
}

struct AttentionCase {
  int64_t B, Tq, Tk, Hq, Hkv, D;
};

// Tolerances of check_case, relative to the larger of the result and the terms that cancel in it.
struct Tolerance {
  double out = 2e-6, lse = 2e-6, grad = 5e-6;
};

void check_case(const AttentionCase& c, uint64_t seed, const ops::Execution& ex = {}, const Tolerance& tol = {}) {
  Tensor q = random_tensor({c.B, c.Tq, c.Hq, c.D}, seed, -2, 2);
  Tensor k = random_tensor({c.B, c.Tk, c.Hkv, c.D}, seed + 1, -2, 2);
  Tensor v = random_tensor({c.B, c.Tk, c.Hkv, c.D}, seed + 2);
  Tensor dout = random_tensor(q.shape(), seed + 3);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.D));
  Tensor out = Tensor::empty(q.shape()), lse = Tensor::empty({c.B, c.Hq, c.Tq});
  ops::attention_forward(q, k, v, scale, out, lse, ex);
  Tensor dq = Tensor::empty(q.shape()), dk = Tensor::empty(k.shape()), dv = Tensor::empty(v.shape());
  ops::attention_backward(dout, q, k, v, out, lse, scale, dq, dk, dv, ex);
  Reference r = reference_attention(q, k, v, dout, scale);
  std::string what = fmt::format("B={} Tq={} Tk={} Hq={} Hkv={} D={}", c.B, c.Tq, c.Tk, c.Hq, c.Hkv, c.D);
  EXPECT_LT(cancel_scaled_error(out, r.out, r.out_terms), tol.out) << what;
  EXPECT_LT(cancel_scaled_error(lse, r.lse, r.lse_terms), tol.lse) << what;
  EXPECT_LT(cancel_scaled_error(dq, r.dq, r.dq_terms), tol.grad) << what;
  EXPECT_LT(cancel_scaled_error(dk, r.dk, r.dk_terms), tol.grad) << what;
  EXPECT_LT(cancel_scaled_error(dv, r.dv, r.dv_terms), tol.grad) << what;
}

const std::vector<AttentionCase>& shape_cases() {
  static const std::vector<AttentionCase> cases = {
      {1, 1, 1, 1, 1, 8},      // T = 1
      {2, 5, 5, 2, 2, 8},      // MHA, tiny
      {1, 70, 70, 4, 2, 16},   // GQA 2:1, crosses a tile boundary
      {2, 130, 130, 4, 1, 32}, // GQA 4:1 (MQA), three query tiles
      {1, 65, 65, 2, 2, 64},
      {1, 33, 33, 2, 1, 128},
      {2, 1, 40, 4, 2, 32},    // decoding one token against a cache of 40
      {1, 7, 100, 2, 2, 16},   // a chunk of 7 new tokens after 93 cached
      {1, 50, 83, 2, 1, 32},   // 50 after 33 cached: the second key block is seen by rows 31.. only
      {1, 67, 67, 2, 1, 24},   // head_dim not a multiple of 16, odd tile sizes
      {1, 9, 9, 2, 2, 6},
  };
  return cases;
}

TEST(Attention, MatchesNaiveReferenceAcrossShapes) {
  uint64_t seed = 100;
  for (const AttentionCase& c : shape_cases()) check_case(c, seed += 10);
}

// bf16 tile products (with bf16 GEMMs, where the CPU has AVX512-BF16): every product's operands
// are rounded to bf16 (relative error 2^-9 each) and accumulated in f32, so each result is within a
// few bf16 roundings of the terms that make it up: out = P V / rowsum has three (P, V, and a row sum
// of the unrounded P), 3 * 2^-9 = 5.9e-3 of its terms at worst (measured up to 5.6e-3, D = 128); the
// gradients measured up to 5.2e-3; the tolerances are about twice the worst case.
const ops::Execution kBf16{.cpu_bf16_gemm = true};

TEST(Attention, Bf16TilesMatchNaiveReferenceWithinBf16Rounding) {
  if (!ops::cpu_bf16_supported()) GTEST_SKIP() << ops::cpu_bf16_fallback_notice();
  uint64_t seed = 100;
  for (const AttentionCase& c : shape_cases()) check_case(c, seed += 10, kBf16, {.out = 1.2e-2, .lse = 8e-3, .grad = 2e-2});
}

TEST(Attention, Bf16TilesAreUsedAndDeterministicForAnyThreadCount) {
  if (!ops::cpu_bf16_supported()) GTEST_SKIP() << ops::cpu_bf16_fallback_notice();
  Tensor q = random_tensor({2, 90, 4, 32}, 7), k = random_tensor({2, 90, 2, 32}, 8), v = random_tensor({2, 90, 2, 32}, 9);
  Tensor dout = random_tensor(q.shape(), 10);
  int threads = num_threads();
  std::vector<std::vector<float>> outs, dqs, dks, dvs;
  for (int t : {1, 2, 3}) {
    set_num_threads(t);
    Tensor out = Tensor::empty(q.shape()), lse = Tensor::empty({2, 4, 90});
    ops::attention_forward(q, k, v, 0.2f, out, lse, kBf16);
    Tensor dq = Tensor::empty(q.shape()), dk = Tensor::empty(k.shape()), dv = Tensor::empty(v.shape());
    ops::attention_backward(dout, q, k, v, out, lse, 0.2f, dq, dk, dv, kBf16);
    outs.push_back(out.to_vector<float>());
    dqs.push_back(dq.to_vector<float>());
    dks.push_back(dk.to_vector<float>());
    dvs.push_back(dv.to_vector<float>());
  }
  set_num_threads(threads);
  for (size_t i = 1; i < outs.size(); ++i) {
    EXPECT_EQ(outs[0], outs[i]);
    EXPECT_EQ(dqs[0], dqs[i]);
    EXPECT_EQ(dks[0], dks[i]);
    EXPECT_EQ(dvs[0], dvs[i]);
  }
  // The f32 kernel gives other bits: the bf16 tiles did run.
  Tensor out32 = Tensor::empty(q.shape()), lse32 = Tensor::empty({2, 4, 90});
  ops::attention_forward(q, k, v, 0.2f, out32, lse32);
  EXPECT_NE(outs[0], out32.to_vector<float>());
}

// A bf16 KV cache read by the bf16 tiles gives the bits of its f32 values read by them: both are
// rounded to the same bf16 operands.
TEST(Attention, Bf16TilesFromBf16KeysAndValuesEqualThoseFromF32) {
  if (!ops::cpu_bf16_supported()) GTEST_SKIP() << ops::cpu_bf16_fallback_notice();
  Tensor q = random_tensor({2, 5, 4, 32}, 41);
  Tensor k = random_tensor({2, 70, 2, 32}, 42), v = random_tensor({2, 70, 2, 32}, 43);
  Tensor k16 = Tensor::empty(k.shape(), DType::BF16), v16 = Tensor::empty(v.shape(), DType::BF16);
  k16.copy_(k);
  v16.copy_(v);
  for (int64_t upto : {int64_t{5}, int64_t{64}, int64_t{70}}) {
    Tensor out16 = Tensor::empty(q.shape()), out32 = Tensor::empty(q.shape());
    Tensor lse16 = Tensor::empty({2, 4, 5}), lse32 = Tensor::empty({2, 4, 5});
    ops::attention_forward(q, k16.slice(1, 0, upto), v16.slice(1, 0, upto), 0.2f, out16, lse16, kBf16);
    ops::attention_forward(q, k.slice(1, 0, upto).contiguous(), v.slice(1, 0, upto).contiguous(), 0.2f, out32, lse32,
                           kBf16);
    EXPECT_EQ(out16.to_vector<float>(), out32.to_vector<float>()) << upto;
    EXPECT_EQ(lse16.to_vector<float>(), lse32.to_vector<float>()) << upto;
  }
}
// Packed rows: several sequences per row, each query seeing only the keys of its own sequence
// (key_begin). Each sequence's slice of out/lse/dq/dk/dv is that of the sequence attended alone
// (the naive reference on the slice), in f32 and in bf16 tiles; sequences of 1 token, sequences
// crossing key blocks, and a row holding one sequence are all in it.
void check_packed(const ops::Execution& ex, const Tolerance& tol) {
  const int64_t B = 2, T = 150, Hq = 4, Hkv = 2, D = 32;
  const std::vector<std::vector<int64_t>> lengths = {{1, 40, 75, 34}, {150}};
  Tensor q = random_tensor({B, T, Hq, D}, 51, -2, 2), k = random_tensor({B, T, Hkv, D}, 52, -2, 2);
  Tensor v = random_tensor({B, T, Hkv, D}, 53), dout = random_tensor(q.shape(), 54);
  Tensor key_begin = Tensor::empty({B, T}, DType::I32);
  for (int64_t b = 0; b < B; ++b) {
    int64_t start = 0;
    for (int64_t len : lengths[static_cast<size_t>(b)]) {
      for (int64_t t = start; t < start + len; ++t) key_begin.data<int32_t>()[b * T + t] = static_cast<int32_t>(start);
      start += len;
    }
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  Tensor out = Tensor::empty(q.shape()), lse = Tensor::empty({B, Hq, T});
  ops::attention_forward(q, k, v, scale, out, lse, ex, key_begin);
  Tensor dq = Tensor::empty(q.shape()), dk = Tensor::empty(k.shape()), dv = Tensor::empty(v.shape());
  ops::attention_backward(dout, q, k, v, out, lse, scale, dq, dk, dv, ex, key_begin);
  for (int64_t b = 0; b < B; ++b) {
    int64_t start = 0;
    for (int64_t len : lengths[static_cast<size_t>(b)]) {
      auto part = [&](const Tensor& t) { return t.slice(0, b, b + 1).slice(1, start, start + len).contiguous(); };
      Reference r = reference_attention(part(q), part(k), part(v), part(dout), scale);
      std::vector<float> lse_part;
      for (int64_t h = 0; h < Hq; ++h)
        for (int64_t t = start; t < start + len; ++t) lse_part.push_back(lse.data<float>()[(b * Hq + h) * T + t]);
      const std::string what = fmt::format("row {} sequence [{}, {})", b, start, start + len);
      EXPECT_LT(cancel_scaled_error(part(out), r.out, r.out_terms), tol.out) << what;
      EXPECT_LT(cancel_scaled_error(lse_part, r.lse, r.lse_terms), tol.lse) << what;
      EXPECT_LT(cancel_scaled_error(part(dq), r.dq, r.dq_terms), tol.grad) << what;
      EXPECT_LT(cancel_scaled_error(part(dk), r.dk, r.dk_terms), tol.grad) << what;
      EXPECT_LT(cancel_scaled_error(part(dv), r.dv, r.dv_terms), tol.grad) << what;
      start += len;
    }
  }
}

TEST(Attention, PackedRowsAttendWithinTheirSequences) { check_packed({}, {}); }

TEST(Attention, PackedRowsAttendWithinTheirSequencesInBf16Tiles) {
  if (!ops::cpu_bf16_supported()) GTEST_SKIP() << ops::cpu_bf16_fallback_notice();
  check_packed(kBf16, {.out = 1.2e-2, .lse = 8e-3, .grad = 2e-2});
}

TEST(Attention, PackedRowsRefuseBadKeyBegin) {
  Tensor q = Tensor::zeros({1, 4, 2, 8}), kv = Tensor::zeros({1, 4, 2, 8});
  Tensor out = Tensor::empty(q.shape()), lse = Tensor::empty({1, 2, 4});
  Tensor kb = Tensor::zeros({1, 4}, DType::I32);
  kb.data<int32_t>()[2] = 3;  // query 2 cannot start its sequence at 3
  expect_error([&] { ops::attention_forward(q, kv, kv, 0.5f, out, lse, {}, kb); },
               {"attention_forward", "key_begin[0, 2] = 3", "out of range [0, 2]"});
  expect_error([&] { ops::attention_forward(q, kv, kv, 0.5f, out, lse, {}, Tensor::zeros({1, 3}, DType::I32)); },
               {"attention_forward", "key_begin must be i32 [1, 4]"});
  expect_error([&] { ops::attention_forward(q, kv, kv, 0.5f, out, lse, {}, Tensor::zeros({1, 4})); },
               {"attention_forward", "key_begin must be i32"});
}

TEST(Attention, KeysAndValuesFromAnotherSourceAreJustInputs) {
  // Cross-layer attention: the same q against two different K/V sources gives different outputs,
  // and the K/V gradients go to whichever tensors were passed.
  Tensor q = random_tensor({1, 20, 4, 16}, 1);
  Tensor k_own = random_tensor({1, 20, 2, 16}, 2), v_own = random_tensor({1, 20, 2, 16}, 3);
  Tensor k_src = random_tensor({1, 20, 2, 16}, 4), v_src = random_tensor({1, 20, 2, 16}, 5);
  Tensor out1 = Tensor::empty(q.shape()), out2 = Tensor::empty(q.shape()), lse = Tensor::empty({1, 4, 20});
  ops::attention_forward(q, k_own, v_own, 0.25f, out1, lse);
  ops::attention_forward(q, k_src, v_src, 0.25f, out2, lse);
  EXPECT_NE(out1.to_vector<float>(), out2.to_vector<float>());
  Reference r = reference_attention(q, k_src, v_src, Tensor::zeros(q.shape()), 0.25);
  EXPECT_LT(cancel_scaled_error(out2, r.out, r.out_terms), 2e-6);
}

TEST(Attention, DeterministicForAnyThreadCount) {
  Tensor q = random_tensor({2, 90, 4, 32}, 7), k = random_tensor({2, 90, 2, 32}, 8), v = random_tensor({2, 90, 2, 32}, 9);
  Tensor dout = random_tensor(q.shape(), 10);
  int threads = num_threads();
  std::vector<std::vector<float>> outs, dks;
  for (int t : {1, 2, 3}) {
    set_num_threads(t);
    Tensor out = Tensor::empty(q.shape()), lse = Tensor::empty({2, 4, 90});
    ops::attention_forward(q, k, v, 0.2f, out, lse);
    Tensor dq = Tensor::empty(q.shape()), dk = Tensor::empty(k.shape()), dv = Tensor::empty(v.shape());
    ops::attention_backward(dout, q, k, v, out, lse, 0.2f, dq, dk, dv);
    outs.push_back(out.to_vector<float>());
    dks.push_back(dk.to_vector<float>());
  }
  set_num_threads(threads);
  EXPECT_EQ(outs[0], outs[1]);
  EXPECT_EQ(outs[0], outs[2]);
  EXPECT_EQ(dks[0], dks[1]);
  EXPECT_EQ(dks[0], dks[2]);
}

// A bf16 KV cache on the CPU: K/V in bf16 are read widened, exactly as their values in f32, also
// as prefix views of a larger cache.
TEST(Attention, Bf16KeysAndValuesGiveTheOutputOfTheirF32Values) {
  Tensor q = random_tensor({2, 5, 4, 32}, 31);
  Tensor k = random_tensor({2, 70, 2, 32}, 32), v = random_tensor({2, 70, 2, 32}, 33);
  Tensor k16 = Tensor::empty(k.shape(), DType::BF16), v16 = Tensor::empty(v.shape(), DType::BF16);
  k16.copy_(k);
  v16.copy_(v);
  Tensor k_round = Tensor::empty(k.shape()), v_round = Tensor::empty(v.shape());
  k_round.copy_(k16);
  v_round.copy_(v16);
  for (int64_t upto : {int64_t{5}, int64_t{64}, int64_t{70}}) {  // prefixes of the "cache", read in place
    Tensor out16 = Tensor::empty(q.shape()), out32 = Tensor::empty(q.shape());
    Tensor lse16 = Tensor::empty({2, 4, 5}), lse32 = Tensor::empty({2, 4, 5});
    ops::attention_forward(q, k16.slice(1, 0, upto), v16.slice(1, 0, upto), 0.2f, out16, lse16);
    ops::attention_forward(q, k_round.slice(1, 0, upto), v_round.slice(1, 0, upto), 0.2f, out32, lse32);
    EXPECT_EQ(out16.to_vector<float>(), out32.to_vector<float>()) << upto;
    EXPECT_EQ(lse16.to_vector<float>(), lse32.to_vector<float>()) << upto;
  }
  Tensor out = Tensor::empty(q.shape()), lse = Tensor::empty({2, 4, 5});
  expect_error([&] { ops::attention_forward(q, k16, v, 0.2f, out, lse); }, {"attention_forward", "v is not"});
}

TEST(Attention, ShapeErrors) {
  Tensor out = Tensor::empty({1, 4, 3, 8}), lse = Tensor::empty({1, 3, 4});
  expect_error([&] { ops::attention_forward(Tensor::zeros({1, 4, 3, 8}), Tensor::zeros({1, 4, 2, 8}),
                                            Tensor::zeros({1, 4, 2, 8}), 1.0f, out, lse); },
               {"attention_forward", "query heads 3", "kv heads 2"});
  expect_error([&] { ops::attention_forward(Tensor::zeros({1, 4, 3, 8}), Tensor::zeros({1, 3, 3, 8}),
                                            Tensor::zeros({1, 3, 3, 8}), 1.0f, out, lse); },
               {"attention_forward", "fewer keys (3) than queries (4)"});
  expect_error([&] { ops::attention_forward(Tensor::zeros({1, 4, 3, 8}), Tensor::zeros({1, 4, 3, 8}),
                                            Tensor::zeros({1, 4, 3, 4}), 1.0f, out, lse); },
               {"attention_forward", "k[1, 4, 3, 8]", "v[1, 4, 3, 4]"});
}

// The CUDA kernel is chosen by name (a config value): both names round-trip, anything else is an
// error naming the value and the choices, and the choice leaves the CPU kernel alone.
TEST(Attention, KernelChoiceByName) {
  EXPECT_EQ(ops::Execution{}.attention, ops::AttentionKernel::CudaCores);  // the default
  EXPECT_STREQ(ops::attention_kernel_name(ops::AttentionKernel::CudaCores), "cuda_cores");
  EXPECT_STREQ(ops::attention_kernel_name(ops::AttentionKernel::TensorCores), "tensor_cores");
  for (ops::AttentionKernel kernel : {ops::AttentionKernel::CudaCores, ops::AttentionKernel::TensorCores}) {
    EXPECT_EQ(ops::parse_attention_kernel(ops::attention_kernel_name(kernel)), kernel);
  }
  expect_error([] { (void)ops::parse_attention_kernel("fastest"); }, {"'fastest'", "cuda_cores, tensor_cores"});
  expect_error([] { (void)ops::parse_attention_kernel(""); }, {"''", "cuda_cores, tensor_cores"});

  Tensor q = random_tensor({1, 9, 2, 32}, 5), k = random_tensor({1, 9, 1, 32}, 6), v = random_tensor({1, 9, 1, 32}, 7);
  Tensor out = Tensor::empty(q.shape()), lse = Tensor::empty({1, 2, 9});
  ops::attention_forward(q, k, v, 0.2f, out, lse);
  const std::vector<float> cuda_cores = out.to_vector<float>();
  ops::attention_forward(q, k, v, 0.2f, out, lse, {.attention = ops::AttentionKernel::TensorCores});
  EXPECT_EQ(out.to_vector<float>(), cuda_cores);
}

}  // namespace
}  // namespace kvroute
