// Element types and devices: the small value types every Tensor carries, plus the scalar
// f32 <-> bf16 conversions (round to nearest even) shared by the CPU and CUDA backends.
// Kept free of fmt so that nvcc can include it (formatters live in core/error.h).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace kvroute {

enum class DType : uint8_t { F32, BF16, I32, U16, U32 };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);
DType parse_dtype(const std::string& name);  // "f32", "bf16", "i32", "u16", "u32"

struct Device {
  enum class Kind : uint8_t { CPU, CUDA };
  Kind kind = Kind::CPU;
  int index = 0;

  static Device cpu() { return {}; }
  static Device cuda(int index = 0) { return {Kind::CUDA, index}; }
  bool is_cpu() const { return kind == Kind::CPU; }
  bool is_cuda() const { return kind == Kind::CUDA; }
  bool operator==(const Device&) const = default;
  std::string str() const;                    // "cpu" or "cuda:N"
  static Device parse(const std::string& s);  // inverse of str()
};

// Brain float 16: the upper 16 bits of an IEEE f32.
struct bf16 {
  uint16_t bits = 0;
};

inline float bf16_to_float(bf16 value) {
  uint32_t u = static_cast<uint32_t>(value.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline bf16 float_to_bf16(float value) {
  uint32_t u;
  std::memcpy(&u, &value, sizeof u);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0) {
    return bf16{static_cast<uint16_t>((u >> 16) | 0x0040u)};  // quiet NaN, keep the sign
  }
  uint32_t rounding_bias = 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
  return bf16{static_cast<uint16_t>((u + rounding_bias) >> 16)};
}

}  // namespace kvroute

