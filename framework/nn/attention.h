#pragma once
// Multi-head self-attention without biases (docs/architecture.md):
//   qkv = x W_qkv^T          W_qkv (3, C, C): [q | k | v], each H heads of D rows
//   q, k <- RoPE(q), RoPE(k)  rotate-half form, position t within the sequence (optional)
//   o = softmax(q k^T / sqrt(D) [+ causal mask]) v, heads concatenated -> (N, C)
//   y = o W_out^T            W_out (C, C)
// Parameters: <prefix>.w_qkv, <prefix>.w_out. See framework/nn/linear.h for the
// layer conventions.
//
// Tensor parallelism (a tp group, framework/nn/tp_linear.h): the heads are split over
// the tp ranks. W_qkv is column-parallel in three parts, so rank r holds the q, k and v
// rows of heads [r H/tp, (r+1) H/tp) and attends with them alone; W_out is
// row-parallel over the same columns. x and y are the same on every tp rank; forward
// all-reduces y over tp once, backward all-reduces dx once. With sequence_parallel x
// and y are this rank's rows (B*T/tp, C) (framework/nn/sequence_parallel.h): forward
// all-gathers x and reduce-scatters y, backward all-gathers dy and reduce-scatters dx.
//
// Mixed precision (the weights' Param::matmul_dtype is bf16): the projections multiply
// by bf16 copies (framework/nn/linear.h), and after the rotation q, k and v are rounded
// to bf16 once, kept so for backward, for the attention's own products
// (ops::attention_forward_mixed); scores and softmax stay fp32, and instead of the
// (B, H, T, T) probabilities only each query row's softmax maximum and 1 / sum are kept.

#include <span>
#include <string>

#include "framework/nn/kv_cache.h"
#include "framework/nn/tp_linear.h"

namespace moe {

class SelfAttention {
 public:
  // init_std for W_qkv, out_std for W_out (the output projection, σ/√(2L) in GPT).
  SelfAttention(ParamStore& store, const std::string& prefix, int64_t width,
                int64_t heads, bool causal, bool rotary, float rope_theta,
                float init_std, float out_std, Communicator* tp = nullptr,
                bool sequence_parallel = false);

  // x (B*T, C), B sequences of T tokens -> y (B*T, C); sequence parallel: this rank's
  // rows of x and y, (B*T/tp, C)
  Tensor forward(Tensor x, int64_t batch, int64_t seq_len);
  // dy (B*T, C) -> dx (B*T, C); dW_qkv, dW_out += ... (sequence parallel: (B*T/tp, C))
  Tensor backward(Tensor dy);

  // Incremental decoding (framework/nn/attention_cached.cpp), causal, one process (no tp):
  // x (N, C) holds new tokens, row i of sequence seq[i] at position pos[i]. Their k and v
  // go into `cache` (in row order), then row i attends to positions 0..pos[i] of its
  // sequence: a prompt's rows in one call, or one row per sequence per generated token.
  // y (N, C) equals forward's rows for the same tokens. Keeps nothing for backward.
  Tensor forward_cached(Tensor x, std::span<const int32_t> seq, std::span<const int32_t> pos,
                        KvCache& cache);

  int64_t width() const { return width_; }
  int64_t heads() const { return heads_; }  // on this rank: H / tp

 private:
  // In place on the q and k blocks of rows of width 3C/tp (one (b, t) per row).
  void apply_rotary(Tensor qkv, bool inverse) const;  // (B*T, 3C/tp)
  // Mixed precision: the rotated qkv_ rounded to bf16 into qkv16_, kept for backward.
  Tensor rounded_operands();

  ColumnParallelLinear qkv_proj_;
  RowParallelLinear out_proj_;
  int64_t width_, local_width_;     // C; C/tp on this rank
  int64_t heads_, head_dim_;        // H/tp on this rank; D = C / H
  bool causal_, rotary_;
  bool sequence_parallel_;
  int64_t split_;                   // tp under sequence parallelism, else 1
  float rope_theta_;
  int64_t batch_ = 0, seq_len_ = 0;  // B, T of the last forward
  // H, C below are this rank's H/tp heads and C/tp columns
  bool mixed_;                       // bf16 products (mixed precision)
  Tensor qkv_;                       // (B, T, 3, H, D) rotated q, k and v for backward
  Buffer qkv16_;                     // mixed precision: bf16(qkv_), kept instead
  Buffer att_;                       // (B, H, T, T) softmax probabilities; mixed: (B, H, T, 2)
  Buffer o_;                         // (B*T, C) attention output, heads concatenated
  Buffer dqkv_;                      // (B*T, 3C)
  Buffer scratch_;                   // (B, H, T, T) for attention_backward (fp32 only)
};

}  // namespace moe
