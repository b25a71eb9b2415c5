#pragma once
// The MoE language model (model.family = moe_gpt): pre-norm decoder, RMSNorm, rotary
// causal attention, first `dense_layers` layers with a dense SwiGLU FFN, the rest MoE,
// untied embedding and LM head. docs/architecture.md is the spec; tests/reference/
// holds an independent PyTorch implementation that must agree with this one.
//
// Tensor parallelism (runtime.tp(), docs/parallelism.md): attention split by heads, the
// dense and shared SwiGLU FFNs by hidden units, the embedding and LM head by vocabulary
// with a vocabulary-parallel cross-entropy; norms, router and routed experts see the
// whole (replicated) residual stream. With runtime.sequence_parallel() they see this tp
// rank's B*T/tp rows instead: the embedding reduce-scatters, every block works on its
// rows (framework/nn/sequence_parallel.h), and the final norm's rows are all-gathered
// before the LM head (Megatron-LM); norms and routers are marked sequence-parallel.

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "framework/config/config.h"
#include "framework/moe/moe_layer.h"
#include "framework/nn/rmsnorm.h"
#include "framework/nn/vocab_parallel.h"
#include "models/model.h"
#include "models/prenorm_block.h"

namespace moe {

class MoeGpt final : public Network {
 public:
  MoeGpt(const ModelConfig& model, const MoeConfig& moe, ParamStore& store,
         const MoeRuntime& runtime);
  ~MoeGpt() override;

  // inputs, targets (B, T) int32. Keeps what backward needs.
  LossParts forward(const int32_t* inputs, const int32_t* targets, int64_t batch);
  // The cross-entropy of every token of the last forward, (B * T).
  std::span<const float> token_losses() const {
    return {losses_.data(), static_cast<size_t>(losses_.size())};
  }
  // Gradients of the last forward's total loss, accumulated into the ParamStore.
  void backward();
  // Incremental decoding on one process (models/moe_gpt/generate.h): logits (N, V) of N
  // new tokens, row i token ids[i] of sequence seq[i] at position pos[i], over one KV
  // cache per block (caches[l] of block l) holding the positions before it.
  Tensor decode(std::span<const int32_t> ids, std::span<const int32_t> seq,
                std::span<const int32_t> pos, std::span<KvCache> caches);

  std::vector<MoELayer*> moe_layers() override;
  std::vector<int> moe_layer_blocks() const override;
  // Model FLOPs of one training step per token: 3x the forward matmul FLOPs of the
  // parameters a token uses (K routed + shared experts, router, attention projections,
  // dense FFN, LM head) plus causal attention (average context (T+1)/2).
  double train_flops_per_token() const override;
  ComponentTimes& times() override { return times_; }

 private:
  ModelConfig model_;
  MoeConfig moe_cfg_;
  VocabParallelEmbedding embed_;
  std::vector<std::unique_ptr<PreNormBlock>> blocks_;
  RMSNorm final_norm_;
  VocabParallelHead lm_head_;
  Communicator* tp_;
  bool sequence_parallel_;
  Buffer gathered_;               // (N, C) final-norm rows of every tp rank
  int64_t batch_ = 0;
  std::vector<int32_t> targets_;  // (B, T) of the last forward
  Buffer losses_;                 // (N)
  ComponentTimes times_;
};

}  // namespace moe
