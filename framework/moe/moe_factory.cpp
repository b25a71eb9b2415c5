#include "framework/moe/moe_factory.h"

#include <iomanip>

#include "framework/core/error.h"
#include "framework/moe/all_to_all_dispatcher.h"
#include "framework/moe/fssdp_dispatcher.h"
#include "framework/moe/node_dedup_dispatcher.h"
#include "framework/moe/shm_dispatcher.h"
#include "framework/parallel/cost_model.h"

namespace moe {

using detail::concat;

MoeStack::MoeStack(const Config& c, const ProcessGroups& g, double rows_per_exchange)
    : ep_(g.ep.get()) {
  const ExpertPlacement placement{c.moe.num_experts, g.ep->size(), g.ep->rank()};
  const NodeMap ep_nodes = g.nodes(Group::kEp);
  notes_.push_back(
      concat("topology: ", g.topology.world.describe(),
             g.topology.from_config ? " (parallel.ranks_per_node)" : " (MPI shared memory)",
             "; ep group: ", ep_nodes.describe()));
  kind_ = resolve_dispatcher(c, g, ep_nodes, rows_per_exchange);
  const bool sp = c.parallel.sequence_parallel && g.tp->size() > 1;
  if (kind_ == DispatcherKind::kTwoLevel || kind_ == DispatcherKind::kNodeDedup) {
    MOE_USER_CHECK(ep_nodes.blocked(), "moe.dispatcher: ", kind_, " needs every ep group "
                   "placed node by node in equal numbers, but this rank's spans ",
                   ep_nodes.describe(), "; use flat, or change parallel.ep / the placement");
    // ep split into the node's ranks and the ranks of the same local index
    two_level_ = std::make_unique<TwoLevelAllToAll>(*g.ep, ep_nodes);
  }
  // moe.a2a_dtype: the rows of the all-to-all dispatchers travel as bf16 (node_dedup's
  // stay fp32; the MoE layer rounds the experts' rows on every layout either way).
  const DType wire = c.moe.a2a_dtype == Precision::kBf16 ? DType::kBF16 : DType::kF32;
  if (c.parallel.expert_sharding == ExpertSharding::kFssdp) {
    // the experts' owners form the ep group; the sparse collectives use a copy of it
    // rows prefer replicas on their node when the group spans nodes
    dispatcher_ = std::make_unique<FssdpDispatcher>(
        *g.ep, placement, c.parallel.materialize_slots,
        ep_nodes.num_nodes > 1 ? ep_nodes.node : std::vector<int>{});
    sparse_ = g.ep->split(0, g.ep->rank());
  } else switch (kind_) {
    case DispatcherKind::kLocal:
      dispatcher_ = std::make_unique<LocalDispatcher>();
      break;
    case DispatcherKind::kTwoLevel:
      dispatcher_ = std::make_unique<AllToAllDispatcher>(
          *g.ep, placement, ep_token_ranks(g, sp), two_level_.get(), wire);
      break;
    case DispatcherKind::kShm:
      dispatcher_ = std::make_unique<ShmDispatcher>(*g.ep, placement);
      break;
    case DispatcherKind::kNodeDedup:
      dispatcher_ = std::make_unique<NodeDedupDispatcher>(*g.ep, two_level_->intra(),
                                                          two_level_->inter(), placement);
      break;
    default:
      dispatcher_ = std::make_unique<AllToAllDispatcher>(*g.ep, placement, ep_token_ranks(g, sp),
                                                         nullptr, wire);
  }
  Dispatcher* dispatcher = dispatcher_.get();
  if (g.etp->size() > 1 || (g.tp->size() > 1 && !sp)) {
    // Without sequence parallelism the ranks of a tp group hold the same tokens
    // (replicated activations): each dispatches its 1/tp share, so no token crosses the
    // ep all-to-all twice. With it their rows differ and each dispatches its own.
    etp_dispatcher_ = std::make_unique<EtpDispatcher>(*dispatcher_, *g.etp, sp ? nullptr : g.tp.get());
    dispatcher = etp_dispatcher_.get();
  }
  // The ranks holding distinct tokens: the dp group, or under sequence parallelism the
  // dp x tp ranks (the world; world-rank order is the global token order).
  runtime_ = std::make_unique<MoeRuntime>(MoeRuntimeSpec{
      .dispatcher = dispatcher,
      .placement = placement,
      .locality = ExpertLocality::of(placement, ep_nodes.node, ep_nodes.num_nodes),
      .tokens = sp ? g.world.get() : g.dp.get(),
      .tp = g.tp.get(),
      .etp = ExpertTensorSplit{g.etp->size(), g.etp->rank()},
      .sequence_parallel = sp,
      .fssdp = sparse_.get(),
      .load_window = c.parallel.load_window,
      .rematerialize = c.parallel.rematerialize});
  if (c.moe.routing == RoutingKind::kBilevel) note_bilevel_groups(c, ep_nodes);
}

DispatcherKind MoeStack::resolve_dispatcher(const Config& c, const ProcessGroups& g,
                                            const NodeMap& ep_nodes, double rows_per_exchange) {
  if (c.moe.dispatcher != DispatcherKind::kAuto) return c.moe.dispatcher;
  if (c.parallel.expert_sharding == ExpertSharding::kFssdp) return DispatcherKind::kFlat;
  if (g.ep->size() == 1) return DispatcherKind::kLocal;
  // Calibration is collective over the world: decided from what every rank knows alike.
  if (g.topology.world.num_nodes == 1) return one_node_dispatcher(c, g, rows_per_exchange);
  const ParallelConfig& p = c.parallel;
  const CalibratedModel cost = measure_link_costs(
      *g.world, g.topology.world, {p.intra_latency_us * 1e-6, p.intra_bandwidth_gbs * 1e9},
      {p.inter_latency_us * 1e-6, p.inter_bandwidth_gbs * 1e9}, published_gpu_cluster());
  if (ep_nodes.num_nodes == 1) return one_node_dispatcher(c, g, rows_per_exchange);
  if (!ep_nodes.blocked()) {
    notes_.push_back(concat("moe.dispatcher=auto: flat (the ep group spans ",
                            ep_nodes.describe(), ")"));
    return DispatcherKind::kFlat;
  }
  // One exchange of a dispatch: the rows of C floats, spread over the ep group.
  DispatcherChoice choice;
  choice.block_bytes = rows_per_exchange * c.model.d_model * sizeof(float) / g.ep->size();
  choice.flat_seconds = cost.model.flat_seconds(choice.block_bytes, ep_nodes.num_nodes,
                                                ep_nodes.ranks_per_node);
  choice.two_level_seconds = cost.model.two_level_seconds(
      choice.block_bytes, ep_nodes.num_nodes, ep_nodes.ranks_per_node);
  choice.chosen = choice.two_level_seconds < choice.flat_seconds ? DispatcherKind::kTwoLevel
                                                                 : DispatcherKind::kFlat;
  choice.cost_model = cost.model.describe();
  notes_.push_back(concat("moe.dispatcher=auto: ", choice.chosen,
                          " (predicted per exchange: flat ", std::fixed, std::setprecision(3),
                          choice.flat_seconds * 1e3, " ms, two-level ",
                          choice.two_level_seconds * 1e3, " ms; ", ep_nodes.describe(), ", ",
                          std::setprecision(0), choice.block_bytes, " B per peer; ",
                          choice.cost_model, "; intra ", cost.intra_source, ", inter ",
                          cost.inter_source, ")"));
  choice_ = choice;
  return choice.chosen;
}

DispatcherKind MoeStack::one_node_dispatcher(const Config& c, const ProcessGroups& g,
                                             double rows_per_exchange) {
  // the experts' rows need not travel at all where the ep group shares host memory
  if (c.run.device != Device::kCpu || !shares_memory(g.ep->mpi_comm()))
    return DispatcherKind::kFlat;
  // A window per MoE layer and one more, each 4 regions of S_recv rows with a quarter
  // to spare per rank; twice that for skewed routing.
  const double want = (c.model.num_layers + 1) * 4 * 1.25 * 2 * rows_per_exchange *
                      c.model.d_model * sizeof(float) * g.ep->size();
  const double room = shared_memory_free(g.ep->mpi_comm());
  if (room >= 0.0 && room < want) {
    notes_.push_back(concat("moe.dispatcher=auto: flat (/dev/shm has ",
                            static_cast<int64_t>(room / (1 << 20)), " MiB free, shm would want "
                            "about ", static_cast<int64_t>(want / (1 << 20)), ")"));
    return DispatcherKind::kFlat;
  }
  notes_.push_back("moe.dispatcher=auto: shm (the ep group shares memory)");
  return DispatcherKind::kShm;
}

std::vector<int> MoeStack::ep_token_ranks(const ProcessGroups& g, bool sequence_parallel) const {
  // The rank in the MoE layer's token group of every member of this rank's ep group,
  // when they all belong to it; else none, and the dispatcher exchanges counts. Under
  // sequence parallelism the token group is the world.
  const RankGrid& grid = g.grid;
  const int me = g.world->rank();
  if (sequence_parallel) return grid.members(Group::kEp, me);
  std::vector<int> ranks;
  for (int member : grid.members(Group::kEp, me)) {
    if (grid.group_index(Group::kDp, member) != grid.group_index(Group::kDp, me)) return {};
    ranks.push_back(grid.coord(Group::kDp, member));
  }
  return ranks;
}

void MoeStack::note_bilevel_groups(const Config& c, const NodeMap& ep_nodes) {
  // Groups are node-aligned when the ep group spans node_groups nodes holding E / N
  // consecutive experts each (the contiguous placement over a blocked ep group).
  bool aligned = ep_nodes.num_nodes == c.moe.node_groups;
  const int64_t per_group = c.moe.num_experts / c.moe.node_groups;
  for (int64_t e = 0; aligned && e < c.moe.num_experts; ++e)
    aligned = runtime_->locality().expert_node[e] == e / per_group;
  notes_.push_back(concat(
      "bilevel routing: ", c.moe.node_groups, " groups of ", per_group, " experts, ",
      aligned ? "one per node of the ep group"
              : "not aligned with the ep group's nodes (" + ep_nodes.describe() + ")"));
}

std::vector<Communicator*> MoeStack::exchange_groups() const {
  std::vector<Communicator*> groups = {ep_};
  if (two_level_) {
    groups.push_back(&two_level_->intra());
    groups.push_back(&two_level_->inter());
  }
  return groups;
}

}  // namespace moe
