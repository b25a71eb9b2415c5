#pragma once
// The op API's shared checks and kernel dispatch, for the files that implement it
// (ops.cpp, ops_routing.cpp). Internal to framework/kernels.

#include <cstring>
#include <initializer_list>
#include <span>

#include "framework/core/error.h"
#include "framework/kernels/cpu/cpu_ops.h"
#include "framework/kernels/device.h"
#include "framework/kernels/ops.h"

#ifdef MOE_WITH_CUDA
#include "framework/kernels/cuda/cuda_ops.h"
// The kernel `op` of `device`: the CUDA twin or the CPU one (same signature).
#define MOE_KERNEL(device, op) ((device) == Device::kCuda ? cuda::op : cpu::op)
#else
#define MOE_KERNEL(device, op) ((void)(device), cpu::op)
#endif

namespace moe::ops::detail {

// An optional operand is passed as an empty Tensor (no shape).
inline bool present(const Tensor& t) { return t.rank() > 0; }

// The tensors of one op share a device and a dtype that has a kernel: fp32 on the CPU,
// and on the GPU with the CUDA backend. Anything else is an error naming the op.
inline Device kernel_device(const char* op, std::initializer_list<Tensor> tensors) {
  Device device = Device::kCpu;
  bool first = true;
  for (const Tensor& t : tensors) {
    if (!present(t)) continue;
    MOE_CHECK(t.dtype == DType::kF32 && (t.device == Device::kCpu || cuda_backend_built()), op,
              ": no kernel for ", dtype_name(t.dtype), " on ", device_name(t.device));
    MOE_CHECK(first || t.device == device, op, ": operands on ", device_name(device), " and ",
              device_name(t.device));
    device = t.device;
    first = false;
  }
  return device;
}

// The ops without a device kernel (the KV-cached decoder's).
inline void require_cpu_f32(const char* op, std::initializer_list<Tensor> tensors) {
  for (const Tensor& t : tensors) {
    if (!present(t)) continue;
    MOE_CHECK(t.device == Device::kCpu && t.dtype == DType::kF32, op, ": no kernel for ",
              dtype_name(t.dtype), " on ", device_name(t.device));
  }
}

// The tensors present are CPU tensors of `dtype` (the bf16 operands of mixed precision).
inline void require_cpu(const char* op, DType dtype, std::initializer_list<Tensor> tensors) {
  for (const Tensor& t : tensors) {
    if (!present(t)) continue;
    MOE_CHECK(t.device == Device::kCpu && t.dtype == dtype, op, ": no kernel for ",
              dtype_name(t.dtype), " on ", device_name(t.device), " here (", dtype_name(dtype),
              " expected)");
  }
}

// The device of a mixed-precision op whose kernel exists on both backends: the `narrow`
// tensors present are bf16, the `wide` ones fp32, all on one device.
inline Device mixed_device(const char* op, std::initializer_list<Tensor> narrow,
                    std::initializer_list<Tensor> wide) {
  const Device device = kernel_device(op, wide);
  for (const Tensor& t : narrow) {
    if (!present(t)) continue;
    MOE_CHECK(t.dtype == DType::kBF16 && t.device == device, op, ": ", dtype_name(t.dtype),
              " operand on ", device_name(t.device), ", expected bf16 on ",
              device_name(device));
  }
  return device;
}

inline void check_matrix(const char* op, const char* name, const Tensor& t, int64_t rows,
                  int64_t cols) {
  MOE_CHECK(t.rank() > 0 && t.rows() == rows && t.cols() == cols, op, ": ", name, " of shape ",
            t.shape.str(), ", expected (", rows, ", ", cols, ")");
}

inline void check_numel(const char* op, const char* name, const Tensor& t, int64_t n) {
  MOE_CHECK(t.numel() == n, op, ": ", name, " has ", t.numel(), " elements, expected ", n);
}

template <class T>
const T* or_null(std::span<T> s) {
  return s.empty() ? nullptr : s.data();
}

}  // namespace moe::ops::detail
