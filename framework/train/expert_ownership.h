#pragma once
// ExpertOwnership: re-planned owners of sharded sparse experts (parallel.expert_sharding
// = fssdp with parallel.reshard_interval = N > 0; docs/parallelism.md).
//
// Every rank adds each MoE layer's kept rows per expert (the global counts every rank
// has from routing) to the layer's window after each step. After every N-th step each
// layer's owners are planned again from its window (plan_ownership, ownership_plan.h),
// the window becomes the layer's plan load and starts again from zeros. Only a layer
// whose owners change moves: every expert whose owner changes goes from the old owner
// to the new one (sparse_move) with its weights and both AdamW moments, the only
// per-expert state the optimizer keeps; gradients are zero between steps and are
// reallocated. The gradient buckets and the checkpoint's block plan are then refreshed.
//
// Checkpoints: the plan is re-derived, not stored. Two [E] state buffers per layer are
// written with the model (fp32; exact while a window's rows per expert stay below 2^24):
//   <prefix>.experts.owner_load   the loads the owners were planned from (zeros: the
//                                 even blocks, never re-planned)
//   <prefix>.experts.window_load  the loads since that plan
// The tensors are logical (every file holds whole E-expert tensors), so any layout reads
// them; a run with re-sharding then moves the blocks to the owners its owner_load gives
// for its rank count (restore), which on the writing layout are the owners it had:
// resume is bit-identical. Files without the buffers read as zeros (the even blocks).

#include <cstdint>
#include <string>
#include <vector>

#include "framework/checkpoint/checkpointer.h"
#include "framework/moe/moe_layer.h"
#include "framework/optim/adamw.h"
#include "framework/parallel/communicator.h"
#include "framework/parallel/grad_sync.h"
#include "framework/tensor/param_store.h"

namespace moe {

class ExpertOwnership {
 public:
  // Registers the layers' state buffers in `store` (before the checkpointer is made);
  // group: the ranks the experts are sharded over. All must outlive this.
  ExpertOwnership(ParamStore& store, std::vector<MoELayer*> layers, Communicator& group,
                  int interval);

  // After the optimizer step that completed step `completed` (collective when due);
  // true when owners moved.
  bool after_step(int64_t completed, AdamW& optimizer, GradSync& grad_sync,
                  Checkpointer& checkpointer);
  // "layer 0: 2 3 2 1, layer 1: ..." the experts every rank owns, per MoE layer.
  std::string describe() const;
  // After a checkpoint was read into the even blocks: the owners its plan loads give.
  void restore(AdamW& optimizer, GradSync& grad_sync, Checkpointer& checkpointer);

  int64_t replans() const { return replans_; }  // layer plans made (due steps x layers)
  int64_t moves() const { return moves_; }      // of them, those that changed the owners

 private:
  struct Layer {
    MoELayer* moe;
    StateBuffer* owner_load;   // [E]
    StateBuffer* window_load;  // [E]
    ExpertPlacement owners;    // in force
  };
  ExpertPlacement planned(const Layer& layer) const;
  // Moves the layer's blocks to `next`; false when the owners are unchanged.
  bool move(Layer& layer, const ExpertPlacement& next, AdamW& optimizer);
  bool apply_all(AdamW& optimizer, GradSync& grad_sync, Checkpointer& checkpointer);

  ParamStore& store_;
  Communicator& group_;
  int interval_;
  std::vector<Layer> layers_;
  int64_t replans_ = 0, moves_ = 0;
};

}  // namespace moe
