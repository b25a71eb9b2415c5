#pragma once
// DiT-MoE (model.family = dit_moe): a class-conditional diffusion transformer with
// adaLN-Zero blocks whose FFNs are MoE layers; docs/image-models.md is the spec and
// tests/reference/image_ref.py an independent PyTorch implementation.
//
//   h_0  = PatchEmbed(x_t) + pos_sincos                (B*P, C)
//   c    = TimestepEmbedder(t) + y_embed[y]            (B, C), y = classes: the null class
//   s    = SiLU(c)
//   for l < L:
//     (shift1, scale1, gate1, shift2, scale2, gate2) = adaLN_l(s)   (B, 6C), zero-init
//     h += gate1 * Attn(LN(h) (1 + scale1) + shift1)                LN without affine
//     h += gate2 * FFN_l(LN(h) (1 + scale2) + shift2)               MoE when is_moe_block
//   (shift, scale) = adaLN_f(s)                                      (B, 2C), zero-init
//   out  = unpatchify(Linear_f(LN(h) (1 + scale) + shift))          (B, Cin, H, W), zero-init
//
// The prediction is epsilon (ddpm) or the velocity eps - x0 (rectified_flow); the loss
// is the mean squared error over all B*Cin*H*W outputs plus the MoE layers' aux + z.
//
// Tensor parallelism (runtime.tp()): attention split by heads, dense and shared FFNs by
// hidden units. The embedders, the adaLN modulations (one (B, 6C) row per image, not
// per token) and the final layer stay replicated (docs/parallelism.md).
// With runtime.sequence_parallel() each tp rank keeps whole images: the B/tp images
// [r B/tp, (r+1) B/tp) of its dp slice (their patches are its B*P/tp rows). The
// embedders and modulations are computed for the whole batch but only the rank's
// images go on, through the blocks, the final layer and the loss (whose squared-error
// sum is all-reduced over tp); every replicated parameter then gets its gradient from
// this rank's images only and is marked sequence-parallel. forward's prediction holds
// this rank's images only.

#include <memory>
#include <string>
#include <vector>

#include "framework/config/config.h"
#include "framework/moe/moe_layer.h"
#include "framework/nn/embedding.h"
#include "framework/nn/layernorm.h"
#include "framework/nn/linear.h"
#include "framework/nn/patch_embed.h"
#include "framework/nn/pos_embed.h"
#include "framework/nn/timestep_embed.h"
#include "models/model.h"

namespace moe {

// The DiT output layer: adaLN (shift, scale) modulation of a plain LayerNorm, then a
// linear map of each token to its patch's p*p*Cout pixels; both linears zero-init.
//   <prefix>.adaln.weight (2C, C), .adaln.bias; <prefix>.linear.weight (p*p*Cout, C), .bias
class DitFinalLayer {
 public:
  DitFinalLayer(ParamStore& store, const std::string& prefix, int64_t width,
                int64_t patch_pixels, float norm_eps);
  // h (B*T, C), s = SiLU(c) (B, C) -> (B*T, p*p*Cout)
  Tensor forward(Tensor h, Tensor s, int64_t batch);
  // dy (B*T, p*p*Cout) -> dh (B*T, C); ds (B, C) is accumulated (+=)
  Tensor backward(Tensor dy, Tensor ds);  // ds (B, C) accumulates

 private:
  LayerNorm norm_;
  Linear adaln_, linear_;
  int64_t width_, batch_ = 0, tokens_ = 0;
  Tensor mod_;                       // (B, 2C) view of adaln_'s output
  Tensor normed_;                    // (B*T, C) view of norm_'s output
  Buffer modulated_, dmod_, dnorm_;  // (B*T, C), (B, 2C), (B*T, C)
};

class DitMoe : public Network {
 public:
  DitMoe(const ModelConfig& model, const MoeConfig& moe, ParamStore& store,
         const MoeRuntime& runtime);
  ~DitMoe() override;

  // x (B, Cin, H, W) noisy images; t (B) timesteps as fed to the embedder (DDPM step
  // index, or 1000 * t for rectified flow); y (B) labels in [0, classes], classes being
  // the null class. Returns the prediction (B, Cin, H, W); keeps what backward needs.
  Tensor forward(const float* x, const float* t, const int32_t* y, int64_t batch);
  // forward's prediction of all `batch` images on every rank, for sampling: under
  // sequence parallelism the tp ranks' images are all-gathered (the batch padded with
  // copies of its last image to a multiple of tp). In host memory. Not for training (no
  // backward).
  Tensor predict(const float* x, const float* t, const int32_t* y, int64_t batch);
  // Loss of the last forward against `target` (B, Cin, H, W): mean squared error over
  // the first `images` images of the batch (all when negative; evaluation pads the last
  // batch), plus the MoE layers' aux + z. Prepares backward().
  LossParts loss(const float* target, int64_t images = -1);
  // Gradients of the last loss().
  void backward();

  std::vector<MoELayer*> moe_layers() override;
  std::vector<int> moe_layer_blocks() const override;
  int64_t tokens_per_image() const;  // P
  int64_t null_class() const { return model_.num_classes; }
  double train_flops_per_token() const override;
  ComponentTimes& times() override { return times_; }

 private:
  struct Block;

  ModelConfig model_;
  MoeConfig moe_cfg_;
  PatchEmbed patch_embed_;
  PositionEmbedding pos_;
  TimestepEmbedder t_embed_;
  Embedding y_embed_;  // (classes + 1, C): the last row is the null class
  std::vector<std::unique_ptr<Block>> blocks_;
  DitFinalLayer final_;
  Communicator* tp_;
  bool sequence_parallel_;
  int64_t batch_ = 0;
  int64_t first_image_ = 0, local_batch_ = 0;  // this rank's images [first, first + local)
  Tensor pred_;                         // (B, Cin, H, W) of the last forward
  Buffer c_, s_, ds_, dc_, pred_buf_, dpred_, dout_;  // (B, C) x4; (B,Cin,H,W) x2; (B*P, pp Cout)
  Buffer dh_full_;                                   // sequence parallel: (B*P, C)
  Buffer pred_all_;                                  // predict: (B, Cin, H, W) gathered
  // (B, Cin, H, W) x2 the host's noisy images and targets on the model's device; the
  // prediction's host copy (predict)
  Buffer images_, target_, pred_host_;
  ComponentTimes times_;
};

}  // namespace moe
