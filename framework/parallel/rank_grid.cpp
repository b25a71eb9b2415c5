#include "framework/parallel/rank_grid.h"

#include <cstdint>

#include "framework/core/error.h"

namespace moe {

std::string_view group_name(Group g) {
  switch (g) {
    case Group::kWorld: return "world";
    case Group::kDp: return "dp";
    case Group::kTp: return "tp";
    case Group::kEp: return "ep";
    case Group::kEdp: return "edp";
    case Group::kEtp: return "etp";
  }
  MOE_FAIL("unknown Group ", static_cast<int>(g));
}

namespace {

// True for "tp-ep-dp", false for "tp-dp-ep"; anything else is a user error.
bool ep_before_dp(std::string_view order) {
  if (order == "tp-ep-dp") return true;
  if (order == "tp-dp-ep") return false;
  MOE_USER_FAIL("parallel rank order \"", order,
                "\": expected \"tp-ep-dp\" or \"tp-dp-ep\" (dimensions fastest first; tp "
                "comes first so that tp groups are consecutive ranks)");
}

}  // namespace

int RankGrid::size(Group g) const {
  switch (g) {
    case Group::kWorld: return world;
    case Group::kDp: return dp;
    case Group::kTp: return tp;
    case Group::kEp: return ep;
    case Group::kEdp: return edp;
    case Group::kEtp: return etp;
  }
  MOE_FAIL("unknown Group ", static_cast<int>(g));
}

int RankGrid::stride(Group g) const {
  switch (g) {
    case Group::kWorld: return 1;
    case Group::kTp: return 1;
    case Group::kDp: return tp;
    case Group::kEtp: return 1;
    case Group::kEp: return ep_before_dp(order) ? etp : etp * edp;
    case Group::kEdp: return ep_before_dp(order) ? etp * ep : etp;
  }
  MOE_FAIL("unknown Group ", static_cast<int>(g));
}

int RankGrid::coord(Group g, int rank) const {
  MOE_CHECK(rank >= 0 && rank < world, "rank ", rank, " is outside the world of ", world);
  return (rank / stride(g)) % size(g);
}

int RankGrid::group_index(Group g, int rank) const {
  MOE_CHECK(rank >= 0 && rank < world, "rank ", rank, " is outside the world of ", world);
  // Groups of kind g tile the world in blocks of stride*size ranks, each block
  // interleaving `stride` groups: index = offset within the stride + stride * block.
  const int s = stride(g);
  return rank % s + s * (rank / (s * size(g)));
}

RankCoords RankGrid::coords(int rank) const {
  return {coord(Group::kDp, rank), coord(Group::kTp, rank), coord(Group::kEdp, rank),
          coord(Group::kEp, rank), coord(Group::kEtp, rank)};
}

std::vector<int> RankGrid::members(Group g, int rank) const {
  const int s = stride(g), first = rank - coord(g, rank) * s;
  std::vector<int> out(static_cast<size_t>(size(g)));
  for (int i = 0; i < size(g); ++i) out[static_cast<size_t>(i)] = first + i * s;
  return out;
}

RankGrid make_rank_grid(int world, const ParallelConfig& parallel, std::string_view order) {
  MOE_CHECK(world >= 1, "world size ", world, " must be >= 1");
  const ParallelConfig& p = parallel;
  MOE_USER_CHECK(p.dp >= 1, "parallel.dp: ", p.dp, " must be >= 1");
  MOE_USER_CHECK(p.tp >= 1, "parallel.tp: ", p.tp, " must be >= 1");
  MOE_USER_CHECK(p.ep >= 1, "parallel.ep: ", p.ep, " must be >= 1");
  MOE_USER_CHECK(p.etp >= 1, "parallel.etp: ", p.etp, " must be >= 1");
  // 64-bit products: a typo like dp = 100000 must give this message, not an overflow.
  const int64_t dense = int64_t{p.dp} * p.tp, expert = int64_t{p.ep} * p.etp;
  MOE_USER_CHECK(dense == world, "parallel.dp * parallel.tp = ", p.dp, " * ", p.tp, " = ",
                 dense, " ranks, but the job has ", world);
  MOE_USER_CHECK(world % expert == 0, "parallel.ep * parallel.etp = ", p.ep, " * ", p.etp,
                 " = ", expert, " does not divide the job's ", world,
                 " ranks (the expert grid is edp x ep x etp)");
  ep_before_dp(order);  // validates
  RankGrid grid;
  grid.world = world;
  grid.dp = p.dp;
  grid.tp = p.tp;
  grid.ep = p.ep;
  grid.etp = p.etp;
  grid.edp = static_cast<int>(world / expert);
  grid.order = std::string(order);
  return grid;
}

}  // namespace moe
