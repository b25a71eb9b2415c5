#pragma once
// ParamStore: every trainable parameter of a model, by global name.
//
// A parameter has a global name ("layers.3.moe.experts.w_up"), a logical (unsharded)
// shape, a parallel annotation and an initialiser. On a given rank it holds the local
// block [offset, offset + local_shape) of the logical tensor along each dimension;
// with no parallelism local == logical. Checkpoints store logical tensors, so any
// layout can load any checkpoint.
//
// Initial values are a pure function of (seed, name, logical element index): a
// parameter sharded over 8 ranks gets exactly the values of the unsharded one.

#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "framework/tensor/tensor.h"

namespace moe {

// How a parameter is laid out over ranks.
enum class Shard : uint8_t {
  kReplicated,  // full copy on every rank (norms, router, dense layers without tp)
  kTpColumn,    // split along the output dim over tp ranks
  kTpRow,       // split along the input dim over tp ranks
  kVocab,       // embedding / head split along the vocabulary over tp ranks
  kExpert,      // leading expert axis split over ep ranks
  // An expert FFN's weights: the expert axis over ep ranks and the hidden axis F over
  // etp ranks (Megatron's column/row split inside each expert).
  kExpertColumn,  // (E, F, C) first projections: F is the output dim
  kExpertRow,     // (E, C, F) down projection: F is the input dim
};
const char* shard_name(Shard s);
// Any of the expert kinds: the parameter's gradients are reduced over edp.
inline bool is_expert_shard(Shard s) {
  return s == Shard::kExpert || s == Shard::kExpertColumn || s == Shard::kExpertRow;
}

struct Init {
  enum Kind : uint8_t { kNormal, kZeros, kOnes } kind = kNormal;
  float std = 0.02f;
  static Init normal(float std) { return {kNormal, std}; }
  static Init zeros() { return {kZeros, 0.0f}; }
  static Init ones() { return {kOnes, 0.0f}; }
};

struct ParamSpec {
  std::string name;
  Shape shape;  // logical, unsharded
  Shard shard = Shard::kReplicated;
  Init init;
  bool weight_decay = true;  // AdamW decays matrices only: false for norms, biases
  // A replicated parameter that acts on this rank's rows of a sequence-parallel region
  // (framework/nn/sequence_parallel.h): its gradient is this rank's share, summed over
  // the tp group before the data-parallel mean (GradSync).
  bool sequence_parallel = false;
};

struct Param {
  ParamSpec spec;
  Shape local_shape;
  std::array<int64_t, Shape::kMaxDims> offset{};  // start of the local block, per dim
  Buffer value;
  Buffer grad;
  // The dtype the matrix products of its layer take: fp32, or bf16 under mixed
  // precision (train.precision), when the layer multiplies by a bf16 copy of the value.
  // value, grad and the optimizer state stay fp32 either way.
  DType matmul_dtype = DType::kF32;

  // Views of the local block's values and gradients (local_shape).
  Tensor data() const { return value.view_of(local_shape); }
  Tensor dgrad() const { return grad.view_of(local_shape); }
  int64_t numel() const { return local_shape.numel(); }
};

// Layer state that is not trained but that checkpoints keep (the router's selection bias
// of aux-loss-free balancing): named like a parameter ("layers.3.moe.router.bias"),
// the same on every rank, fp32, zeros at registration, never touched by the optimizer.
struct StateBuffer {
  std::string name;
  Shape shape;
  Buffer value;
  // Absent from a checkpoint (one written without the option that adds it): read as
  // zeros instead of refused.
  bool optional = false;

  std::span<float> values() { return {value.data(), static_cast<size_t>(shape.numel())}; }
};

class ParamStore {
 public:
  // Registers a parameter held whole on this rank; returns a stable reference.
  Param& add(ParamSpec spec);
  // Registers the block [offset, offset + local_shape) of a sharded parameter.
  Param& add_shard(ParamSpec spec, Shape local_shape,
                   std::array<int64_t, Shape::kMaxDims> offset);

  // The Param::matmul_dtype of the parameters registered from now on (fp32 unless set):
  // a model's builder sets it before the layers register theirs.
  void set_matmul_dtype(DType dtype) { matmul_dtype_ = dtype; }
  DType matmul_dtype() const { return matmul_dtype_; }
  // The device of the values and gradients of the parameters registered from now on
  // (run.device; the CPU unless set), and of the activations of the layers built over
  // them. State buffers stay in host memory: the host reads them (the router's bias
  // selects experts on the host).
  void set_device(Device device) { device_ = device; }
  Device device() const { return device_; }

  // Registers a state buffer (zeros); returns a stable reference.
  StateBuffer& add_buffer(std::string name, Shape shape);

  // Fills every parameter from its initialiser, keyed by (seed, name, logical index).
  void initialize(uint64_t seed);
  void zero_grad();

  std::deque<Param>& params() { return params_; }
  const std::deque<Param>& params() const { return params_; }
  Param* find(const std::string& name);
  std::deque<StateBuffer>& buffers() { return buffers_; }
  const std::deque<StateBuffer>& buffers() const { return buffers_; }
  int64_t numel() const;  // local elements in all parameters

 private:
  std::deque<Param> params_;
  std::deque<StateBuffer> buffers_;  // deque: references stay valid as buffers are added
  // name -> position in params_: registering L layers stays linear in L
  std::unordered_map<std::string, size_t> index_;
  DType matmul_dtype_ = DType::kF32;
  Device device_ = Device::kCpu;
};

}  // namespace moe
