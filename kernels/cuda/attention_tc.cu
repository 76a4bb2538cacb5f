// Causal GQA attention on the tensor cores for bf16 storage: FlashAttention-2's tiling with
// mma.sync.m16n8k16 (bf16 inputs, f32 accumulation). A warp owns 16 rows (queries in the forward
// and dQ passes, keys in the dK/dV pass); K/V (or Q/dO) tiles are staged in shared memory with
// rows padded by 8 elements, which makes every fragment load below free of bank conflicts. The
// score accumulators become the next product's A fragments in registers (the C layout of two
// n8 tiles is the A layout of one k16 step). The backward is two atomic-free passes like the
// CUDA-core kernels (dK/dV per key block, then dQ per query block), so it is deterministic.
#include <cuda_bf16.h>

#include "kernels/cuda/attention_tc.cuh"
#include "kernels/cuda/common.cuh"

namespace kvroute::cuda {

namespace {

using bf16 = __nv_bfloat16;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr int kThreads = 128;  // 4 warps
constexpr int kRows = 64;      // rows per block: 4 warps x 16
constexpr int kStream = 64;    // streamed rows per shared-memory tile (keys; queries in dK/dV: kQueryTile)
constexpr int kQueryTile = 32;

__device__ __forceinline__ uint32_t pack(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

__device__ __forceinline__ uint32_t pack_raw(bf16 lo, bf16 hi) {
  return static_cast<uint32_t>(__bfloat16_as_ushort(lo)) | (static_cast<uint32_t>(__bfloat16_as_ushort(hi)) << 16);
}

__device__ __forceinline__ uint32_t load32(const bf16* p) { return *reinterpret_cast<const uint32_t*>(p); }

// d += a (16x16, row-major fragment) * b (16x8, column fragment), f32 accumulation.
__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // bf16 mma needs sm_80+; the dispatcher never launches this kernel on older GPUs
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// Rows [row0, row0 + rows) of a [*, rows, heads, D] tensor into shared memory with row pitch D+8;
// rows at or past `limit` are zeros. 16-byte vectors (the dispatcher checked the alignment).
template <int D>
__device__ __forceinline__ void load_rows(bf16* dst, const bf16* base, int64_t row_stride, int row0, int limit,
                                          int rows) {
  constexpr int kPitch = D + 8, kVectorsPerRow = D / 8;
  for (int e = threadIdx.x; e < rows * kVectorsPerRow; e += kThreads) {
    const int r = e / kVectorsPerRow, c = (e % kVectorsPerRow) * 8;
    uint4 value = make_uint4(0, 0, 0, 0);
    if (row0 + r < limit) value = *reinterpret_cast<const uint4*>(base + static_cast<int64_t>(row0 + r) * row_stride + c);
    *reinterpret_cast<uint4*>(dst + r * kPitch + c) = value;
  }
}

// A fragment of rows [r, r+16) x cols [c, c+16) of a row-major tile with pitch D+8.
template <int D>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const bf16* tile, int r, int c, int g, int tig) {
  constexpr int kPitch = D + 8;
  a[0] = load32(tile + (r + g) * kPitch + c + tig * 2);
  a[1] = load32(tile + (r + g + 8) * kPitch + c + tig * 2);
  a[2] = load32(tile + (r + g) * kPitch + c + 8 + tig * 2);
  a[3] = load32(tile + (r + g + 8) * kPitch + c + 8 + tig * 2);
}

// B fragment (k16 x n8) whose column n is row (n0 + n) of a row-major tile: B[kk][n] = tile[n0+n][c+kk].
template <int D>
__device__ __forceinline__ void load_b_rows(uint32_t& b0, uint32_t& b1, const bf16* tile, int n0, int c, int g,
                                            int tig) {
  constexpr int kPitch = D + 8;
  b0 = load32(tile + (n0 + g) * kPitch + c + tig * 2);
  b1 = load32(tile + (n0 + g) * kPitch + c + 8 + tig * 2);
}

// B fragment (k16 x n8) read down the rows of a tile: B[kk][n] = tile[r0+kk][n0+n].
template <int D>
__device__ __forceinline__ void load_b_cols(uint32_t& b0, uint32_t& b1, const bf16* tile, int r0, int n0, int g,
                                            int tig) {
  constexpr int kPitch = D + 8;
  const bf16* col = tile + n0 + g;
  b0 = pack_raw(col[(r0 + tig * 2) * kPitch], col[(r0 + tig * 2 + 1) * kPitch]);
  b1 = pack_raw(col[(r0 + 8 + tig * 2) * kPitch], col[(r0 + 8 + tig * 2 + 1) * kPitch]);
}

// The A fragments (k16 steps) of a 16 x (8 * kTiles) accumulator block, rounded to bf16.
template <int kTiles>
__device__ __forceinline__ void to_a_fragments(uint32_t (&a)[kTiles / 2][4], const float (&c)[kTiles][4]) {
#pragma unroll
  for (int kb = 0; kb < kTiles / 2; ++kb) {
    a[kb][0] = pack(c[2 * kb][0], c[2 * kb][1]);
    a[kb][1] = pack(c[2 * kb][2], c[2 * kb][3]);
    a[kb][2] = pack(c[2 * kb + 1][0], c[2 * kb + 1][1]);
    a[kb][3] = pack(c[2 * kb + 1][2], c[2 * kb + 1][3]);
  }
}

// Writes the rows of a warp's 16 x D accumulator held by this thread (row g: elements 0, 1 of each
// n8 tile; row g + 8: elements 2, 3) as bf16, times a per-row factor. `half` picks the row;
// `row` points at the row's first element plus this thread's column offset (tig * 2).
template <int D>
__device__ __forceinline__ void store_row(bf16* row, const float (&acc)[D / 8][4], int half, float factor) {
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    *reinterpret_cast<uint32_t*>(row + n * 8) = pack(acc[n][2 * half] * factor, acc[n][2 * half + 1] * factor);
  }
}

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

template <int D>
__global__ void __launch_bounds__(kThreads) forward_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                                           const bf16* __restrict__ v, bf16* __restrict__ out,
                                                           float* __restrict__ lse, int Tq, int Tk, int Hq, int Hkv,
                                                           int64_t kv_batch_stride, float scale_log2) {
  constexpr int kPitch = D + 8, kSteps = D / 16, kDimTiles = D / 8, kKeyTiles = kStream / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* ks = reinterpret_cast<bf16*>(smem);
  bf16* vs = ks + kStream * kPitch;
  const int qblock = gridDim.x - 1 - blockIdx.x;  // the longest query blocks start first
  const int h = blockIdx.y, b = blockIdx.z, hk = h / (Hq / Hkv);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tig = lane % 4;
  const int t0 = qblock * kRows, wr = warp * 16;
  const int offset = Tk - Tq;
  const int64_t q_row_stride = static_cast<int64_t>(Hq) * D, kv_row_stride = static_cast<int64_t>(Hkv) * D;

  load_rows<D>(ks, q + static_cast<int64_t>(b) * Tq * q_row_stride + static_cast<int64_t>(h) * D, q_row_stride, t0,
               Tq, kRows);
  __syncthreads();
  uint32_t qf[kSteps][4];
#pragma unroll
  for (int kk = 0; kk < kSteps; ++kk) load_a<D>(qf[kk], ks, wr, kk * 16, g, tig);

  const int row0 = t0 + wr + g, row1 = row0 + 8;
  const int pos0 = offset + row0, pos1 = offset + row1;
  float o[kDimTiles][4];
#pragma unroll
  for (int n = 0; n < kDimTiles; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
  const int last_key = offset + min(Tq, t0 + kRows) - 1;
  const int warp_last_key = offset + t0 + wr + 15;
  const bf16* kbase = k + static_cast<int64_t>(b) * kv_batch_stride + static_cast<int64_t>(hk) * D;
  const bf16* vbase = v + static_cast<int64_t>(b) * kv_batch_stride + static_cast<int64_t>(hk) * D;

  for (int j0 = 0; j0 <= last_key; j0 += kStream) {
    __syncthreads();  // every warp is done with the previous tile (or with Q)
    load_rows<D>(ks, kbase, kv_row_stride, j0, Tk, kStream);
    load_rows<D>(vs, vbase, kv_row_stride, j0, Tk, kStream);
    __syncthreads();
    if (j0 > warp_last_key) continue;  // the whole tile is in this warp's future (warp-uniform)
    float s[kKeyTiles][4];
#pragma unroll
    for (int j = 0; j < kKeyTiles; ++j) {
      s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < kSteps; ++kk) {
        uint32_t b0, b1;
        load_b_rows<D>(b0, b1, ks, j * 8, kk * 16, g, tig);
        mma(s[j], qf[kk], b0, b1);
      }
    }
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int j = 0; j < kKeyTiles; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = j0 + j * 8 + tig * 2 + (e & 1);
        const int pos = e < 2 ? pos0 : pos1;
        s[j][e] = (key <= pos && key < Tk) ? s[j][e] * scale_log2 : -INFINITY;
      }
      mx0 = fmaxf(mx0, fmaxf(s[j][0], s[j][1]));
      mx1 = fmaxf(mx1, fmaxf(s[j][2], s[j][3]));
    }
    const float mn0 = fmaxf(m0, quad_max(mx0)), mn1 = fmaxf(m1, quad_max(mx1));
    const float c0 = m0 == -INFINITY ? 0.0f : exp2f(m0 - mn0), c1 = m1 == -INFINITY ? 0.0f : exp2f(m1 - mn1);
    m0 = mn0;
    m1 = mn1;
    l0 *= c0;
    l1 *= c1;
