// The classifier fused with softmax cross-entropy, in blocks of rows: logits = h W^T for a block,
// the block's loss and d(logits) in place (cross_entropy.cpp), then at once the block's share of
// dh = d(logits) W and dW += d(logits)^T h. No [rows, vocab] tensor exists, only one block of it
// (it stays in cache), and rows whose target is ignored (prompts of fine-tuning examples, padding)
// are dropped before the GEMMs: they add nothing to the loss or to either gradient.
#include <cstring>
#include <memory>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/profile.h"

namespace kvroute::cpu {

namespace {

// The profile (`bench train --profile`) counts the GEMMs here as matmul, the rest as cross_entropy.
using ops::profile::OpTimer;

// One GEMM: bf16 operands (raw bits) through oneDNN, or f32 through the backend ops::matmul picks
// (oneDNN with AVX-512, else OpenBLAS).
void gemm_bf16(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const uint16_t* a, int64_t lda, const uint16_t* b,
               int64_t ldb, float beta, float* c, int64_t ldc) {
  OpTimer timer("matmul");
  gemm_batched_bf16_raw(ta, tb, m, n, k, 1.0f, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1);
}

void gemm_f32(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
              int64_t ldb, float beta, float* c, int64_t ldc) {
  OpTimer timer("matmul");
  if (f32_gemm_prefers_dnnl()) {
    gemm_batched_f32_dnnl(ta, tb, m, n, k, 1.0f, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1);
  } else {
    gemm(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
  }
}

}  // namespace

double linear_cross_entropy(const float* h, const float* w, const int32_t* targets, int64_t rows, int64_t hidden,
                            int64_t vocab, int64_t ignore_index, float grad_scale, int64_t n_valid, bool bf16,
                            int64_t block_rows, float* dh, float* dw) {
  const bool grad = dh != nullptr;
  auto prepare = std::make_unique<OpTimer>("cross_entropy");  // until the first block's GEMM
  // The scored rows, in order. When every row is scored, h and dh are used in place.
  std::vector<int64_t> scored;
  scored.reserve(static_cast<size_t>(n_valid));
  for (int64_t r = 0; r < rows; ++r) {
    if (targets[r] != ignore_index) scored.push_back(r);
  }
  const auto n = static_cast<int64_t>(scored.size());
  const bool compact = n < rows;
  if (grad && compact) std::memset(dh, 0, sizeof(float) * static_cast<size_t>(rows * hidden));
  if (n == 0) {
    if (grad) std::memset(dw, 0, sizeof(float) * static_cast<size_t>(vocab * hidden));
    return 0.0;
  }
  // Scratch reused across calls (grow-only): the compacted rows, targets and their gradients, one
  // block of logits, and in bf16 the operands rounded once per call.
  thread_local std::vector<float> hc_buf, dhc_buf, logits;
  thread_local std::vector<int32_t> tc_buf;
  thread_local std::vector<uint16_t> h16, w16, dl16;
  const float* hc = h;
  const int32_t* tc = targets;
  float* dhc = dh;
  if (compact) {
    hc_buf.resize(static_cast<size_t>(n * hidden));
    tc_buf.resize(static_cast<size_t>(n));
    float* gathered = hc_buf.data();  // not the thread_local inside the parallel region: it is per thread
#pragma omp parallel for schedule(static) if (n * hidden > (1 << 15))
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(gathered + i * hidden, h + scored[static_cast<size_t>(i)] * hidden,
                  sizeof(float) * static_cast<size_t>(hidden));
    }
    for (int64_t i = 0; i < n; ++i) tc_buf[static_cast<size_t>(i)] = targets[scored[static_cast<size_t>(i)]];
    hc = hc_buf.data();
    tc = tc_buf.data();
    if (grad) {
      dhc_buf.resize(static_cast<size_t>(n * hidden));
      dhc = dhc_buf.data();
    }
  }
  const int64_t block = std::max<int64_t>(1, std::min(block_rows, n));
  logits.resize(static_cast<size_t>(block * vocab));
  if (bf16) {
    h16.resize(static_cast<size_t>(n * hidden));
    w16.resize(static_cast<size_t>(vocab * hidden));
    to_bf16(hc, n, hidden, hidden, 0, 1, h16.data());
    to_bf16(w, vocab, hidden, hidden, 0, 1, w16.data());
    if (grad) dl16.resize(static_cast<size_t>(block * vocab));
  }
  prepare.reset();
  double total = 0.0;
  for (int64_t b0 = 0; b0 < n; b0 += block) {
    const int64_t r = std::min(block, n - b0);
    // logits [r, vocab] = h_block [r, hidden] @ W^T
    if (bf16) {
      gemm_bf16(false, true, r, vocab, hidden, h16.data() + b0 * hidden, hidden, w16.data(), hidden, 0.0f,
                logits.data(), vocab);
    } else {
      gemm_f32(false, true, r, vocab, hidden, hc + b0 * hidden, hidden, w, hidden, 0.0f, logits.data(), vocab);
    }
    {
      OpTimer timer("cross_entropy");
      total += cross_entropy(logits.data(), tc + b0, r, vocab, ignore_index, grad ? logits.data() : nullptr,
                             grad_scale, n_valid, grad && bf16 ? dl16.data() : nullptr);
    }
    if (!grad) continue;
    const float beta = b0 == 0 ? 0.0f : 1.0f;
    if (bf16) {
      // dh_block [r, hidden] = dlogits [r, vocab] @ W [vocab, hidden]
      gemm_bf16(false, false, r, hidden, vocab, dl16.data(), vocab, w16.data(), hidden, 0.0f, dhc + b0 * hidden,
                hidden);
      // dW [vocab, hidden] (+)= dlogits^T [vocab, r] @ h_block [r, hidden]
      gemm_bf16(true, false, vocab, hidden, r, dl16.data(), vocab, h16.data() + b0 * hidden, hidden, beta, dw,
                hidden);
    } else {
      gemm_f32(false, false, r, hidden, vocab, logits.data(), vocab, w, hidden, 0.0f, dhc + b0 * hidden, hidden);
      gemm_f32(true, false, vocab, hidden, r, logits.data(), vocab, hc + b0 * hidden, hidden, beta, dw, hidden);
    }
  }
  if (grad && compact) {
    OpTimer timer("cross_entropy");
#pragma omp parallel for schedule(static) if (n * hidden > (1 << 15))
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(dh + scored[static_cast<size_t>(i)] * hidden, dhc + i * hidden,
                  sizeof(float) * static_cast<size_t>(hidden));
    }
  }
  return total;
}

}  // namespace kvroute::cpu
