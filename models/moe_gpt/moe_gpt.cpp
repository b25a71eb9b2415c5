#include "models/moe_gpt/moe_gpt.h"

#include <cmath>

#include "framework/core/timer.h"
#include "framework/kernels/ops.h"
#include "framework/nn/sequence_parallel.h"

namespace moe {
// One pre-norm block: h += Attn(RMSNorm(h)); h += FFN(RMSNorm(h)).
struct MoeGpt::Block {
  RMSNorm attn_norm;
  SelfAttention attn;
  RMSNorm ffn_norm;
  std::unique_ptr<SwiGLUMlp> mlp;  // dense layers
  std::unique_ptr<MoELayer> moe;   // MoE layers
  Buffer h_mid, h_out;             // (N, C) residual stream after attention / FFN
  Buffer dh_mid, dh_in;            // (N, C)
  Tensor h_in;                     // (N, C) input, owned by the previous block

  Block(ParamStore& store, const std::string& prefix, const ModelConfig& m,
        const MoeConfig& e, bool is_moe, float out_std, const MoeRuntime& runtime)
      : attn_norm(store, prefix + ".attn_norm.weight", m.d_model, m.norm_eps),
        attn(store, prefix + ".attn", m.d_model, m.num_heads, /*causal=*/true,
             /*rotary=*/true, m.rope_theta, m.init_std, out_std, runtime.tp(),
             runtime.sequence_parallel()),
        ffn_norm(store, prefix + ".ffn_norm.weight", m.d_model, m.norm_eps) {
    if (is_moe)
      moe = std::make_unique<MoELayer>(store, prefix + ".moe", m.d_model, e, m.init_std,
                                       out_std, runtime);
    else
      mlp = std::make_unique<SwiGLUMlp>(store, prefix + ".mlp", m.d_model, m.dense_ffn,
                                        m.init_std, out_std, runtime.tp(),
                                        runtime.sequence_parallel());
  }

  Tensor forward(Tensor x, int64_t batch, int64_t seq, ComponentTimes& t) {
    h_in = x;
    Tensor mid = h_mid.view(x.shape);
    {
      ScopedTimer timer(t.attention);
      Tensor a = attn.forward(attn_norm.forward(x), batch, seq);
      ops::add(x, a, mid);
    }
    Tensor out = h_out.view(x.shape);
    ScopedTimer timer(moe ? t.moe : t.dense_ffn);
    Tensor f = ffn_norm.forward(mid);
    Tensor y = moe ? moe->forward(f) : mlp->forward(f);
    ops::add(mid, y, out);
    return out;
  }

