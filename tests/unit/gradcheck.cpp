#include "tests/unit/gradcheck.h"

#include <cmath>
#include <sstream>

#include "framework/core/rng.h"

namespace moe::testing {

std::string check_gradient(const std::string& what, float* x, const float* analytic,
                           int64_t n, const std::function<double()>& loss,
                           const GradCheckOptions& options) {
  const int64_t stride = n <= options.max_checks ? 1 : n / options.max_checks;
  double worst_excess = 0.0;
  std::ostringstream worst;
  // Central difference with step h, divided by the step actually taken in float32.
  auto central = [&](int64_t i, double h) {
    const float saved = x[i];
    x[i] = static_cast<float>(saved + h);
    const double plus = loss();
    x[i] = static_cast<float>(saved - h);
    const double minus = loss();
    x[i] = saved;
    const double step = static_cast<double>(static_cast<float>(saved + h)) -
                        static_cast<double>(static_cast<float>(saved - h));
    return (plus - minus) / step;
  };
  for (int64_t i = 0; i < n; i += stride) {
    const double numeric = options.richardson
                               ? (4.0 * central(i, options.h / 2) - central(i, options.h)) / 3.0
                               : central(i, options.h);
    const double err = std::fabs(analytic[i] - numeric);
    const double allowed = options.atol + options.rtol * std::fabs(numeric);
    if (err > allowed && err - allowed > worst_excess) {
      worst_excess = err - allowed;
      worst.str("");
      worst << what << "[" << i << "]: analytic " << analytic[i] << " vs numeric "
            << numeric << " (|diff| " << err << " > " << allowed << ")";
    }
  }
  return worst.str();
}

void fill_uniform(float* x, int64_t n, uint64_t seed, float scale) {
  const PhiloxKey key = philox_key(seed, 0x7e57u);
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t r = random_u64(key, static_cast<uint64_t>(i), 0);
    x[i] = scale * (2.0f * uniform_from_bits(static_cast<uint32_t>(r)) - 1.0f);
  }
}

std::vector<float> random_vector(int64_t n, uint64_t seed, float scale) {
  std::vector<float> v(static_cast<size_t>(n));
  fill_uniform(v.data(), n, seed, scale);
  return v;
}

double dot(const float* y, const float* r, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(y[i]) * r[i];
  return s;
}

}  // namespace moe::testing
