#include "train/execution.h"

#include "kernels/ops.h"

namespace kvroute::train {

Execution execution(Device::Kind device, Precision precision, ops::AttentionKernel attention) {
  Execution ex;
  ex.ops.attention = attention;
  const bool bf16 = precision == Precision::BF16;
  if (device == Device::Kind::CUDA) {
    ex.compute_dtype = bf16 ? DType::BF16 : DType::F32;
  } else if (bf16) {
    ex.ops.cpu_bf16_gemm = ops::cpu_bf16_supported();
    if (!ex.ops.cpu_bf16_gemm) ex.notice = ops::cpu_bf16_fallback_notice();
  }
  return ex;
}

}  // namespace kvroute::train
