#pragma once
// MoeRuntime: how the MoE layers of a model are spread over ranks. One per model,
// shared by its MoE layers, outliving them. It is made from a MoeRuntimeSpec (named
// fields), whose constructor derives what can be derived and checks the rest, so a
// runtime that exists is one the MoE layer can run:
//
//   - the dispatcher exists; the placement has experts and the locality covers them
//     (an empty locality means one node);
//   - expert-tensor parallelism (etp.size > 1) needs a dispatcher that exchanges and
//     sums the hidden-unit blocks over a group of exactly etp.size ranks (EtpDispatcher);
//   - sequence parallelism (a no-op, and turned off, with a tp group of one rank) needs
//     a token group whose size is a multiple of tp (the dp x tp ranks, in world order)
//     and a dispatcher that does not slice the tokens over tp (the tp ranks' rows differ);
//   - a load window of more than one step and re-materialisation need sharded experts.
//
// The trainer and the tools get theirs from the factory (framework/moe/moe_factory.h);
// single-process users from MoeRuntime::local.

#include <cstdint>

#include "framework/moe/dispatcher.h"
#include "framework/moe/experts.h"
#include "framework/moe/placement.h"
#include "framework/parallel/communicator.h"

namespace moe {

struct MoeRuntimeSpec {
  Dispatcher* dispatcher = nullptr;  // moves token rows to the ranks of their experts
  ExpertPlacement placement{};       // the experts this rank holds
  ExpertLocality locality{};         // node of every expert and of this rank's tokens
  // The ranks holding distinct tokens of the global batch (the data-parallel group, in
  // batch order): capacity, balance loss and load statistics are those of the global
  // batch. Null: this rank's tokens are the whole batch.
  Communicator* tokens = nullptr;
  // The tensor-parallel group of the dense layers: the shared experts are split over it
  // like a dense FFN (framework/nn/mlp.h). Routed experts are split over etp instead.
  Communicator* tp = nullptr;
  // This rank's share of every expert's hidden units (expert-tensor parallelism).
  ExpertTensorSplit etp{};
  // Sequence parallelism (framework/nn/sequence_parallel.h): the layer's input is this
  // rank's rows, distinct from the other tp ranks'; the shared experts gather and
  // scatter rows, and the router losses' gradients are divided by tp (they are
  // normalised by this rank's N/tp rows, but the router's gradient is summed over tp,
  // ParamSpec::sequence_parallel, before the mean over dp).
  bool sequence_parallel = false;
  // Sharded sparse experts (parallel.expert_sharding = fssdp): the ranks the experts are
  // owned over, whose replicas each layer materialises per step (experts.h). Null: none.
  Communicator* fssdp = nullptr;
  // fssdp: steps of row counts each layer's replica plan reads (parallel.load_window;
  // > 1: the layer keeps a LoadWindow, load_window.h), and whether it releases its
  // replicas after forward and fetches them again for backward (parallel.rematerialize).
  int load_window = 1;
  bool rematerialize = false;
};

class MoeRuntime {
 public:
  // Derives the one-node locality when none is given; an inconsistent spec is an
  // internal error naming the rule it breaks.
  explicit MoeRuntime(MoeRuntimeSpec spec);
  // Everything on this rank: the single-process runtime.
  static MoeRuntime local(Dispatcher& dispatcher, int64_t num_experts);

  Dispatcher& dispatcher() const { return *spec_.dispatcher; }
  const ExpertPlacement& placement() const { return spec_.placement; }
  const ExpertLocality& locality() const { return spec_.locality; }
  Communicator* tokens() const { return spec_.tokens; }
  Communicator* tp() const { return spec_.tp; }
  const ExpertTensorSplit& etp() const { return spec_.etp; }
  bool sequence_parallel() const { return spec_.sequence_parallel; }
  Communicator* fssdp() const { return spec_.fssdp; }
  int load_window() const { return spec_.load_window; }
  bool rematerialize() const { return spec_.rematerialize; }
  int64_t num_experts() const { return spec_.placement.num_experts; }

 private:
  MoeRuntimeSpec spec_;
};

}  // namespace moe
