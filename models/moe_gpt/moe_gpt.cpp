#include "models/moe_gpt/moe_gpt.h"

#include <cmath>

#include "framework/core/timer.h"
#include "framework/kernels/ops.h"
#include "framework/nn/sequence_parallel.h"

namespace moe {
namespace {

// Pre-norm blocks: h += Attn(RMSNorm(h)); h += FFN(RMSNorm(h)), causal rotary attention,
// the FFN a dense SwiGLU or an MoE layer.
constexpr BlockStyle kBlockStyle{.layer_norm = false,
                                 .norm1 = ".attn_norm.weight",
                                 .norm2 = ".ffn_norm.weight",
                                 .causal_rotary = true,
                                 .gelu_mlp = false};

}  // namespace

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
  blocks_ = PreNormBlock::make_stack(store, model, moe, runtime, kBlockStyle);
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
  double ce = 0.0;
  for (int64_t i = 0; i < n; ++i) ce += losses[i];
  return loss_parts(ce / static_cast<double>(n), moe_layers());
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

Tensor MoeGpt::decode(std::span<const int32_t> ids, std::span<const int32_t> seq,
                      std::span<const int32_t> pos, std::span<KvCache> caches) {
  MOE_CHECK(caches.size() == blocks_.size(), "MoeGpt::decode: ", caches.size(),
            " caches for ", blocks_.size(), " blocks");
  for (int32_t id : ids)
    MOE_CHECK(id >= 0 && id < model_.vocab_size, "MoeGpt::decode: token ", id,
              " outside the vocabulary of ", model_.vocab_size);
  const int64_t n = static_cast<int64_t>(ids.size());
  Tensor h = embed_.forward_all_reduce(ids.data(), n);  // (N, C)
  for (size_t l = 0; l < blocks_.size(); ++l) h = blocks_[l]->forward_cached(h, seq, pos, caches[l]);
  return lm_head_.logits(final_norm_.forward(h));  // (N, V)
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
