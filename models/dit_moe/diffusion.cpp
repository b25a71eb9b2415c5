#include "models/dit_moe/diffusion.h"

#include <algorithm>
#include <cmath>

#include "framework/core/error.h"
#include "models/dit_moe/dit_moe.h"

namespace moe {
namespace {

// A standard normal from the 64 bits of one Philox draw (Box-Muller).
double normal_from_bits(uint64_t bits) {
  const double u1 = (static_cast<double>(bits >> 32) + 0.5) * (1.0 / 4294967296.0);
  const double u2 = (static_cast<double>(bits & 0xffffffffu) + 0.5) * (1.0 / 4294967296.0);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

PhiloxKey stream_key(uint64_t seed, const std::string& name, uint64_t counter) {
  return philox_key(seed, hash_name(name) + counter);
}

}  // namespace

SampleOptions sample_options(const Config& c) {
  const DiffusionConfig& d = c.diffusion;
  SampleOptions options;
  options.sampler = d.sampler != SamplerKind::kAuto             ? d.sampler
                    : d.objective == DiffusionObjective::kDdpm ? SamplerKind::kDdim
                                                               : SamplerKind::kEuler;
  options.steps = d.sample_steps;
  options.guidance = d.guidance;
  options.clip_lo = (0.0f - c.data.image_mean) / c.data.image_std;
  options.clip_hi = (1.0f - c.data.image_mean) / c.data.image_std;
  return options;
}

Diffusion::Diffusion(const DiffusionConfig& config)
    : flow_(config.objective == DiffusionObjective::kRectifiedFlow) {
  const int steps = config.timesteps;
  double prod = 1.0;
  for (int t = 0; t < steps; ++t) {
    const double beta = config.beta_start + (static_cast<double>(config.beta_end) -
                                             config.beta_start) * t / (steps - 1);
    prod *= 1.0 - beta;
    abar_.push_back(prod);
  }
}

void Diffusion::make_example(const float* x0, int64_t n, const std::string& stream,
                             uint64_t seed, uint64_t counter, uint64_t b, float* x_t,
                             float* target, float* t_in) const {
  const uint64_t bits =
      random_u64(philox_key(seed, hash_name("diffusion.t." + stream)), counter, b);
  // eps element i of sample b: its own stream per counter, index b*n + i
  const PhiloxKey noise = stream_key(seed, "diffusion.noise." + stream, counter);
  const uint64_t base = b * static_cast<uint64_t>(n);
  if (flow_) {
    const double t = 1.0 / (1.0 + std::exp(-normal_from_bits(bits)));
    for (int64_t i = 0; i < n; ++i) {
      const float eps = normal_at(noise, base + i);
      x_t[i] = static_cast<float>((1.0 - t) * x0[i] + t * eps);
      target[i] = eps - x0[i];
    }
    *t_in = static_cast<float>(1000.0 * t);
    return;
  }
  const int t = static_cast<int>(bits % static_cast<uint64_t>(abar_.size()));
  const double a = std::sqrt(abar_[t]), s = std::sqrt(1.0 - abar_[t]);
  for (int64_t i = 0; i < n; ++i) {
    const float eps = normal_at(noise, base + i);
    x_t[i] = static_cast<float>(a * x0[i] + s * eps);
    target[i] = eps;
  }
  *t_in = static_cast<float>(t);
}

namespace {

// The guided prediction for n images x (n*d floats) at timestep t_in.
std::vector<float> guided_prediction(DitMoe& net, const std::vector<float>& x,
                                     std::span<const int32_t> labels, float t_in,
                                     float guidance, int64_t d) {
  const int64_t n = static_cast<int64_t>(labels.size());
  const bool both = guidance != 1.0f;
  const int64_t rows = both ? 2 * n : n;
  std::vector<float> xx(x), tt(static_cast<size_t>(rows), t_in);
  std::vector<int32_t> yy(labels.begin(), labels.end());
  if (both) {
    xx.insert(xx.end(), x.begin(), x.end());
    yy.insert(yy.end(), static_cast<size_t>(n), static_cast<int32_t>(net.null_class()));
  }
  const Tensor pred = net.predict(xx.data(), tt.data(), yy.data(), rows);
  std::vector<float> out(pred.data, pred.data + n * d);
  if (both)
    for (int64_t i = 0; i < n * d; ++i) {
      const float uncond = pred.data[n * d + i];
      out[i] = uncond + guidance * (out[i] - uncond);
    }
  return out;
}

}  // namespace

std::vector<float> sample_images(DitMoe& net, const Diffusion& diffusion,
                                 const ModelConfig& model, std::span<const int32_t> labels,
                                 const SampleOptions& options, const SampleHook& hook) {
  const int64_t n = static_cast<int64_t>(labels.size());
  const int64_t d = int64_t{model.image_channels} * model.image_size * model.image_size;
  std::vector<float> x(static_cast<size_t>(n * d));
  const PhiloxKey key = philox_key(options.seed, hash_name("sample.noise"));
  for (int64_t i = 0; i < n * d; ++i) x[i] = normal_at(key, static_cast<uint64_t>(i));
  const int steps = options.steps;

  if (options.sampler == SamplerKind::kEuler) {
    MOE_CHECK(diffusion.flow(), "euler sampling needs the rectified_flow objective");
    // z_1 = noise; z_{t - 1/S} = z_t - v(z_t, t) / S down to t = 0.
    for (int i = 0; i < steps; ++i) {
      const double t = 1.0 - static_cast<double>(i) / steps;
      const std::vector<float> v = guided_prediction(net, x, labels,
                                                     static_cast<float>(1000.0 * t),
                                                     options.guidance, d);
      if (hook) hook(i, 1000.0 * t);
      for (int64_t j = 0; j < n * d; ++j) x[j] -= v[j] / static_cast<float>(steps);
    }
    return x;
  }

  MOE_CHECK(options.sampler == SamplerKind::kDdim && !diffusion.flow(),
            "ddim sampling needs the ddpm objective");
  // DDIM (eta = 0) on the timesteps floor(i T / S), i = S-1 .. 0.
  const int total = diffusion.timesteps();
  std::vector<int> seq;
  for (int i = 0; i < steps; ++i)
    seq.push_back(static_cast<int>(static_cast<int64_t>(i) * total / steps));
  for (int i = steps - 1; i >= 0; --i) {
    const int t = seq[i];
    const double abar = diffusion.alpha_bar(t);
    const double abar_prev = i > 0 ? diffusion.alpha_bar(seq[i - 1]) : 1.0;
    const std::vector<float> eps = guided_prediction(net, x, labels, static_cast<float>(t),
                                                     options.guidance, d);
    if (hook) hook(steps - 1 - i, t);
    const double sa = std::sqrt(abar), sb = std::sqrt(1.0 - abar);
    for (int64_t j = 0; j < n * d; ++j) {
      // x0 estimate, clipped to the data range; eps recomputed from it
      const double x0 = std::clamp((x[j] - sb * eps[j]) / sa,
                                   static_cast<double>(options.clip_lo),
                                   static_cast<double>(options.clip_hi));
      const double e = (x[j] - sa * x0) / sb;
      x[j] = static_cast<float>(std::sqrt(abar_prev) * x0 + std::sqrt(1.0 - abar_prev) * e);
    }
  }
  return x;
}

}  // namespace moe
