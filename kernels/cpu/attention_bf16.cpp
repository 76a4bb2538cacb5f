// Causal GQA attention on the CPU with bf16 tile products: the algorithm of attention.cpp (query
// tiles of 64 rows against key blocks of 64, an online softmax, only the per-row log-sum-exp saved,
// scores recomputed in the backward) with every tile product an AVX512-BF16 dot product
// (vdpbf16ps: pairs of bf16 products summed into f32). Softmax, row sums, the log-sum-exp and every
// accumulator stay f32; only the operands of the products are rounded to bf16 (q, k, v, dout, and
// the probabilities and score gradients), as flash attention does on GPUs and as the bf16 GEMMs do.
//
// Why not oneDNN (which the GEMMs use): the tiles are 64 x 64 x head_dim, about 0.3 MFLOP each, and
// the oneDNN release packaged here (2.6) has no micro-kernel API; one matmul primitive execution
// per tile costs more than the tile's arithmetic (measured: docs/benchmarks.md). So the tile
// product is a small register-blocked kernel below, on operands packed once per call.
//
// Operand layouts (bf16 bits in uint16_t):
//   rows:  A[i][kk], k contiguous, padded with zeros to an even k (lda even).
//   pairs: B[kk/2][j][kk%2] with j padded to a multiple of 16 (ldb = 2 * padded n), zero padded;
//          the vdpbf16ps layout, where one 32-bit lane holds the two k-values of column j.
// C += A B (or C = A B) is then k/2 steps of: broadcast A's pair of row i, multiply-add with B's row.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "kernels/cpu/cpu_ops.h"

// GCC 12's AVX-512 shuffle/reduce intrinsics start from _mm512_undefined_ps(), which -Wuninitialized
// reports once they are inlined into a target("avx512...") function.
// (GCC only: clang has no -Wmaybe-uninitialized and does not report these.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#define KV_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

namespace kvroute::cpu {

bool bf16_attention_supported() {
  static const bool supported = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bf16");
  }();
  return supported;
}

namespace {

constexpr int64_t kTile = 64;  // query rows per tile and keys per block
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// ---- The tile product ---------------------------------------------------------------------------

// C[MR x n] (+)= A[MR x 2*k2] B[2*k2 x n], n <= 16 * NV; columns past n are neither read nor written.
// A's pair p of row i is at a + i * a_row + p * a_pair (rows: a_row = lda, a_pair = 2; pairs:
// a_row = 2, a_pair = 2 * padded m).
template <int MR, int NV>
KV_BF16_TARGET void micro_kernel(int64_t k2, const uint16_t* a, int64_t a_row, int64_t a_pair, const uint16_t* b,
                                 int64_t ldb, float* c, int64_t ldc, int64_t n, bool accumulate) {
  __m512 acc[MR][NV];
  __mmask16 mask[NV];
  for (int v = 0; v < NV; ++v) {
    const int64_t left = n - 16 * v;
    mask[v] = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << std::max<int64_t>(left, 0)) - 1u);
  }
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v)
      acc[i][v] = accumulate ? _mm512_maskz_loadu_ps(mask[v], c + i * ldc + 16 * v) : _mm512_setzero_ps();
  for (int64_t p = 0; p < k2; ++p) {
    __m512bh bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(b + p * ldb + 32 * v);
    for (int i = 0; i < MR; ++i) {
      int32_t pair;
      std::memcpy(&pair, a + i * a_row + p * a_pair, sizeof pair);
      const __m512bh av = (__m512bh)_mm512_set1_epi32(pair);
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], av, bv[v]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) _mm512_mask_storeu_ps(c + i * ldc + 16 * v, mask[v], acc[i][v]);
}

// Rows per micro-kernel call: MR * NV accumulators + NV B vectors + 1 broadcast fit 32 registers.
constexpr int max_rows(int nv) { return nv == 1 ? 12 : nv == 2 ? 12 : nv == 3 ? 8 : 6; }

