#pragma once
// moe_gpt's decoder for text generation (models/generation.h, docs/generation.md).
//
// MoeGptDecoder is the training model (MoeGpt) run incrementally on one process: each
// attention layer keeps the keys and values of every position it has seen (a KvCache
// per block, SelfAttention::forward_cached), so a prompt is run once and each generated
// token then costs one token's forward pass, never a recomputation of its prefix. The
// parameters are the training model's, so a checkpoint or model.h5 loads as is.
//
// Inference is dropless: the decoder of a config with moe.capacity_factor > 0 ignores
// it (load_decoder clears it), so a token's output never depends on the other tokens of
// its batch (as in Hugging Face MoE models). The router biases of aux-loss-free
// balancing are loaded and select experts as in training.

#include <cstdint>
#include <span>
#include <vector>

#include "framework/config/config.h"
#include "framework/moe/dispatcher.h"
#include "framework/nn/kv_cache.h"
#include "models/model.h"
#include "models/moe_gpt/moe_gpt.h"

namespace moe {

class MoeGptDecoder final : public TokenDecoder {
 public:
  // The moe_gpt model of `config`, parameters registered (uninitialised) in store().
  explicit MoeGptDecoder(const Config& config);
  ~MoeGptDecoder() override;

  void reset(int64_t sequences) override;
  Tensor forward(std::span<const int32_t> ids, std::span<const int32_t> seq,
                 std::span<const int32_t> pos) override;
  int64_t vocab_size() const override { return config_.model.vocab_size; }
  ParamStore& store() override { return store_; }

 private:
  Config config_;
  ParamStore store_;
  LocalDispatcher dispatcher_;
  MoeGpt net_;
  std::vector<KvCache> caches_;  // one per block
};

}  // namespace moe