#pragma unroll
    for (int n = 0; n < kDimTiles; ++n) {
      o[n][0] *= c0;
      o[n][1] *= c0;
      o[n][2] *= c1;
      o[n][3] *= c1;
    }
#pragma unroll
    for (int j = 0; j < kKeyTiles; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float mn = e < 2 ? mn0 : mn1;
        s[j][e] = s[j][e] == -INFINITY ? 0.0f : exp2f(s[j][e] - mn);
      }
      l0 += s[j][0] + s[j][1];
      l1 += s[j][2] + s[j][3];
    }
    uint32_t pf[kKeyTiles / 2][4];
    to_a_fragments<kKeyTiles>(pf, s);
#pragma unroll
    for (int n = 0; n < kDimTiles; ++n) {
#pragma unroll
      for (int kb = 0; kb < kKeyTiles / 2; ++kb) {
        uint32_t b0, b1;
        load_b_cols<D>(b0, b1, vs, kb * 16, n * 8, g, tig);
        mma(o[n], pf[kb], b0, b1);
      }
    }
  }
  l0 = quad_sum(l0);
  l1 = quad_sum(l1);
  const int64_t stat = (static_cast<int64_t>(b) * Hq + h) * Tq;
  if (row0 < Tq) {
    store_row<D>(out + ((static_cast<int64_t>(b) * Tq + row0) * Hq + h) * D + tig * 2, o, 0, 1.0f / l0);
    if (tig == 0) lse[stat + row0] = (m0 + log2f(l0)) * kLn2;
  }
  if (row1 < Tq) {
    store_row<D>(out + ((static_cast<int64_t>(b) * Tq + row1) * Hq + h) * D + tig * 2, o, 1, 1.0f / l1);
    if (tig == 0) lse[stat + row1] = (m1 + log2f(l1)) * kLn2;
  }
}

