#include "core/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/device_runtime.h"

namespace kvroute {

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) {
    KV_CHECK(s >= 0 && !__builtin_mul_overflow(n, s, &n), "shape {}: {}", shape,
             s < 0 ? "negative size" : "the element count overflows 64 bits");
  }
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t stride = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= std::max<int64_t>(shape[i], 1);
  }
  return strides;
}

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  data_ = allocator_for(device).allocate(std::max<size_t>(nbytes, 1));
}

Storage::~Storage() { allocator_for(device_).deallocate(data_, std::max<size_t>(nbytes_, 1)); }

// ---------------------------------------------------------------------------------------------
// Construction

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t s : shape) KV_CHECK(s >= 0, "Tensor::empty: negative dimension in shape {}", shape);
  Tensor t;
  size_t nbytes = 0;
  KV_CHECK(!__builtin_mul_overflow(static_cast<size_t>(shape_numel(shape)), dtype_size(dtype), &nbytes),
           "Tensor::empty: {}{} is too large to address", dtype, shape);
  t.storage_ = std::make_shared<Storage>(nbytes, device);
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(0.0);
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

Tensor Tensor::scalar(float value, Device device) { return full({}, value, DType::F32, device); }

// ---------------------------------------------------------------------------------------------
// Metadata

int64_t Tensor::wrap_dim(int64_t d, const char* op) const {
  int64_t n = dim();
  KV_CHECK(d >= -n && d < n, "{}: dimension {} out of range for shape {}", op, d, shape_);
  return d < 0 ? d + n : d;
}

int64_t Tensor::size(int64_t d) const { return shape_[wrap_dim(d, "Tensor::size")]; }
int64_t Tensor::stride(int64_t d) const { return strides_[wrap_dim(d, "Tensor::stride")]; }

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (size_t i = shape_.size(); i-- > 0;) {
    if (shape_[i] == 1) continue;
    if (strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

std::string Tensor::str() const {
  if (!defined()) return "undefined";
  return fmt::format("{}{} {}", dtype_name(dtype_), shape_, device().str());
}

void* Tensor::raw_data() const {
  KV_CHECK(defined(), "Tensor::raw_data: tensor is undefined");
  return static_cast<char*>(storage_->data()) + offset_ * static_cast<int64_t>(element_size());
}

// ---------------------------------------------------------------------------------------------
// Views

Tensor Tensor::with_layout(Shape shape, Shape strides, int64_t offset) const {
  Tensor t = *this;
  t.shape_ = std::move(shape);
  t.strides_ = std::move(strides);
  t.offset_ = offset;
  return t;
}

namespace {
Shape infer_shape(const Shape& requested, int64_t numel, const Shape& from, const char* op) {
  Shape shape = requested;
  int64_t known = 1;
  int infer_at = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      KV_CHECK(infer_at < 0, "{}: more than one -1 in shape {}", op, requested);
      infer_at = static_cast<int>(i);
    } else {
      KV_CHECK(shape[i] >= 0, "{}: negative dimension in shape {}", op, requested);
      known *= shape[i];
    }
  }
  if (infer_at >= 0) {
    KV_CHECK(known > 0 && numel % known == 0, "{}: cannot view {} ({} elements) as {}", op, from,
             numel, requested);
    shape[infer_at] = numel / known;
  }
  KV_CHECK(shape_numel(shape) == numel, "{}: cannot view {} ({} elements) as {}", op, from, numel,
           requested);
  return shape;
}
}  // namespace

Tensor Tensor::view(const Shape& shape) const {
  KV_CHECK(defined(), "Tensor::view: tensor is undefined");
  KV_CHECK(is_contiguous(), "Tensor::view: tensor {} with strides {} is not contiguous; use reshape()",
           shape_, strides_);
  Shape resolved = infer_shape(shape, numel(), shape_, "Tensor::view");
  Shape strides = contiguous_strides(resolved);
  return with_layout(std::move(resolved), std::move(strides), offset_);
}

Tensor Tensor::reshape(const Shape& shape) const {
  return is_contiguous() ? view(shape) : contiguous().view(shape);
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  d0 = wrap_dim(d0, "Tensor::transpose");
  d1 = wrap_dim(d1, "Tensor::transpose");
  Shape shape = shape_, strides = strides_;
  std::swap(shape[d0], shape[d1]);
  std::swap(strides[d0], strides[d1]);
  return with_layout(std::move(shape), std::move(strides), offset_);
}

