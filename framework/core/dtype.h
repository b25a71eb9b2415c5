#pragma once
// Where a tensor's elements live and what they are. The op API (framework/kernels/ops.h)
// dispatches on both: a kernel exists per (device, dtype) it supports, and asking for a
// missing one is an error naming the op, the device and the dtype.

#include <cstddef>
#include <cstdint>

namespace moe {

enum class Device : uint8_t { kCpu, kCuda };

// fp32 for values, gradients and optimizer state; bf16 for the operands of mixed-
// precision matrix products; int32 for token ids, expert indices and slots.
enum class DType : uint8_t { kF32, kBF16, kI32 };

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kBF16: return 2;
    case DType::kI32: return 4;
  }
  return 0;
}

const char* dtype_name(DType t);    // "fp32", "bf16", "int32"
const char* device_name(Device d);  // "cpu", "cuda"

// A bfloat16 element: the upper 16 bits of an IEEE fp32 (8-bit exponent, 7-bit mantissa).
struct bf16 {
  uint16_t bits;
};

// The dtype of an element type, for typed access (Tensor::ptr<T>()).
template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() { return DType::kF32; }
template <>
constexpr DType dtype_of<bf16>() { return DType::kBF16; }
template <>
constexpr DType dtype_of<int32_t>() { return DType::kI32; }

}  // namespace moe
