// Tensor: a cheap handle (shared storage + shape + strides + offset + dtype + device). Views
// (view, reshape, transpose, permute, slice, select) share storage and copy nothing; kernels see
// plain pointers and sizes through data<T>().
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/dtype.h"
#include "core/error.h"

namespace kvroute {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& shape);
Shape contiguous_strides(const Shape& shape);

// Owns one allocation on one device.
class Storage {
 public:
  Storage(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
};

template <class T>
constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<bf16>() { return DType::BF16; }
template <> constexpr DType dtype_of<f16>() { return DType::F16; }
template <> constexpr DType dtype_of<int32_t>() { return DType::I32; }
template <> constexpr DType dtype_of<uint16_t>() { return DType::U16; }
template <> constexpr DType dtype_of<uint32_t>() { return DType::U32; }

class Tensor {
 public:
  Tensor() = default;  // undefined: defined() is false

  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32,
                     Device device = Device::cpu());
  static Tensor scalar(float value, Device device = Device::cpu());  // 0-dim f32
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape) {
    KV_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape),
             "Tensor::from_vector: {} values do not fill shape {}", values.size(), shape);
    Tensor t = empty(shape, dtype_of<T>());
    std::copy(values.begin(), values.end(), t.data<T>());
    return t;
  }

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t stride(int64_t d) const;
  int64_t numel() const { return shape_numel(shape_); }
  int64_t offset() const { return offset_; }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::cpu(); }
  size_t element_size() const { return dtype_size(dtype_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * element_size(); }
  bool is_contiguous() const;
  bool shares_storage(const Tensor& other) const { return storage_ == other.storage_; }
  std::string str() const;  // "f32[2, 3] cpu"

  void* raw_data() const;
  template <class T>
  T* data() const {
    KV_CHECK(defined(), "Tensor::data: tensor is undefined");
    KV_CHECK(dtype_ == dtype_of<T>(), "Tensor::data: tensor is {} but {} was requested", dtype_,
             dtype_of<T>());
    return static_cast<T*>(raw_data());
  }

  // Views: no data is copied.
  Tensor view(const Shape& shape) const;     // requires a contiguous tensor; one dim may be -1
  Tensor reshape(const Shape& shape) const;  // a view when possible, else a contiguous copy
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor permute(const std::vector<int64_t>& order) const;
  Tensor slice(int64_t d, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t d, int64_t index) const;  // removes dimension d

  // Copies.
  Tensor contiguous() const;  // self when already contiguous
  Tensor clone() const;       // always a new contiguous tensor
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;
  void copy_(const Tensor& src);  // same shape; dtype and device may differ
  void fill_(double value);
  void zero_() { fill_(0.0); }

  double item() const;  // the value of a one-element tensor, on the host
  template <class T>
  std::vector<T> to_vector() const {
    Tensor host = to(Device::cpu()).to(dtype_of<T>()).contiguous();
    const T* p = host.data<T>();
    return std::vector<T>(p, p + host.numel());
  }

 private:
  std::shared_ptr<Storage> storage_;
  Shape shape_;
  Shape strides_;
  int64_t offset_ = 0;
  DType dtype_ = DType::F32;

  int64_t wrap_dim(int64_t d, const char* op) const;
  Tensor with_layout(Shape shape, Shape strides, int64_t offset) const;
};

// Index (in contiguous order) of the first NaN/inf element of a floating-point tensor, or -1 when
// all are finite (integer tensors: -1). Works on any device (GPU tensors are copied to the host).
int64_t first_nonfinite(const Tensor& t);

}  // namespace kvroute