// dQ per block of 64 queries: S = Q K^T, P = exp(S - lse), dP = dO V^T, dS = P (dP - delta),
// dQ += dS K, streaming K/V tiles; the keys of a tile are taken 32 at a time to bound registers.
template <int D>
__global__ void __launch_bounds__(kThreads) dq_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                                      const bf16* __restrict__ v, const bf16* __restrict__ dout,
                                                      const float* __restrict__ lse, const float* __restrict__ delta,
                                                      bf16* __restrict__ dq, int Tq, int Tk, int Hq, int Hkv,
                                                      float scale, float scale_log2) {
  constexpr int kPitch = D + 8, kSteps = D / 16, kDimTiles = D / 8, kHalf = 32, kHalfTiles = kHalf / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* ks = reinterpret_cast<bf16*>(smem);
  bf16* vs = ks + kStream * kPitch;
  const int qblock = gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y, b = blockIdx.z, hk = h / (Hq / Hkv);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tig = lane % 4;
  const int t0 = qblock * kRows, wr = warp * 16;
  const int offset = Tk - Tq;
  const int64_t q_row_stride = static_cast<int64_t>(Hq) * D, kv_row_stride = static_cast<int64_t>(Hkv) * D;
  const int64_t q_base = static_cast<int64_t>(b) * Tq * q_row_stride + static_cast<int64_t>(h) * D;

  load_rows<D>(ks, q + q_base, q_row_stride, t0, Tq, kRows);
  load_rows<D>(vs, dout + q_base, q_row_stride, t0, Tq, kRows);
  __syncthreads();
  uint32_t qf[kSteps][4], dof[kSteps][4];
#pragma unroll
  for (int kk = 0; kk < kSteps; ++kk) {
    load_a<D>(qf[kk], ks, wr, kk * 16, g, tig);
    load_a<D>(dof[kk], vs, wr, kk * 16, g, tig);
  }
  const int row0 = t0 + wr + g, row1 = row0 + 8;
  const int pos0 = offset + row0, pos1 = offset + row1;
  const int64_t stat = (static_cast<int64_t>(b) * Hq + h) * Tq;
  const float lse0 = row0 < Tq ? lse[stat + row0] * kLog2e : INFINITY;
  const float lse1 = row1 < Tq ? lse[stat + row1] * kLog2e : INFINITY;
  const float delta0 = row0 < Tq ? delta[stat + row0] : 0.0f;
  const float delta1 = row1 < Tq ? delta[stat + row1] : 0.0f;
  float acc[kDimTiles][4];
#pragma unroll
  for (int n = 0; n < kDimTiles; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
  const int last_key = offset + min(Tq, t0 + kRows) - 1;
  const int warp_last_key = offset + t0 + wr + 15;
  const bf16* kbase = k + static_cast<int64_t>(b) * Tk * kv_row_stride + static_cast<int64_t>(hk) * D;
  const bf16* vbase = v + static_cast<int64_t>(b) * Tk * kv_row_stride + static_cast<int64_t>(hk) * D;

  for (int j0 = 0; j0 <= last_key; j0 += kStream) {
    __syncthreads();
    load_rows<D>(ks, kbase, kv_row_stride, j0, Tk, kStream);
    load_rows<D>(vs, vbase, kv_row_stride, j0, Tk, kStream);
    __syncthreads();
#pragma unroll 1
    for (int half = 0; half < kStream / kHalf; ++half) {
      const int h0 = half * kHalf;  // first key of this half, within the tile
      if (j0 + h0 > warp_last_key) continue;
      float s[kHalfTiles][4], dp[kHalfTiles][4];
#pragma unroll
      for (int j = 0; j < kHalfTiles; ++j) {
        s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
        dp[j][0] = dp[j][1] = dp[j][2] = dp[j][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < kSteps; ++kk) {
          uint32_t b0, b1;
          load_b_rows<D>(b0, b1, ks, h0 + j * 8, kk * 16, g, tig);
          mma(s[j], qf[kk], b0, b1);
          load_b_rows<D>(b0, b1, vs, h0 + j * 8, kk * 16, g, tig);
          mma(dp[j], dof[kk], b0, b1);
        }
      }
#pragma unroll
      for (int j = 0; j < kHalfTiles; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = j0 + h0 + j * 8 + tig * 2 + (e & 1);
          const bool top = e < 2;
          const bool visible = key <= (top ? pos0 : pos1) && key < Tk;
          const float p = visible ? exp2f(s[j][e] * scale_log2 - (top ? lse0 : lse1)) : 0.0f;
          s[j][e] = p * (dp[j][e] - (top ? delta0 : delta1));  // dS
        }
      }
      uint32_t dsf[kHalfTiles / 2][4];
      to_a_fragments<kHalfTiles>(dsf, s);
#pragma unroll
      for (int n = 0; n < kDimTiles; ++n) {
#pragma unroll
        for (int kb = 0; kb < kHalfTiles / 2; ++kb) {
          uint32_t b0, b1;
          load_b_cols<D>(b0, b1, ks, h0 + kb * 16, n * 8, g, tig);
          mma(acc[n], dsf[kb], b0, b1);
        }
      }
    }
  }
  if (row0 < Tq) store_row<D>(dq + ((static_cast<int64_t>(b) * Tq + row0) * Hq + h) * D + tig * 2, acc, 0, scale);
  if (row1 < Tq) store_row<D>(dq + ((static_cast<int64_t>(b) * Tq + row1) * Hq + h) * D + tig * 2, acc, 1, scale);
}

