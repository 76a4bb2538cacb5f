// GEMM on the GPU through cuBLASLt (the CPU side is kernels/cpu/matmul.cpp). cuBLASLt is
// column-major, so the row-major C = op(A) op(B) is computed as the column-major
// C^T = op(B)^T op(A)^T: the operands swap places and the transpose flags carry over.
//
// cuBLASLt is loaded with dlopen on the first CUDA GEMM, not linked: its static initialisers take
// about 0.4 s, which every kvroute process paid at start when it was linked, CPU-only runs included
// (docs/benchmarks.md). The library is found like any other (LD_LIBRARY_PATH, the loader's cache).
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "core/cuda_check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

#define KV_CUBLAS_CHECK(call)                                                                         \
  do {                                                                                                \
    cublasStatus_t kv_status_ = (call);                                                               \
    if (kv_status_ != CUBLAS_STATUS_SUCCESS) {                                                        \
      ::kvroute::throw_library_error("cuBLASLt", #call, lt().cublasLtGetStatusString(kv_status_),   \
                                     static_cast<long>(kv_status_));                                  \
    }                                                                                                 \
  } while (0)

namespace kvroute::cuda {

namespace {

// The cuBLASLt functions kvroute calls, resolved once from the library.
struct CublasLtApi {
  decltype(&::cublasLtCreate) cublasLtCreate = nullptr;
  decltype(&::cublasLtGetStatusString) cublasLtGetStatusString = nullptr;
  decltype(&::cublasLtMatmul) cublasLtMatmul = nullptr;
  decltype(&::cublasLtMatmulAlgoGetHeuristic) cublasLtMatmulAlgoGetHeuristic = nullptr;
  decltype(&::cublasLtMatmulDescCreate) cublasLtMatmulDescCreate = nullptr;
  decltype(&::cublasLtMatmulDescSetAttribute) cublasLtMatmulDescSetAttribute = nullptr;
  decltype(&::cublasLtMatmulPreferenceCreate) cublasLtMatmulPreferenceCreate = nullptr;
  decltype(&::cublasLtMatmulPreferenceDestroy) cublasLtMatmulPreferenceDestroy = nullptr;
  decltype(&::cublasLtMatmulPreferenceSetAttribute) cublasLtMatmulPreferenceSetAttribute = nullptr;
  decltype(&::cublasLtMatrixLayoutCreate) cublasLtMatrixLayoutCreate = nullptr;
  decltype(&::cublasLtMatrixLayoutSetAttribute) cublasLtMatrixLayoutSetAttribute = nullptr;
};

template <typename F>
F resolve(void* handle, const char* name) {
  void* symbol = dlsym(handle, name);
  if (symbol == nullptr) throw_library_error("cuBLASLt", "dlsym", name, 0);
  return reinterpret_cast<F>(symbol);
}

const std::string& cublaslt_library_name() {
  static const std::string name = "libcublasLt.so." + std::to_string(CUBLAS_VER_MAJOR);
  return name;
}

const CublasLtApi& lt() {
  static const CublasLtApi loaded = [] {
    void* handle = dlopen(cublaslt_library_name().c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* why = dlerror();
      throw_library_error("cuBLASLt", ("dlopen " + cublaslt_library_name()).c_str(), why ? why : "not found", 0);
    }
    CublasLtApi api;
#define KV_RESOLVE(f) api.f = resolve<decltype(&::f)>(handle, #f)
    KV_RESOLVE(cublasLtCreate);
    KV_RESOLVE(cublasLtGetStatusString);
    KV_RESOLVE(cublasLtMatmul);
    KV_RESOLVE(cublasLtMatmulAlgoGetHeuristic);
    KV_RESOLVE(cublasLtMatmulDescCreate);
    KV_RESOLVE(cublasLtMatmulDescSetAttribute);
    KV_RESOLVE(cublasLtMatmulPreferenceCreate);
    KV_RESOLVE(cublasLtMatmulPreferenceDestroy);
    KV_RESOLVE(cublasLtMatmulPreferenceSetAttribute);
    KV_RESOLVE(cublasLtMatrixLayoutCreate);
    KV_RESOLVE(cublasLtMatrixLayoutSetAttribute);
#undef KV_RESOLVE
    return api;
  }();
  return loaded;
}

}  // namespace

const char* load_cublaslt() {
  (void)lt();
  return cublaslt_library_name().c_str();
}

namespace {

constexpr size_t kWorkspaceBytes = 32u << 20;

struct DeviceContext {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
};

DeviceContext& context(int device) {
  static std::mutex mutex;
  static std::map<int, DeviceContext> contexts;
  std::lock_guard<std::mutex> lock(mutex);
  DeviceContext& ctx = contexts[device];
  if (ctx.handle == nullptr) {
    KV_CUDA_CHECK(cudaSetDevice(device));
    KV_CUBLAS_CHECK(lt().cublasLtCreate(&ctx.handle));
    KV_CUDA_CHECK(cudaMalloc(&ctx.workspace, kWorkspaceBytes));
  }
  return ctx;
}

using GemmKey = std::tuple<int, DType, DType, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                           int64_t, int64_t, int64_t, int64_t, bool, uint32_t, uint32_t, uint32_t>;

// The largest power of two (<= 256) dividing the address. Parameters are views at any offset of
// the flat buffers, so the heuristic must be told how aligned the operands really are: it
// otherwise assumes 256 bytes and may pick a kernel that faults on a less aligned pointer.
uint32_t alignment_of(const void* p) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(p);
  uint32_t alignment = 256;
  while (alignment > 1 && address % alignment != 0) alignment /= 2;
  return alignment;
}

cudaDataType_t cuda_type(DType dtype) {
  switch (dtype) {
    case DType::F32: return CUDA_R_32F;
    case DType::BF16: return CUDA_R_16BF;
    default: throw_message("matmul: CUDA GEMMs take f32 or bf16 operands");
  }
}

// Owns the cuBLASLt descriptors of one GEMM shape plus its chosen algorithm.
struct GemmPlan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

cublasLtMatrixLayout_t make_layout(cudaDataType_t type, uint64_t rows, uint64_t cols, int64_t ld, int64_t batch,
                                   int64_t stride) {
  cublasLtMatrixLayout_t layout = nullptr;
  KV_CUBLAS_CHECK(lt().cublasLtMatrixLayoutCreate(&layout, type, rows, cols, ld));
  if (batch > 1) {
    int32_t count = static_cast<int32_t>(batch);
    KV_CUBLAS_CHECK(lt().cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                                     sizeof count));
    KV_CUBLAS_CHECK(lt().cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                                     &stride, sizeof stride));
  }
  return layout;
}

}  // namespace

