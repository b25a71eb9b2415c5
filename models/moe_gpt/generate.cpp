#include "models/moe_gpt/generate.h"

namespace moe {

MoeGptDecoder::MoeGptDecoder(const Config& config)
    : config_(config),
      net_(config.model, config.moe, store_,
           MoeRuntime::local(dispatcher_, config.moe.num_experts)) {
  caches_.reserve(static_cast<size_t>(config.model.num_layers));
  for (int l = 0; l < config.model.num_layers; ++l) caches_.emplace_back(config.model.d_model);
}

MoeGptDecoder::~MoeGptDecoder() = default;

void MoeGptDecoder::reset(int64_t sequences) {
  for (KvCache& cache : caches_) cache.reset(sequences);
}

Tensor MoeGptDecoder::forward(std::span<const int32_t> ids, std::span<const int32_t> seq,
                              std::span<const int32_t> pos) {
  return net_.decode(ids, seq, pos, caches_);
}

}  // namespace moe
