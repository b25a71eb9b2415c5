#pragma once
// The rank grid: which world ranks form each process group. Pure arithmetic (no MPI),
// so every layout is unit-tested without processes (DESIGN.md decision 4).
//
// Two grids fold over the same `world` ranks:
//   dense layers   world = dp x tp          (attention, dense MLPs, embeddings)
//   MoE experts    world = edp x ep x etp   (edp = world / (ep * etp))
//
// A rank's number is a mixed-radix number of its coordinates; the order string lists
// the dimensions fastest first, as in Megatron-Core's RankGenerator. In the expert
// grid etp takes tp's place and edp takes dp's place:
//
//   "tp-ep-dp" (default)  dense:  rank = tp_rank  + tp  * dp_rank
//                         expert: rank = etp_rank + etp * (ep_rank + ep * edp_rank)
//   "tp-dp-ep"            dense:  rank = tp_rank  + tp  * dp_rank
//                         expert: rank = etp_rank + etp * (edp_rank + edp * ep_rank)
//
// (ep has size 1 in the dense grid, so both orders give the same dense layout.) tp
// must come first: then a tp group is tp consecutive ranks (one node for the usual
// ranks_per_node), an etp group equals a tp group when etp == tp, and when etp == tp
// every ep and edp group lies inside one dp group. Orders with tp elsewhere break
// these and are rejected.
//
// Every group of kind g is an arithmetic progression: the rank r belongs to
//   members(g, r) = { first + i * stride(g) : i = 0 .. size(g)-1 },
//   first = r - coord(g, r) * stride(g),   coord(g, r) = (r / stride(g)) % size(g)
// ordered by rank, and a member's position in it (its group-rank) is its coordinate.
// Strides: world 1; tp 1; dp tp; etp 1; for "tp-ep-dp" ep etp and edp etp*ep; for
// "tp-dp-ep" edp etp and ep etp*edp. Invariants (tested): the groups of each kind
// partition the world into world/size(g) groups; members(g, r) contains r at index
// coord(g, r); group_index(g, r) numbers the groups 0 .. world/size(g)-1.
//
// Worked example: world 8, tp 2, ep 2, dp 4, order "tp-ep-dp".
//   etp 1 (edp 4)  tp  {0,1} {2,3} {4,5} {6,7}      dp  {0,2,4,6} {1,3,5,7}
//                  ep  {0,1} {2,3} {4,5} {6,7}      edp {0,2,4,6} {1,3,5,7}
//                  etp {0} {1} ... {7}
//   etp 2 (edp 2)  etp {0,1} {2,3} {4,5} {6,7}  (= tp groups)
//                  ep  {0,2} {1,3} {4,6} {5,7}      edp {0,4} {1,5} {2,6} {3,7}
//   rank 5 (etp 2): tp_rank 1, dp_rank 2, etp_rank 1, ep_rank 0, edp_rank 1.
// With order "tp-dp-ep" and etp 1: edp {0,1,2,3} {4,5,6,7}, ep {0,4} {1,5} {2,6} {3,7}.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "framework/config/config.h"

namespace moe {

enum class Group : uint8_t { kWorld, kDp, kTp, kEp, kEdp, kEtp };
inline constexpr int kNumGroups = 6;
inline constexpr Group kAllGroups[kNumGroups] = {Group::kWorld, Group::kDp,  Group::kTp,
                                                 Group::kEp,    Group::kEdp, Group::kEtp};
inline constexpr std::string_view kDefaultRankOrder = "tp-ep-dp";

std::string_view group_name(Group g);  // "world", "dp", "tp", "ep", "edp", "etp"

// Coordinates of one rank in both grids; each equals its rank within that group.
struct RankCoords {
  int dp = 0, tp = 0;            // dense grid
  int edp = 0, ep = 0, etp = 0;  // expert grid
};

struct RankGrid {
  int world = 1, dp = 1, tp = 1, edp = 1, ep = 1, etp = 1;
  std::string order{kDefaultRankOrder};

  int size(Group g) const;    // ranks per group of kind g
  int stride(Group g) const;  // rank distance between consecutive members
  int coord(Group g, int rank) const;        // rank's group-rank in its group of kind g
  int group_index(Group g, int rank) const;  // which group of kind g, 0 .. world/size-1
  RankCoords coords(int rank) const;
  std::vector<int> members(Group g, int rank) const;  // ascending; [coord] == rank
};

// Validates the layout and builds the grid. User errors (naming parallel.* keys):
// a size < 1, dp * tp != world, ep * etp not dividing world, an unknown order.
RankGrid make_rank_grid(int world, const ParallelConfig& parallel,
                        std::string_view order = kDefaultRankOrder);

}  // namespace moe
