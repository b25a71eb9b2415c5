#pragma once
// Network: a family's transformer without its data (what a tool that loads weights
// needs); Model: the family as the trainer sees it, the network with its data, loss and
// evaluation metrics, behind one interface so that one training loop trains them all.
// The families register both with models/registry.h.
//
// A step is load_train_batch(step, dp_rank, dp_size) -> forward() -> backward(): the
// global batch of a step is a pure function of (train.seed, step) and each data-parallel
// rank loads its slice (DESIGN decision 3). Evaluation is split the same way and
// returns additive sums, so that the trainer can sum them over ranks before
// eval_metrics() turns them into the family's metrics. Nothing here communicates.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/config/config.h"
#include "framework/moe/moe_layer.h"
#include "framework/tensor/param_store.h"

namespace moe {

struct LossParts {
  double total = 0.0;  // main + aux + z: what backward differentiates
  double ce = 0.0;     // the main loss: cross-entropy (moe_gpt, vit_moe) or the
                       // diffusion MSE (dit_moe)
  double aux = 0.0;    // Switch balance loss, summed over MoE layers
  double z = 0.0;      // router z-loss, summed over MoE layers
};

// The parts of a forward's loss: the family's main loss and the aux and z losses of its
// MoE layers, summed over the layers.
inline LossParts loss_parts(double main, const std::vector<MoELayer*>& layers) {
  LossParts parts;
  parts.ce = main;
  for (const MoELayer* layer : layers) {
    parts.aux += layer->aux_loss();
    parts.z += layer->z_loss();
  }
  parts.total = parts.ce + parts.aux + parts.z;
  return parts;
}

// Seconds spent per component, accumulated over forward and backward.
struct ComponentTimes {
  double embed = 0, attention = 0, dense_ffn = 0, moe = 0, head = 0;
  void clear() { *this = ComponentTimes{}; }
};

// True when block l of a model with this config has an MoE FFN: l >= dense_layers and
// (l - dense_layers + 1) is a multiple of moe_every (1: every later block; 2: every
// other one, ending with the last when the count works out, as in V-MoE).
inline bool is_moe_block(const ModelConfig& m, int layer) {
  return layer >= m.dense_layers && (layer - m.dense_layers + 1) % m.moe_every == 0;
}

// The MoE layers of a model's blocks in block order, and the index of each one's block.
// Every family's Block holds `std::unique_ptr<MoELayer> moe`, null in dense blocks.
template <class Block>
std::vector<MoELayer*> moe_layers_of(const std::vector<std::unique_ptr<Block>>& blocks) {
  std::vector<MoELayer*> layers;
  for (const auto& block : blocks)
    if (block->moe) layers.push_back(block->moe.get());
  return layers;
}
template <class Block>
std::vector<int> moe_block_indices(const std::vector<std::unique_ptr<Block>>& blocks) {
  std::vector<int> indices;
  for (size_t l = 0; l < blocks.size(); ++l)
    if (blocks[l]->moe) indices.push_back(static_cast<int>(l));
  return indices;
}

// The transformer of a family: its MoE layers (for telemetry, router biases and
// checkpoints), its FLOPs and its time split.
class Network {
 public:
  virtual ~Network() = default;
  virtual std::vector<MoELayer*> moe_layers() = 0;
  // Block index of each of moe_layers(), for telemetry and checkpoint names.
  virtual std::vector<int> moe_layer_blocks() const = 0;
  // Model FLOPs of one training step per token (3x the forward matmul FLOPs).
  virtual double train_flops_per_token() const = 0;
  virtual ComponentTimes& times() = 0;
};

// A network that classifies images (ViT-MoE): logits (B, classes) of images (B, Cin,
// H, W), normalised like its training data.
class ImageClassifier {
 public:
  virtual ~ImageClassifier() = default;
  virtual Tensor predict(const float* images, int64_t batch) = 0;
};

// A network that generates class-conditional images (DiT-MoE with the sampler of its
// config): one image per label, (n, Cin, H, W) normalised like the training data, from
// noise drawn with `seed`; on_step(step, t) after each model evaluation, while the MoE
// layers hold that forward's load.
class ImageGenerator {
 public:
  virtual ~ImageGenerator() = default;
  virtual std::vector<float> generate(std::span<const int32_t> labels, uint64_t seed,
                                      const std::function<void(int, double)>& on_step) = 0;
  virtual std::string sampler_name() const = 0;  // e.g. "ddim"
};

// A network run incrementally over KV caches (text generation): each call takes N new
// tokens, row i token ids[i] of sequence seq[i] at position pos[i] (the positions before
// it in that sequence already cached, a sequence's rows in increasing positions), and
// returns their logits (N, V).
class TokenDecoder {
 public:
  virtual ~TokenDecoder() = default;
  virtual void reset(int64_t sequences) = 0;  // empty caches for `sequences` sequences
  virtual Tensor forward(std::span<const int32_t> ids, std::span<const int32_t> seq,
                         std::span<const int32_t> pos) = 0;
  virtual int64_t vocab_size() const = 0;
  virtual ParamStore& store() = 0;  // its weights and state buffers, to load them
};

// A picture of what the model does now, for TensorBoard at evaluations.
struct PreviewImage {
  std::string tag;              // e.g. "samples"
  int64_t width = 0, height = 0;
  std::vector<uint8_t> pixels;  // (height, width) grey, row-major
};

class Model {
 public:
  virtual ~Model() = default;

  // Loads this rank's slice of the global training batch of `step`.
  virtual void load_train_batch(int64_t step, int dp_rank, int dp_size) = 0;
  // Loss of the loaded batch; keeps what backward needs.
  virtual LossParts forward() = 0;
  // Gradients of the last forward's total loss, accumulated into the ParamStore.
  virtual void backward() = 0;

  // Additive evaluation sums of this rank's share of the evaluation set.
  virtual std::vector<double> evaluate(int dp_rank, int dp_size) = 0;
  // The family's metrics from the sums over all ranks, e.g. {"val_loss", "val_bpb"}.
  virtual nlohmann::json eval_metrics(std::span<const double> sums) const = 0;

  virtual Network& network() = 0;
  // The family's preview at an evaluation (dit_moe: a grid of samples), or none.
  // Collective like forward: every rank calls it with the same result on rank 0.
  virtual std::optional<PreviewImage> preview_image() { return std::nullopt; }
};

}  // namespace moe
