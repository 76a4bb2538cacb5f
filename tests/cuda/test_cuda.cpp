// CUDA backend tests: run where a GPU is present, skip cleanly elsewhere (and in CPU-only builds).
#include <gtest/gtest.h>

#include "core/device_runtime.h"
#include "kernels/ops.h"
#include "tests/test_util.h"

namespace kvroute {
namespace {

using testing::random_tensor;
using testing::scaled_max_error;

#define SKIP_WITHOUT_GPU()                                                              \
  do {                                                                                  \
    if (!device_runtime::cuda_built()) GTEST_SKIP() << "built without CUDA";            \
    if (device_runtime::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";     \
  } while (0)

TEST(Cuda, NoDeviceIsAClearError) {
  if (device_runtime::cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is present";
  testing::expect_error([] { (void)Tensor::empty({4}, DType::F32, Device::cuda(0)); }, {"cuda:0"});
}

TEST(Cuda, AllocatorCachesAndCountsPeak) {
  SKIP_WITHOUT_GPU();
  Allocator& alloc = cuda_allocator(0);
  alloc.reset_peak();
  size_t base = alloc.stats().current_bytes;
  { Tensor a = Tensor::empty({1 << 20}, DType::F32, Device::cuda(0)); }
  EXPECT_EQ(alloc.stats().current_bytes, base);
  EXPECT_GE(alloc.stats().peak_bytes, base + (4u << 20));
  uint64_t hits = alloc.stats().cache_hits;
  Tensor b = Tensor::empty({1 << 20}, DType::F32, Device::cuda(0));
  EXPECT_EQ(alloc.stats().cache_hits, hits + 1);
}

TEST(Cuda, CopiesCastsAndFillRoundTrip) {
  SKIP_WITHOUT_GPU();
  Tensor host = random_tensor({3, 5, 7}, 1, -10, 10);
  Tensor dev = host.to(Device::cuda(0));
  EXPECT_EQ(dev.to(Device::cpu()).to_vector<float>(), host.to_vector<float>());
  // Strided copy on the device.
  Tensor dev_t = dev.transpose(0, 2).contiguous();
  EXPECT_EQ(dev_t.to(Device::cpu()).to_vector<float>(), host.transpose(0, 2).contiguous().to_vector<float>());
  // Cast on the device equals the host cast bit for bit.
  EXPECT_EQ(dev.to(DType::BF16).to(DType::F32).to(Device::cpu()).to_vector<float>(),
            host.to(DType::BF16).to(DType::F32).to_vector<float>());
  Tensor filled = Tensor::full({100}, 2.5, DType::F32, Device::cuda(0));
  EXPECT_EQ(filled.to_vector<float>(), std::vector<float>(100, 2.5f));
}

TEST(Cuda, CublasLtGemmMatchesCpu) {
  SKIP_WITHOUT_GPU();
  struct Case {
    Shape a, b;
    bool ta, tb;
  };
  for (const Case& c : {Case{{64, 48}, {48, 80}, false, false}, Case{{48, 64}, {80, 48}, true, true},
                        Case{{3, 17, 9}, {3, 9, 31}, false, false}, Case{{4, 33, 65}, {65, 129}, false, false},
                        Case{{2, 9, 17}, {2, 31, 9}, true, true}}) {
    Tensor a = random_tensor(c.a, 2), b = random_tensor(c.b, 3);
    Tensor cpu = ops::matmul(a, b, c.ta, c.tb);
    Tensor gpu = ops::matmul(a.to(Device::cuda(0)), b.to(Device::cuda(0)), c.ta, c.tb);
    EXPECT_EQ(gpu.device(), Device::cuda(0));
    std::vector<float> ref = cpu.to_vector<float>();
    EXPECT_LT(scaled_max_error(gpu.to(Device::cpu()), std::vector<double>(ref.begin(), ref.end())), 1e-5);
  }
}

}  // namespace
}  // namespace kvroute