Tensor Tensor::permute(const std::vector<int64_t>& order) const {
  KV_CHECK(static_cast<int64_t>(order.size()) == dim(), "Tensor::permute: order {} does not match shape {}",
           order, shape_);
  Shape shape(order.size()), strides(order.size());
  std::vector<bool> seen(order.size(), false);
  for (size_t i = 0; i < order.size(); ++i) {
    int64_t d = wrap_dim(order[i], "Tensor::permute");
    KV_CHECK(!seen[d], "Tensor::permute: dimension {} repeated in order {}", d, order);
    seen[d] = true;
    shape[i] = shape_[d];
    strides[i] = strides_[d];
  }
  return with_layout(std::move(shape), std::move(strides), offset_);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim(d, "Tensor::slice");
  int64_t n = shape_[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  end = std::min(end, n);
  KV_CHECK(step > 0, "Tensor::slice: step must be positive, got {}", step);
  KV_CHECK(start >= 0 && start <= end, "Tensor::slice: range [{}, {}) invalid for dimension {} of shape {}",
           start, end, d, shape_);
  Shape shape = shape_, strides = strides_;
  shape[d] = (end - start + step - 1) / step;
  strides[d] = strides_[d] * step;
  return with_layout(std::move(shape), std::move(strides), offset_ + start * strides_[d]);
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim(d, "Tensor::select");
  if (index < 0) index += shape_[d];
  KV_CHECK(index >= 0 && index < shape_[d], "Tensor::select: index {} out of range for dimension {} of shape {}",
           index, d, shape_);
  Shape shape = shape_, strides = strides_;
  shape.erase(shape.begin() + d);
  strides.erase(strides.begin() + d);
  return with_layout(std::move(shape), std::move(strides), offset_ + index * strides_[d]);
}

// ---------------------------------------------------------------------------------------------
// Copies

namespace {

double load_as_double(const void* p, DType dtype) {
  switch (dtype) {
    case DType::F32: return *static_cast<const float*>(p);
    case DType::BF16: return bf16_to_float(*static_cast<const bf16*>(p));
    case DType::I32: return *static_cast<const int32_t*>(p);
    case DType::U16: return *static_cast<const uint16_t*>(p);
    case DType::U32: return *static_cast<const uint32_t*>(p);
    case DType::F16: return f16_to_float(*static_cast<const f16*>(p));
  }
  return 0.0;
}

void store_from_double(void* p, DType dtype, double value) {
  switch (dtype) {
    case DType::F32: *static_cast<float*>(p) = static_cast<float>(value); break;
    case DType::BF16: *static_cast<bf16*>(p) = float_to_bf16(static_cast<float>(value)); break;
    case DType::I32: *static_cast<int32_t*>(p) = static_cast<int32_t>(value); break;
    case DType::U16: *static_cast<uint16_t*>(p) = static_cast<uint16_t>(value); break;
    case DType::U32: *static_cast<uint32_t*>(p) = static_cast<uint32_t>(value); break;
    case DType::F16: *static_cast<f16*>(p) = float_to_f16(static_cast<float>(value)); break;
  }
}

// Copies one innermost row of n elements with conversion.
void convert_row(char* dst, DType dst_dtype, int64_t dst_stride, const char* src, DType src_dtype,
                 int64_t src_stride, int64_t n) {
  size_t dsize = dtype_size(dst_dtype), ssize = dtype_size(src_dtype);
  if (dst_dtype == src_dtype && dst_stride == 1 && src_stride == 1) {
    std::memcpy(dst, src, static_cast<size_t>(n) * dsize);
  } else if (dst_dtype == DType::BF16 && src_dtype == DType::F32 && dst_stride == 1 && src_stride == 1) {
    auto* d = reinterpret_cast<bf16*>(dst);
    auto* s = reinterpret_cast<const float*>(src);
    for (int64_t i = 0; i < n; ++i) d[i] = float_to_bf16(s[i]);
  } else if (dst_dtype == DType::F32 && src_dtype == DType::BF16 && dst_stride == 1 && src_stride == 1) {
    auto* d = reinterpret_cast<float*>(dst);
    auto* s = reinterpret_cast<const bf16*>(src);
    for (int64_t i = 0; i < n; ++i) d[i] = bf16_to_float(s[i]);
  } else if (dst_dtype == DType::F32 && src_dtype == DType::F16 && dst_stride == 1 && src_stride == 1) {
    auto* d = reinterpret_cast<float*>(dst);
    auto* s = reinterpret_cast<const f16*>(src);
    for (int64_t i = 0; i < n; ++i) d[i] = f16_to_float(s[i]);
  } else if (dst_dtype == src_dtype) {
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(dst + i * dst_stride * static_cast<int64_t>(dsize),
                  src + i * src_stride * static_cast<int64_t>(ssize), dsize);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      store_from_double(dst + i * dst_stride * static_cast<int64_t>(dsize), dst_dtype,
                        load_as_double(src + i * src_stride * static_cast<int64_t>(ssize), src_dtype));
    }
  }
}

void cpu_strided_copy(const Tensor& dst, const Tensor& src) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  char* dst_base = static_cast<char*>(dst.raw_data());
  const char* src_base = static_cast<const char*>(src.raw_data());
  const int64_t dsize = static_cast<int64_t>(dst.element_size());
  const int64_t ssize = static_cast<int64_t>(src.element_size());
  if (dst.dim() == 0) {
    convert_row(dst_base, dst.dtype(), 1, src_base, src.dtype(), 1, 1);
    return;
  }
  const int64_t dims = dst.dim();
  const int64_t inner = dst.size(-1);
  const int64_t rows = n / inner;
  const Shape& shape = dst.shape();
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (int64_t row = 0; row < rows; ++row) {
    int64_t dst_off = 0, src_off = 0, rem = row;
    for (int64_t d = dims - 2; d >= 0; --d) {
      int64_t idx = rem % shape[d];
      rem /= shape[d];
      dst_off += idx * dst.strides()[d];
      src_off += idx * src.strides()[d];
    }
    convert_row(dst_base + dst_off * dsize, dst.dtype(), dst.strides()[dims - 1],
                src_base + src_off * ssize, src.dtype(), src.strides()[dims - 1], inner);
  }
}