  Tensor backward(Tensor dh_out, ComponentTimes& t) {
    Tensor dmid = dh_mid.view(dh_out.shape);
    {
      ScopedTimer timer(moe ? t.moe : t.dense_ffn);
      Tensor dy = moe ? moe->backward(dh_out) : mlp->backward(dh_out);
      ops::add(dh_out, ffn_norm.backward(dy), dmid);
    }
    ScopedTimer timer(t.attention);
    Tensor din = dh_in.view(dh_out.shape);
    Tensor da = attn_norm.backward(attn.backward(dmid));
    ops::add(dmid, da, din);
    return din;
  }
};

MoeGpt::MoeGpt(const ModelConfig& model, const MoeConfig& moe, ParamStore& store,
               const MoeRuntime& runtime)
    : model_(model),
      moe_cfg_(moe),
      embed_(store, "embed.weight", model.vocab_size, model.d_model,
             Init::normal(model.init_std), runtime.tp()),
      final_norm_(store, "final_norm.weight", model.d_model, model.norm_eps),
      lm_head_(store, "lm_head.weight", model.d_model, model.vocab_size,
               Init::normal(model.init_std), runtime.tp()),
      tp_(runtime.tp()),
      sequence_parallel_(runtime.sequence_parallel() && tp_size(runtime.tp()) > 1) {
  // Output projections are scaled down by sqrt(2L): each of the 2L residual branches
  // adds variance to the stream (GPT-2, FLAME-MoE).
  const float out_std = model.init_std / std::sqrt(2.0f * model.num_layers);
  for (int l = 0; l < model.num_layers; ++l)
    blocks_.push_back(std::make_unique<Block>(store, "layers." + std::to_string(l), model,
                                              moe, is_moe_block(model, l), out_std,
                                              runtime));
  // Norms and routers act on this rank's rows; embedding and head are vocabulary blocks.
  if (sequence_parallel_) mark_sequence_parallel(store, {});
}

MoeGpt::~MoeGpt() = default;

LossParts MoeGpt::forward(const int32_t* inputs, const int32_t* targets, int64_t batch) {
  const int64_t seq = model_.seq_len, n = batch * seq;
  batch_ = batch;
  targets_.assign(targets, targets + n);
  Tensor h;
  {
    ScopedTimer timer(times_.embed);
    h = sequence_parallel_ ? embed_.forward_reduce_scatter(inputs, n)  // (N/tp, C)
                           : embed_.forward_all_reduce(inputs, n);     // (N, C)
  }
  for (auto& block : blocks_) h = block->forward(h, batch, seq, times_);

  ScopedTimer timer(times_.head);
  Tensor losses = losses_.view({n});
  // The gradient of the mean loss is computed with the loss, while logits are hot.
  Tensor hn = final_norm_.forward(h);
  if (sequence_parallel_) hn = all_gather_rows(tp_, hn, gathered_);  // (N, C)
  lm_head_.forward_loss_all_reduce(hn, targets_.data(),
                                   1.0f / static_cast<float>(n), losses.data);
  LossParts parts;
  for (int64_t i = 0; i < n; ++i) parts.ce += losses[i];
  parts.ce /= static_cast<double>(n);
  for (auto& block : blocks_) {
    if (!block->moe) continue;
    parts.aux += block->moe->aux_loss();
    parts.z += block->moe->z_loss();
  }
  parts.total = parts.ce + parts.aux + parts.z;
  return parts;
}

void MoeGpt::backward() {
  Tensor dh;
  {
    ScopedTimer timer(times_.head);
    dh = final_norm_.backward(sequence_parallel_ ? lm_head_.backward_reduce_scatter()
                                                 : lm_head_.backward_all_reduce());
  }
  for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it) dh = (*it)->backward(dh, times_);
  ScopedTimer timer(times_.embed);
  if (sequence_parallel_)
    embed_.backward_all_gather(dh);
  else
    embed_.backward(dh);
}

std::vector<MoELayer*> MoeGpt::moe_layers() { return moe_layers_of(blocks_); }

std::vector<int> MoeGpt::moe_layer_blocks() const { return moe_block_indices(blocks_); }

double MoeGpt::train_flops_per_token() const {
  const double c = model_.d_model, seq = model_.seq_len;
  int moe_layers = 0;
  for (int l = 0; l < model_.num_layers; ++l) moe_layers += is_moe_block(model_, l);
  const int dense_layers = model_.num_layers - moe_layers;
  // Multiply-adds per token in the forward pass.
  double macs = 4.0 * c * c * model_.num_layers;                      // qkv + out
  macs += c * (seq + 1.0) * model_.num_layers;                        // QK^T and PV, causal
  macs += 3.0 * c * model_.dense_ffn * dense_layers;                  // dense SwiGLU
  macs += moe_layers * (c * moe_cfg_.num_experts                      // router
                        + 3.0 * c * moe_cfg_.expert_ffn * moe_cfg_.top_k
                        + 3.0 * c * moe_cfg_.shared_ffn * moe_cfg_.num_shared);
  macs += c * model_.vocab_size;                                      // LM head
  return 3.0 * 2.0 * macs;  // 2 FLOPs per MAC; backward = 2x forward
}

}  // namespace moe
