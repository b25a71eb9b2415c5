#include "framework/core/rng.h"

#include <cmath>

namespace moe {
namespace {
constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;

inline void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}
}  // namespace

PhiloxCounter philox4x32(PhiloxCounter c, PhiloxKey k) {
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kPhiloxM0, c[0], hi0, lo0);
    mulhilo(kPhiloxM1, c[2], hi1, lo1);
    c = {hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0};
    k[0] += kPhiloxW0;
    k[1] += kPhiloxW1;
  }
  return c;
}

uint64_t hash_name(std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : name) {
    h ^= ch;
    h *= 0x100000001b3ull;
  }
  return h;
}

PhiloxKey philox_key(uint64_t seed, uint64_t stream) {
  // Mix seed and stream through one Philox block so that nearby seeds give unrelated keys.
  const PhiloxCounter c = philox4x32(
      {static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32),
       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)},
      {0x6d6f6521u, 0x6b657921u});
  return {c[0], c[1]};
}

float normal_at(PhiloxKey key, uint64_t index) {
  const PhiloxCounter r = philox4x32(
      {static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32), 0u, 0u}, key);
  const double u1 = (static_cast<double>(r[0]) + 0.5) * (1.0 / 4294967296.0);
  const double u2 = (static_cast<double>(r[1]) + 0.5) * (1.0 / 4294967296.0);
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
}

uint64_t random_u64(PhiloxKey key, uint64_t a, uint64_t b) {
  const PhiloxCounter r = philox4x32(
      {static_cast<uint32_t>(a), static_cast<uint32_t>(a >> 32), static_cast<uint32_t>(b),
       static_cast<uint32_t>(b >> 32)},
      key);
  return (static_cast<uint64_t>(r[0]) << 32) | r[1];
}

}  // namespace moe
