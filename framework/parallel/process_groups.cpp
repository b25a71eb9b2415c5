#include "framework/parallel/process_groups.h"

#include <sstream>
#include <vector>

#include "framework/core/error.h"
#include "framework/core/rng.h"
#include "framework/parallel/mpi_communicator.h"
#include "framework/parallel/mpi_env.h"

namespace moe {

Communicator& ProcessGroups::get(Group g) const {
  const std::unique_ptr<Communicator>* comm = nullptr;
  switch (g) {
    case Group::kWorld: comm = &world; break;
    case Group::kDp: comm = &dp; break;
    case Group::kTp: comm = &tp; break;
    case Group::kEp: comm = &ep; break;
    case Group::kEdp: comm = &edp; break;
    case Group::kEtp: comm = &etp; break;
  }
  MOE_CHECK(comm != nullptr && *comm, "process group ", group_name(g), " is not set up");
  return **comm;
}

NodeMap ProcessGroups::nodes(Group g) const {
  MOE_CHECK(world != nullptr, "process groups are not set up");
  return topology.world.restrict_to(grid.members(g, world->rank()));
}

void check_same_on_all_ranks(Communicator& world, std::string_view text,
                             std::string_view what) {
  // The bit pattern travels as int64 (CommType has no unsigned 64-bit type).
  const int64_t mine = static_cast<int64_t>(hash_name(text));  // 64-bit FNV-1a
  std::vector<int64_t> all(static_cast<size_t>(world.size()));  // [rank]
  world.all_gather(std::span<const int64_t>(&mine, 1), std::span<int64_t>(all));
  int first = -1, differing = 0;
  for (int r = 1; r < world.size(); ++r) {
    if (all[static_cast<size_t>(r)] == all[0]) continue;
    if (first < 0) first = r;
    ++differing;
  }
  MOE_USER_CHECK(first < 0, "config differs between ranks: rank 0 vs rank ", first, " (",
                 what, "; ", differing, " of ", world.size(),
                 " ranks differ from rank 0; launch every rank with the same config and "
                 "overrides)");
}

namespace {

// The layout as text, so ranks can compare it before splitting (ranks that disagree
// would otherwise form inconsistent groups and hang in the first collective).
std::string layout_text(const ParallelConfig& p, std::string_view order) {
  std::ostringstream os;
  os << "dp=" << p.dp << " tp=" << p.tp << " ep=" << p.ep << " etp=" << p.etp
     << " ranks_per_node=" << p.ranks_per_node << " order=" << order;
  return os.str();
}

}  // namespace

ProcessGroups make_process_groups(const MpiEnv& env, const ParallelConfig& parallel,
                                  std::string_view order) {
  auto world = std::make_unique<MpiCommunicator>(env.world());
  check_same_on_all_ranks(*world, layout_text(parallel, order),
                          "parallel.dp/tp/ep/etp/ranks_per_node and the rank order");
  ProcessGroups groups;
  groups.grid = make_rank_grid(world->size(), parallel, order);
  groups.topology = discover_topology(*world, env.node_leader(), parallel.ranks_per_node);
  world->set_peer_nodes(groups.topology.world.node);
  const RankGrid& grid = groups.grid;
  const int rank = world->rank();
  auto split = [&](Group g) -> std::unique_ptr<Communicator> {
    // the child inherits the nodes of its ranks
    auto comm = world->split(grid.group_index(g, rank), grid.coord(g, rank));
    MOE_CHECK(comm->rank() == grid.coord(g, rank) && comm->size() == grid.size(g),
              "process group ", group_name(g), ": MPI gave rank ", comm->rank(), " of ",
              comm->size(), ", the grid says ", grid.coord(g, rank), " of ", grid.size(g));
    return comm;
  };
  groups.dp = split(Group::kDp);
  groups.tp = split(Group::kTp);
  groups.ep = split(Group::kEp);
  groups.edp = split(Group::kEdp);
  groups.etp = split(Group::kEtp);
  groups.world = std::move(world);
  return groups;
}

}  // namespace moe