// dK, dV per block of 64 keys of one KV head, over every query head of its group and every query
// that sees the block: S^T = K Q^T, P^T, dV += P^T dO, dP^T = V dO^T, dS^T, dK += dS^T Q.
template <int D>
__global__ void __launch_bounds__(kThreads) dkdv_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                                        const bf16* __restrict__ v, const bf16* __restrict__ dout,
                                                        const float* __restrict__ lse, const float* __restrict__ delta,
                                                        bf16* __restrict__ dk, bf16* __restrict__ dv, int Tq, int Tk,
                                                        int Hq, int Hkv, float scale, float scale_log2) {
  constexpr int kPitch = D + 8, kSteps = D / 16, kDimTiles = D / 8, kQueryTiles = kQueryTile / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* kt = reinterpret_cast<bf16*>(smem);
  bf16* vt = kt + kRows * kPitch;
  bf16* qt = vt + kRows * kPitch;
  bf16* dot = qt + kQueryTile * kPitch;
  float* lse_s = reinterpret_cast<float*>(dot + kQueryTile * kPitch);
  float* delta_s = lse_s + kQueryTile;
  const int k0 = blockIdx.x * kRows;  // the first key blocks are read by the most queries: start first
  const int hk = blockIdx.y, b = blockIdx.z;
  const int group = Hq / Hkv;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tig = lane % 4;
  const int wr = warp * 16;
  const int offset = Tk - Tq;
  const int64_t q_row_stride = static_cast<int64_t>(Hq) * D, kv_row_stride = static_cast<int64_t>(Hkv) * D;
  const int64_t kv_base = static_cast<int64_t>(b) * Tk * kv_row_stride + static_cast<int64_t>(hk) * D;
  load_rows<D>(kt, k + kv_base, kv_row_stride, k0, Tk, kRows);
  load_rows<D>(vt, v + kv_base, kv_row_stride, k0, Tk, kRows);
  const int key0 = k0 + wr + g, key1 = key0 + 8;
  float dk_acc[kDimTiles][4], dv_acc[kDimTiles][4];
#pragma unroll
  for (int n = 0; n < kDimTiles; ++n) {
    dk_acc[n][0] = dk_acc[n][1] = dk_acc[n][2] = dk_acc[n][3] = 0.0f;
    dv_acc[n][0] = dv_acc[n][1] = dv_acc[n][2] = dv_acc[n][3] = 0.0f;
  }
  const int first_query = max(0, k0 - offset);
  for (int hh = 0; hh < group; ++hh) {
    const int h = hk * group + hh;
    const int64_t q_base = static_cast<int64_t>(b) * Tq * q_row_stride + static_cast<int64_t>(h) * D;
    const int64_t stat = (static_cast<int64_t>(b) * Hq + h) * Tq;
    for (int t0 = first_query; t0 < Tq; t0 += kQueryTile) {
      __syncthreads();
      load_rows<D>(qt, q + q_base, q_row_stride, t0, Tq, kQueryTile);
      load_rows<D>(dot, dout + q_base, q_row_stride, t0, Tq, kQueryTile);
      for (int e = threadIdx.x; e < kQueryTile; e += kThreads) {
        lse_s[e] = t0 + e < Tq ? lse[stat + t0 + e] * kLog2e : INFINITY;
        delta_s[e] = t0 + e < Tq ? delta[stat + t0 + e] : 0.0f;
      }
      __syncthreads();
      // Skip when this warp's first key comes after every query position of the tile.
      if (k0 + wr > offset + min(Tq - 1, t0 + kQueryTile - 1)) continue;
      float s[kQueryTiles][4], dp[kQueryTiles][4];
#pragma unroll
      for (int j = 0; j < kQueryTiles; ++j) {
        s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
        dp[j][0] = dp[j][1] = dp[j][2] = dp[j][3] = 0.0f;
      }
#pragma unroll
      for (int kk = 0; kk < kSteps; ++kk) {
        uint32_t ka[4], va[4];
        load_a<D>(ka, kt, wr, kk * 16, g, tig);
        load_a<D>(va, vt, wr, kk * 16, g, tig);
#pragma unroll
        for (int j = 0; j < kQueryTiles; ++j) {
          uint32_t b0, b1;
          load_b_rows<D>(b0, b1, qt, j * 8, kk * 16, g, tig);
          mma(s[j], ka, b0, b1);
          load_b_rows<D>(b0, b1, dot, j * 8, kk * 16, g, tig);
          mma(dp[j], va, b0, b1);
        }
      }
#pragma unroll
      for (int j = 0; j < kQueryTiles; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int local = j * 8 + tig * 2 + (e & 1);  // query within the tile
          const int query = t0 + local;
          const int key = e < 2 ? key0 : key1;
          const bool visible = query < Tq && key <= offset + query;
          const float p = visible ? exp2f(s[j][e] * scale_log2 - lse_s[local]) : 0.0f;
          s[j][e] = p;
          dp[j][e] = p * (dp[j][e] - delta_s[local]);  // dS^T
        }
      }
      uint32_t pf[kQueryTiles / 2][4], dsf[kQueryTiles / 2][4];
      to_a_fragments<kQueryTiles>(pf, s);
      to_a_fragments<kQueryTiles>(dsf, dp);
#pragma unroll
      for (int n = 0; n < kDimTiles; ++n) {
#pragma unroll
        for (int kb = 0; kb < kQueryTiles / 2; ++kb) {
          uint32_t b0, b1;
          load_b_cols<D>(b0, b1, dot, kb * 16, n * 8, g, tig);
          mma(dv_acc[n], pf[kb], b0, b1);
          load_b_cols<D>(b0, b1, qt, kb * 16, n * 8, g, tig);
          mma(dk_acc[n], dsf[kb], b0, b1);
        }
      }
    }
  }
  for (int half = 0; half < 2; ++half) {
    const int key = half == 0 ? key0 : key1;
    if (key >= Tk) continue;
    const int64_t row = ((static_cast<int64_t>(b) * Tk + key) * Hkv + hk) * D + tig * 2;
    store_row<D>(dk + row, dk_acc, half, scale);
    store_row<D>(dv + row, dv_acc, half, 1.0f);
  }
}

