#include "models/vit_moe/vit_moe.h"

#include <cmath>

#include "framework/core/timer.h"
#include "framework/kernels/host_copy.h"
#include "framework/kernels/ops.h"
#include "framework/nn/sequence_parallel.h"

namespace moe {
namespace {

int64_t image_tokens(const ModelConfig& m) {
  const int64_t grid = m.image_size / m.patch_size;
  return grid * grid + (m.pool == PoolKind::kCls ? 1 : 0);
}

PositionEmbedding make_pos_embed(ParamStore& store, const ModelConfig& m) {
  const int64_t grid = m.image_size / m.patch_size, t = image_tokens(m);
  if (m.pos_embed != PosEmbedKind::kSincos)  // auto = learned for ViT
    return PositionEmbedding(store, "pos_embed", t, m.d_model, m.init_std);
  // Fixed table over the patches; the CLS token (row 0) gets a zero position, as in MAE.
  std::vector<float> table = sincos_2d_table(m.d_model, grid, grid);
  if (m.pool == PoolKind::kCls) table.insert(table.begin(), static_cast<size_t>(m.d_model), 0.0f);
  return PositionEmbedding(table, t, m.d_model, store.device());
}

// Pre-LN blocks: h += Attn(LN1(h)); h += FFN(LN2(h)), full attention, the FFN a dense
// GELU MLP or an MoE layer.
constexpr BlockStyle kBlockStyle{.layer_norm = true,
                                 .norm1 = ".norm1",
                                 .norm2 = ".norm2",
                                 .causal_rotary = false,
                                 .gelu_mlp = true};

}  // namespace

VitMoe::VitMoe(const ModelConfig& model, const MoeConfig& moe, ParamStore& store,
               const MoeRuntime& runtime)
    : model_(model),
      moe_cfg_(moe),
      patch_embed_(store, "patch_embed", model.image_channels, model.image_size,
                   model.patch_size, model.d_model),
      cls_(model.pool == PoolKind::kCls
               ? std::make_unique<ClsToken>(store, "cls_token", model.d_model, model.init_std)
               : nullptr),
      pos_(make_pos_embed(store, model)),
      final_norm_(store, "final_norm", model.d_model, model.norm_eps, /*affine=*/true),
      pool_(model.pool == PoolKind::kCls ? TokenPool::Mode::kCls : TokenPool::Mode::kMean,
            store.device()),
      // A zero head starts every class at the same logit (loss ln(classes)), as in ViT.
      head_(store, "head.weight", model.d_model, model.num_classes, Init::zeros(),
            "head.bias"),
      tp_(runtime.tp()),
      sequence_parallel_(runtime.sequence_parallel() && tp_size(runtime.tp()) > 1),
      losses_(store.device()),
      dlogits_(store.device()),
      images_(store.device()) {
  blocks_ = PreNormBlock::make_stack(store, model, moe, runtime, kBlockStyle);
  // The embeddings are computed whole but only this rank's rows go on, so their
  // gradients, like the norms' and routers', come from its rows; the head sees the
  // gathered rows on every rank.
  if (sequence_parallel_) mark_sequence_parallel(store, {"head."});
}

VitMoe::~VitMoe() = default;

int64_t VitMoe::tokens_per_image() const { return image_tokens(model_); }

Tensor VitMoe::embed_and_blocks(const float* images, int64_t batch) {
  batch_ = batch;
  const int64_t c = model_.image_channels, s = model_.image_size;
  Tensor h;
  {
    ScopedTimer timer(times_.embed);
    // the host's batch, copied once to the model's device
    const Tensor x = ops::to_device(Tensor(const_cast<float*>(images), Shape{batch, c, s, s}),
                                    images_.device(), images_);
    h = patch_embed_.forward(x);  // (B*P, C)
    if (cls_) h = cls_->forward(h, batch);
    h = pos_.forward(h);  // (B*T, C)
    if (sequence_parallel_) h = local_rows(tp_, h);  // (B*T/tp, C)
  }
  for (auto& block : blocks_) h = block->forward(h, batch, tokens_per_image(), times_);
  ScopedTimer timer(times_.head);
  Tensor hn = final_norm_.forward(h);
  if (sequence_parallel_) hn = all_gather_rows(tp_, hn, gathered_);  // (B*T, C)
  logits_ = head_.forward(pool_.forward(hn, batch));  // (B, classes)
  return logits_;
}

Tensor VitMoe::predict(const float* images, int64_t batch) {
  return ops::to_host(embed_and_blocks(images, batch), logits_host_);
}

LossParts VitMoe::forward(const float* images, const int32_t* labels, int64_t batch) {
  embed_and_blocks(images, batch);
  labels_.assign(labels, labels + batch);
  const int64_t classes = model_.num_classes;
  ScopedTimer timer(times_.head);
  Tensor losses = losses_.view({batch});
  Tensor dlogits = dlogits_.view({batch, classes});
  ops::cross_entropy(logits_, labels_, losses, dlogits, 1.0f / static_cast<float>(batch));
  losses = ops::to_host(losses, losses_host_);  // the loss scalars the host reports
  double ce = 0.0;
  for (int64_t i = 0; i < batch; ++i) ce += losses[i];
  return loss_parts(ce / static_cast<double>(batch), moe_layers());
}

void VitMoe::backward() {
  Tensor dh;
  {
    ScopedTimer timer(times_.head);
    const Tensor dlogits = dlogits_.view_of({batch_, model_.num_classes});
    dh = pool_.backward(head_.backward(dlogits));  // (B*T, C), the same on every tp rank
    if (sequence_parallel_) dh = local_rows(tp_, dh);
    dh = final_norm_.backward(dh);
  }
  for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it) dh = (*it)->backward(dh, times_);
  ScopedTimer timer(times_.embed);
  // other ranks' rows carry no gradient here: theirs is summed in the gradient sync
  if (sequence_parallel_) dh = scatter_rows_zero(tp_, dh, batch_ * tokens_per_image(), dh_full_);
  dh = pos_.backward(dh);
  if (cls_) dh = cls_->backward(dh);
  patch_embed_.backward(dh);
}

std::vector<MoELayer*> VitMoe::moe_layers() { return moe_layers_of(blocks_); }

std::vector<int> VitMoe::moe_layer_blocks() const { return moe_block_indices(blocks_); }

double VitMoe::train_flops_per_token() const {
  const double c = model_.d_model, t = static_cast<double>(tokens_per_image());
  const double patches = t - (cls_ ? 1.0 : 0.0);
  const double pixels = static_cast<double>(model_.image_channels) * model_.patch_size *
                        model_.patch_size;
  const double expert_mats = moe_cfg_.expert_act == ExpertActivation::kGelu ? 2.0 : 3.0;
  // Multiply-adds per token in the forward pass.
  double macs = c * pixels * patches / t;  // patch embedding
  for (int l = 0; l < model_.num_layers; ++l) {
    macs += 4.0 * c * c + 2.0 * c * t;  // projections; QK^T and PV over all T keys
    if (is_moe_block(model_, l))
      macs += c * moe_cfg_.num_experts +
              expert_mats * c * moe_cfg_.expert_ffn * moe_cfg_.top_k +
              expert_mats * c * moe_cfg_.shared_ffn * moe_cfg_.num_shared;
    else
      macs += 2.0 * c * model_.dense_ffn;  // GELU MLP
  }
  macs += c * model_.num_classes / t;  // head, once per image
  return 3.0 * 2.0 * macs;
}

}  // namespace moe
