#pragma once
// The diffusion process of dit_moe (docs/image-models.md): training examples of the
// DDPM epsilon objective or of rectified flow, and DDIM / Euler sampling with
// classifier-free guidance.
//
// DDPM: beta_t linear from beta_start to beta_end over T steps, abar_t = prod_{s<=t}
//   (1 - beta_s); t ~ U{0..T-1}; x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps; the model
//   sees t and predicts eps.
// Rectified flow: t = sigmoid(n), n ~ N(0, 1); x_t = (1 - t) x0 + t eps; the model sees
//   1000 t (the DDPM range of the timestep embedding) and predicts v = eps - x0.
// Every random number is a pure function of (seed, counter, global sample index, element),
// so a batch is the same on any number of data-parallel ranks.

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "framework/config/config.h"
#include "framework/core/rng.h"

namespace moe {

class DitMoe;

class Diffusion {
 public:
  explicit Diffusion(const DiffusionConfig& config);

  bool flow() const { return flow_; }
  int timesteps() const { return static_cast<int>(abar_.size()); }
  double alpha_bar(int t) const { return abar_[t]; }

  // One training example: sample b (global index) of counter `counter` (the step, or
  // the evaluation batch) on the streams of `stream` ("train" or "eval"). x0, x_t and
  // target hold n floats; *t_in is what the timestep embedder sees.
  void make_example(const float* x0, int64_t n, const std::string& stream, uint64_t seed,
                    uint64_t counter, uint64_t b, float* x_t, float* target,
                    float* t_in) const;

 private:
  bool flow_;
  std::vector<double> abar_;  // [T] cumulative products of (1 - beta)
};

struct SampleOptions {
  SamplerKind sampler = SamplerKind::kDdim;  // ddim (ddpm) | euler (rectified_flow)
  int steps = 50;
  float guidance = 4.0f;         // s; 1 = the conditional prediction alone
  uint64_t seed = 0;
  float clip_lo = -1.0f, clip_hi = 1.0f;  // data range of x0 (DDIM clips its x0 estimate)
};

// The sampling of a config: diffusion.sampler (auto: DDIM for ddpm, Euler for rectified
// flow), diffusion.sample_steps, diffusion.guidance, and the data range of x0 from
// data.image_mean and image_std; seed 0.
SampleOptions sample_options(const Config& config);

// Called after every model evaluation of a sampling run with the step index (0 first)
// and the timestep the model saw, while the MoE layers still hold that forward's load.
using SampleHook = std::function<void(int step, double timestep)>;

// Generates one image per label (n = labels.size()) by `options.steps` denoising steps
// from N(0, 1) noise: returns (n, Cin, H, W) floats in the model's data space. With
// guidance s != 1 every step evaluates the conditional and the null-class prediction
// in one batch of 2n and uses eps_u + s (eps_c - eps_u).
std::vector<float> sample_images(DitMoe& net, const Diffusion& diffusion,
                                 const ModelConfig& model, std::span<const int32_t> labels,
                                 const SampleOptions& options, const SampleHook& hook = {});

}  // namespace moe