using MicroKernel = void (*)(int64_t, const uint16_t*, int64_t, int64_t, const uint16_t*, int64_t, float*, int64_t,
                             int64_t, bool);

template <int NV, int... I>
constexpr std::array<MicroKernel, sizeof...(I)> kernel_table(std::integer_sequence<int, I...>) {
  return {&micro_kernel<I + 1, NV>...};
}

// An A operand: its base and the element strides of a row and of a k-pair.
struct Operand {
  const uint16_t* data;
  int64_t row, pair;
};
// A in rows layout (row stride lda) and in pairs layout (pair stride ldp = 2 * padded m).
Operand rows_operand(const uint16_t* a, int64_t lda) { return {a, lda, 2}; }
Operand pairs_operand(const uint16_t* a, int64_t ldp) { return {a, 2, ldp}; }

// C[m x n] (+)= A[m x 2*k2] B[2*k2 x n] (B in pairs layout, ldb = 2 * padded n).
void tile_product(int64_t m, int64_t n, int64_t k2, Operand a, const uint16_t* b, int64_t ldb, float* c, int64_t ldc,
                  bool accumulate) {
  static constexpr auto k1 = kernel_table<1>(std::make_integer_sequence<int, max_rows(1)>{});
  static constexpr auto k2t = kernel_table<2>(std::make_integer_sequence<int, max_rows(2)>{});
  static constexpr auto k3 = kernel_table<3>(std::make_integer_sequence<int, max_rows(3)>{});
  static constexpr auto k4 = kernel_table<4>(std::make_integer_sequence<int, max_rows(4)>{});
  for (int64_t j0 = 0; j0 < n; j0 += 64) {
    const int64_t cols = std::min<int64_t>(64, n - j0);
    const int nv = static_cast<int>((cols + 15) / 16);
    const MicroKernel* table = nv == 1 ? k1.data() : nv == 2 ? k2t.data() : nv == 3 ? k3.data() : k4.data();
    const int64_t mr = max_rows(nv);
    for (int64_t i0 = 0; i0 < m; i0 += mr) {
      const int64_t rows = std::min(mr, m - i0);
      table[rows - 1](k2, a.data + i0 * a.row, a.row, a.pair, b + 2 * j0, ldb, c + i0 * ldc + j0, ldc, cols,
                      accumulate);
    }
  }
}

// ---- Packing ------------------------------------------------------------------------------------

inline __mmask16 mask16(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << std::max<int64_t>(n, 0)) - 1u); }

// src[0..n) (f32, or bf16 bits) as bf16 in dst[0..padded), zeros past n.
KV_BF16_TARGET void convert_row(const float* src, int64_t n, uint16_t* dst, int64_t padded) {
  for (int64_t i = 0; i < padded; i += 16) {
    const __m256i b = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask16(n - i), src + i));
    _mm256_mask_storeu_epi16(dst + i, mask16(padded - i), b);
  }
}
void convert_row(const uint16_t* src, int64_t n, uint16_t* dst, int64_t padded) {
  std::copy_n(src, std::min(n, padded), dst);
  std::fill(dst + std::min(n, padded), dst + padded, uint16_t{0});
}

