#include "models/generation.h"

#include "framework/checkpoint/checkpoint.h"
#include "framework/checkpoint/h5_file.h"
#include "framework/checkpoint/state_dict.h"
#include "models/registry.h"

namespace moe {

std::unique_ptr<TokenDecoder> load_decoder(const std::string& path) {
  const H5File file = H5File::open(path);
  check_format(file);  // not ours, or another format version: say so first
  Config c = config_for_use(file.string_attr("/config", "ini"));
  c.moe.capacity_factor = 0.0f;  // dropless inference
  const ModelFamily& family = model_family(c.model.family);
  MOE_USER_CHECK(family.make_decoder, file.path(), ": holds a ", c.model.family,
                 " model; text generation needs ",
                 families_that([](const ModelFamily& f) { return static_cast<bool>(f.make_decoder); }));
  std::unique_ptr<TokenDecoder> decoder = family.make_decoder(c);
  load_weights(file, decoder->store());
  return decoder;
}

std::vector<std::vector<int32_t>> generate(TokenDecoder& decoder,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           int64_t max_new_tokens,
                                           const SamplingOptions& sampling,
                                           const TokenCallback& on_token) {
  const int64_t count = static_cast<int64_t>(prompts.size());
  const int64_t vocab = decoder.vocab_size();
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
