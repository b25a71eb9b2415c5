#pragma once
// A moe_gpt checkpoint or weights file as a Hugging Face model directory (moe-ckpt
// export PATH --format hf --out DIR), which `transformers` loads with
// AutoModelForCausalLM.from_pretrained(DIR) as Qwen2-MoE (model_type qwen2_moe,
// Qwen2MoeForCausalLM), an existing architecture with the parts of ours: pre-norm
// RMSNorm, rotate-half RoPE, SwiGLU, softmax top-k routing (optionally renormalised:
// norm_topk_prob), a shared expert and dense first layers (mlp_only_layers).
//
// The directory holds
//   config.json             the Qwen2-MoE config of the model's options
//   model.safetensors       float32 weights under Qwen2-MoE's names
//   tokenizer.json          a byte-level tokenizer: token id b is byte b (tokenizers'
//   tokenizer_config.json   ByteLevel alphabet, no merges), for AutoTokenizer; written
//                           when model.vocab_size >= 256 (ids >= 256 become special
//                           tokens <|token_N|>)
//
// The mapping is exact, conventions included (docs/checkpoint-format.md, "Hugging Face
// export"): q/k/v get zero biases (Qwen2 has them, we do not); the shared expert's
// output passes Qwen2-MoE's gate sigmoid(x . g), so g = 0 and a doubled down projection
// give 0.5 * 2 W_down h = our ungated shared expert, exactly in floating point (powers
// of two); a model without shared experts gets an all-zero shared expert of width 1.
// Options with no exact counterpart are refused with a user error naming the option:
// moe.expert_act = gelu, moe.routing = bilevel, moe.bias_balance, moe.max_nodes_per_token.
// Qwen2-MoE is dropless: with moe.capacity_factor > 0 the export succeeds and the result
// notes that the exported model does not drop tokens (like moe-generate). Every tensor's
// checksum is checked on the way; the directory is written under a temporary name and
// renamed when complete, and an existing one is never overwritten.

#include <string>

#include "framework/checkpoint/export.h"
#include "framework/checkpoint/inspect.h"

namespace moe {

ExportResult export_hugging_face(const H5File& source, const CheckpointSummary& summary,
                                 const std::string& out_dir);

}  // namespace moe
