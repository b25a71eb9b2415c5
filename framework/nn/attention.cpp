#include "framework/nn/attention.h"

#include "framework/kernels/ops.h"

namespace moe {

SelfAttention::SelfAttention(ParamStore& store, const std::string& prefix,
                             int64_t width, int64_t heads, bool causal, bool rotary,
                             float rope_theta, float init_std, float out_std,
                             Communicator* tp, bool sequence_parallel)
    : qkv_proj_(store, prefix + ".w_qkv", width, 3 * width, Init::normal(init_std), tp,
                /*bias_name=*/"", /*parts=*/3),
      out_proj_(store, prefix + ".w_out", width, width, Init::normal(out_std), tp),
      width_(width),
      local_width_(width / tp_size(tp)),
      heads_(heads / tp_size(tp)),
      head_dim_(heads > 0 ? width / heads : 0),
      causal_(causal),
      rotary_(rotary),
      sequence_parallel_(sequence_parallel && tp_size(tp) > 1),
      split_(sequence_parallel_ ? tp_size(tp) : 1),
      rope_theta_(rope_theta),
      mixed_(qkv_proj_.local().weight().matmul_dtype == DType::kBF16),
      qkv16_(store.device(), DType::kBF16),
      att_(store.device()),
      o_(store.device()),
      dqkv_(store.device()),
      scratch_(store.device()) {
  MOE_CHECK(heads > 0 && width % heads == 0, "SelfAttention ", prefix, ": width ", width,
            " not divisible by ", heads, " heads");
  MOE_CHECK(heads % tp_size(tp) == 0, "SelfAttention ", prefix, ": ", heads,
            " heads not divisible by tp = ", tp_size(tp));
  // Rotate-half pairs element i with i + D/2.
  MOE_CHECK(!rotary || head_dim_ % 2 == 0, "SelfAttention ", prefix,
            ": rotary needs an even head width, got ", head_dim_);
}

void SelfAttention::apply_rotary(Tensor qkv, bool inverse) const {
  // q at column 0, k at column C/tp of each row
  ops::rope_apply(qkv, batch_, heads_, head_dim_, 0, rope_theta_, inverse);
  ops::rope_apply(qkv, batch_, heads_, head_dim_, local_width_, rope_theta_, inverse);
}

Tensor SelfAttention::rounded_operands() {
  Tensor qkv16 = qkv16_.view(qkv_.shape);
  ops::convert(qkv_, qkv16);
  return qkv16;
}

Tensor SelfAttention::forward(Tensor x, int64_t batch, int64_t seq_len) {
  const int64_t split = split_;
  MOE_CHECK(x.rows() * split == batch * seq_len && x.cols() == width_,
            "SelfAttention: input ", x.shape.str(), " is not (", batch, "*", seq_len, "/",
            split, ", ", width_, ")");
  batch_ = batch;
  seq_len_ = seq_len;
  // qkv_proj_ keeps its own output until its next forward, so the rotated q and k can
  // live in that buffer: backward reads them from there.
  qkv_ = sequence_parallel_ ? qkv_proj_.forward_all_gather(x) : qkv_proj_.forward(x);  // (B*T, 3C)
  if (rotary_) apply_rotary(qkv_, /*inverse=*/false);
  Tensor o = o_.view({batch * seq_len, local_width_});
  if (mixed_)
    ops::attention_forward_mixed(rounded_operands(), att_.view({batch, heads_, seq_len, 2}), o,
                                 batch, heads_, causal_);
  else
    ops::attention_forward(qkv_, att_.view({batch, heads_, seq_len, seq_len}), o, batch,
                           heads_, causal_);
  // (B*T, C), summed over the heads of all ranks; sequence parallel: this rank's rows
  return sequence_parallel_ ? out_proj_.forward_reduce_scatter(o)
                            : out_proj_.forward_all_reduce(o);
}

Tensor SelfAttention::backward(Tensor dy) {
  const int64_t split = split_;
  MOE_CHECK(dy.rows() * split == batch_ * seq_len_ && dy.cols() == width_,
            "SelfAttention: gradient shape ", dy.shape.str());
  Tensor d_o = sequence_parallel_ ? out_proj_.backward_all_gather(dy)
                                  : out_proj_.backward(dy);  // (B*T, C)
  Tensor dqkv = dqkv_.view({batch_ * seq_len_, 3 * local_width_});
  if (mixed_) {
    ops::attention_backward_mixed(qkv16_.view_of(qkv_.shape),
                                  att_.view({batch_, heads_, seq_len_, 2}),
                                  o_.view({batch_ * seq_len_, local_width_}), d_o, dqkv, batch_,
                                  heads_, causal_);
  } else {
    const Shape scores{batch_, heads_, seq_len_, seq_len_};
    ops::attention_backward(qkv_, att_.view(scores), d_o, dqkv, scratch_.view(scores), batch_,
                            heads_, causal_);
  }
  // The rotation is orthogonal, so its backward is the inverse rotation.
  if (rotary_) apply_rotary(dqkv, /*inverse=*/true);
  return sequence_parallel_ ? qkv_proj_.backward_reduce_scatter(dqkv)
                            : qkv_proj_.backward_all_reduce(dqkv);  // (B*T, C)
}

}  // namespace moe
