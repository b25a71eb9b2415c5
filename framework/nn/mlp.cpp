#include "framework/nn/mlp.h"

#include "framework/kernels/ops.h"

namespace moe {

SwiGLUMlp::SwiGLUMlp(ParamStore& store, const std::string& prefix, int64_t width,
                     int64_t hidden, float init_std, float out_std, Communicator* tp)
    : tp_(tp),
      gate_(store, prefix + ".w_gate", width, hidden, Init::normal(init_std), tp),
      up_(store, prefix + ".w_up", width, hidden, Init::normal(init_std), tp),
      down_(store, prefix + ".w_down", hidden, width, Init::normal(out_std), tp) {}

Tensor SwiGLUMlp::forward(Tensor x) {
  // g and u stay valid until the next forward: they are views of gate_/up_'s outputs.
  g_ = gate_.forward(x);  // (N, F)
  u_ = up_.forward(x);    // (N, F)
  Tensor h = h_.view(g_.shape);
  cpu::swiglu_forward(g_.data, u_.data, h.data, h.numel());  // h = silu(g) * u
  return down_.forward_all_reduce(h);                        // (N, C)
}

Tensor SwiGLUMlp::backward(Tensor dy) {
  Tensor dh = down_.backward(dy);  // (N, F)
  Tensor dg = dg_.view(g_.shape);
  Tensor du = du_.view(u_.shape);
  cpu::swiglu_backward(g_.data, u_.data, dh.data, dg.data, du.data, dh.numel());
  // x feeds both projections, so its gradient is the sum of the two paths; on each
  // rank the sum of its shares, then one all-reduce over tp.
  Tensor dx_gate = gate_.local().backward(dg);  // (N, C), a view of gate_'s dx
  Tensor dx_up = up_.local().backward(du);      // (N, C), a view of up_'s dx
  Tensor dx = dx_.view(dx_gate.shape);
  const int64_t n = dx.numel();
  for (int64_t i = 0; i < n; ++i) dx[i] = dx_gate[i] + dx_up[i];
  all_reduce_tp(tp_, dx);
  return dx;
}

GeluMlp::GeluMlp(ParamStore& store, const std::string& prefix, int64_t width,
                 int64_t hidden, float init_std, float out_std, Communicator* tp)
    : fc1_(store, prefix + ".w_fc1", width, hidden, Init::normal(init_std), tp),
      fc2_(store, prefix + ".w_fc2", hidden, width, Init::normal(out_std), tp) {}

Tensor GeluMlp::forward(Tensor x) {
  pre_ = fc1_.forward(x);  // (N, F)
  Tensor a = a_.view(pre_.shape);
  cpu::gelu_forward(pre_.data, a.data, a.numel());
  return fc2_.forward_all_reduce(a);  // (N, C)
}

Tensor GeluMlp::backward(Tensor dy) {
  Tensor da = fc2_.backward(dy);  // (N, F) gradient w.r.t. the gelu output
  Tensor dpre = da_.view(pre_.shape);
  cpu::gelu_backward(pre_.data, da.data, dpre.data, dpre.numel());
  return fc1_.backward_all_reduce(dpre);  // (N, C)
}

}  // namespace moe