template <int D>
constexpr size_t stream_smem() {
  return 2 * static_cast<size_t>(kStream) * (D + 8) * sizeof(bf16);
}

template <int D>
constexpr size_t dkdv_smem() {
  return (2 * static_cast<size_t>(kRows) + 2 * kQueryTile) * (D + 8) * sizeof(bf16) + 2 * kQueryTile * sizeof(float);
}

// Kernels using more than 48 KB of dynamic shared memory must say so once.
template <class Kernel>
void allow_smem(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024) {
    KV_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  }
}

#define KV_DISPATCH_TC_HEAD_DIM(head_dim, D, ...)                                                 \
  switch (head_dim) {                                                                             \
    case 32: { constexpr int D = 32; __VA_ARGS__; break; }                                        \
    case 64: { constexpr int D = 64; __VA_ARGS__; break; }                                        \
    case 128: { constexpr int D = 128; __VA_ARGS__; break; }                                      \
    default: throw_message("attention: the tensor-core kernel supports head_dim 32, 64 and 128"); \
  }

unsigned blocks_of(int64_t rows) { return static_cast<unsigned>((rows + kRows - 1) / kRows); }

}  // namespace

bool attention_tc_supports(int device, int64_t head_dim) {
  int major = 0;
  KV_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  return major >= 8 && (head_dim == 32 || head_dim == 64 || head_dim == 128);
}