// Two rows interleaved as bf16 pairs: dst[2c + t] = row_t[c] for c < padded, zeros past n (and for
// row 1 when r1 == nullptr).
KV_BF16_TARGET void interleave_rows(const float* r0, const float* r1, int64_t n, uint16_t* dst, int64_t padded) {
  const __m512i index = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7, 38, 6,
                                         37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
  for (int64_t i = 0; i < padded; i += 16) {
    const __mmask16 m = mask16(n - i);
    const __m256i a = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, r0 + i));
    const __m256i b = r1 == nullptr ? _mm256_setzero_si256()
                                    : (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, r1 + i));
    const __m512i pairs = _mm512_permutex2var_epi16(_mm512_castsi256_si512(a), index, _mm512_castsi256_si512(b));
    const int64_t left = 2 * (padded - i);
    const __mmask32 store = left >= 32 ? __mmask32(0xFFFFFFFFu) : __mmask32((1u << left) - 1u);
    _mm512_mask_storeu_epi16(dst + 2 * i, store, pairs);
  }
}
void interleave_rows(const uint16_t* r0, const uint16_t* r1, int64_t n, uint16_t* dst, int64_t padded) {
  for (int64_t c = 0; c < padded; ++c) {
    dst[2 * c] = c < n ? r0[c] : uint16_t{0};
    dst[2 * c + 1] = c < n && r1 != nullptr ? r1[c] : uint16_t{0};
  }
}

// `count` rows of src (row stride ld, `width` values each) in rows layout: dst[r][0..lda).
template <typename T>
void pack_rows(const T* src, int64_t ld, int64_t count, int64_t width, uint16_t* dst, int64_t lda) {
  for (int64_t r = 0; r < count; ++r) convert_row(src + r * ld, width, dst + r * lda, lda);
}

// `count` rows (row stride ld, `width` values each) in pairs layout over the rows (k = count):
// dst[r/2][d][r%2] = src[r][d], d padded to ldb / 2, k padded with zeros to k2 pairs. For V, K, Q
// and dout in the products that run over keys or queries.
template <typename T>
void pack_pairs(const T* src, int64_t ld, int64_t count, int64_t width, uint16_t* dst, int64_t k2, int64_t ldb) {
  for (int64_t p = 0; p < k2; ++p) {
    uint16_t* out = dst + p * ldb;
    if (2 * p >= count) {
      std::fill_n(out, ldb, uint16_t{0});
    } else {
      interleave_rows(src + 2 * p * ld, 2 * p + 1 < count ? src + (2 * p + 1) * ld : nullptr, width, out, ldb / 2);
    }
  }
}

// The transpose of `count` rows (row stride ld, `width` values each) in pairs layout over the
// columns (k = width): dst[d/2][r][d%2] = src[r][d], r padded to ldb / 2 with zeros. For K^T and
// V^T, whose products run over head_dim.
template <typename T>
void pack_transposed_pairs(const T* src, int64_t ld, int64_t count, int64_t width, uint16_t* dst, int64_t k2,
                           int64_t ldb) {
  std::fill_n(dst, k2 * ldb, uint16_t{0});
  uint16_t row[2 * 256];  // head_dim <= 512: checked by the caller
  for (int64_t r = 0; r < count; ++r) {
    convert_row(src + r * ld, width, row, 2 * k2);
    for (int64_t p = 0; p < k2; ++p) std::memcpy(dst + p * ldb + 2 * r, row + 2 * p, 2 * sizeof(uint16_t));
  }
}

// A tile of f32 values [rows x cols] (row stride kTile) in rows layout (lda kTile) and in pairs
// layout over its rows ([rows/2][kTile][2], the transpose as an A operand: pairs_operand(dst,
// 2 * kTile)); nullptr skips either.
void pack_tile(const float* src, int64_t rows, int64_t cols, uint16_t* as_rows, uint16_t* as_pairs) {
  if (as_rows != nullptr) pack_rows(src, kTile, rows, cols, as_rows, kTile);
  if (as_pairs != nullptr) pack_pairs(src, kTile, rows, cols, as_pairs, (rows + 1) / 2, 2 * kTile);
}

// ---- Softmax rows -------------------------------------------------------------------------------

// fast_exp (cpu_ops.h) on 16 lanes: the same range reduction and polynomial.
KV_BF16_TARGET inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                                      _mm512_set1_ps(0.5f)),
                                        _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
  const __m512i exponent = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(exponent));
}

// Lanes i..i+15 that fall in [lo, hi).
inline __mmask16 range16(int64_t i, int64_t lo, int64_t hi) {
  return static_cast<__mmask16>(mask16(hi - i) & ~mask16(lo - i));
}

