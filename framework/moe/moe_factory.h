#pragma once
// The one place that assembles the MoE runtime of a job from its config and process
// groups (DESIGN decision 11): the dispatcher stack, the two-level all-to-all, the cost
// model's choice for moe.dispatcher = auto, and the MoeRuntime the layers share.
//
//   moe.dispatcher   stack (innermost first)
//   local            LocalDispatcher                              (ep = 1)
//   flat             AllToAllDispatcher over ep
//   two_level        AllToAllDispatcher over ep, rows through a TwoLevelAllToAll
//   node_dedup       NodeDedupDispatcher over the two-level split of ep
//   auto             local at ep = 1; else flat on one node or where ep is not placed
//                    node by node; else flat or two_level, whichever the cost model
//                    (framework/parallel/cost_model.h) predicts faster per exchange
//   + EtpDispatcher  around any of them when etp > 1, or tp > 1 without sequence
//                    parallelism (the tp ranks' identical tokens are sent once)
//
// moe.a2a_dtype = bf16: flat and two_level move their rows as bf16.
//
// Building is collective over the world when auto calibrates the link costs; bad
// layouts (two_level or node_dedup over an ep group not placed node by node) are user
// errors naming moe.dispatcher.

#include <memory>
#include <string>
#include <vector>

#include "framework/config/config.h"
#include "framework/moe/etp_dispatcher.h"
#include "framework/moe/moe_runtime.h"
#include "framework/parallel/process_groups.h"
#include "framework/parallel/two_level_all_to_all.h"

namespace moe {

// What moe.dispatcher = auto predicted for one exchange, where it had a choice.
struct DispatcherChoice {
  DispatcherKind chosen = DispatcherKind::kFlat;
  double flat_seconds = 0.0, two_level_seconds = 0.0;
  double block_bytes = 0.0;  // bytes per peer of one exchange
  std::string cost_model;    // the model's description
};

class MoeStack {
 public:
  // rows_per_exchange: the token rows one rank dispatches per MoE layer (its share of
  // the batch's tokens times top-k); it sizes the exchange the cost model compares.
  // The groups must outlive the stack.
  MoeStack(const Config& config, const ProcessGroups& groups, double rows_per_exchange);
  MoeStack(const MoeStack&) = delete;
  MoeStack& operator=(const MoeStack&) = delete;

  const MoeRuntime& runtime() const { return *runtime_; }
  DispatcherKind dispatcher_kind() const { return kind_; }  // resolved: never auto
  // Set when moe.dispatcher = auto compared the two exchanges.
  const std::optional<DispatcherChoice>& auto_choice() const { return choice_; }
  // Start-up lines: topology, the dispatcher choice, bi-level groups.
  const std::vector<std::string>& notes() const { return notes_; }
  // The communicators the token exchange uses: ep, and with a two-level split its node
  // and cross-node groups (for the telemetry of "ep").
  std::vector<Communicator*> exchange_groups() const;
  // fssdp: the copy of the ep group the sparse collectives use, so that telemetry
  // tells their bytes from the rows' (null otherwise).
  Communicator* sparse_group() const { return sparse_.get(); }

 private:
  // auto for an ep group inside one node: shm where it shares host memory with room in
  // /dev/shm for the windows, else flat. Collective over ep.
  DispatcherKind one_node_dispatcher(const Config& config, const ProcessGroups& groups,
                                     double rows_per_exchange);
  DispatcherKind resolve_dispatcher(const Config& config, const ProcessGroups& groups,
                                    const NodeMap& ep_nodes, double rows_per_exchange);
  std::vector<int> ep_token_ranks(const ProcessGroups& groups, bool sequence_parallel) const;
  void note_bilevel_groups(const Config& config, const NodeMap& ep_nodes);

  DispatcherKind kind_ = DispatcherKind::kLocal;
  std::optional<DispatcherChoice> choice_;
  std::vector<std::string> notes_;
  Communicator* ep_ = nullptr;
  std::unique_ptr<TwoLevelAllToAll> two_level_;  // two_level, node_dedup
  std::unique_ptr<Communicator> sparse_;          // fssdp
  std::unique_ptr<Dispatcher> dispatcher_;
  std::unique_ptr<EtpDispatcher> etp_dispatcher_;
  std::unique_ptr<MoeRuntime> runtime_;
};

}  // namespace moe
