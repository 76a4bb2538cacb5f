// GEMM on the CPU. f32: OpenBLAS sgemm (chosen over Eigen by measurement, docs/benchmarks.md).
// bf16: operands rounded to bf16, products accumulated in f32 by oneDNN's matmul (AMX on Sapphire
// Rapids and later, AVX512-BF16 on Zen 4/5 and Cooper Lake), one primitive per shape, cached.
#include <cblas.h>

#include <cstring>
#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "core/dtype.h"
#include "kernels/cpu/cpu_ops.h"

namespace kvroute::cpu {

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
}

void gemm_batched(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const float* a, int64_t lda, int64_t stride_a, const float* b, int64_t ldb,
                  int64_t stride_b, float beta, float* c, int64_t ldc, int64_t stride_c, int64_t batch) {
  // Small GEMMs: one per thread (OpenBLAS runs single-threaded inside our parallel region).
  // Large GEMMs: one after another, each using every thread.
  const bool small = static_cast<double>(m) * n * k < 64.0 * 64 * 64 * 8;
  if (batch > 1 && small) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < batch; ++i) {
      gemm(trans_a, trans_b, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb, beta, c + i * stride_c,
           ldc);
    }
    return;
  }
  for (int64_t i = 0; i < batch; ++i) {
    gemm(trans_a, trans_b, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb, beta, c + i * stride_c, ldc);
  }
}

// ---- bf16 through oneDNN ------------------------------------------------------------------------

using dnnl::memory;

namespace {

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// bf16 instructions are reachable when oneDNN's effective ISA includes avx512_core_bf16 (the ISA
// values are nested bit masks; AMX includes it). DNNL_MAX_CPU_ISA caps it, which is how the
// fallback is tested on any machine.
bool hardware_bf16() {
  const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  const auto bf16 = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_bf16);
  return (isa & bf16) == bf16;
}

}  // namespace

void to_bf16(const float* src, int64_t rows, int64_t cols, int64_t ld, int64_t stride, int64_t batch,
             uint16_t* dst) {
  const int64_t total_rows = rows * batch;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < total_rows; ++r) {
    const float* s = src + (r / rows) * stride + (r % rows) * ld;
    uint16_t* d = dst + r * cols;
    for (int64_t c = 0; c < cols; ++c) d[c] = round_to_bf16(s[c]);
  }
}

namespace {

struct Key {
  bool trans_a, trans_b;
  int64_t m, n, k, ldc;
  float alpha, beta;
  bool f32 = false;  // f32 operands, else bf16; both read in place with leading dimensions lda, ldb
  int64_t lda = 0, ldb = 0;
  bool operator<(const Key& o) const {
    return std::tie(trans_a, trans_b, m, n, k, ldc, alpha, beta, f32, lda, ldb) <
           std::tie(o.trans_a, o.trans_b, o.m, o.n, o.k, o.ldc, o.alpha, o.beta, o.f32, o.lda, o.ldb);
  }
};

struct Plan {
  dnnl::matmul primitive;
  memory::desc a, b, c;
};

// One primitive per GEMM shape, created on first use (a training step has a few dozen shapes).
Plan& plan_for(const Key& key) {
  static std::mutex mutex;
  static std::map<Key, Plan> plans;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = plans.find(key);
  if (it != plans.end()) return it->second;
  const memory::dim M = key.m, N = key.n, K = key.k;
  // 2-D problems: oneDNN 2.6 picks its brgemm kernels for 2-D descriptors with either operand
  // transposed, but its reference kernel for some 3-D ones, so a batch runs as one 2-D GEMM per
  // item. Operands in their stored orientation: A is [M, K] or, transposed, [K, M] read through
  // strides; likewise B.
  const auto type = key.f32 ? memory::data_type::f32 : memory::data_type::bf16;
  const memory::dim lda = key.lda, ldb = key.ldb;
  memory::desc a({M, K}, type, key.trans_a ? memory::dims{1, lda} : memory::dims{lda, 1});
  memory::desc b({K, N}, type, key.trans_b ? memory::dims{1, ldb} : memory::dims{ldb, 1});
  memory::desc c({M, N}, memory::data_type::f32, {key.ldc, 1});
  dnnl::primitive_attr attr;
  if (key.alpha != 1.0f) attr.set_output_scales(0, {key.alpha});
  if (key.beta != 0.0f) {
    dnnl::post_ops ops;
    ops.append_sum(key.beta);
    attr.set_post_ops(ops);
  }
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), attr, engine());
  auto [pos, inserted] = plans.emplace(key, Plan{dnnl::matmul(pd), a, b, c});
  return pos->second;
}

}  // namespace

bool bf16_gemm_supported() {
  static const bool supported = hardware_bf16();
  return supported;
}

std::string bf16_gemm_impl() {
  if (!bf16_gemm_supported()) return "none";
  // The implementation oneDNN picks for a representative shape, e.g. "brg:avx512_core_amx_bf16".
  static const std::string impl = [] {
    memory::desc a({64, 64}, memory::data_type::bf16, memory::dims{64, 1});
    memory::desc c({64, 64}, memory::data_type::f32, memory::dims{64, 1});
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, a, c), engine());
    return std::string(pd.impl_info_str());
  }();
  return impl;
}

std::string cpu_isa_name() {
  const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  auto has = [&](dnnl::cpu_isa want) { return (isa & static_cast<unsigned>(want)) == static_cast<unsigned>(want); };
  if (has(dnnl::cpu_isa::avx512_core_amx)) return "avx512_core_amx";
  if (has(dnnl::cpu_isa::avx512_core_bf16)) return "avx512_core_bf16";
  if (has(dnnl::cpu_isa::avx512_core_vnni)) return "avx512_core_vnni";
  if (has(dnnl::cpu_isa::avx512_core)) return "avx512_core";
  if (has(dnnl::cpu_isa::avx2)) return "avx2";
  return "sse41";
}

