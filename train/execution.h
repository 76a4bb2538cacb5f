// How a model runs: the one place where a device, a precision and an attention kernel become the
// dtype the model computes in and the ops' setting it carries.
#pragma once

#include <string>

#include "core/dtype.h"
#include "kernels/kernel_args.h"
#include "train/config.h"

namespace kvroute::train {

// How a model runs, decided in this one place from a device, a precision and an attention kernel
// (a run's train.device/precision/attention, an inference command's --device/--precision) and
// carried by the model (Transformer::to and set_execution): the dtype its forward computes in (bf16
// on CUDA with bf16; the CPU keeps f32 tensors) and the ops' setting (bf16 CPU GEMMs where the CPU
// has bf16 instructions). `notice` is set when bf16 was asked for on a CPU without them: it falls
// back to f32 GEMMs, and the caller prints the notice once.
struct Execution {
  DType compute_dtype = DType::F32;
  ops::Execution ops;
  std::string notice;
};
Execution execution(Device::Kind device, Precision precision, ops::AttentionKernel attention);

}  // namespace kvroute::train
