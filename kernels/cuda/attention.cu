// Causal GQA attention, flash-style: queries (or keys, in the dK/dV pass) are split over thread
// blocks, the other side streams through shared-memory tiles, and the softmax is computed online
// with the log-sum-exp saved for the backward, so no [T, T] matrix exists. A group of G = D/16
// threads owns one row (one thread for D = 8), each thread 16 interleaved dims (d = g + G*i: a shared-memory tile row is
// read by the group without bank conflicts and broadcast to the other rows). The backward is two
// deterministic passes without atomics: dK/dV per key block (looping over the queries and query
// heads that read it), then dQ per query block. Arithmetic is f32 for f32 and bf16 storage. The
// tensor-core variant for bf16 is attention_tc.cu; the caller's ops::AttentionKernel picks it.
#include <cmath>
#include <initializer_list>
#include <memory>

#include "kernels/cuda/attention_tc.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace kvroute::cuda {

namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <int D>
struct Tile {
  static constexpr int kDimsPerThread = D < 16 ? D : 16;
  static constexpr int kGroup = D / kDimsPerThread;  // threads per row: 1, 1, 2, 4, 8
  static constexpr int kThreads = 128;
  static constexpr int kRows = kThreads / kGroup;     // rows per block
  static constexpr int kTile = 32;                    // streamed rows per shared-memory tile
  static constexpr int kChunk = 8;                    // keys scored before one softmax rescale
};

template <int G>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int offset = G / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Loads rows [row0, row0 + kTile) of a [*, rows, heads, D] tensor (row stride `row_stride`) into
// f32 shared memory; rows past `limit` become zeros.
template <class T, int D, int kTile, int kThreads>
__device__ __forceinline__ void load_tile(float (*dst)[D], const T* base, int64_t row_stride, int row0, int limit) {
  for (int e = threadIdx.x; e < kTile * D; e += kThreads) {
    const int r = e / D, d = e % D;
    dst[r][d] = row0 + r < limit ? to_f32(base[static_cast<int64_t>(row0 + r) * row_stride + d]) : 0.0f;
  }
}

template <class T, int D>
__global__ void __launch_bounds__(128) attention_forward_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                                                const T* __restrict__ v, T* __restrict__ out,
                                                                float* __restrict__ lse, int Tq, int Tk, int Hq, int Hkv,
                                                                int64_t kv_batch_stride, float scale_log2,
                                                                const int32_t* __restrict__ key_begin) {
  using C = Tile<D>;
  constexpr int G = C::kGroup, R = C::kRows, BK = C::kTile, DPT = C::kDimsPerThread;
  __shared__ float ks[BK][D];
  __shared__ float vs[BK][D];
  const int qblock = gridDim.x - 1 - blockIdx.x;  // the longest (last) query blocks start first
  const int h = blockIdx.y, b = blockIdx.z;
  const int hk = h / (Hq / Hkv);
  const int g = threadIdx.x % G, r = threadIdx.x / G;
  const int t = qblock * R + r;
  const bool valid = t < Tq;
  const int offset = Tk - Tq;
  const int pos = offset + t;  // the last key this query sees
  const int first = key_begin != nullptr && valid ? key_begin[static_cast<int64_t>(b) * Tq + t] : 0;  // packed rows
  const int64_t q_row = (static_cast<int64_t>(b) * Tq + (valid ? t : 0)) * Hq + h;

  float qr[DPT], acc[DPT];
#pragma unroll
  for (int i = 0; i < DPT; ++i) {
    qr[i] = valid ? to_f32(q[q_row * D + g + G * i]) : 0.0f;
    acc[i] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  const int last_key = offset + min(Tq, (qblock + 1) * R) - 1;
  const T* kb = k + static_cast<int64_t>(b) * kv_batch_stride + static_cast<int64_t>(hk) * D;
  const T* vb = v + static_cast<int64_t>(b) * kv_batch_stride + static_cast<int64_t>(hk) * D;
  const int64_t kv_row_stride = static_cast<int64_t>(Hkv) * D;

  for (int j0 = 0; j0 <= last_key; j0 += BK) {
    __syncthreads();
    load_tile<T, D, BK, C::kThreads>(ks, kb, kv_row_stride, j0, Tk);
    load_tile<T, D, BK, C::kThreads>(vs, vb, kv_row_stride, j0, Tk);
    __syncthreads();
#pragma unroll 1
    for (int jj = 0; jj < BK; jj += C::kChunk) {
      float s[C::kChunk];
      float chunk_max = -INFINITY;
#pragma unroll
      for (int c = 0; c < C::kChunk; ++c) {
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < DPT; ++i) dot += qr[i] * ks[jj + c][g + G * i];
        dot = group_sum<G>(dot);
        const int j = j0 + jj + c;
        s[c] = (j <= pos && j < Tk && j >= first) ? dot * scale_log2 : -INFINITY;
        chunk_max = fmaxf(chunk_max, s[c]);
      }
      const float m_new = fmaxf(m, chunk_max);
      // No branch: every thread of the warp must reach the shuffles of the next chunk.
      const float corr = m == -INFINITY ? 0.0f : exp2f(m - m_new);
      l *= corr;
#pragma unroll
      for (int i = 0; i < DPT; ++i) acc[i] *= corr;
#pragma unroll
      for (int c = 0; c < C::kChunk; ++c) {
        const float p = s[c] == -INFINITY ? 0.0f : exp2f(s[c] - m_new);
        l += p;
#pragma unroll
        for (int i = 0; i < DPT; ++i) acc[i] += p * vs[jj + c][g + G * i];
      }
      m = m_new;
    }
  }
  if (valid) {
    const float inv = 1.0f / l;
#pragma unroll
    for (int i = 0; i < DPT; ++i) out[q_row * D + g + G * i] = from_f32<T>(acc[i] * inv);
    if (g == 0) lse[(static_cast<int64_t>(b) * Hq + h) * Tq + t] = (m + log2f(l)) * kLn2;
  }
}