void attention_forward_tc(int device, const ops::AttentionShape& s, const void* q, const void* k, const void* v,
                          float softmax_scale, void* out, float* lse) {
  cudaStream_t stream = stream_of(device);
  const float scale_log2 = softmax_scale * kLog2e;
  KV_DISPATCH_TC_HEAD_DIM(s.head_dim, D, {
    constexpr size_t smem = stream_smem<D>();
    allow_smem(forward_kernel<D>, smem);
    const dim3 grid(blocks_of(s.q_len), static_cast<unsigned>(s.q_heads), static_cast<unsigned>(s.batch));
    forward_kernel<D><<<grid, kThreads, smem, stream>>>(
        static_cast<const bf16*>(q), static_cast<const bf16*>(k), static_cast<const bf16*>(v), static_cast<bf16*>(out),
        lse, static_cast<int>(s.q_len), static_cast<int>(s.kv_len), static_cast<int>(s.q_heads),
        static_cast<int>(s.kv_heads), s.kv_stride(), scale_log2);
  });
  KV_LAUNCH_CHECK();
}

void attention_backward_tc(int device, const ops::AttentionShape& s, const void* dout, const void* q, const void* k,
                           const void* v, const float* lse, const float* delta, float softmax_scale, void* dq, void* dk,
                           void* dv) {
  cudaStream_t stream = stream_of(device);
  const float scale_log2 = softmax_scale * kLog2e;
  const int Tq = static_cast<int>(s.q_len), Tk = static_cast<int>(s.kv_len);
  const int Hq = static_cast<int>(s.q_heads), Hkv = static_cast<int>(s.kv_heads);
  KV_DISPATCH_TC_HEAD_DIM(s.head_dim, D, {
    constexpr size_t kv_smem = dkdv_smem<D>();
    allow_smem(dkdv_kernel<D>, kv_smem);
    const dim3 kv_grid(blocks_of(s.kv_len), static_cast<unsigned>(Hkv), static_cast<unsigned>(s.batch));
    dkdv_kernel<D><<<kv_grid, kThreads, kv_smem, stream>>>(
        static_cast<const bf16*>(q), static_cast<const bf16*>(k), static_cast<const bf16*>(v),
        static_cast<const bf16*>(dout), lse, delta, static_cast<bf16*>(dk), static_cast<bf16*>(dv), Tq, Tk, Hq, Hkv,
        softmax_scale, scale_log2);
    KV_LAUNCH_CHECK();
    constexpr size_t q_smem = stream_smem<D>();
    allow_smem(dq_kernel<D>, q_smem);
    const dim3 q_grid(blocks_of(s.q_len), static_cast<unsigned>(Hq), static_cast<unsigned>(s.batch));
    dq_kernel<D><<<q_grid, kThreads, q_smem, stream>>>(
        static_cast<const bf16*>(q), static_cast<const bf16*>(k), static_cast<const bf16*>(v),
        static_cast<const bf16*>(dout), lse, delta, static_cast<bf16*>(dq), Tq, Tk, Hq, Hkv, softmax_scale, scale_log2);
  });
  KV_LAUNCH_CHECK();
}

}  // namespace kvroute::cuda