device_runtime::StridedLayout make_layout(const Tensor& dst, const Tensor& src) {
  device_runtime::StridedLayout layout;
  KV_CHECK(dst.dim() <= device_runtime::StridedLayout::kMaxDims,
           "Tensor::copy_: at most {} dimensions on CUDA, got shape {}",
           device_runtime::StridedLayout::kMaxDims, dst.shape());
  layout.dims = static_cast<int>(dst.dim());
  for (int d = 0; d < layout.dims; ++d) {
    layout.shape[d] = dst.shape()[d];
    layout.dst_strides[d] = dst.strides()[d];
    layout.src_strides[d] = src.strides()[d];
  }
  return layout;
}

}  // namespace

void Tensor::copy_(const Tensor& src) {
  KV_CHECK(defined() && src.defined(), "Tensor::copy_: undefined tensor");
  KV_CHECK(shape_ == src.shape(), "Tensor::copy_: shape mismatch, destination {} vs source {}", shape_,
           src.shape());
  if (numel() == 0) return;
  if (device() != src.device()) {
    // Stage through a contiguous buffer of the source's dtype on the destination device.
    Tensor packed = src.contiguous();
    Tensor staged = (is_contiguous() && dtype_ == src.dtype()) ? *this : empty(shape_, src.dtype(), device());
    device_runtime::copy_bytes(staged.raw_data(), staged.device(), packed.raw_data(), packed.device(),
                               packed.nbytes());
    if (staged.raw_data() != raw_data()) copy_(staged);
    return;
  }
  if (device().is_cpu()) {
    cpu_strided_copy(*this, src);
  } else {
    device_runtime::cuda_strided_copy(raw_data(), dtype_, src.raw_data(), src.dtype(), make_layout(*this, src),
                                      device().index);
  }
}

void Tensor::fill_(double value) {
  KV_CHECK(defined(), "Tensor::fill_: tensor is undefined");
  if (device().is_cuda()) {
    KV_CHECK(is_contiguous(), "Tensor::fill_: non-contiguous CUDA tensor {}", str());
    device_runtime::cuda_fill(raw_data(), dtype_, numel(), value, device().index);
    return;
  }
  if (is_contiguous() && dtype_ == DType::F32) {
    std::fill_n(data<float>(), numel(), static_cast<float>(value));
    return;
  }
  // General case: broadcast a one-element source over this tensor with zero strides.
  Tensor source = empty({}, dtype_, Device::cpu());
  store_from_double(source.raw_data(), dtype_, value);
  source.shape_ = shape_;
  source.strides_ = Shape(shape_.size(), 0);
  cpu_strided_copy(*this, source);
}

Tensor Tensor::contiguous() const {
  KV_CHECK(defined(), "Tensor::contiguous: tensor is undefined");
  return is_contiguous() ? *this : clone();
}

Tensor Tensor::clone() const {
  KV_CHECK(defined(), "Tensor::clone: tensor is undefined");
  Tensor out = empty(shape_, dtype_, device());
  out.copy_(*this);
  return out;
}

Tensor Tensor::to(Device target) const {
  KV_CHECK(defined(), "Tensor::to: tensor is undefined");
  if (target == device()) return *this;
  Tensor out = empty(shape_, dtype_, target);
  out.copy_(*this);
  return out;
}

Tensor Tensor::to(DType target) const {
  KV_CHECK(defined(), "Tensor::to: tensor is undefined");
  if (target == dtype_) return *this;
  Tensor out = empty(shape_, target, device());
  out.copy_(*this);
  return out;
}

double Tensor::item() const {
  KV_CHECK(numel() == 1, "Tensor::item: tensor {} has {} elements, expected 1", str(), numel());
  Tensor host = to(Device::cpu());
  return load_as_double(host.raw_data(), dtype_);
}

int64_t first_nonfinite(const Tensor& t) {
  if (!t.defined() || (t.dtype() != DType::F32 && t.dtype() != DType::BF16 && t.dtype() != DType::F16)) return -1;
  const Tensor host = t.to(Device::cpu()).contiguous();
  const int64_t n = host.numel();
  if (host.dtype() == DType::F32) {
    const float* p = host.data<float>();
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(p[i])) return i;
  } else if (host.dtype() == DType::F16) {
    const f16* p = host.data<f16>();
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(f16_to_float(p[i]))) return i;
  } else {
    const bf16* p = host.data<bf16>();
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(bf16_to_float(p[i]))) return i;
  }
  return -1;
}

}  // namespace kvroute