// delta[b, h, t] = sum_d dout * out (the softmax backward's row term), one warp per row.
template <class T>
__global__ void attention_delta_kernel(const T* dout, const T* out, float* delta, int B, int Tq, int Hq, int D) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32;  // (b, t, h)
  const int lane = threadIdx.x & 31;
  if (row >= static_cast<int64_t>(B) * Tq * Hq) return;
  float s = 0.0f;
  for (int d = lane; d < D; d += 32) s += to_f32(dout[row * D + d]) * to_f32(out[row * D + d]);
  s = warp_sum(s);
  if (lane == 0) {
    const int64_t h = row % Hq, t = (row / Hq) % Tq, b = row / (static_cast<int64_t>(Hq) * Tq);
    delta[(b * Hq + h) * Tq + t] = s;
  }
}

template <class T, int D>
__global__ void __launch_bounds__(128) attention_dkdv_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                                             const T* __restrict__ v, const T* __restrict__ dout,
                                                             const float* __restrict__ lse,
                                                             const float* __restrict__ delta, T* __restrict__ dk,
                                                             T* __restrict__ dv, int Tq, int Tk, int Hq, int Hkv,
                                                             float scale, float scale_log2,
                                                             const int32_t* __restrict__ key_begin) {
  using C = Tile<D>;
  constexpr int G = C::kGroup, R = C::kRows, BQ = C::kTile, DPT = C::kDimsPerThread;
  __shared__ float qs[BQ][D];
  __shared__ float dos[BQ][D];
  __shared__ float lse_s[BQ];
  __shared__ float delta_s[BQ];
  __shared__ int first_s[BQ];  // packed rows: the first key each query of the tile sees
  const int kblock = blockIdx.x;  // the first key blocks are read by the most queries: start first
  const int hk = blockIdx.y, b = blockIdx.z;
  const int group = Hq / Hkv;
  const int g = threadIdx.x % G, r = threadIdx.x / G;
  const int j = kblock * R + r;
  const bool valid = j < Tk;
  const int offset = Tk - Tq;
  const int64_t kv_row = (static_cast<int64_t>(b) * Tk + (valid ? j : 0)) * Hkv + hk;

  float kr[DPT], vr[DPT], dk_acc[DPT], dv_acc[DPT];
#pragma unroll
  for (int i = 0; i < DPT; ++i) {
    kr[i] = valid ? to_f32(k[kv_row * D + g + G * i]) : 0.0f;
    vr[i] = valid ? to_f32(v[kv_row * D + g + G * i]) : 0.0f;
    dk_acc[i] = 0.0f;
    dv_acc[i] = 0.0f;
  }
  // Query t (position offset + t) sees key j when j <= offset + t.
  const int first_query = max(0, kblock * R - offset);
  const int64_t q_row_stride = static_cast<int64_t>(Hq) * D;
  for (int hh = 0; hh < group; ++hh) {
    const int h = hk * group + hh;
    const T* qb = q + static_cast<int64_t>(b) * Tq * q_row_stride + static_cast<int64_t>(h) * D;
    const T* db = dout + static_cast<int64_t>(b) * Tq * q_row_stride + static_cast<int64_t>(h) * D;
    const float* lse_row = lse + (static_cast<int64_t>(b) * Hq + h) * Tq;
    const float* delta_row = delta + (static_cast<int64_t>(b) * Hq + h) * Tq;
    for (int t0 = first_query; t0 < Tq; t0 += BQ) {
      __syncthreads();
      load_tile<T, D, BQ, C::kThreads>(qs, qb, q_row_stride, t0, Tq);
      load_tile<T, D, BQ, C::kThreads>(dos, db, q_row_stride, t0, Tq);
      for (int e = threadIdx.x; e < BQ; e += C::kThreads) {
        lse_s[e] = t0 + e < Tq ? lse_row[t0 + e] * kLog2e : INFINITY;
        delta_s[e] = t0 + e < Tq ? delta_row[t0 + e] : 0.0f;
        first_s[e] = key_begin != nullptr && t0 + e < Tq ? key_begin[static_cast<int64_t>(b) * Tq + t0 + e] : 0;
      }
      __syncthreads();
#pragma unroll 2
      for (int tt = 0; tt < BQ; ++tt) {
        float s = 0.0f, dp = 0.0f;
#pragma unroll
        for (int i = 0; i < DPT; ++i) {
          s += qs[tt][g + G * i] * kr[i];
          dp += dos[tt][g + G * i] * vr[i];
        }
        s = group_sum<G>(s);
        dp = group_sum<G>(dp);
        const int t = t0 + tt;
        const float p = (t < Tq && j <= offset + t && j >= first_s[tt]) ? exp2f(s * scale_log2 - lse_s[tt]) : 0.0f;
        const float ds = p * (dp - delta_s[tt]);
#pragma unroll
        for (int i = 0; i < DPT; ++i) {
          dv_acc[i] += p * dos[tt][g + G * i];
          dk_acc[i] += ds * qs[tt][g + G * i];
        }
      }
    }
  }
  if (valid) {
#pragma unroll
    for (int i = 0; i < DPT; ++i) {
      dk[kv_row * D + g + G * i] = from_f32<T>(dk_acc[i] * scale);
      dv[kv_row * D + g + G * i] = from_f32<T>(dv_acc[i]);
    }
  }
}