void gemm_batched(int device, DType ab_dtype, DType c_dtype, bool trans_a, bool trans_b, int64_t m, int64_t n,
                  int64_t k, float alpha, const void* a, int64_t lda, int64_t stride_a, const void* b, int64_t ldb,
                  int64_t stride_b, float beta, void* c, int64_t ldc, int64_t stride_c, int64_t batch) {
  if (m == 0 || n == 0 || batch == 0) return;
  DeviceContext& ctx = context(device);
  KV_CUDA_CHECK(cudaSetDevice(device));

  static std::mutex mutex;
  static std::map<GemmKey, GemmPlan> plans;
  const bool beta_zero = beta == 0.0f;
  const uint32_t align_a = alignment_of(a), align_b = alignment_of(b), align_c = alignment_of(c);
  GemmKey key{device,   ab_dtype, c_dtype, trans_a, trans_b,   m,       n,       k,       lda,    ldb,
              ldc,      stride_a, stride_b, stride_c, batch, beta_zero, align_a, align_b, align_c};
  std::unique_lock<std::mutex> lock(mutex);
  auto it = plans.find(key);
  if (it == plans.end()) {
    GemmPlan plan;
    // f32 accumulation and f32 alpha/beta for both input types; f32 inputs stay true f32 (no TF32).
    KV_CUBLAS_CHECK(lt().cublasLtMatmulDescCreate(&plan.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cudaDataType_t ab = cuda_type(ab_dtype), ct = cuda_type(c_dtype);
    // Column-major view: first operand is B (row-major), second is A.
    cublasOperation_t op_first = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t op_second = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    KV_CUBLAS_CHECK(lt().cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_first, sizeof op_first));
    KV_CUBLAS_CHECK(lt().cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_second, sizeof op_second));
    plan.a = trans_b ? make_layout(ab, k, n, ldb, batch, stride_b) : make_layout(ab, n, k, ldb, batch, stride_b);
    plan.b = trans_a ? make_layout(ab, m, k, lda, batch, stride_a) : make_layout(ab, k, m, lda, batch, stride_a);
    plan.c = make_layout(ct, n, m, ldc, batch, stride_c);

    cublasLtMatmulPreference_t pref = nullptr;
    KV_CUBLAS_CHECK(lt().cublasLtMatmulPreferenceCreate(&pref));
    size_t workspace = kWorkspaceBytes;
    KV_CUBLAS_CHECK(lt().cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                                         sizeof workspace));
    // cuBLASLt's A is our B (operands swap in the column-major view).
    KV_CUBLAS_CHECK(lt().cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_b,
                                                         sizeof align_b));
    KV_CUBLAS_CHECK(lt().cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_a,
                                                         sizeof align_a));
    KV_CUBLAS_CHECK(lt().cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c,
                                                         sizeof align_c));
    KV_CUBLAS_CHECK(lt().cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c,
                                                         sizeof align_c));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    KV_CUBLAS_CHECK(lt().cublasLtMatmulAlgoGetHeuristic(ctx.handle, plan.op, plan.a, plan.b, plan.c, plan.c, pref, 1,
                                                   &result, &found));
    lt().cublasLtMatmulPreferenceDestroy(pref);
    if (found <= 0) {
      throw_library_error("cuBLASLt", "cublasLtMatmulAlgoGetHeuristic", "no algorithm for this GEMM shape",
                          static_cast<long>(m * n * k));
    }
    plan.algo = result.algo;
    it = plans.emplace(key, plan).first;
  }
  const GemmPlan& plan = it->second;
  lock.unlock();
  KV_CUBLAS_CHECK(lt().cublasLtMatmul(ctx.handle, plan.op, &alpha, b, plan.a, a, plan.b, &beta, c, plan.c, c, plan.c,
                                 &plan.algo, ctx.workspace, kWorkspaceBytes, stream_of(device)));
}

}  // namespace kvroute::cuda