// Forward: one row of a score tile (keys lo..hi-1 of the block visible) joins the row's online
// softmax: the running max and sum are updated and P = exp(scale * s - max) is written as bf16 to
// p[0..kTile) (zeros outside [lo, hi)). Returns the factor that rescales the row's accumulator.
KV_BF16_TARGET float softmax_row(const float* sr, int64_t lo, int64_t hi, float scale, float& row_max,
                                 float& row_sum, uint16_t* p) {
  const __m512 vscale = _mm512_set1_ps(scale);
  __m512 vmax = _mm512_set1_ps(row_max);
  for (int64_t i = lo / 16 * 16; i < hi; i += 16) {
    const __mmask16 m = range16(i, lo, hi);
    vmax = _mm512_mask_max_ps(vmax, m, vmax, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, sr + i), vscale));
  }
  const float new_max = _mm512_reduce_max_ps(vmax);
  if (hi <= lo) {  // nothing visible in this block (packed rows): the row's state is unchanged
    std::fill(p, p + kTile, uint16_t{0});
    return 1.0f;
  }
  const __m512 vnew = _mm512_set1_ps(new_max);
  __m512 vsum = _mm512_setzero_ps();
  // exp only over the 16-lane groups that hold visible keys; zeros elsewhere.
  const int64_t first = lo / 16 * 16, last = (hi + 15) / 16 * 16;
  std::fill(p, p + first, uint16_t{0});
  for (int64_t i = first; i < last; i += 16) {
    const __mmask16 m = range16(i, lo, hi);
    const __m512 x = _mm512_fmsub_ps(_mm512_maskz_loadu_ps(m, sr + i), vscale, vnew);
    const __m512 e = _mm512_maskz_mov_ps(m, exp16(x));
    vsum = _mm512_add_ps(vsum, e);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + i), (__m256i)_mm512_cvtneps_pbh(e));
  }
  std::fill(p + last, p + kTile, uint16_t{0});
  const float correction = fast_exp(row_max - new_max);  // row_max = -inf (first block) -> ~0
  row_sum = row_sum * correction + _mm512_reduce_add_ps(vsum);
  row_max = new_max;
  return correction;
}

// Backward: P = exp(scale * s - lse) over keys lo..hi-1 of a row, zeros elsewhere up to cols.
KV_BF16_TARGET void probs_row(float* sr, int64_t lo, int64_t hi, int64_t cols, float scale, float lse) {
  const __m512 vscale = _mm512_set1_ps(scale), vlse = _mm512_set1_ps(lse);
  for (int64_t i = 0; i < cols; i += 16) {
    const __mmask16 m = range16(i, lo, hi);
    if (m == 0) {  // no visible key in these 16 lanes: zeros, without the exp
      _mm512_mask_storeu_ps(sr + i, mask16(cols - i), _mm512_setzero_ps());
      continue;
    }
    const __m512 x = _mm512_fmsub_ps(_mm512_maskz_loadu_ps(m, sr + i), vscale, vlse);
    _mm512_mask_storeu_ps(sr + i, mask16(cols - i), _mm512_maskz_mov_ps(m, exp16(x)));
  }
}

// ---- The causal diagonal ------------------------------------------------------------------------

// Groups of 16 rows or keys of a tile, at most kTile / 16 of them, kept without allocation.
template <typename G>
class TileGroups {
 public:
  const G* begin() const { return groups_.data(); }
  const G* end() const { return groups_.data() + count_; }

 protected:
  static constexpr int64_t kGroup = 16;
  G* last() { return count_ > 0 ? &groups_[static_cast<size_t>(count_ - 1)] : nullptr; }
  void add(const G& g) { groups_[static_cast<size_t>(count_++)] = g; }

 private:
  std::array<G, kTile / kGroup> groups_{};
  int64_t count_ = 0;
};

