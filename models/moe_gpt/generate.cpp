#include "models/moe_gpt/generate.h"

#include <cmath>

#include "framework/checkpoint/checkpoint.h"
#include "framework/checkpoint/h5_file.h"
#include "framework/checkpoint/state_dict.h"
#include "models/model.h"

namespace moe {
namespace {

// The config a model file was trained with, for inference on this machine.
Config inference_config(const H5File& file) {
  check_format(file);  // not ours, or another format version: say so first
  // The files the run read or resumed from need not exist where the model is used.
  Config c = config_for_use(file.string_attr("/config", "ini"));
  MOE_USER_CHECK(c.model.family == "moe_gpt", file.path(), ": holds a ", c.model.family,
                 " model; text generation needs moe_gpt");
  c.moe.capacity_factor = 0.0f;  // dropless inference
  return c;
}

}  // namespace

MoeGptDecoder::MoeGptDecoder(const Config& config)
    : config_(config),
      net_(config.model, config.moe, store_,
           MoeRuntime::local(dispatcher_, config.moe.num_experts)) {
  caches_.reserve(static_cast<size_t>(config.model.num_layers));
  for (int l = 0; l < config.model.num_layers; ++l) caches_.emplace_back(config.model.d_model);
}

MoeGptDecoder::~MoeGptDecoder() = default;

std::unique_ptr<MoeGptDecoder> MoeGptDecoder::load(const std::string& path) {
  const H5File file = H5File::open(path);
  auto decoder = std::make_unique<MoeGptDecoder>(inference_config(file));
  load_weights(file, decoder->store_);
  return decoder;
}

void MoeGptDecoder::reset(int64_t sequences) {
  for (KvCache& cache : caches_) cache.reset(sequences);
}

Tensor MoeGptDecoder::forward(std::span<const int32_t> ids, std::span<const int32_t> seq,
                              std::span<const int32_t> pos) {
  return net_.decode(ids, seq, pos, caches_);
}

std::vector<std::vector<int32_t>> generate(MoeGptDecoder& decoder,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           int64_t max_new_tokens,
                                           const SamplingOptions& sampling,
                                           const TokenCallback& on_token) {
  const int64_t count = static_cast<int64_t>(prompts.size());
  const int64_t vocab = decoder.config().model.vocab_size;
  decoder.reset(count);
  // The prompts in one forward; last[s] is the row of sequence s's next-token logits.
  std::vector<int32_t> ids, seq, pos;
  std::vector<int64_t> last(static_cast<size_t>(count));
  for (int64_t s = 0; s < count; ++s) {
    MOE_CHECK(!prompts[s].empty(), "generate: prompt ", s, " is empty");
    for (size_t t = 0; t < prompts[s].size(); ++t) {
      ids.push_back(prompts[s][t]);
      seq.push_back(static_cast<int32_t>(s));
      pos.push_back(static_cast<int32_t>(t));
    }
    last[s] = static_cast<int64_t>(ids.size()) - 1;
  }
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(count));
  Tensor logits = decoder.forward(ids, seq, pos);
  for (int64_t step = 0; step < max_new_tokens; ++step) {
    ids.resize(static_cast<size_t>(count));
    seq.resize(static_cast<size_t>(count));
    pos.resize(static_cast<size_t>(count));
    for (int64_t s = 0; s < count; ++s) {
      const std::span<const float> row(logits.data + last[s] * vocab, static_cast<size_t>(vocab));
      const int32_t token = choose_token(row, sampling, static_cast<uint64_t>(s),
                                         static_cast<uint64_t>(step));
      out[s].push_back(token);
      if (on_token) on_token(s, token);
      ids[s] = token;
      seq[s] = static_cast<int32_t>(s);
      pos[s] = static_cast<int32_t>(prompts[s].size() + out[s].size() - 1);
      last[s] = s;
    }
    if (step + 1 < max_new_tokens) logits = decoder.forward(ids, seq, pos);
  }
  return out;
}

}  // namespace moe
