#include "models/dit_moe/dit_moe.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "framework/core/timer.h"
#include "framework/kernels/host_copy.h"
#include "framework/kernels/ops.h"
#include "framework/nn/attention.h"
#include "framework/nn/mlp.h"
#include "framework/nn/sequence_parallel.h"

namespace moe {
namespace {

PositionEmbedding make_pos_embed(ParamStore& store, const ModelConfig& m) {
  const int64_t grid = m.image_size / m.patch_size;
  if (m.pos_embed == PosEmbedKind::kLearned)
    return PositionEmbedding(store, "pos_embed", grid * grid, m.d_model, m.init_std);
  return PositionEmbedding(sincos_2d_table(m.d_model, grid, grid), grid * grid, m.d_model,
                           store.device());
}

int64_t patch_pixels(const ModelConfig& m) {
  return int64_t{m.patch_size} * m.patch_size * m.image_channels;
}

}  // namespace

DitFinalLayer::DitFinalLayer(ParamStore& store, const std::string& prefix, int64_t width,
                             int64_t patch_pixels, float norm_eps)
    : norm_(store, prefix + ".norm", width, norm_eps, /*affine=*/false),
      adaln_(store, prefix + ".adaln.weight", width, 2 * width, Init::zeros(),
             prefix + ".adaln.bias"),
      linear_(store, prefix + ".linear.weight", width, patch_pixels, Init::zeros(),
              prefix + ".linear.bias"),
      width_(width),
      modulated_(store.device()),
      dmod_(store.device()),
      dnorm_(store.device()) {}

Tensor DitFinalLayer::forward(Tensor h, Tensor s, int64_t batch) {
  batch_ = batch;
  tokens_ = h.rows() / batch;
  mod_ = adaln_.forward(s);  // (B, 2C): [shift | scale]
  normed_ = norm_.forward(h);
  Tensor m = modulated_.view(h.shape);
  ops::modulate_forward(normed_, mod_, 0, 1, m);
  return linear_.forward(m);
}

Tensor DitFinalLayer::backward(Tensor dy, Tensor ds) {
  const Tensor dm = linear_.backward(dy);  // (B*T, C)
  Tensor dmod = dmod_.view({batch_, 2 * width_});
  dmod_.zero();
  Tensor dn = dnorm_.view(dm.shape);
  ops::modulate_backward(normed_, mod_, 0, 1, dm, dn, dmod);
  ops::axpy(1.0f, adaln_.backward(dmod), ds);
  return norm_.backward(dn);
}

// One adaLN-Zero block. mod = adaln(s) (B, 6C) holds, per image, the chunks
// [shift1 | scale1 | gate1 | shift2 | scale2 | gate2] of C floats each.
struct DitMoe::Block {
  LayerNorm norm1, norm2;  // no affine: adaLN modulates
  SelfAttention attn;
  Linear adaln;                   // C -> 6C, zero-init
  std::unique_ptr<Mlp> mlp;       // dense blocks
  std::unique_ptr<MoELayer> moe;  // MoE blocks
  int64_t width, batch = 0, tokens = 0;
  int64_t image_split;            // tp under sequence parallelism: attention sees tp x batch
  Tensor mod, n1, n2, a, f;       // views kept for backward: (B,6C), (N,C) x4
  Buffer m1, m2, h_mid, h_out;    // (N, C)
  Buffer dmod, dn, dmid, dh_in, dbranch;  // (B, 6C), (N, C) x4

