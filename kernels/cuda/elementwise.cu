// Element-wise kernels, reductions and AdamW: memory-bound loops, grid-stride, f32 arithmetic.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/allocator.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace kvroute::cuda {

DeviceUpload::DeviceUpload(const void* host, size_t nbytes, int device) : nbytes_(nbytes), device_(device) {
  ptr_ = cuda_allocator(device).allocate(nbytes > 0 ? nbytes : 1);
  device_runtime::copy_bytes(ptr_, Device::cuda(device), host, Device::cpu(), nbytes);
}
DeviceUpload::~DeviceUpload() { cuda_allocator(device_).deallocate(ptr_, nbytes_ > 0 ? nbytes_ : 1); }

Scratch::Scratch(size_t nbytes, int device) : nbytes_(nbytes), device_(device) {
  ptr_ = cuda_allocator(device).allocate(nbytes > 0 ? nbytes : 1);
}
Scratch::~Scratch() { cuda_allocator(device_).deallocate(ptr_, nbytes_ > 0 ? nbytes_ : 1); }

namespace {

constexpr int kThreads = 256;

#define KV_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); i += static_cast<int64_t>(gridDim.x) * blockDim.x)

template <class T>
__global__ void add_kernel(const T* a, const T* b, T* out, int64_t n) {
  KV_GRID_STRIDE(i, n) out[i] = from_f32<T>(to_f32(a[i]) + to_f32(b[i]));
}

template <class T>
__global__ void mul_kernel(const T* a, const T* b, T* out, int64_t n) {
  KV_GRID_STRIDE(i, n) out[i] = from_f32<T>(to_f32(a[i]) * to_f32(b[i]));
}

template <class T>
__global__ void scale_kernel(T* a, float s, int64_t n) {
  KV_GRID_STRIDE(i, n) a[i] = from_f32<T>(to_f32(a[i]) * s);
}

template <class X, class Y>
__global__ void axpy_kernel(float alpha, const X* x, Y* y, int64_t n) {
  KV_GRID_STRIDE(i, n) y[i] = from_f32<Y>(to_f32(y[i]) + alpha * to_f32(x[i]));
}

__device__ __forceinline__ float sigmoid(float g) { return 1.0f / (1.0f + __expf(-g)); }

template <class T>
__global__ void swiglu_forward_kernel(const T* gate, const T* up, T* out, int64_t n) {
  KV_GRID_STRIDE(i, n) {
    const float g = to_f32(gate[i]);
    out[i] = from_f32<T>(g * sigmoid(g) * to_f32(up[i]));
  }
}

template <class T>
__global__ void swiglu_backward_kernel(const T* dout, const T* gate, const T* up, T* dgate, T* dup, int64_t n) {
  KV_GRID_STRIDE(i, n) {
    const float g = to_f32(gate[i]), u = to_f32(up[i]), d = to_f32(dout[i]);
    const float sig = sigmoid(g);
    dup[i] = from_f32<T>(d * g * sig);
    dgate[i] = from_f32<T>(d * u * sig * (1.0f + g * (1.0f - sig)));
  }
}

// Pass 1 of a deterministic sum: a fixed number of blocks, each writing one double partial.
constexpr int kSumBlocks = 256;

__device__ double block_sum_double(double v, double* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.0;
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <class T>
__global__ void partial_sum_kernel(const T* a, int64_t n, bool squares, double* partial) {
  __shared__ double scratch[32];
  double s = 0.0;
  KV_GRID_STRIDE(i, n) {
    const double x = to_f32(a[i]);
    s += squares ? x * x : x;
  }
  s = block_sum_double(s, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void final_sum_kernel(const double* partial, int count, double* out) {
  __shared__ double scratch[32];
  double s = threadIdx.x < count ? partial[threadIdx.x] : 0.0;
  s = block_sum_double(s, scratch);
  if (threadIdx.x == 0) *out = s;
}

template <class T>
__global__ void sum_last_dim_kernel(const T* a, float* out, int64_t rows, int64_t cols) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;  // whole warps leave together
  double s = 0.0;
  for (int64_t c = lane; c < cols; c += 32) s += to_f32(a[row * cols + c]);
  for (int offset = 16; offset > 0; offset >>= 1) s += __shfl_xor_sync(0xffffffffu, s, offset);
  if (lane == 0) out[row] = static_cast<float>(s);
}

template <class C>
__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v, int64_t n, AdamWParams c,
                             float step_size, float bias2_sqrt, const int64_t* seg_start, const uint8_t* seg_decay,
                             int n_segments, C* copy) {
  KV_GRID_STRIDE(i, n) {
    // The segment holding i: the last start <= i (binary search over a few hundred entries).
    int lo = 0, hi = n_segments - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (seg_start[mid] <= i) lo = mid;
      else hi = mid - 1;
    }
    const float decay_factor = seg_decay[lo] ? 1.0f - c.lr * c.weight_decay : 1.0f;
    const float g = grad[i];
    const float mi = c.beta1 * m[i] + (1.0f - c.beta1) * g;
    const float vi = c.beta2 * v[i] + (1.0f - c.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float denom = sqrtf(vi) / bias2_sqrt + c.eps;
    const float p = param[i] * decay_factor - step_size * mi / denom;
    param[i] = p;
    if (copy != nullptr) copy[i] = from_f32<C>(p);
  }
}

}  // namespace

void add(int device, DType dtype, const void* a, const void* b, void* out, int64_t n) {
  if (n == 0) return;
  cudaStream_t stream = stream_of(device);
  KV_DISPATCH_FLOAT(dtype, T,
                    add_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
                        static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(out), n));
  KV_LAUNCH_CHECK();
}

