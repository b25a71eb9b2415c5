#pragma once
// Multi-head self-attention without biases (docs/architecture.md):
//   qkv = x W_qkv^T          W_qkv (3C, C), rows [q | k | v], each H heads of D rows
//   q, k <- RoPE(q), RoPE(k)  rotate-half form, position t within the sequence (optional)
//   o = softmax(q k^T / sqrt(D) [+ causal mask]) v, heads concatenated -> (N, C)
//   y = o W_out^T            W_out (C, C)
// Parameters: <prefix>.w_qkv, <prefix>.w_out. See framework/nn/linear.h for the
// layer conventions.

#include <string>

#include "framework/nn/linear.h"

namespace moe {

class SelfAttention {
 public:
  // init_std for W_qkv, out_std for W_out (the output projection, σ/√(2L) in GPT).
  SelfAttention(ParamStore& store, const std::string& prefix, int64_t width,
                int64_t heads, bool causal, bool rotary, float rope_theta,
                float init_std, float out_std);

  // x (B*T, C), B sequences of T tokens -> y (B*T, C)
  Tensor forward(Tensor x, int64_t batch, int64_t seq_len);
  // dy (B*T, C) -> dx (B*T, C); dW_qkv, dW_out += ...
  Tensor backward(Tensor dy);

  int64_t width() const { return width_; }
  int64_t heads() const { return heads_; }

 private:
  // In place on the q and k blocks of rows of width 3C (one (b, t) per row).
  void apply_rotary(float* qkv, bool inverse) const;

  Linear qkv_proj_, out_proj_;
  int64_t width_, heads_, head_dim_;  // C, H, D = C / H
  bool causal_, rotary_;
  float rope_theta_;
  int64_t batch_ = 0, seq_len_ = 0;  // B, T of the last forward
  Tensor qkv_;                       // (B, T, 3, H, D) rotated q, k and v for backward
  Buffer att_;                       // (B, H, T, T) softmax probabilities
  Buffer o_;                         // (B*T, C) attention output, heads concatenated
  Buffer dqkv_;                      // (B*T, 3C)
  Buffer scratch_;                   // (B, H, T, T) for attention_backward
};

}  // namespace moe