  Block(ParamStore& store, const std::string& prefix, const ModelConfig& m,
        const MoeConfig& e, bool is_moe, float out_std, const MoeRuntime& runtime)
      : norm1(store, prefix + ".norm1", m.d_model, m.norm_eps, /*affine=*/false),
        norm2(store, prefix + ".norm2", m.d_model, m.norm_eps, /*affine=*/false),
        attn(store, prefix + ".attn", m.d_model, m.num_heads, /*causal=*/false,
             /*rotary=*/false, m.rope_theta, m.init_std, out_std, runtime.tp(),
             runtime.sequence_parallel()),
        adaln(store, prefix + ".adaln.weight", m.d_model, 6 * m.d_model, Init::zeros(),
              prefix + ".adaln.bias"),
        width(m.d_model),
        image_split(runtime.sequence_parallel() ? tp_size(runtime.tp()) : 1) {
    for (Buffer* b : {&m1, &m2, &h_mid, &h_out, &dmod, &dn, &dmid, &dh_in, &dbranch})
      *b = Buffer(store.device());  // the model's device
    if (is_moe)
      moe = std::make_unique<MoELayer>(store, prefix + ".moe", m.d_model, e, m.init_std,
                                       out_std, runtime);
    else
      mlp = std::make_unique<SwiGLUMlp>(store, prefix + ".mlp", m.d_model, m.dense_ffn,
                                        m.init_std, out_std, runtime.tp(),
                                        runtime.sequence_parallel());
  }

  Tensor forward(Tensor x, Tensor s, ComponentTimes& t) {
    tokens = x.rows() / s.rows();
    batch = s.rows();
    Tensor mid = h_mid.view(x.shape);
    {
      ScopedTimer timer(t.attention);
      mod = adaln.forward(s);
      n1 = norm1.forward(x);
      Tensor mod1 = m1.view(x.shape);
      ops::modulate_forward(n1, mod, 0, 1, mod1);
      a = attn.forward(mod1, batch * image_split, tokens);  // it gathers every rank's images
      ops::gated_add_forward(x, mod, 2, a, mid);
    }
    ScopedTimer timer(moe ? t.moe : t.dense_ffn);
    n2 = norm2.forward(mid);
    Tensor mod2 = m2.view(x.shape);
    ops::modulate_forward(n2, mod, 3, 4, mod2);
    f = moe ? moe->forward(mod2) : mlp->forward(mod2);
    Tensor out = h_out.view(x.shape);
    ops::gated_add_forward(mid, mod, 5, f, out);
    return out;
  }