void mul(int device, DType dtype, const void* a, const void* b, void* out, int64_t n) {
  if (n == 0) return;
  cudaStream_t stream = stream_of(device);
  KV_DISPATCH_FLOAT(dtype, T,
                    mul_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
                        static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(out), n));
  KV_LAUNCH_CHECK();
}

void scale(int device, DType dtype, void* a, float s, int64_t n) {
  if (n == 0) return;
  cudaStream_t stream = stream_of(device);
  KV_DISPATCH_FLOAT(dtype, T,
                    scale_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(static_cast<T*>(a), s, n));
  KV_LAUNCH_CHECK();
}

void axpy(int device, float alpha, DType x_dtype, const void* x, DType y_dtype, void* y, int64_t n) {
  if (n == 0) return;
  cudaStream_t stream = stream_of(device);
  KV_DISPATCH_FLOAT(x_dtype, X,
                    KV_DISPATCH_FLOAT(y_dtype, Y,
                                      axpy_kernel<X, Y><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
                                          alpha, static_cast<const X*>(x), static_cast<Y*>(y), n)));
  KV_LAUNCH_CHECK();
}

void swiglu_forward(int device, DType dtype, const void* gate, const void* up, void* out, int64_t n) {
  if (n == 0) return;
  cudaStream_t stream = stream_of(device);
  KV_DISPATCH_FLOAT(dtype, T,
                    swiglu_forward_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
                        static_cast<const T*>(gate), static_cast<const T*>(up), static_cast<T*>(out), n));
  KV_LAUNCH_CHECK();
}

void swiglu_backward(int device, DType dtype, const void* dout, const void* gate, const void* up, void* dgate,
                     void* dup, int64_t n) {
  if (n == 0) return;
  cudaStream_t stream = stream_of(device);
  KV_DISPATCH_FLOAT(dtype, T,
                    swiglu_backward_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
                        static_cast<const T*>(dout), static_cast<const T*>(gate), static_cast<const T*>(up),
                        static_cast<T*>(dgate), static_cast<T*>(dup), n));
  KV_LAUNCH_CHECK();
}

double sum(int device, DType dtype, const void* a, int64_t n, bool squares) {
  if (n == 0) return 0.0;
  cudaStream_t stream = stream_of(device);
  Scratch partial(sizeof(double) * (kSumBlocks + 1), device);
  double* p = partial.get<double>();
  KV_DISPATCH_FLOAT(dtype, T,
                    partial_sum_kernel<T><<<kSumBlocks, kThreads, 0, stream>>>(static_cast<const T*>(a), n, squares, p));
  KV_LAUNCH_CHECK();
  final_sum_kernel<<<1, kSumBlocks, 0, stream>>>(p, kSumBlocks, p + kSumBlocks);
  KV_LAUNCH_CHECK();
  double result = 0.0;
  device_runtime::copy_bytes(&result, Device::cpu(), p + kSumBlocks, Device::cuda(device), sizeof result);
  return result;
}

void sum_last_dim(int device, DType dtype, const void* a, float* out, int64_t rows, int64_t cols) {
  if (rows == 0) return;
  cudaStream_t stream = stream_of(device);
  const int warps = kThreads / 32;
  const unsigned blocks = static_cast<unsigned>((rows + warps - 1) / warps);
  KV_DISPATCH_FLOAT(dtype, T,
                    sum_last_dim_kernel<T><<<blocks, kThreads, 0, stream>>>(static_cast<const T*>(a), out, rows, cols));
  KV_LAUNCH_CHECK();
}

void adamw(int device, float* param, const float* grad, float* m, float* v, int64_t n, const AdamWParams& config,
           int64_t step, const AdamWSegment* host_segments, int64_t n_segments, void* compute_copy, DType copy_dtype) {
  if (n == 0) return;
  cudaStream_t stream = stream_of(device);
  std::vector<int64_t> starts;
  std::vector<uint8_t> decay;
  for (int64_t s = 0; s < n_segments; ++s) {
    if (host_segments[s].numel == 0) continue;
    starts.push_back(host_segments[s].offset);
    decay.push_back(host_segments[s].decay ? 1 : 0);
  }
  DeviceUpload seg_start(starts.data(), starts.size() * sizeof(int64_t), device);
  DeviceUpload seg_decay(decay.data(), decay.size(), device);
  // Bias corrections exactly as the CPU kernel computes them (f32 powf).
  const float bias1 = 1.0f - std::pow(config.beta1, static_cast<float>(step));
  const float bias2_sqrt = std::sqrt(1.0f - std::pow(config.beta2, static_cast<float>(step)));
  const float step_size = config.lr / bias1;
  const int segments = static_cast<int>(starts.size());
  if (compute_copy == nullptr) {
    adamw_kernel<float><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
        param, grad, m, v, n, config, step_size, bias2_sqrt, seg_start.get<int64_t>(), seg_decay.get<uint8_t>(),
        segments, nullptr);
  } else {
    KV_DISPATCH_FLOAT(copy_dtype, C,
                      adamw_kernel<C><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
                          param, grad, m, v, n, config, step_size, bias2_sqrt, seg_start.get<int64_t>(),
                          seg_decay.get<uint8_t>(), segments, static_cast<C*>(compute_copy)));
  }
  KV_LAUNCH_CHECK();
}

}  // namespace kvroute::cuda