// The rows of a query tile in groups that need only the keys up to their last row's: in a block on
// the causal diagonal row r sees only the block's keys < last_key + r + 1 (last_key: the last key
// row 0 sees, relative to the block; negative when row 0 sees none of it), so a tile product over
// all `cols` keys would compute about half its products for masked scores. Off the diagonal (every
// row sees all `cols`) it is one group. Rows that see no key of the block form no group: their
// scores are never read and their probabilities are zero. Scores and probabilities past a group's
// columns are never read either.
struct RowGroup {
  int64_t r0, r1, cols;
};
class RowGroups : public TileGroups<RowGroup> {
 public:
  RowGroups(int64_t rows, int64_t cols, int64_t last_key) {
    for (int64_t r0 = 0; r0 < rows; r0 += kGroup) {
      const int64_t r1 = std::min(rows, r0 + kGroup);
      const int64_t visible = std::clamp<int64_t>(last_key + r1, 0, cols);  // the group's last row's keys
      if (visible == 0) continue;
      RowGroup* prev = last();
      if (prev != nullptr && prev->cols == visible && prev->r1 == r0) {
        prev->r1 = r1;  // as wide as the previous group (all keys): one product
      } else {
        add({r0, r1, visible});
      }
    }
  }
};

// The keys of a block in groups by the first query row that sees them (the transposed products
// dV += P^T dO and dK += dS^T Q run over query rows): key c is seen by rows >= c - last_key, so a
// group needs the row pairs from `p0` on; P and dS are zero above. Off the diagonal: one group.
struct KeyGroup {
  int64_t c0, c1, p0;
};
class KeyGroups : public TileGroups<KeyGroup> {
 public:
  KeyGroups(int64_t rows, int64_t cols, int64_t last_key) {
    for (int64_t c0 = 0; c0 < cols; c0 += kGroup) {
      const int64_t c1 = std::min(cols, c0 + kGroup);
      const int64_t p0 = std::clamp<int64_t>(c0 - last_key, 0, rows) / 2;
      KeyGroup* prev = last();
      if (prev != nullptr && prev->p0 == p0) {
        prev->c1 = c1;
      } else {
        add({c0, c1, p0});
      }
    }
  }
};

// ---- Forward ------------------------------------------------------------------------------------

