#pragma once
// ViT-MoE (model.family = vit_moe), V-MoE / ViMoE style; docs/image-models.md is the
// spec and tests/reference/image_ref.py an independent PyTorch implementation.
//
//   tokens = PatchEmbed(x)                          (B*P, C), P = (H/p)^2
//   h_0    = [cls | tokens] + pos                   (B*T, C), T = P + 1 (pool = cls)
//            tokens + pos                           T = P (pool = gap)
//   for l < L:  h += Attn(LN1(h));  h += FFN_l(LN2(h))
//               bidirectional attention; FFN_l a GELU MLP, or an MoE layer when
//               is_moe_block(l) (top-K, capacity, optional BPR and shared expert)
//   f      = pool(LN_f(h))                          (B, C): CLS token or token mean
//   logits = f W_head^T + b_head                    (B, classes), W_head zeros
//   loss   = mean_b CE(logits_b, y_b) + sum over MoE layers of (aux + z)
//
// Tensor parallelism (runtime.tp()): attention split by heads, dense and shared FFNs by
// hidden units. The patch embedding, CLS token, positions, norms and the head stay
// replicated: they act on pixels, one row per image or C-vectors, and a 10-class head
// is too small to split (docs/parallelism.md). With runtime.sequence_parallel() the
// blocks work on this tp rank's B*T/tp rows (a block may start mid-image): the
// embeddings are computed whole and each rank continues with its rows, and the final
// norm's rows are all-gathered before pooling and the head; the embedding, norm and
// router parameters are marked sequence-parallel, the head is not.

#include <memory>
#include <string>
#include <vector>

#include "framework/config/config.h"
#include "framework/moe/moe_layer.h"
#include "framework/nn/attention.h"
#include "framework/nn/layernorm.h"
#include "framework/nn/linear.h"
#include "framework/nn/mlp.h"
#include "framework/nn/patch_embed.h"
#include "framework/nn/pos_embed.h"
#include "framework/nn/tokens.h"
#include "models/model.h"
#include "models/prenorm_block.h"

namespace moe {

class VitMoe final : public Network, public ImageClassifier {
 public:
  VitMoe(const ModelConfig& model, const MoeConfig& moe, ParamStore& store,
         const MoeRuntime& runtime);
  ~VitMoe() override;

  // images (B, Cin, H, W), labels (B) in [0, classes). Keeps what backward needs.
  LossParts forward(const float* images, const int32_t* labels, int64_t batch);
  // Logits only (evaluation, classification of samples): (B, classes).
  Tensor predict(const float* images, int64_t batch) override;
  // Gradients of the last forward's total loss.
  void backward();

  Tensor logits() const { return logits_; }  // (B, classes) of the last forward
  std::vector<MoELayer*> moe_layers() override;
  std::vector<int> moe_layer_blocks() const override;
  int64_t tokens_per_image() const;  // T
  double train_flops_per_token() const override;
  ComponentTimes& times() override { return times_; }

 private:
  Tensor embed_and_blocks(const float* images, int64_t batch);

  ModelConfig model_;
  MoeConfig moe_cfg_;
  PatchEmbed patch_embed_;
  std::unique_ptr<ClsToken> cls_;  // pool = cls
  PositionEmbedding pos_;
  std::vector<std::unique_ptr<PreNormBlock>> blocks_;
  LayerNorm final_norm_;
  TokenPool pool_;
  Linear head_;
  Communicator* tp_;
  bool sequence_parallel_;
  Buffer gathered_, dh_full_;     // sequence parallel: (B*T, C) all rows, dh of all rows
  int64_t batch_ = 0;
  Tensor logits_;
  std::vector<int32_t> labels_;   // (B)
  Buffer losses_, dlogits_;       // (B), (B, classes)
  Buffer images_;                 // (B, Cin, H, W) the batch on a device model's device
  Buffer losses_host_, logits_host_;  // (B), (B, classes) their host copies
  ComponentTimes times_;
};

}  // namespace moe
