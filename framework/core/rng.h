#pragma once
// Counter-based random numbers (Philox4x32-10, Salmon et al., SC'11).
// A draw is a pure function of (key, counter): no state, no order dependence.
// This is what makes initialisation and data sampling layout-invariant: element i
// of parameter "layers.3.attn.w_qkv" gets the same value on 1 rank or 64.

#include <array>
#include <cstdint>
#include <string_view>

namespace moe {

using PhiloxKey = std::array<uint32_t, 2>;
using PhiloxCounter = std::array<uint32_t, 4>;

// Ten rounds of Philox4x32; returns four independent 32-bit words.
PhiloxCounter philox4x32(PhiloxCounter counter, PhiloxKey key);

// 64-bit FNV-1a hash of a string: the stream id of a named parameter.
uint64_t hash_name(std::string_view name);

// Key from a seed and a stream id (e.g. a hashed parameter name).
PhiloxKey philox_key(uint64_t seed, uint64_t stream);

// Uniform in (0, 1) from a 32-bit word (never 0, never 1).
inline float uniform_from_bits(uint32_t bits) {
  return (static_cast<float>(bits >> 8) + 0.5f) * (1.0f / 16777216.0f);
}

// Standard normal number for element `index` of stream `key` (Box-Muller on two
// words of one Philox block; the other two words are unused so index -> value is 1:1).
float normal_at(PhiloxKey key, uint64_t index);

// Uniform 64-bit integer for (key, a, b): used by the data sampler.
uint64_t random_u64(PhiloxKey key, uint64_t a, uint64_t b);

}  // namespace moe