template <typename KV>
void forward_impl(const ops::AttentionShape& s, const float* q, const KV* k, const KV* v, float softmax_scale,
                  float* out, float* lse) {
  const int64_t D = s.head_dim, group = s.q_heads / s.kv_heads;
  const int64_t ldq = s.q_heads * D, ldkv = s.kv_heads * D;
  const int64_t d2 = (D + 1) / 2, dpad = round_up(D, 16);
  const int64_t q_tiles = (s.q_len + kTile - 1) / kTile, k_blocks = (s.kv_len + kTile - 1) / kTile;
  const int64_t shift = s.kv_len - s.q_len;  // absolute position of query 0
  // K^T per block (pairs over head_dim, keys as columns) and V per block (pairs over keys).
  const int64_t kt_size = d2 * 2 * kTile, v_size = (kTile / 2) * 2 * dpad;
  const int64_t heads = s.batch * s.kv_heads;
  std::vector<uint16_t> kt(static_cast<size_t>(heads * k_blocks * kt_size));
  std::vector<uint16_t> vp(static_cast<size_t>(heads * k_blocks * v_size));
#pragma omp parallel for schedule(static)
  for (int64_t job = 0; job < heads * k_blocks; ++job) {
    const int64_t kb = job % k_blocks, hk = (job / k_blocks) % s.kv_heads, b = job / (k_blocks * s.kv_heads);
    const int64_t j0 = kb * kTile, cols = std::min(kTile, s.kv_len - j0);
    const int64_t offset = b * s.kv_stride() + j0 * ldkv + hk * D;
    pack_transposed_pairs(k + offset, ldkv, cols, D, kt.data() + job * kt_size, d2, 2 * kTile);
    pack_pairs(v + offset, ldkv, cols, D, vp.data() + job * v_size, kTile / 2, 2 * dpad);
  }
  const int64_t tasks = s.batch * s.q_heads * q_tiles;
#pragma omp parallel
  {
    std::vector<uint16_t> qa(static_cast<size_t>(kTile * d2 * 2)), pa(static_cast<size_t>(kTile * kTile));
    std::vector<float> scores(static_cast<size_t>(kTile * kTile)), acc(static_cast<size_t>(kTile * dpad));
    std::vector<float> row_max(kTile), row_sum(kTile);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t tile = task % q_tiles;
      const int64_t h = (task / q_tiles) % s.q_heads;
      const int64_t b = task / (q_tiles * s.q_heads);
      const int64_t head = b * s.kv_heads + h / group;
      const int64_t t0 = tile * kTile, rows = std::min(kTile, s.q_len - t0);
      pack_rows(q + (b * s.q_len + t0) * ldq + h * D, ldq, rows, D, qa.data(), d2 * 2);
      std::fill(acc.begin(), acc.begin() + rows * dpad, 0.0f);
      std::fill(row_max.begin(), row_max.end(), kNegInf);
      std::fill(row_sum.begin(), row_sum.end(), 0.0f);
      const int32_t* key_begin = s.key_begin != nullptr ? s.key_begin + b * s.q_len + t0 : nullptr;
      const int64_t key_end = shift + t0 + rows;  // exclusive: last visible key + 1
      for (int64_t j0 = attention_first_key_block(key_begin, rows, kTile); j0 < key_end; j0 += kTile) {
        const int64_t kb = j0 / kTile, cols = std::min(kTile, key_end - j0);
        const uint16_t* kt_block = kt.data() + (head * k_blocks + kb) * kt_size;
        const RowGroups groups(rows, cols, shift + t0 - j0);
        for (const auto& [r0, r1, gcols] : groups) {
          tile_product(r1 - r0, gcols, d2, rows_operand(qa.data() + r0 * d2 * 2, d2 * 2), kt_block, 2 * kTile,
                       scores.data() + r0 * kTile, kTile, false);
        }
        for (int64_t r = 0; r < rows; ++r) {
          // Keys j0+lo..j0+hi-1 are visible: causal, and (packed rows) not before the row's sequence.
          const int64_t lo = key_begin != nullptr ? std::max<int64_t>(key_begin[r] - j0, 0) : 0;
          const int64_t hi = std::min(cols, shift + t0 + r + 1 - j0);
          const float correction =
              softmax_row(scores.data() + r * kTile, lo, hi, softmax_scale, row_max[r], row_sum[r], pa.data() + r * kTile);
          float* ar = acc.data() + r * dpad;
          if (correction != 1.0f) {
#pragma omp simd
            for (int64_t d = 0; d < D; ++d) ar[d] *= correction;
          }
        }
        // P is zero past each group's last visible key: those products are skipped.
        for (const auto& [r0, r1, gcols] : groups) {
          tile_product(r1 - r0, D, (gcols + 1) / 2, rows_operand(pa.data() + r0 * kTile, kTile),
                       vp.data() + (head * k_blocks + kb) * v_size, 2 * dpad, acc.data() + r0 * dpad, dpad, true);
        }
      }
      attention_finish_tile(s, b, h, t0, rows, acc.data(), dpad, row_max.data(), row_sum.data(), out, lse);
    }
  }
}

}  // namespace

void attention_forward_bf16(const ops::AttentionShape& s, const float* q, const float* k, const float* v,
                            float softmax_scale, float* out, float* lse) {
  forward_impl(s, q, k, v, softmax_scale, out, lse);
}

void attention_forward_bf16_from_bf16_kv(const ops::AttentionShape& s, const float* q, const uint16_t* k,
                                         const uint16_t* v, float softmax_scale, float* out, float* lse) {
  forward_impl(s, q, k, v, softmax_scale, out, lse);
}