template <class T, int D>
__global__ void __launch_bounds__(128) attention_dq_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                                           const T* __restrict__ v, const T* __restrict__ dout,
                                                           const float* __restrict__ lse,
                                                           const float* __restrict__ delta, T* __restrict__ dq, int Tq,
                                                           int Tk, int Hq, int Hkv, float scale, float scale_log2,
                                                           const int32_t* __restrict__ key_begin) {
  using C = Tile<D>;
  constexpr int G = C::kGroup, R = C::kRows, BK = C::kTile, DPT = C::kDimsPerThread;
  __shared__ float ks[BK][D];
  __shared__ float vs[BK][D];
  const int qblock = gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y, b = blockIdx.z;
  const int hk = h / (Hq / Hkv);
  const int g = threadIdx.x % G, r = threadIdx.x / G;
  const int t = qblock * R + r;
  const bool valid = t < Tq;
  const int offset = Tk - Tq;
  const int pos = offset + t;
  const int first = key_begin != nullptr && valid ? key_begin[static_cast<int64_t>(b) * Tq + t] : 0;  // packed rows
  const int64_t q_row = (static_cast<int64_t>(b) * Tq + (valid ? t : 0)) * Hq + h;
  const int64_t stat = (static_cast<int64_t>(b) * Hq + h) * Tq + (valid ? t : 0);
  const float row_lse = valid ? lse[stat] * kLog2e : INFINITY;
  const float row_delta = valid ? delta[stat] : 0.0f;

  float qr[DPT], dor[DPT], acc[DPT];
#pragma unroll
  for (int i = 0; i < DPT; ++i) {
    qr[i] = valid ? to_f32(q[q_row * D + g + G * i]) : 0.0f;
    dor[i] = valid ? to_f32(dout[q_row * D + g + G * i]) : 0.0f;
    acc[i] = 0.0f;
  }
  const int last_key = offset + min(Tq, (qblock + 1) * R) - 1;
  const int64_t kv_row_stride = static_cast<int64_t>(Hkv) * D;
  const T* kb = k + static_cast<int64_t>(b) * Tk * kv_row_stride + static_cast<int64_t>(hk) * D;
  const T* vb = v + static_cast<int64_t>(b) * Tk * kv_row_stride + static_cast<int64_t>(hk) * D;
  for (int j0 = 0; j0 <= last_key; j0 += BK) {
    __syncthreads();
    load_tile<T, D, BK, C::kThreads>(ks, kb, kv_row_stride, j0, Tk);
    load_tile<T, D, BK, C::kThreads>(vs, vb, kv_row_stride, j0, Tk);
    __syncthreads();
#pragma unroll 2
    for (int jj = 0; jj < BK; ++jj) {
      float s = 0.0f, dp = 0.0f;
#pragma unroll
      for (int i = 0; i < DPT; ++i) {
        s += qr[i] * ks[jj][g + G * i];
        dp += dor[i] * vs[jj][g + G * i];
      }
      s = group_sum<G>(s);
      dp = group_sum<G>(dp);
      const int j = j0 + jj;
      const float p = (j <= pos && j < Tk && j >= first) ? exp2f(s * scale_log2 - row_lse) : 0.0f;
      const float ds = p * (dp - row_delta);
#pragma unroll
      for (int i = 0; i < DPT; ++i) acc[i] += ds * ks[jj][g + G * i];
    }
  }
  if (valid) {
#pragma unroll
    for (int i = 0; i < DPT; ++i) dq[q_row * D + g + G * i] = from_f32<T>(acc[i] * scale);
  }
}

