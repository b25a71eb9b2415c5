#include "framework/train/expert_ownership.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "framework/moe/ownership_plan.h"
#include "framework/parallel/sparse_collectives.h"

namespace moe {

namespace {

// "<prefix>.experts" of an expert weight named "<prefix>.experts.w_up"
std::string experts_prefix(const Param& p) {
  const std::string& name = p.spec.name;
  return name.substr(0, name.rfind('.'));
}

std::vector<int> owner_of_each(const ExpertPlacement& placement) {
  std::vector<int> owner(static_cast<size_t>(placement.num_experts));
  for (int64_t e = 0; e < placement.num_experts; ++e) owner[e] = placement.owner(e);
  return owner;
}

bool same_owners(const ExpertPlacement& a, const ExpertPlacement& b) {
  for (int r = 0; r <= a.ep_size; ++r)
    if (a.first(r) != b.first(r)) return false;
  return true;
}

// A buffer holding `values`.
Buffer buffer_of(const std::vector<float>& values) {
  Buffer b(static_cast<int64_t>(values.size()));
  if (!values.empty()) std::memcpy(b.data(), values.data(), values.size() * sizeof(float));
  return b;
}

}  // namespace

ExpertOwnership::ExpertOwnership(ParamStore& store, std::vector<MoELayer*> layers,
                                 Communicator& group, int interval)
    : store_(store), group_(group), interval_(interval) {
  MOE_CHECK(interval > 0, "expert ownership: re-shard interval ", interval);
  for (MoELayer* moe : layers) {
    const int64_t experts = moe->num_experts();
    const std::string prefix = experts_prefix(moe->experts().w_up());
    StateBuffer& owner_load = store.add_buffer(prefix + ".owner_load", Shape{experts});
    StateBuffer& window_load = store.add_buffer(prefix + ".window_load", Shape{experts});
    owner_load.optional = window_load.optional = true;
    layers_.push_back({moe, &owner_load, &window_load,
                       ExpertPlacement{experts, group.size(), group.rank()}});
  }
}

ExpertPlacement ExpertOwnership::planned(const Layer& layer) const {
  ExpertPlacement next = layer.owners;
  const std::span<const float> load = layer.owner_load->values();
  if (std::all_of(load.begin(), load.end(), [](float x) { return x == 0.0f; })) {
    next.bounds.clear();  // never planned: the even blocks
    return next;
  }
  // whole numbers of rows, exact in fp32 below 2^24
  const std::vector<int64_t> rows(load.begin(), load.end());
  next.bounds = plan_ownership(rows, group_.size());
  return next;
}

bool ExpertOwnership::move(Layer& layer, const ExpertPlacement& next, AdamW& optimizer) {
  if (same_owners(layer.owners, next)) return false;
  const std::vector<int> from = owner_of_each(layer.owners), to = owner_of_each(next);
  GroupedExperts& experts = layer.moe->experts();
  for (Param* p : {experts.w_gate(), &experts.w_up(), &experts.w_down()}) {
    if (p == nullptr) continue;  // GELU experts have no gate
    size_t index = 0;            // the parameter's position: its optimizer state's
    while (&store_.params()[index] != p) ++index;
    const int64_t item = p->spec.shape.numel() / next.num_experts;  // floats per expert
    MOE_CHECK(optimizer.state_range(index).size() == p->numel(), "expert ownership: the "
              "AdamW state of ", p->spec.name, " is sharded");
    auto moved = [&](const float* src) {
      return buffer_of(sparse_move(group_, from, to, item,
                                   {src, static_cast<size_t>(p->numel())}));
    };
    Buffer value = moved(p->value.data());
    Buffer exp_avg = moved(optimizer.exp_avg(index).data);
    Buffer exp_avg_sq = moved(optimizer.exp_avg_sq(index).data);
    p->value = std::move(value);
    p->local_shape[0] = next.num_local();
    p->offset[0] = next.first_local();
    p->grad = Buffer(p->numel());  // zeros, as between steps
    optimizer.set_state(index, {0, p->numel()}, std::move(exp_avg), std::move(exp_avg_sq));
  }
  experts.set_owners(next);
  layer.owners = next;
  return true;
}

bool ExpertOwnership::apply_all(AdamW& optimizer, GradSync& grad_sync,
                                Checkpointer& checkpointer) {
  bool moved = false;
  for (Layer& layer : layers_) {
    ++replans_;
    if (move(layer, planned(layer), optimizer)) {
      ++moves_;
      moved = true;
    }
  }
  if (!moved) return false;  // every rank decides alike: the same loads, the same plans
  grad_sync.refresh_sizes();
  checkpointer.refresh_blocks();
  return true;
}

bool ExpertOwnership::after_step(int64_t completed, AdamW& optimizer, GradSync& grad_sync,
                                 Checkpointer& checkpointer) {
  for (Layer& layer : layers_) {
    const std::vector<int64_t>& kept = layer.moe->load_stats().kept;  // [E] global rows
    std::span<float> window = layer.window_load->values();
    for (size_t e = 0; e < window.size(); ++e) window[e] += static_cast<float>(kept[e]);
  }
  if (completed % interval_ != 0) return false;
  for (Layer& layer : layers_) {
    std::span<float> window = layer.window_load->values();
    std::copy(window.begin(), window.end(), layer.owner_load->values().begin());
    std::fill(window.begin(), window.end(), 0.0f);
  }
  return apply_all(optimizer, grad_sync, checkpointer);
}

void ExpertOwnership::restore(AdamW& optimizer, GradSync& grad_sync,
                              Checkpointer& checkpointer) {
  const int64_t replans = replans_, moves = moves_;
  apply_all(optimizer, grad_sync, checkpointer);
  replans_ = replans;  // not a re-plan of this run: the owners the checkpoint had
  moves_ = moves;
}

std::string ExpertOwnership::describe() const {
  std::ostringstream out;
  for (size_t i = 0; i < layers_.size(); ++i) {
    out << (i > 0 ? ", layer " : "layer ") << i << ":";
    for (int r = 0; r < layers_[i].owners.ep_size; ++r) out << " " << layers_[i].owners.count(r);
  }
  return out.str();
}

}  // namespace moe
