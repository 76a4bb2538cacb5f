#include "core/device_runtime.h"
#include "core/error.h"

namespace kvroute::device_runtime {

Device select_cuda_device(int local_rank, const std::string& what) {
  KV_CHECK(cuda_built(), "{}: this build of kvroute has no CUDA backend (build where nvcc is installed)", what);
  const int gpus = cuda_device_count();
  KV_CHECK(gpus > 0, "{}: no CUDA device is visible to this process", what);
  KV_CHECK(local_rank < gpus, "{}: local rank {} needs cuda:{}, but this host has {} GPU(s): start at most one rank per GPU",
           what, local_rank, local_rank, gpus);
  return Device::cuda(local_rank);
}

}  // namespace kvroute::device_runtime