template <int D>
unsigned query_blocks(int64_t rows) {
  return static_cast<unsigned>((rows + Tile<D>::kRows - 1) / Tile<D>::kRows);
}

#define KV_DISPATCH_HEAD_DIM(head_dim, D, ...)                                              \
  switch (head_dim) {                                                                       \
    case 8: { constexpr int D = 8; __VA_ARGS__; break; }                                    \
    case 16: { constexpr int D = 16; __VA_ARGS__; break; }                                  \
    case 32: { constexpr int D = 32; __VA_ARGS__; break; }                                  \
    case 64: { constexpr int D = 64; __VA_ARGS__; break; }                                  \
    case 128: { constexpr int D = 128; __VA_ARGS__; break; }                                \
    default: throw_message("attention: the CUDA kernel supports head_dim 8, 16, 32, 64 and 128"); \
  }

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The caller's choice (ops::Execution::attention): the tensor-core kernel when asked for and it
// applies (bf16, sm_80+, head_dim 32/64/128, 16-byte aligned rows); the CUDA-core kernel otherwise.
bool use_tensor_cores(int device, DType dtype, const ops::AttentionShape& s, ops::AttentionKernel kernel,
                      std::initializer_list<const void*> pointers) {
  if (kernel != ops::AttentionKernel::TensorCores || s.key_begin != nullptr) return false;  // packed: CUDA cores
  if (dtype != DType::BF16 || !attention_tc_supports(device, s.head_dim) || s.kv_stride() % 8 != 0) return false;
  for (const void* p : pointers) {
    if (!aligned16(p)) return false;
  }
  return true;
}

// Packed rows: s.key_begin (host memory) on the device, or nothing.
std::unique_ptr<DeviceUpload> upload_key_begin(const ops::AttentionShape& s, int device) {
  if (s.key_begin == nullptr) return nullptr;
  return std::make_unique<DeviceUpload>(s.key_begin, sizeof(int32_t) * static_cast<size_t>(s.batch * s.q_len), device);
}

void check_int_range(const ops::AttentionShape& s) {
  const int64_t limit = 1LL << 30;
  if (s.q_len > limit || s.kv_len > limit || s.q_heads > 65535 || s.batch > 65535) {
    throw_message("attention: sequence, head or batch count too large for the CUDA kernel");
  }
}

}  // namespace

bool attention_supports_head_dim(int64_t head_dim) {
  return head_dim == 8 || head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 128;
}

