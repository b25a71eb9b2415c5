#pragma once
// Raw allocations on a device, for Buffer. Host memory is 64-byte aligned (AVX-512
// rows); device memory comes from the CUDA runtime when the build has the CUDA backend,
// and asking for it otherwise is an error.

#include <cstddef>

#include "framework/core/dtype.h"

namespace moe {

// `bytes` zeroed bytes on `device` (never null for bytes > 0; throws moe::Error).
void* device_allocate(Device device, size_t bytes);
void device_free(Device device, void* ptr);
void device_zero(Device device, void* ptr, size_t bytes);
// Bytes still free on `device` (the current GPU's, from the CUDA runtime); an internal
// error for the CPU or without the CUDA backend.
double device_free_bytes(Device device);
// `bytes` bytes from src on src_device to dst on dst_device; the host waits for a copy
// that involves host memory (it reads what arrives, or may reuse the source).
void copy_bytes(Device dst_device, void* dst, Device src_device, const void* src,
                size_t bytes);

}  // namespace moe
