#include "core/dtype.h"

#include "core/error.h"

namespace kvroute {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::F32: return 4;
    case DType::BF16: return 2;
    case DType::I32: return 4;
    case DType::U16: return 2;
    case DType::U32: return 4;
    case DType::F16: return 2;
  }
  KV_FAIL("dtype_size: unknown dtype {}", static_cast<int>(dtype));
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::I32: return "i32";
    case DType::U16: return "u16";
    case DType::U32: return "u32";
    case DType::F16: return "f16";
  }
  return "unknown";
}


DType parse_dtype(const std::string& name) {
  for (DType d : {DType::F32, DType::BF16, DType::I32, DType::U16, DType::U32, DType::F16}) {
    if (name == dtype_name(d)) return d;
  }
  KV_FAIL("parse_dtype: unknown dtype '{}' (expected one of f32, bf16, i32, u16, u32, f16)", name);
}

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : fmt::format("cuda:{}", index);
}

Device Device::parse(const std::string& s) {
  if (s == "cpu") return cpu();
  if (s == "cuda") return cuda(0);
  if (s.rfind("cuda:", 0) == 0 && s.size() > 5) {
    int index = 0;
    for (size_t i = 5; i < s.size(); ++i) {
      KV_CHECK(s[i] >= '0' && s[i] <= '9', "Device::parse: bad device '{}' (expected cpu or cuda:N)", s);
      index = index * 10 + (s[i] - '0');
    }
    return cuda(index);
  }
  KV_FAIL("Device::parse: bad device '{}' (expected cpu or cuda:N)", s);
}

}  // namespace kvroute
