#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/tensor.h"
#include "tests/test_util.h"

namespace kvroute {
namespace {

using testing::expect_error;

Tensor arange(int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(i);
  return Tensor::from_vector(v, {n});
}

TEST(Tensor, EmptyHasContiguousStridesAndAlignedData) {
  Tensor t = Tensor::empty({2, 3, 4});
  EXPECT_EQ(t.shape(), (Shape{2, 3, 4}));
  EXPECT_EQ(t.strides(), (Shape{12, 4, 1}));
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.nbytes(), 96u);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % 64, 0u);
  EXPECT_EQ(t.str(), "f32[2, 3, 4] cpu");
}

TEST(Tensor, ZerosFullScalarItem) {
  EXPECT_EQ(Tensor::zeros({5}).to_vector<float>(), std::vector<float>(5, 0.0f));
  EXPECT_EQ(Tensor::full({2, 2}, 3.5).to_vector<float>(), std::vector<float>(4, 3.5f));
  EXPECT_EQ(Tensor::full({3}, 7, DType::I32).to_vector<int32_t>(), (std::vector<int32_t>{7, 7, 7}));
  EXPECT_EQ(Tensor::scalar(2.25f).item(), 2.25);
  EXPECT_EQ(Tensor::scalar(2.0f).dim(), 0);
  expect_error([] { (void)Tensor::zeros({2}).item(); }, {"Tensor::item", "2 elements"});
}

TEST(Tensor, ViewSharesStorage) {
  Tensor t = arange(12);
  Tensor v = t.view({3, -1});
  EXPECT_EQ(v.shape(), (Shape{3, 4}));
  EXPECT_TRUE(v.shares_storage(t));
  v.data<float>()[5] = 100.0f;
  EXPECT_EQ(t.data<float>()[5], 100.0f);
  expect_error([&] { (void)t.view({5, -1}); }, {"Tensor::view", "[12]", "[5, -1]"});
  expect_error([&] { (void)t.view({-1, -1}); }, {"more than one -1"});
}

TEST(Tensor, TransposeIsAStridedView) {
  Tensor t = arange(6).view({2, 3});
  Tensor tt = t.transpose(0, 1);
  EXPECT_EQ(tt.shape(), (Shape{3, 2}));
  EXPECT_EQ(tt.strides(), (Shape{1, 3}));
  EXPECT_FALSE(tt.is_contiguous());
  EXPECT_TRUE(tt.shares_storage(t));
  expect_error([&] { (void)tt.view({6}); }, {"not contiguous", "reshape"});
  Tensor c = tt.contiguous();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_FALSE(c.shares_storage(t));
  EXPECT_EQ(c.to_vector<float>(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  EXPECT_EQ(tt.reshape({6}).to_vector<float>(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  EXPECT_TRUE(t.contiguous().shares_storage(t));  // no copy when already contiguous
}

TEST(Tensor, PermuteSliceSelect) {
  Tensor t = arange(24).view({2, 3, 4});
  Tensor p = t.permute({2, 0, 1});
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  // p[i, j, k] = t[j, k, i] = 12 j + 4 k + i
  std::vector<float> pv = p.contiguous().to_vector<float>();
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 2; ++j)
      for (int k = 0; k < 3; ++k) EXPECT_EQ(pv[(i * 2 + j) * 3 + k], 12 * j + 4 * k + i);

  Tensor s = t.slice(2, 1, 4, 2);  // columns 1 and 3
  EXPECT_EQ(s.shape(), (Shape{2, 3, 2}));
  EXPECT_TRUE(s.shares_storage(t));
  EXPECT_EQ(s.contiguous().to_vector<float>(),
            (std::vector<float>{1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23}));
  Tensor row = t.select(1, -1);  // t[:, 2, :]
  EXPECT_EQ(row.shape(), (Shape{2, 4}));
  EXPECT_EQ(row.contiguous().to_vector<float>(), (std::vector<float>{8, 9, 10, 11, 20, 21, 22, 23}));
  expect_error([&] { (void)t.select(0, 2); }, {"Tensor::select", "index 2", "[2, 3, 4]"});
  expect_error([&] { (void)t.slice(1, 2, 1); }, {"Tensor::slice"});
  expect_error([&] { (void)t.permute({0, 0, 1}); }, {"repeated"});
  expect_error([&] { (void)t.transpose(0, 3); }, {"dimension 3 out of range", "[2, 3, 4]"});
}

TEST(Tensor, CopyIntoStridedDestination) {
  Tensor t = Tensor::zeros({3, 4});
  Tensor col = t.slice(1, 1, 2);  // [3, 1] view with stride 4
  col.copy_(Tensor::from_vector<float>({1, 2, 3}, {3, 1}));
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0}));
  t.transpose(0, 1).slice(0, 3, 4).fill_(9.0);
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{0, 1, 0, 9, 0, 2, 0, 9, 0, 3, 0, 9}));
  expect_error([&] { t.copy_(Tensor::zeros({4, 3})); }, {"Tensor::copy_", "[3, 4]", "[4, 3]"});
}

TEST(Tensor, Bf16RoundsToNearestEven) {
  // 1 + 2^-8 is exactly halfway between two bf16 values: ties go to the even mantissa (1.0).
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 1.0f / 256)), 1.0f);
  // 1 + 3 * 2^-8 is halfway too, and rounds up to the even neighbour 1 + 2^-6.
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 3.0f / 256)), 1.0f + 1.0f / 64);
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 1.0f / 256 + 1.0f / 65536)), 1.0f + 1.0f / 128);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isinf(bf16_to_float(float_to_bf16(std::numeric_limits<float>::infinity()))));
  EXPECT_EQ(bf16_to_float(float_to_bf16(-2.5f)), -2.5f);
}

TEST(Tensor, DtypeConversionsRoundTrip) {
  Tensor f = Tensor::from_vector<float>({1.0f, -2.0f, 3.14159f, 65504.0f}, {4});
  Tensor b = f.to(DType::BF16);
  EXPECT_EQ(b.dtype(), DType::BF16);
  EXPECT_EQ(b.nbytes(), 8u);
  std::vector<float> back = b.to(DType::F32).to_vector<float>();
  for (size_t i = 0; i < back.size(); ++i) EXPECT_NEAR(back[i], f.to_vector<float>()[i], std::abs(back[i]) / 128);
  Tensor ids = Tensor::from_vector<uint16_t>({1, 65535, 7}, {3});
  EXPECT_EQ(ids.to(DType::I32).to_vector<int32_t>(), (std::vector<int32_t>{1, 65535, 7}));
  EXPECT_EQ(ids.to(DType::U32).to_vector<uint32_t>(), (std::vector<uint32_t>{1, 65535, 7}));
  // Strided conversion.
  Tensor m = arange(6).view({2, 3}).transpose(0, 1).to(DType::BF16);
  EXPECT_EQ(m.to(DType::F32).to_vector<float>(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  expect_error([&] { (void)f.data<int32_t>(); }, {"f32", "i32"});
}

TEST(Tensor, DeviceParsing) {
  EXPECT_EQ(Device::parse("cpu"), Device::cpu());
  EXPECT_EQ(Device::parse("cuda:3"), Device::cuda(3));
  EXPECT_EQ(Device::cuda(1).str(), "cuda:1");
  expect_error([] { (void)Device::parse("gpu"); }, {"gpu"});
  expect_error([] { (void)Device::parse("cuda:x"); }, {"cuda:x"});
  EXPECT_EQ(parse_dtype("bf16"), DType::BF16);
  expect_error([] { (void)parse_dtype("f64"); }, {"f64"});
}

}  // namespace
}  // namespace kvroute
