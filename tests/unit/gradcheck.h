#pragma once
// Finite-difference gradient checking for float32 layers.
//
// Layers compute in float32, so the check projects the layer output on a fixed random
// direction r (loss = sum(y * r), accumulated in double) and compares the analytic
// gradient (backward with dy = r) to central differences (L(x+h) - L(x-h)) / 2h.
// With h = 1e-2 the truncation error is O(h^2 |f'''|) ~ 1e-4 relative for these smooth
// functions and the float32 rounding error is about 1e-7 |L| / h ~ 1e-5 |L|, so a
// tolerance of |a - n| <= atol + rtol |n| with atol = 1e-3, rtol = 1e-2 separates a
// correct backward from a wrong one (a wrong term is off by O(1) relative).

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace moe::testing {

struct GradCheckOptions {
  double h = 1e-2;
  double atol = 1e-3;
  double rtol = 1e-2;
  int64_t max_checks = 64;  // elements checked, spread evenly over x
  // Richardson extrapolation (4 D(h/2) - D(h)) / 3 cancels the h^2 error term, so a
  // large h (small rounding error) can be used on strongly curved losses, such as a
  // whole model with wide weights.
  bool richardson = false;
};

// Checks `analytic` (n floats, the gradient of `loss` w.r.t. x[0..n)) against central
// differences of `loss`, perturbing x in place (restored afterwards). Returns an empty
// string when all checked elements agree, else a description of the worst mismatch.
std::string check_gradient(const std::string& what, float* x, const float* analytic,
                           int64_t n, const std::function<double()>& loss,
                           const GradCheckOptions& options = {});

// Deterministic pseudo-random fill in [-scale, scale] (test data, not model init).
void fill_uniform(float* x, int64_t n, uint64_t seed, float scale = 1.0f);
std::vector<float> random_vector(int64_t n, uint64_t seed, float scale = 1.0f);

// sum_i y[i] * r[i] in double.
double dot(const float* y, const float* r, int64_t n);

}  // namespace moe::testing
