#pragma once
// Feed-forward blocks.
//   SwiGLUMlp: y = W_down (silu(W_gate x) * (W_up x)); W_gate, W_up (F, C), W_down (C, F)
//   GeluMlp:   y = W_fc2 gelu(W_fc1 x);              W_fc1 (F, C), W_fc2 (C, F)
// Parameter names: <prefix>.w_gate / .w_up / .w_down and <prefix>.w_fc1 / .w_fc2.
// Inputs and outputs are (N, C); see framework/nn/linear.h for the layer conventions.
//
// Tensor parallelism (a tp group, framework/nn/tp_linear.h): the hidden units are split
// over the tp ranks. The first projections (W_gate and W_up, W_fc1) are column-parallel,
// the activation is local to a rank's F/tp units, W_down (W_fc2) is row-parallel.
// x and y are the same on every tp rank; forward all-reduces y once, backward dx once.
// With sequence_parallel x and y are this rank's rows (N/tp, C): forward all-gathers x
// once and reduce-scatters y, backward all-gathers dy and reduce-scatters dx
// (framework/nn/sequence_parallel.h).

#include <string>

#include "framework/nn/tp_linear.h"

namespace moe {

// The interface both share, so that a dense FFN or a shared expert can be either.
class Mlp {
 public:
  virtual ~Mlp() = default;
  virtual Tensor forward(Tensor x) = 0;    // (N, C) -> (N, C)
  virtual Tensor backward(Tensor dy) = 0;  // (N, C) -> (N, C)
};

class SwiGLUMlp final : public Mlp {
 public:
  // init_std for W_gate and W_up, out_std for W_down (the output projection).
  SwiGLUMlp(ParamStore& store, const std::string& prefix, int64_t width, int64_t hidden,
            float init_std, float out_std, Communicator* tp = nullptr,
            bool sequence_parallel = false);
  Tensor forward(Tensor x) override;    // (N, C) -> (N, C)
  Tensor backward(Tensor dy) override;  // (N, C) -> (N, C)

 private:
  Communicator* tp_;
  bool sequence_parallel_;
  ColumnParallelLinear gate_, up_;
  RowParallelLinear down_;
  Tensor g_, u_;             // (N, F/tp) views of gate_/up_ outputs, kept for backward
  Buffer h_, dg_, du_, dx_;  // (N, F/tp) hidden and gradients; dx (N, C)
  Buffer x_all_, dx_mine_;   // sequence parallel: gathered x (N, C); dx (N/tp, C)
};

class GeluMlp final : public Mlp {
 public:
  GeluMlp(ParamStore& store, const std::string& prefix, int64_t width, int64_t hidden,
          float init_std, float out_std, Communicator* tp = nullptr,
          bool sequence_parallel = false);
  Tensor forward(Tensor x) override;
  Tensor backward(Tensor dy) override;

 private:
  bool sequence_parallel_;
  ColumnParallelLinear fc1_;
  RowParallelLinear fc2_;
  Tensor pre_;     // (N, F/tp) view of fc1_'s output (pre-activation), kept for backward
  Buffer a_, da_;  // (N, F/tp) gelu output; gradient w.r.t. the pre-activation
};

}  // namespace moe
