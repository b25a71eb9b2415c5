#include "framework/moe/moe_runtime.h"

#include <utility>

namespace moe {

MoeRuntime::MoeRuntime(MoeRuntimeSpec spec) : spec_(std::move(spec)) {
  const int64_t e = spec_.placement.num_experts;
  MOE_CHECK(spec_.dispatcher != nullptr, "MoE runtime: no dispatcher");
  MOE_CHECK(e > 0 && spec_.placement.ep_size > 0 && spec_.placement.ep_rank >= 0 &&
                spec_.placement.ep_rank < spec_.placement.ep_size,
            "MoE runtime: placement of ", e, " experts on ep rank ", spec_.placement.ep_rank,
            " of ", spec_.placement.ep_size);
  ExpertLocality& loc = spec_.locality;
  if (loc.expert_node.empty()) loc = ExpertLocality::single(e);
  MOE_CHECK(static_cast<int64_t>(loc.expert_node.size()) == e, "MoE runtime: locality of ",
            loc.expert_node.size(), " experts, placement of ", e);
  MOE_CHECK(loc.token_node >= 0 && loc.token_node < loc.num_nodes, "MoE runtime: tokens on node ",
            loc.token_node, " of ", loc.num_nodes);
  for (int node : loc.expert_node)
    MOE_CHECK(node >= 0 && node < loc.num_nodes, "MoE runtime: an expert on node ", node, " of ",
              loc.num_nodes);

  const ExpertTensorSplit& etp = spec_.etp;
  MOE_CHECK(etp.size >= 1 && etp.rank >= 0 && etp.rank < etp.size, "MoE runtime: etp rank ",
            etp.rank, " of ", etp.size);
  MOE_CHECK(spec_.dispatcher->etp_size() == etp.size, "MoE runtime: experts split over etp = ",
            etp.size, " but the dispatcher sums blocks over ", spec_.dispatcher->etp_size(),
            " ranks (etp > 1 needs an EtpDispatcher over the etp group)");
  MOE_CHECK(spec_.load_window >= 1, "MoE runtime: a load window of ", spec_.load_window,
            " steps");
  MOE_CHECK(spec_.fssdp != nullptr || (spec_.load_window == 1 && !spec_.rematerialize),
            "MoE runtime: a load window or re-materialisation without sharded experts");

  if (!spec_.sequence_parallel) return;
  const int tp = spec_.tp ? spec_.tp->size() : 1;
  if (tp == 1) {  // one tp rank holds every row: nothing to split
    spec_.sequence_parallel = false;
    return;
  }
  MOE_CHECK(spec_.tokens != nullptr && spec_.tokens->size() % tp == 0,
            "MoE runtime: sequence parallelism needs the dp x tp ranks as the token group, got ",
            spec_.tokens ? spec_.tokens->size() : 0, " ranks for tp = ", tp);
  MOE_CHECK(!spec_.dispatcher->slices_over_tp(),
            "MoE runtime: under sequence parallelism the tp ranks' rows differ, but the "
            "dispatcher slices them as identical tokens");
}

MoeRuntime MoeRuntime::local(Dispatcher& dispatcher, int64_t num_experts) {
  return MoeRuntime(MoeRuntimeSpec{.dispatcher = &dispatcher,
                                   .placement = ExpertPlacement::single(num_experts)});
}

}  // namespace moe