// ---- Backward -----------------------------------------------------------------------------------

void attention_backward_bf16(const ops::AttentionShape& s, const float* dout, const float* q, const float* k,
                             const float* v, const float* out, const float* lse, float softmax_scale, float* dq,
                             float* dk, float* dv) {
  // One task per (batch, kv head), as in attention.cpp: it owns dk/dv of that head and dq of the
  // query heads that read it, so no two threads write the same element and sums run in a fixed order.
  const int64_t D = s.head_dim, group = s.q_heads / s.kv_heads;
  const int64_t ldq = s.q_heads * D, ldkv = s.kv_heads * D;
  const int64_t d2 = (D + 1) / 2, dpad = round_up(D, 16);
  const int64_t k_blocks = (s.kv_len + kTile - 1) / kTile;
  const int64_t shift = s.kv_len - s.q_len;
  const int64_t t_size = d2 * 2 * kTile, p_size = (kTile / 2) * 2 * dpad;
  const int64_t tasks = s.batch * s.kv_heads;
#pragma omp parallel
  {
    // Per kv head: K^T and V^T per block (for the scores and dP) and K as pairs over keys (for dQ).
    std::vector<uint16_t> kt(static_cast<size_t>(k_blocks * t_size)), vt(kt.size());
    std::vector<uint16_t> kp(static_cast<size_t>(k_blocks * p_size));
    // Per query tile: q and dout as rows (scores, dP) and as pairs over queries (dK, dV).
    std::vector<uint16_t> qa(static_cast<size_t>(kTile * d2 * 2)), doa(qa.size());
    std::vector<uint16_t> qp(static_cast<size_t>(p_size)), dop(qp.size());
    // Per tile: P in pairs layout (P^T for dV), dS in rows (dQ) and pairs layout (dS^T for dK).
    std::vector<uint16_t> pp(static_cast<size_t>(kTile * kTile)), dsa(pp.size()), dsp(pp.size());
    std::vector<float> probs(static_cast<size_t>(kTile * kTile)), dprobs(probs.size());
    std::vector<float> delta(kTile);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t hk = task % s.kv_heads, b = task / s.kv_heads;
      const float* k_head = k + b * s.kv_len * ldkv + hk * D;
      const float* v_head = v + b * s.kv_len * ldkv + hk * D;
      float* dk_head = dk + b * s.kv_len * ldkv + hk * D;
      float* dv_head = dv + b * s.kv_len * ldkv + hk * D;
      for (int64_t kb = 0; kb < k_blocks; ++kb) {
        const int64_t j0 = kb * kTile, cols = std::min(kTile, s.kv_len - j0);
        pack_transposed_pairs(k_head + j0 * ldkv, ldkv, cols, D, kt.data() + kb * t_size, d2, 2 * kTile);
        pack_transposed_pairs(v_head + j0 * ldkv, ldkv, cols, D, vt.data() + kb * t_size, d2, 2 * kTile);
        pack_pairs(k_head + j0 * ldkv, ldkv, cols, D, kp.data() + kb * p_size, kTile / 2, 2 * dpad);
      }
      attention_zero_kv_head(s, dk_head, dv_head);
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        for (int64_t t0 = 0; t0 < s.q_len; t0 += kTile) {
          const int64_t rows = std::min(kTile, s.q_len - t0), rows2 = (rows + 1) / 2;
          const int64_t row0 = (b * s.q_len + t0) * ldq + h * D;
          const float* q_tile = q + row0;
          const float* do_tile = dout + row0;
          float* dq_tile = dq + row0;
          const float* lse_tile = lse + (b * s.q_heads + h) * s.q_len + t0;
          pack_rows(q_tile, ldq, rows, D, qa.data(), d2 * 2);
          pack_rows(do_tile, ldq, rows, D, doa.data(), d2 * 2);
          pack_pairs(q_tile, ldq, rows, D, qp.data(), rows2, 2 * dpad);
          pack_pairs(do_tile, ldq, rows, D, dop.data(), rows2, 2 * dpad);
          attention_tile_delta(s, out + row0, do_tile, rows, delta.data(), dq_tile);
          const int32_t* key_begin = s.key_begin != nullptr ? s.key_begin + b * s.q_len + t0 : nullptr;
          const int64_t key_end = shift + t0 + rows;
          for (int64_t j0 = attention_first_key_block(key_begin, rows, kTile); j0 < key_end; j0 += kTile) {
            const int64_t kb = j0 / kTile, cols = std::min(kTile, key_end - j0);
            // Products over the causal diagonal skip what the mask zeroes (RowGroups, KeyGroups).
            const RowGroups row_groups(rows, cols, shift + t0 - j0);
            const KeyGroups key_groups(rows, cols, shift + t0 - j0);
            // P = exp(scale * q k^T - lse), recomputed.
            for (const auto& [r0, r1, gcols] : row_groups) {
              tile_product(r1 - r0, gcols, d2, rows_operand(qa.data() + r0 * d2 * 2, d2 * 2), kt.data() + kb * t_size,
                           2 * kTile, probs.data() + r0 * kTile, kTile, false);
            }
            for (int64_t r = 0; r < rows; ++r) {
              const int64_t lo = key_begin != nullptr ? std::max<int64_t>(key_begin[r] - j0, 0) : 0;
              const int64_t hi = std::min(cols, shift + t0 + r + 1 - j0);
              probs_row(probs.data() + r * kTile, lo, hi, cols, softmax_scale, lse_tile[r]);
            }
            // dV += P^T dO
            pack_tile(probs.data(), rows, cols, nullptr, pp.data());
            for (const auto& [c0, c1, p0] : key_groups) {
              tile_product(c1 - c0, D, rows2 - p0, pairs_operand(pp.data() + p0 * 2 * kTile + 2 * c0, 2 * kTile),
                           dop.data() + p0 * 2 * dpad, 2 * dpad, dv_head + (j0 + c0) * ldkv, ldkv, true);
            }
            // dP = dO V^T, then dS = scale * P * (dP - delta) (zero where P is: past a row group's
            // columns dP is stale but finite, from an earlier tile or the zero-filled start)
            for (const auto& [r0, r1, gcols] : row_groups) {
              tile_product(r1 - r0, gcols, d2, rows_operand(doa.data() + r0 * d2 * 2, d2 * 2), vt.data() + kb * t_size,
                           2 * kTile, dprobs.data() + r0 * kTile, kTile, false);
            }
            for (int64_t r = 0; r < rows; ++r) {
              float* dr = dprobs.data() + r * kTile;
              const float* pr = probs.data() + r * kTile;
              const float dl = delta[r];
#pragma omp simd
              for (int64_t c = 0; c < cols; ++c) dr[c] = softmax_scale * pr[c] * (dr[c] - dl);
            }
            pack_tile(dprobs.data(), rows, cols, dsa.data(), dsp.data());
            // dQ += dS K;  dK += dS^T Q
            for (const auto& [r0, r1, gcols] : row_groups) {
              tile_product(r1 - r0, D, (gcols + 1) / 2, rows_operand(dsa.data() + r0 * kTile, kTile),
                           kp.data() + kb * p_size, 2 * dpad, dq_tile + r0 * ldq, ldq, true);
            }
            for (const auto& [c0, c1, p0] : key_groups) {
              tile_product(c1 - c0, D, rows2 - p0, pairs_operand(dsp.data() + p0 * 2 * kTile + 2 * c0, 2 * kTile),
                           qp.data() + p0 * 2 * dpad, 2 * dpad, dk_head + (j0 + c0) * ldkv, ldkv, true);
            }
          }
        }
      }
    }
  }
}

}  // namespace kvroute::cpu
