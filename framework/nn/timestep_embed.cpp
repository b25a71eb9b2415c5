#include "framework/nn/timestep_embed.h"

#include <cmath>

#include "framework/kernels/ops.h"

namespace moe {

TimestepEmbedder::TimestepEmbedder(ParamStore& store, const std::string& prefix,
                                   int64_t width, float init_std)
    : fc1_(store, prefix + ".fc1.weight", 2 * kFrequencies, width, Init::normal(init_std),
           prefix + ".fc1.bias"),
      fc2_(store, prefix + ".fc2.weight", width, width, Init::normal(init_std),
           prefix + ".fc2.bias"),
      freq_(store.device()),
      act_(store.device()),
      dpre_(store.device()) {}

Tensor TimestepEmbedder::forward(const float* t, int64_t n) {
  // The features of the host's timesteps, computed on the host and copied once to the
  // model's device.
  Tensor freq = freq_.view({n, 2 * kFrequencies});
  const Tensor host = freq.device == Device::kCpu ? freq : freq_host_.view(freq.shape);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < kFrequencies; ++k) {
      const double f = std::exp(-std::log(10000.0) * static_cast<double>(k) / kFrequencies);
      const double arg = static_cast<double>(t[i]) * f;
      host.data[i * 2 * kFrequencies + k] = static_cast<float>(std::cos(arg));
      host.data[i * 2 * kFrequencies + kFrequencies + k] = static_cast<float>(std::sin(arg));
    }
  if (host.data != freq.data) ops::copy(host, freq);
  pre_ = fc1_.forward(freq);  // (n, C)
  Tensor act = act_.view(pre_.shape);
  ops::silu_forward(pre_, act);
  return fc2_.forward(act);
}

void TimestepEmbedder::backward(Tensor dy) {
  const Tensor dact = fc2_.backward(dy);
  Tensor dpre = dpre_.view(pre_.shape);
  ops::silu_backward(pre_, dact, dpre);
  fc1_.backward(dpre);
}

}  // namespace moe