void attention_forward(int device, DType dtype, const ops::AttentionShape& s, ops::AttentionKernel kernel,
                       const void* q, const void* k, const void* v, float softmax_scale, void* out, float* lse) {
  if (s.batch * s.q_len * s.q_heads == 0) return;
  check_int_range(s);
  cudaStream_t stream = stream_of(device);
  const float scale_log2 = softmax_scale * kLog2e;
  const int Tq = static_cast<int>(s.q_len), Tk = static_cast<int>(s.kv_len);
  const int Hq = static_cast<int>(s.q_heads), Hkv = static_cast<int>(s.kv_heads);
  if (use_tensor_cores(device, dtype, s, kernel, {q, k, v, out})) {
    attention_forward_tc(device, s, q, k, v, softmax_scale, out, lse);
    return;
  }
  const std::unique_ptr<DeviceUpload> key_begin = upload_key_begin(s, device);
  const int32_t* first = key_begin ? key_begin->get<int32_t>() : nullptr;
  KV_DISPATCH_FLOAT(dtype, T, KV_DISPATCH_HEAD_DIM(s.head_dim, D, {
    const dim3 grid(query_blocks<D>(s.q_len), static_cast<unsigned>(Hq), static_cast<unsigned>(s.batch));
    attention_forward_kernel<T, D><<<grid, Tile<D>::kThreads, 0, stream>>>(
        static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v), static_cast<T*>(out), lse, Tq,
        Tk, Hq, Hkv, s.kv_stride(), scale_log2, first);
  }));
  KV_LAUNCH_CHECK();
}

void attention_backward(int device, DType dtype, const ops::AttentionShape& s, ops::AttentionKernel kernel,
                        const void* dout, const void* q, const void* k, const void* v, const void* out,
                        const float* lse, float softmax_scale, void* dq, void* dk, void* dv) {
  if (s.batch * s.q_len * s.q_heads == 0) return;
  check_int_range(s);
  cudaStream_t stream = stream_of(device);
  const float scale_log2 = softmax_scale * kLog2e;
  const int B = static_cast<int>(s.batch), Tq = static_cast<int>(s.q_len), Tk = static_cast<int>(s.kv_len);
  const int Hq = static_cast<int>(s.q_heads), Hkv = static_cast<int>(s.kv_heads), Dh = static_cast<int>(s.head_dim);
  Scratch delta(sizeof(float) * static_cast<size_t>(s.batch * s.q_heads * s.q_len), device);
  const int64_t rows = s.batch * s.q_len * s.q_heads;
  KV_DISPATCH_FLOAT(dtype, T, {
    attention_delta_kernel<T><<<static_cast<unsigned>((rows + 7) / 8), 256, 0, stream>>>(
        static_cast<const T*>(dout), static_cast<const T*>(out), delta.get<float>(), B, Tq, Hq, Dh);
    KV_LAUNCH_CHECK();
    if (use_tensor_cores(device, dtype, s, kernel, {dout, q, k, v, dq, dk, dv})) {
      attention_backward_tc(device, s, dout, q, k, v, lse, delta.get<float>(), softmax_scale, dq, dk, dv);
      return;
    }
    const std::unique_ptr<DeviceUpload> key_begin = upload_key_begin(s, device);
    const int32_t* first = key_begin ? key_begin->get<int32_t>() : nullptr;
    KV_DISPATCH_HEAD_DIM(s.head_dim, D, {
      const dim3 kv_grid(query_blocks<D>(s.kv_len), static_cast<unsigned>(Hkv), static_cast<unsigned>(B));
      attention_dkdv_kernel<T, D><<<kv_grid, Tile<D>::kThreads, 0, stream>>>(
          static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v), static_cast<const T*>(dout),
          lse, delta.get<float>(), static_cast<T*>(dk), static_cast<T*>(dv), Tq, Tk, Hq, Hkv, softmax_scale,
          scale_log2, first);
      KV_LAUNCH_CHECK();
      const dim3 q_grid(query_blocks<D>(s.q_len), static_cast<unsigned>(Hq), static_cast<unsigned>(B));
      attention_dq_kernel<T, D><<<q_grid, Tile<D>::kThreads, 0, stream>>>(
          static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v), static_cast<const T*>(dout),
          lse, delta.get<float>(), static_cast<T*>(dq), Tq, Tk, Hq, Hkv, softmax_scale, scale_log2, first);
    });
  });
  KV_LAUNCH_CHECK();
}

}  // namespace kvroute::cuda