void gemm_batched_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, Bf16Operand a,
                       Bf16Operand b, float beta, float* c, int64_t ldc, int64_t stride_c, int64_t batch) {
  if (m == 0 || n == 0 || batch == 0) return;
  if (k == 0) {  // C = beta * C
    for (int64_t i = 0; i < batch; ++i) {
      for (int64_t r = 0; r < m; ++r) {
        float* row = c + i * stride_c + r * ldc;
        for (int64_t j = 0; j < n; ++j) row[j] = beta == 0.0f ? 0.0f : beta * row[j];
      }
    }
    return;
  }
  const bool b_batched = b.stride != 0 && batch > 1;
  // f32 operands: dense bf16 copies in their stored orientation (thread-local scratch, reused);
  // bf16 operands are read in place.
  thread_local std::vector<uint16_t> a16, b16;
  const uint16_t* a_bits = static_cast<const uint16_t*>(a.data);
  const uint16_t* b_bits = static_cast<const uint16_t*>(b.data);
  int64_t lda = a.ld, ldb = b.ld, stride_a = a.stride, stride_b = b_batched ? b.stride : 0;
  if (!a.is_bf16) {
    const int64_t rows = trans_a ? k : m, cols = trans_a ? m : k;
    if (a16.size() < static_cast<size_t>(rows * cols * batch)) a16.resize(rows * cols * batch);
    to_bf16(static_cast<const float*>(a.data), rows, cols, a.ld, a.stride, batch, a16.data());
    a_bits = a16.data();
    lda = cols;
    stride_a = rows * cols;
  }
  if (!b.is_bf16) {
    const int64_t rows = trans_b ? n : k, cols = trans_b ? k : n, count = b_batched ? batch : 1;
    if (b16.size() < static_cast<size_t>(rows * cols * count)) b16.resize(rows * cols * count);
    to_bf16(static_cast<const float*>(b.data), rows, cols, b.ld, b.stride, count, b16.data());
    b_bits = b16.data();
    ldb = cols;
    stride_b = b_batched ? rows * cols : 0;
  }
  gemm_batched_bf16_raw(trans_a, trans_b, m, n, k, alpha, a_bits, lda, stride_a, b_bits, ldb, stride_b, beta, c, ldc,
                        stride_c, batch);
}

void gemm_batched_bf16_raw(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                           const uint16_t* a, int64_t lda, int64_t stride_a, const uint16_t* b, int64_t ldb,
                           int64_t stride_b, float beta, float* c, int64_t ldc, int64_t stride_c, int64_t batch) {
  if (m == 0 || n == 0 || batch == 0 || k == 0) return;  // callers handle k == 0 (C = beta * C)
  Key key{trans_a, trans_b, m, n, k, ldc, alpha, beta};
  key.lda = lda;
  key.ldb = ldb;
  Plan& plan = plan_for(key);
  dnnl::stream stream(engine());
  auto* a_mut = const_cast<uint16_t*>(a);
  auto* b_mut = const_cast<uint16_t*>(b);
  memory ma(plan.a, engine(), a_mut), mb(plan.b, engine(), b_mut), mc(plan.c, engine(), c);
  for (int64_t i = 0; i < batch; ++i) {
    ma.set_data_handle(a_mut + i * stride_a);
    mb.set_data_handle(b_mut + i * stride_b);
    mc.set_data_handle(c + i * stride_c);
    plan.primitive.execute(stream, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}});
  }
  stream.wait();
}

void gemm_batched_f32_dnnl(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                           const float* a, int64_t lda, int64_t stride_a, const float* b, int64_t ldb,
                           int64_t stride_b, float beta, float* c, int64_t ldc, int64_t stride_c, int64_t batch) {
  if (m == 0 || n == 0 || batch == 0) return;
  if (k == 0) {
    gemm_batched(trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc, stride_c, batch);
    return;
  }
  Key key{trans_a, trans_b, m, n, k, ldc, alpha, beta};
  key.f32 = true;
  key.lda = lda;
  key.ldb = ldb;
  Plan& plan = plan_for(key);
  dnnl::stream stream(engine());
  memory ma(plan.a, engine(), const_cast<float*>(a)), mb(plan.b, engine(), const_cast<float*>(b)),
      mc(plan.c, engine(), c);
  for (int64_t i = 0; i < batch; ++i) {
    ma.set_data_handle(const_cast<float*>(a + i * stride_a));
    mb.set_data_handle(const_cast<float*>(b + i * stride_b));
    mc.set_data_handle(c + i * stride_c);
    plan.primitive.execute(stream, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}});
  }
  stream.wait();
}

bool f32_gemm_prefers_dnnl() {
  // By instruction set, measured (docs/benchmarks.md): with AVX-512, oneDNN's f32 brgemm matmul beat
  // OpenBLAS' sgemm by 1.18x over the quickstart's GEMMs (Zen 4); below it OpenBLAS stays, as
  // measured before oneDNN was added. A fixed rule, not a timing at start, so that a machine always
  // sums in the same order (resumes and reruns stay bit-identical).
  static const bool prefer = [] {
    const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
    const auto avx512 = static_cast<unsigned>(dnnl::cpu_isa::avx512_core);
    return (isa & avx512) == avx512;
  }();
  return prefer;
}

std::string f32_gemm_impl() {
  static const std::string impl = [] {
    memory::desc a({64, 64}, memory::data_type::f32, memory::dims{64, 1});
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, a, a), engine());
    return std::string(pd.impl_info_str());
  }();
  return impl;
}

}  // namespace kvroute::cpu
