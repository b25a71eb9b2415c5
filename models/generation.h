#pragma once
// Text generation with a trained model of a family that generates text (moe-generate,
// docs/generation.md; moe_gpt: models/moe_gpt/generate.h): the prompts run once over
// the decoder's KV caches, then each new token costs one token's forward pass.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "models/model.h"
#include "models/sampling.h"

namespace moe {

// The decoder of a checkpoint or weights file: its family's (a user error naming the
// file when the family does not generate text), its config with dropless routing
// (moe.capacity_factor cleared: a token's output never depends on its batch), its
// weights and router biases.
std::unique_ptr<TokenDecoder> load_decoder(const std::string& path);

// Called with (sequence, token) as each new token is chosen, for streaming output.
using TokenCallback = std::function<void(int64_t sequence, int32_t token)>;

// Continues every prompt (token ids, at least one each) by max_new_tokens tokens chosen
// with choose_token (sampling.h): all prompts' rows in one forward, then one row per
// sequence per step. Returns the new tokens of each sequence.
std::vector<std::vector<int32_t>> generate(TokenDecoder& decoder,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           int64_t max_new_tokens,
                                           const SamplingOptions& sampling,
                                           const TokenCallback& on_token = {});

}  // namespace moe