  // dh_out (N, C) -> dh_in (N, C); ds (B, C) += the gradient through adaln.
  Tensor backward(Tensor dh_out, Tensor ds, ComponentTimes& t) {
    Tensor dm = dmod.view({batch, 6 * width});
    dmod.zero();
    Tensor branch = dbranch.view(dh_out.shape);
    Tensor dnorm = dn.view(dh_out.shape);
    Tensor d_mid = dmid.view(dh_out.shape);
    {
      ScopedTimer timer(moe ? t.moe : t.dense_ffn);
      ops::gated_add_backward(mod, 5, f, dh_out, branch, dm);
      const Tensor dm2 = moe ? moe->backward(branch) : mlp->backward(branch);
      ops::modulate_backward(n2, mod, 3, 4, dm2, dnorm, dm);
      ops::add(dh_out, norm2.backward(dnorm), d_mid);
    }
    ScopedTimer timer(t.attention);
    ops::gated_add_backward(mod, 2, a, d_mid, branch, dm);
    const Tensor dm1 = attn.backward(branch);
    ops::modulate_backward(n1, mod, 0, 1, dm1, dnorm, dm);
    Tensor din = dh_in.view(dh_out.shape);
    ops::add(d_mid, norm1.backward(dnorm), din);
    ops::axpy(1.0f, adaln.backward(dm), ds);
    return din;
  }
};

DitMoe::DitMoe(const ModelConfig& model, const MoeConfig& moe, ParamStore& store,
               const MoeRuntime& runtime)
    : model_(model),
      moe_cfg_(moe),
      patch_embed_(store, "patch_embed", model.image_channels, model.image_size,
                   model.patch_size, model.d_model),
      pos_(make_pos_embed(store, model)),
      t_embed_(store, "t_embed", model.d_model, model.init_std),
      y_embed_(store, "y_embed.weight", model.num_classes + 1, model.d_model,
               Init::normal(model.init_std)),
      final_(store, "final", model.d_model, patch_pixels(model), model.norm_eps),
      tp_(runtime.tp()),
      sequence_parallel_(runtime.sequence_parallel() && tp_size(runtime.tp()) > 1) {
  for (Buffer* b : {&c_, &s_, &ds_, &dc_, &pred_buf_, &dpred_, &dout_, &images_, &target_})
    *b = Buffer(store.device());  // the model's device
  const float out_std = model.init_std / std::sqrt(2.0f * model.num_layers);
  for (int l = 0; l < model.num_layers; ++l)
    blocks_.push_back(std::make_unique<Block>(store, "layers." + std::to_string(l), model,
                                              moe, is_moe_block(model, l), out_std,
                                              runtime));
  if (sequence_parallel_) mark_sequence_parallel(store, {});
}

DitMoe::~DitMoe() = default;

int64_t DitMoe::tokens_per_image() const {
  const int64_t grid = model_.image_size / model_.patch_size;
  return grid * grid;
}

Tensor DitMoe::forward(const float* x, const float* t, const int32_t* y, int64_t batch) {
  batch_ = batch;
  const int64_t ch = model_.image_channels, size = model_.image_size, c = model_.d_model;
  Tensor h, s;
  {
    ScopedTimer timer(times_.embed);
    // the host's noisy images, copied once to the model's device
    const Tensor images = ops::to_device(
        Tensor(const_cast<float*>(x), Shape{batch, ch, size, size}), images_.device(), images_);
    h = pos_.forward(patch_embed_.forward(images));  // (B*P, C)
    const Tensor te = t_embed_.forward(t, batch);                       // (B, C)
    const Tensor ye = y_embed_.forward(y, batch);                       // (B, C)
    Tensor cond = c_.view({batch, c});
    ops::add(te, ye, cond);
    s = s_.view({batch, c});
    ops::silu_forward(cond, s);
  }
  // This rank's images: all of them, or its B/tp under sequence parallelism.
  const RowRange images = sequence_parallel_ ? sequence_rows(batch, tp_) : RowRange{0, batch};
  first_image_ = images.begin;
  local_batch_ = images.size();
  if (sequence_parallel_) {
    h = local_rows(tp_, h);  // (B*P/tp, C)
    s = local_rows(tp_, s);  // (B/tp, C)
  }
  for (auto& block : blocks_) h = block->forward(h, s, times_);
  ScopedTimer timer(times_.head);
  const Tensor out = final_.forward(h, s, local_batch_);  // (B*P, p*p*Cout)
  pred_ = pred_buf_.view({local_batch_, ch, size, size});
  ops::unpatchify(out, pred_, model_.patch_size);
  return pred_;
}

Tensor DitMoe::predict(const float* x, const float* t, const int32_t* y, int64_t batch) {
  if (!sequence_parallel_) return ops::to_host(forward(x, t, y, batch), pred_host_);
  const int64_t d = int64_t{model_.image_channels} * model_.image_size * model_.image_size;
  const int64_t split = tp_size(tp_), padded = (batch + split - 1) / split * split;
  std::vector<float> xs(x, x + batch * d), ts(t, t + batch);
  std::vector<int32_t> ys(y, y + batch);
  for (int64_t i = batch; i < padded; ++i) {  // copies of the last image
    xs.insert(xs.end(), x + (batch - 1) * d, x + batch * d);
    ts.push_back(t[batch - 1]);
    ys.push_back(y[batch - 1]);
  }
  const Tensor mine = forward(xs.data(), ts.data(), ys.data(), padded);  // (padded/tp, ...)
  const Tensor all = all_gather_rows(tp_, Tensor(mine.data, {local_batch_, d}), pred_all_);
  return ops::to_host(
      all.reshaped({batch, model_.image_channels, model_.image_size, model_.image_size}),
      pred_host_);
}

LossParts DitMoe::loss(const float* target, int64_t images) {
  ScopedTimer timer(times_.head);
  if (images < 0) images = batch_;
  const int64_t per_image = pred_.numel() / local_batch_, n = per_image * images;
  // This rank's images that count: its rows [first_image_, first_image_ + local_batch_)
  // up to row `images` of the batch.
  const int64_t mine = per_image * std::clamp<int64_t>(images - first_image_, 0, local_batch_);
  target += per_image * first_image_;
  Tensor dpred = dpred_.view(pred_.shape);
  if (mine < pred_.numel()) dpred_.zero();  // rows that do not count have no gradient
  const float scale = n > 0 ? 2.0f / static_cast<float>(n) : 0.0f;
  // d mean((pred - target)^2) / d pred over the counted elements; the host's targets go
  // to the model's device first
  const Tensor counted = ops::to_device(Tensor(const_cast<float*>(target), Shape{mine}),
                                        target_.device(), target_);
  double sum = ops::squared_error(pred_.reshaped({pred_.numel()}).slice_rows(0, mine), counted,
                                  dpred.reshaped({pred_.numel()}).slice_rows(0, mine), scale);
  if (sequence_parallel_) tp_->all_reduce<double>({&sum, 1});
  return loss_parts(n > 0 ? sum / static_cast<double>(n) : 0.0, moe_layers());
}

void DitMoe::backward() {
  const int64_t c = model_.d_model;
  Tensor ds = ds_.view({batch_, c});
  ds_.zero();
  Tensor dh;
  {
    ScopedTimer timer(times_.head);
    Tensor dout = dout_.view({local_batch_ * tokens_per_image(), patch_pixels(model_)});
    // unpatchify is a permutation: its backward is patchify
    ops::patchify(dpred_.view(pred_.shape), dout, model_.patch_size);
    dh = final_.backward(dout, ds.slice_rows(first_image_, local_batch_));
  }
  // Other ranks' images keep zero gradients here: theirs come in the gradient sync.
  for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it)
    dh = (*it)->backward(dh, ds.slice_rows(first_image_, local_batch_), times_);
  ScopedTimer timer(times_.embed);
  if (sequence_parallel_)
    dh = scatter_rows_zero(tp_, dh, batch_ * tokens_per_image(), dh_full_);
  patch_embed_.backward(pos_.backward(dh));
  Tensor dc = dc_.view({batch_, c});
  ops::silu_backward(c_.view({batch_, c}), ds, dc);
  t_embed_.backward(dc);
  y_embed_.backward(dc);
}

