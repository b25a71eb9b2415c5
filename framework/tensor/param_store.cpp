#include "framework/tensor/param_store.h"

#include "framework/core/rng.h"
#include "framework/tensor/device_memory.h"

namespace moe {

const char* shard_name(Shard s) {
  switch (s) {
    case Shard::kReplicated: return "replicated";
    case Shard::kTpColumn: return "tp-column";
    case Shard::kTpRow: return "tp-row";
    case Shard::kVocab: return "vocab";
    case Shard::kExpert: return "expert";
    case Shard::kExpertColumn: return "expert-column";
    case Shard::kExpertRow: return "expert-row";
  }
  return "?";
}

StateBuffer& ParamStore::add_buffer(std::string name, Shape shape) {
  for (const StateBuffer& b : buffers_)
    MOE_CHECK(b.name != name, "state buffer registered twice: ", name);
  StateBuffer& b = buffers_.emplace_back(StateBuffer{std::move(name), shape, Buffer{}, false});
  b.value.resize(shape.numel());
  return b;
}

Param& ParamStore::add(ParamSpec spec) {
  const Shape shape = spec.shape;
  return add_shard(std::move(spec), shape, {});
}

Param& ParamStore::add_shard(ParamSpec spec, Shape local_shape,
                             std::array<int64_t, Shape::kMaxDims> offset) {
  MOE_CHECK(find(spec.name) == nullptr, "parameter registered twice: ", spec.name);
  MOE_CHECK(local_shape.rank == spec.shape.rank, "shard rank of ", spec.name);
  for (int d = 0; d < spec.shape.rank; ++d)
    MOE_CHECK(offset[d] >= 0 && offset[d] + local_shape[d] <= spec.shape[d],
              "shard of ", spec.name, " outside its logical shape");
  index_.emplace(spec.name, params_.size());
  Param& p = params_.emplace_back();
  p.spec = std::move(spec);
  p.local_shape = local_shape;
  p.offset = offset;
  p.matmul_dtype = matmul_dtype_;
  p.value = Buffer(device_);
  p.grad = Buffer(device_);
  p.value.resize(local_shape.numel());
  p.grad.resize(local_shape.numel());
  return p;
}

void ParamStore::initialize(uint64_t seed) {
  Buffer staging;  // the initial values of a device parameter, drawn on the host
  for (Param& p : params_) {
    const bool host = p.value.device() == Device::kCpu;
    if (!host) staging.resize(p.numel());
    float* v = host ? p.value.data() : staging.data();
    const int64_t n = p.numel();
    switch (p.spec.init.kind) {
      case Init::kZeros:
        for (int64_t i = 0; i < n; ++i) v[i] = 0.0f;
        break;
      case Init::kOnes:
        for (int64_t i = 0; i < n; ++i) v[i] = 1.0f;
        break;
      case Init::kNormal: {
        const PhiloxKey key = philox_key(seed, hash_name(p.spec.name));
        const Shape& g = p.spec.shape;
        const Shape& l = p.local_shape;
        // Walk the local block in row-major order and map each element to its
        // logical linear index.
        std::array<int64_t, Shape::kMaxDims> idx{};
        for (int64_t i = 0; i < n; ++i) {
          int64_t logical = 0;
          for (int d = 0; d < g.rank; ++d) logical = logical * g[d] + p.offset[d] + idx[d];
          v[i] = p.spec.init.std * normal_at(key, static_cast<uint64_t>(logical));
          for (int d = l.rank - 1; d >= 0; --d) {
            if (++idx[d] < l[d]) break;
            idx[d] = 0;
          }
        }
        break;
      }
    }
    if (!host)
      copy_bytes(p.value.device(), p.value.raw(), Device::kCpu, v,
                 static_cast<size_t>(n) * sizeof(float));
  }
}

void ParamStore::zero_grad() {
  for (Param& p : params_) p.grad.zero();
}

Param* ParamStore::find(const std::string& name) {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &params_[it->second];
}

int64_t ParamStore::numel() const {
  int64_t n = 0;
  for (const Param& p : params_) n += p.numel();
  return n;
}

}  // namespace moe
