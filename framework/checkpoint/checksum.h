#pragma once
// The checksum of a float32 tensor in a checkpoint (docs/checkpoint-format.md):
//
//   checksum = sum over elements i of mix(i * 0x9E3779B97F4A7C15 + bits(x_i))  mod 2^64
//   mix(k):  k ^= k >> 33; k *= 0xFF51AFD7ED558CCD; k ^= k >> 33;
//            k *= 0xC4CEB9FE1A85EC53; k ^= k >> 33                (MurmurHash3 fmix64)
//
// i is the element's row-major index in the logical (unsharded) tensor and bits(x) its
// 32-bit IEEE pattern. A sum of per-element terms, so the ranks that write (or read)
// disjoint blocks of a tensor each add up their own elements and the sums of the blocks
// add up to the tensor's: no rank ever holds the whole tensor. Any changed bit changes
// its term; moved elements change their index. numpy computes it in a few lines
// (uint64 arithmetic wraps).

#include <cstdint>

#include "framework/checkpoint/h5_file.h"
#include "framework/tensor/tensor.h"

namespace moe {

// Sum of the terms of the elements of the block [offset, offset + block) of a logical
// tensor of shape `logical`; `data` holds the block row-major.
uint64_t block_checksum(const float* data, const Shape& logical, const Shape& block,
                        const H5Offset& offset);

}  // namespace moe
