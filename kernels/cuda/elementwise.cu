// Element-wise kernels (add, mul, scale, axpy, SwiGLU) and the reductions (sum, sum of squares,
// row sums): memory-bound grid-stride loops in f32 arithmetic; sums accumulate in double over a
// fixed two-pass tree, so they are identical on every run. Mirrors kernels/cpu/elementwise.cpp.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace kvroute::cuda {

namespace {

constexpr int kThreads = 256;

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

}  // namespace kvroute::cuda