std::vector<MoELayer*> DitMoe::moe_layers() { return moe_layers_of(blocks_); }

std::vector<int> DitMoe::moe_layer_blocks() const { return moe_block_indices(blocks_); }

double DitMoe::train_flops_per_token() const {
  const double c = model_.d_model, t = static_cast<double>(tokens_per_image());
  const double pixels = static_cast<double>(patch_pixels(model_));
  const double expert_mats = moe_cfg_.expert_act == ExpertActivation::kGelu ? 2.0 : 3.0;
  // Multiply-adds per token in the forward pass; per-image work (conditioning, adaLN)
  // divided by the T tokens of an image.
  double macs = 2.0 * c * pixels;                                  // patch embed + final
  macs += (2.0 * TimestepEmbedder::kFrequencies * c + c * c) / t;  // timestep MLP
  macs += 2.0 * c * c / t;                                         // final adaLN
  for (int l = 0; l < model_.num_layers; ++l) {
    macs += 4.0 * c * c + 2.0 * c * t + 6.0 * c * c / t;  // attention, adaLN
    if (is_moe_block(model_, l))
      macs += c * moe_cfg_.num_experts +
              expert_mats * c * moe_cfg_.expert_ffn * moe_cfg_.top_k +
              expert_mats * c * moe_cfg_.shared_ffn * moe_cfg_.num_shared;
    else
      macs += 3.0 * c * model_.dense_ffn;
  }
  return 3.0 * 2.0 * macs;
}

}  // namespace moe
