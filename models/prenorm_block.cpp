#include "models/prenorm_block.h"

#include <cmath>

#include "framework/core/timer.h"
#include "framework/kernels/ops.h"
#include "framework/nn/layernorm.h"
#include "framework/nn/rmsnorm.h"

namespace moe {

namespace {

std::unique_ptr<Norm> make_norm(ParamStore& store, const std::string& name,
                                const ModelConfig& m, bool layer_norm) {
  if (layer_norm) return std::make_unique<LayerNorm>(store, name, m.d_model, m.norm_eps, true);
  return std::make_unique<RMSNorm>(store, name, m.d_model, m.norm_eps);
}

}  // namespace

std::unique_ptr<PreNormBlock> PreNormBlock::make(ParamStore& store, const std::string& prefix,
                                                 const ModelConfig& m, const MoeConfig& e,
                                                 bool is_moe, float out_std,
                                                 const MoeRuntime& runtime,
                                                 const BlockStyle& style) {
  auto b = std::make_unique<PreNormBlock>();
  for (Buffer* h : {&b->h_mid_, &b->h_out_, &b->dh_mid_, &b->dh_in_})  // the model's device
    *h = Buffer(store.device());
  b->norm1 = make_norm(store, prefix + style.norm1, m, style.layer_norm);
  b->attn = std::make_unique<SelfAttention>(
      store, prefix + ".attn", m.d_model, m.num_heads, style.causal_rotary, style.causal_rotary,
      m.rope_theta, m.init_std, out_std, runtime.tp(), runtime.sequence_parallel());
  b->norm2 = make_norm(store, prefix + style.norm2, m, style.layer_norm);
  if (is_moe) {
    b->moe = std::make_unique<MoELayer>(store, prefix + ".moe", m.d_model, e, m.init_std,
                                        out_std, runtime);
  } else if (style.gelu_mlp) {
    b->mlp = std::make_unique<GeluMlp>(store, prefix + ".mlp", m.d_model, m.dense_ffn,
                                       m.init_std, out_std, runtime.tp(),
                                       runtime.sequence_parallel());
  } else {
    b->mlp = std::make_unique<SwiGLUMlp>(store, prefix + ".mlp", m.d_model, m.dense_ffn,
                                         m.init_std, out_std, runtime.tp(),
                                         runtime.sequence_parallel());
  }
  return b;
}

std::vector<std::unique_ptr<PreNormBlock>> PreNormBlock::make_stack(ParamStore& store,
                                                                    const ModelConfig& m,
                                                                    const MoeConfig& e,
                                                                    const MoeRuntime& runtime,
                                                                    const BlockStyle& style) {
  // Output projections are scaled down by sqrt(2L): each of the 2L residual branches
  // adds variance to the stream (GPT-2, FLAME-MoE).
  const float out_std = m.init_std / std::sqrt(2.0f * m.num_layers);
  std::vector<std::unique_ptr<PreNormBlock>> blocks;
  for (int l = 0; l < m.num_layers; ++l)
    blocks.push_back(make(store, "layers." + std::to_string(l), m, e, is_moe_block(m, l),
                          out_std, runtime, style));
  return blocks;
}

Tensor PreNormBlock::ffn(Tensor x) { return moe ? moe->forward(x) : mlp->forward(x); }

Tensor PreNormBlock::forward(Tensor x, int64_t batch, int64_t seq, ComponentTimes& t) {
  Tensor mid = h_mid_.view(x.shape);
  {
    ScopedTimer timer(t.attention);
    ops::add(x, attn->forward(norm1->forward(x), batch, seq), mid);
  }
  ScopedTimer timer(moe ? t.moe : t.dense_ffn);
  Tensor out = h_out_.view(x.shape);
  ops::add(mid, ffn(norm2->forward(mid)), out);
  return out;
}

Tensor PreNormBlock::backward(Tensor dh_out, ComponentTimes& t) {
  Tensor dmid = dh_mid_.view(dh_out.shape);
  {
    ScopedTimer timer(moe ? t.moe : t.dense_ffn);
    const Tensor dy = moe ? moe->backward(dh_out) : mlp->backward(dh_out);
    ops::add(dh_out, norm2->backward(dy), dmid);
  }
  ScopedTimer timer(t.attention);
  Tensor din = dh_in_.view(dh_out.shape);
  ops::add(dmid, norm1->backward(attn->backward(dmid)), din);
  return din;
}

Tensor PreNormBlock::forward_cached(Tensor x, std::span<const int32_t> seq,
                                    std::span<const int32_t> pos, KvCache& cache) {
  Tensor mid = h_mid_.view(x.shape);
  ops::add(x, attn->forward_cached(norm1->forward(x), seq, pos, cache), mid);
  Tensor out = h_out_.view(x.shape);
  ops::add(mid, ffn(norm2->forward(mid)), out);
  return out;
}

}  // namespace moe
