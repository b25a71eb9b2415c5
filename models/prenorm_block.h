#pragma once
// One pre-norm transformer block, the block of the language model (RMSNorm, causal
// rotary attention, SwiGLU) and of the ViT (LayerNorm, full attention, GELU):
//
//   h   = x + Attn(norm1(x))                      (N, C)
//   out = h + FFN(norm2(h))                       FFN: a dense MLP, or an MoE layer
//
// Its parts are built by the model (their parameter names are the model's) and owned
// here. Layer conventions as in framework/nn/linear.h: forward keeps views of what
// backward needs; x stays alive (its owner is the previous block) until backward.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "framework/config/config.h"
#include "framework/moe/moe_layer.h"
#include "framework/nn/attention.h"
#include "framework/nn/kv_cache.h"
#include "framework/nn/mlp.h"
#include "framework/nn/norm.h"
#include "models/model.h"

namespace moe {

// What differs between the families' blocks.
struct BlockStyle {
  bool layer_norm;           // affine LayerNorm (ViT) instead of RMSNorm (LM)
  const char* norm1;         // the norms' names under the block's prefix
  const char* norm2;
  bool causal_rotary;        // causal attention with rotary positions (LM), else full
  bool gelu_mlp;             // a dense FFN of GELU (ViT) instead of SwiGLU (LM)
};

struct PreNormBlock {
  std::unique_ptr<Norm> norm1;
  std::unique_ptr<SelfAttention> attn;
  std::unique_ptr<Norm> norm2;
  std::unique_ptr<Mlp> mlp;       // dense blocks
  std::unique_ptr<MoELayer> moe;  // MoE blocks

  // Block `prefix` ("layers.3") of a model: its parameters registered in `store` in the
  // order norm1, attention (<prefix>.attn), norm2, FFN (<prefix>.moe when is_moe, else
  // <prefix>.mlp); output projections initialised with out_std.
  static std::unique_ptr<PreNormBlock> make(ParamStore& store, const std::string& prefix,
                                            const ModelConfig& m, const MoeConfig& e,
                                            bool is_moe, float out_std,
                                            const MoeRuntime& runtime, const BlockStyle& style);
  // The model.num_layers blocks "layers.0", "layers.1", ... (MoE where is_moe_block
  // says), output projections N(0, init_std / sqrt(2L)).
  static std::vector<std::unique_ptr<PreNormBlock>> make_stack(ParamStore& store,
                                                               const ModelConfig& m,
                                                               const MoeConfig& e,
                                                               const MoeRuntime& runtime,
                                                               const BlockStyle& style);

  // x (N, C) rows of `batch` sequences of `seq` positions (the attention's view; under
  // sequence parallelism x holds this rank's N/tp rows). t: the block's time split.
  Tensor forward(Tensor x, int64_t batch, int64_t seq, ComponentTimes& t);
  Tensor backward(Tensor dh_out, ComponentTimes& t);  // dh_out (N, C) -> dx (N, C)
  // Inference over a KV cache (SelfAttention::forward_cached): row i of x is position
  // pos[i] of sequence seq[i]. No backward.
  Tensor forward_cached(Tensor x, std::span<const int32_t> seq, std::span<const int32_t> pos,
                        KvCache& cache);

 private:
  Tensor ffn(Tensor x);  // the MLP's or the MoE layer's forward
  Buffer h_mid_, h_out_, dh_mid_, dh_in_;  // (N, C)
};

}  // namespace moe
