#pragma once
// Text generation with a trained moe_gpt model (moe-generate, docs/generation.md).
//
// MoeGptDecoder is the training model (MoeGpt) run incrementally on one process: each
// attention layer keeps the keys and values of every position it has seen (a KvCache
// per block, SelfAttention::forward_cached), so a prompt is run once and each generated
// token then costs one token's forward pass, never a recomputation of its prefix. The
// parameters are the training model's, so a checkpoint or model.h5 loads as is.
//
// Inference is dropless: moe.capacity_factor is ignored, so a token's output never
// depends on the other tokens of its batch (as in Hugging Face MoE models). The router
// biases of aux-loss-free balancing are loaded and select experts as in training.

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "framework/config/config.h"
#include "framework/moe/dispatcher.h"
#include "framework/nn/kv_cache.h"
#include "models/moe_gpt/moe_gpt.h"
#include "models/moe_gpt/sampling.h"

namespace moe {

class MoeGptDecoder {
 public:
  // The moe_gpt model of `config`, parameters registered (uninitialised) in store().
  explicit MoeGptDecoder(const Config& config);
  ~MoeGptDecoder();
  // The model of a checkpoint or weights file (its config, weights and router biases).
  // A file of another family or another model is a user error naming it.
  static std::unique_ptr<MoeGptDecoder> load(const std::string& path);

  // Empty caches for `sequences` sequences.
  void reset(int64_t sequences);
  // Logits (N, V) of N new tokens: row i is token ids[i] of sequence seq[i] at position
  // pos[i], the positions before it in that sequence being cached (a sequence's rows in
  // increasing positions).
  Tensor forward(std::span<const int32_t> ids, std::span<const int32_t> seq,
                 std::span<const int32_t> pos);

  const Config& config() const { return config_; }
  ParamStore& store() { return store_; }
  std::vector<MoELayer*> moe_layers() { return net_.moe_layers(); }

 private:
  Config config_;
  ParamStore store_;
  LocalDispatcher dispatcher_;
  MoeGpt net_;
  std::vector<KvCache> caches_;  // one per block
};

// Called with (sequence, token) as each new token is chosen, for streaming output.
using TokenCallback = std::function<void(int64_t sequence, int32_t token)>;

// Continues every prompt (token ids, at least one each) by max_new_tokens tokens chosen
// with choose_token (sampling.h): all prompts' rows in one forward, then one row per
// sequence per step. Returns the new tokens of each sequence.
std::vector<std::vector<int32_t>> generate(MoeGptDecoder& decoder,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           int64_t max_new_tokens,
                                           const SamplingOptions& sampling,
                                           const TokenCallback& on_token = {});

}  // namespace moe
