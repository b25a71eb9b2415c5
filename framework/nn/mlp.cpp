#include "framework/nn/mlp.h"

#include "framework/kernels/ops.h"
#include "framework/nn/sequence_parallel.h"

namespace moe {

SwiGLUMlp::SwiGLUMlp(ParamStore& store, const std::string& prefix, int64_t width,
                     int64_t hidden, float init_std, float out_std, Communicator* tp,
                     bool sequence_parallel)
    : tp_(tp),
      sequence_parallel_(sequence_parallel && tp_size(tp) > 1),
      gate_(store, prefix + ".w_gate", width, hidden, Init::normal(init_std), tp),
      up_(store, prefix + ".w_up", width, hidden, Init::normal(init_std), tp),
      down_(store, prefix + ".w_down", hidden, width, Init::normal(out_std), tp),
      h_(store.device()),
      dg_(store.device()),
      du_(store.device()),
      dx_(store.device()),
      x_all_(store.device()),
      dx_mine_(store.device()) {}

Tensor SwiGLUMlp::forward(Tensor x) {
  // Both projections read the same rows: one all-gather for the two.
  if (sequence_parallel_) x = all_gather_rows(tp_, x, x_all_);
  // g and u stay valid until the next forward: they are views of gate_/up_'s outputs.
  g_ = gate_.forward(x);  // (N, F)
  u_ = up_.forward(x);    // (N, F)
  Tensor h = h_.view(g_.shape);
  ops::swiglu_forward(g_, u_, h);  // h = silu(g) * u
  return sequence_parallel_ ? down_.forward_reduce_scatter(h)  // (N/tp, C)
                            : down_.forward_all_reduce(h);     // (N, C)
}

Tensor SwiGLUMlp::backward(Tensor dy) {
  Tensor dh = sequence_parallel_ ? down_.backward_all_gather(dy) : down_.backward(dy);  // (N, F)
  Tensor dg = dg_.view(g_.shape);
  Tensor du = du_.view(u_.shape);
  ops::swiglu_backward(g_, u_, dh, dg, du);
  // x feeds both projections, so its gradient is the sum of the two paths; on each
  // rank the sum of its shares, then one all-reduce (or reduce-scatter) over tp.
  Tensor dx_gate = gate_.local().backward(dg);  // (N, C), a view of gate_'s dx
  Tensor dx_up = up_.local().backward(du);      // (N, C), a view of up_'s dx
  Tensor dx = dx_.view(dx_gate.shape);
  ops::add(dx_gate, dx_up, dx);
  if (sequence_parallel_) return reduce_scatter_rows(tp_, dx, dx_mine_);
  all_reduce_tp(tp_, dx);
  return dx;
}

GeluMlp::GeluMlp(ParamStore& store, const std::string& prefix, int64_t width,
                 int64_t hidden, float init_std, float out_std, Communicator* tp,
                 bool sequence_parallel)
    : sequence_parallel_(sequence_parallel && tp_size(tp) > 1),
      fc1_(store, prefix + ".w_fc1", width, hidden, Init::normal(init_std), tp),
      fc2_(store, prefix + ".w_fc2", hidden, width, Init::normal(out_std), tp),
      a_(store.device()),
      da_(store.device()) {}

Tensor GeluMlp::forward(Tensor x) {
  pre_ = sequence_parallel_ ? fc1_.forward_all_gather(x) : fc1_.forward(x);  // (N, F)
  Tensor a = a_.view(pre_.shape);
  ops::gelu_forward(pre_, a);
  return sequence_parallel_ ? fc2_.forward_reduce_scatter(a)  // (N/tp, C)
                            : fc2_.forward_all_reduce(a);     // (N, C)
}

Tensor GeluMlp::backward(Tensor dy) {
  // (N, F) gradient w.r.t. the gelu output
  Tensor da = sequence_parallel_ ? fc2_.backward_all_gather(dy) : fc2_.backward(dy);
  Tensor dpre = da_.view(pre_.shape);
  ops::gelu_backward(pre_, da, dpre);
  return sequence_parallel_ ? fc1_.backward_reduce_scatter(dpre)  // (N/tp, C)
                            : fc1_.backward_all_reduce(dpre);     // (N, C)
}

}  // namespace moe
