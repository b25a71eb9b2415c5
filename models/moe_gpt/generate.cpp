#include "models/moe_gpt/generate.h"

#include <cmath>

#include "framework/checkpoint/checkpoint.h"
#include "framework/checkpoint/h5_file.h"
#include "framework/checkpoint/state_dict.h"
#include "framework/nn/attention.h"
#include "framework/nn/mlp.h"
#include "models/model.h"

namespace moe {
namespace {

// out = a + b over n floats (the residual stream)
void add(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

// The config a model file was trained with, for inference on this machine.
Config inference_config(const H5File& file) {
  check_format(file);  // not ours, or another format version: say so first
  // The files the run read or resumed from need not exist where the model is used.
  Config c = load_config_text(file.string_attr("/config", "ini"),
                              {"data.train_path=", "data.val_path=", "data.train_labels=",
                               "data.val_labels=", "run.resume=", "run.init_from="});
  MOE_USER_CHECK(c.model.family == "moe_gpt", file.path(), ": holds a ", c.model.family,
                 " model; text generation needs moe_gpt");
  c.moe.capacity_factor = 0.0f;  // dropless inference
  return c;
}

}  // namespace

// One pre-norm block: h += Attn(RMSNorm(h)) over the cache; h += FFN(RMSNorm(h)).
struct MoeGptDecoder::Block {
  RMSNorm attn_norm;
  SelfAttention attn;
  KvCache cache;
  RMSNorm ffn_norm;
  std::unique_ptr<SwiGLUMlp> mlp;  // dense layers
  std::unique_ptr<MoELayer> moe;   // MoE layers
  Buffer h_mid, h_out;             // (N, C)

  Block(ParamStore& store, const std::string& prefix, const Config& c, bool is_moe,
        const MoeRuntime& runtime)
      : attn_norm(store, prefix + ".attn_norm.weight", c.model.d_model, c.model.norm_eps),
        attn(store, prefix + ".attn", c.model.d_model, c.model.num_heads, /*causal=*/true,
             /*rotary=*/true, c.model.rope_theta, c.model.init_std, c.model.init_std),
        cache(c.model.d_model),
        ffn_norm(store, prefix + ".ffn_norm.weight", c.model.d_model, c.model.norm_eps) {
    const float std = c.model.init_std;
    if (is_moe)
      moe = std::make_unique<MoELayer>(store, prefix + ".moe", c.model.d_model, c.moe, std,
                                       std, runtime);
    else
      mlp = std::make_unique<SwiGLUMlp>(store, prefix + ".mlp", c.model.d_model,
                                        c.model.dense_ffn, std, std);
  }

  Tensor forward(Tensor x, std::span<const int32_t> seq, std::span<const int32_t> pos) {
    const int64_t n = x.numel();
    Tensor mid = h_mid.view(x.shape);
    add(x.data, attn.forward_cached(attn_norm.forward(x), seq, pos, cache).data, mid.data, n);
    Tensor f = ffn_norm.forward(mid);
    Tensor y = moe ? moe->forward(f) : mlp->forward(f);
    Tensor out = h_out.view(x.shape);
    add(mid.data, y.data, out.data, n);
    return out;
  }
};

MoeGptDecoder::MoeGptDecoder(const Config& config)
    : config_(config),
      embed_(store_, "embed.weight", config.model.vocab_size, config.model.d_model,
             Init::normal(config.model.init_std), nullptr),
      final_norm_(store_, "final_norm.weight", config.model.d_model, config.model.norm_eps),
      lm_head_(store_, "lm_head.weight", config.model.d_model, config.model.vocab_size,
               Init::normal(config.model.init_std)) {
  MOE_CHECK(config.model.family == "moe_gpt", "MoeGptDecoder: family ", config.model.family);
  const MoeRuntime runtime = MoeRuntime::local(dispatcher_, config.moe.num_experts);
  for (int l = 0; l < config.model.num_layers; ++l)
    blocks_.push_back(std::make_unique<Block>(store_, "layers." + std::to_string(l), config_,
                                              is_moe_block(config.model, l), runtime));
}

MoeGptDecoder::~MoeGptDecoder() = default;

std::unique_ptr<MoeGptDecoder> MoeGptDecoder::load(const std::string& path) {
  const H5File file = H5File::open(path);
  auto decoder = std::make_unique<MoeGptDecoder>(inference_config(file));
  load_weights(file, decoder->store_);
  return decoder;
}

void MoeGptDecoder::reset(int64_t sequences) {
  for (auto& block : blocks_) block->cache.reset(sequences);
}

Tensor MoeGptDecoder::forward(std::span<const int32_t> ids, std::span<const int32_t> seq,
                              std::span<const int32_t> pos) {
  const int64_t n = static_cast<int64_t>(ids.size());
  for (int32_t id : ids)
    MOE_CHECK(id >= 0 && id < config_.model.vocab_size, "MoeGptDecoder: token ", id,
              " outside the vocabulary of ", config_.model.vocab_size);
  Tensor h = embed_.forward_all_reduce(ids.data(), n);  // (N, C)
  for (auto& block : blocks_) h = block->forward(h, seq, pos);
  return lm_head_.forward(final_norm_.forward(h));  // (N, V)
}

std::vector<MoELayer*> MoeGptDecoder::moe_layers() { return moe_layers_of(blocks_); }

std::vector<int> MoeGptDecoder::moe_layer_blocks() const { return moe_block_indices(blocks_); }

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
