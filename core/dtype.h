// Element types and devices: the small value types every Tensor carries, plus the scalar
// f32 <-> bf16 conversions (round to nearest even) shared by the CPU and CUDA backends.
// Kept free of fmt so that nvcc can include it (formatters live in core/error.h).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace kvroute {

// F16 is a storage type only (Hugging Face checkpoints in half precision): tensors convert to F32 or
// BF16 on the CPU; no op computes in it.
enum class DType : uint8_t { F32, BF16, I32, U16, U32, F16 };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);
DType parse_dtype(const std::string& name);  // "f32", "bf16", "i32", "u16", "u32", "f16"

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

// IEEE binary16: exact to f32; f32 -> f16 rounds to nearest even, overflow gives inf.
struct f16 {
  uint16_t bits = 0;
};

inline float f16_to_float(f16 value) {
  const uint32_t sign = static_cast<uint32_t>(value.bits & 0x8000u) << 16;
  const uint32_t exponent = (value.bits >> 10) & 0x1fu, mantissa = value.bits & 0x3ffu;
  uint32_t u;
  if (exponent == 0x1f) {
    u = sign | 0x7f800000u | (mantissa << 13);  // inf / NaN
  } else if (exponent != 0) {
    u = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    u = sign;
  } else {  // subnormal: mantissa x 2^-24
    float f = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    std::memcpy(&u, &f, sizeof u);
    u |= sign;
  }
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline f16 float_to_f16(float value) {
  uint32_t u;
  std::memcpy(&u, &value, sizeof u);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs >= 0x7f800000u) return f16{static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u))};
  if (abs >= 0x477ff000u) return f16{static_cast<uint16_t>(sign | 0x7c00u)};  // rounds above 65504: inf
  if (abs < 0x38800000u) {  // below the smallest normal 2^-14: a subnormal multiple of 2^-24
    float a;
    std::memcpy(&a, &abs, sizeof a);
    const float scaled = a * 16777216.0f;  // exact; nearbyint rounds half to even
    return f16{static_cast<uint16_t>(sign | static_cast<uint16_t>(__builtin_nearbyintf(scaled)))};
  }
  const uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);  // round to nearest even at bit 13
  return f16{static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13))};
}

}  // namespace kvroute

