// mpi-ranks: 4 8
// The node-deduplicating dispatcher against the flat one, under mpirun with ep = world
// split into every (N nodes, G ranks per node) with N * G = world (emulated nodes,
// NodeMap::blocks as parallel.ranks_per_node gives them: (2,2) at 4 ranks, (2,4) and
// (4,2) at 8, and the degenerate (1,W), (W,1)):
//   - the experts see the same rows in the same order (bit for bit);
//   - combine outputs and dx equal the flat dispatcher's to float rounding, exactly for
//     tokens whose experts are all on one node; d_expert_out and dweights exactly;
//     random routing with tokens holding several experts on one node, a rank without
//     tokens, capacity drops, expert counts that ep does not divide;
//   - the inter-node bytes are what the routing plan predicts: one row per (token,
//     other node it reaches) per exchange, plus its routing record, the dweights and
//     the counts; and fewer than the flat dispatcher's one row per (token, remote expert).
//
// Checks after a collective use EXPECT (not ASSERT), so no rank leaves a test early.

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "framework/core/rng.h"
#include "framework/moe/all_to_all_dispatcher.h"
#include "framework/moe/node_dedup_dispatcher.h"
#include "framework/moe/routing_plan.h"
#include "framework/parallel/mpi_communicator.h"
#include "framework/parallel/two_level_all_to_all.h"
#include "tests/parallel/mpi_test.h"

namespace moe {
namespace {

constexpr int64_t kC = 5;  // row width

float uniform(PhiloxKey key, uint64_t a, uint64_t b) {
  return uniform_from_bits(static_cast<uint32_t>(random_u64(key, a, b)));
}

struct Routing {
  std::shared_ptr<const RoutingPlan> plan;
  std::vector<float> x, dy;  // (N, C) each
};

// n tokens of this rank choosing k distinct experts of e at random (skewed to low
// experts, so a small capacity drops some), random weights.
Routing random_routing(int rank, uint64_t seed, int64_t n, int64_t e, int64_t k,
                       int64_t capacity) {
  const PhiloxKey key = philox_key(seed * 131 + static_cast<uint64_t>(rank),
                                   hash_name("test.node_dedup"));
  std::vector<int32_t> experts;
  std::vector<float> weights;
  for (int64_t t = 0; t < n; ++t) {
    std::set<int32_t> chosen;
    for (uint64_t draw = 0; static_cast<int64_t>(chosen.size()) < k; ++draw) {
      const uint64_t r = random_u64(key, static_cast<uint64_t>(t), draw);
      const auto x = static_cast<int32_t>((r % static_cast<uint64_t>(e * e)) % static_cast<uint64_t>(e));
      if (chosen.insert(x).second) {
        experts.push_back(x);
        weights.push_back(0.1f + 0.8f * uniform(key, static_cast<uint64_t>(t), 100 + draw));
      }
    }
  }
  Routing r;
  r.plan = std::make_shared<const RoutingPlan>(
      build_routing_plan(experts, weights, n, k, e, capacity));
  for (int64_t i = 0; i < n * kC; ++i) {
    r.x.push_back(uniform(key, 1000 + static_cast<uint64_t>(i), 7) - 0.5f);
    r.dy.push_back(uniform(key, 1000 + static_cast<uint64_t>(i), 8) - 0.5f);
  }
  return r;
}

struct Outputs {
  std::vector<float> rows, y, d_out, dx, dweights;
  std::vector<int64_t> offsets;
};

// dispatch, experts f_e(u) = (e + 1) u + 0.25 e, combine; combine_backward, the experts'
// backward (e + 1), dispatch_backward.
Outputs run(Dispatcher& dispatcher, const Routing& r) {
  const RoutingPlan& plan = *r.plan;
  const int64_t n = plan.num_tokens;
  std::vector<float> x = r.x, dy = r.dy;
  const DispatchHandle h = dispatcher.dispatch(Tensor(x.data(), {n, kC}), r.plan);
  const int64_t s = h.rows().rows();
  Outputs o;
  o.rows.assign(h.rows().data, h.rows().data + s * kC);
  o.offsets.assign(h.expert_offsets().begin(), h.expert_offsets().end());
  std::vector<float> out(static_cast<size_t>(s * kC));
  for (int64_t i = 0; i < h.num_local_experts(); ++i) {
    const auto scale = static_cast<float>(h.first_expert() + i + 1);
    for (int64_t row = o.offsets[i]; row < o.offsets[i + 1]; ++row)
      for (int64_t j = 0; j < kC; ++j)
        out[row * kC + j] = scale * o.rows[row * kC + j] + 0.25f * (scale - 1.0f);
  }
  o.y.resize(x.size());
  o.dx.resize(x.size());
  o.dweights.resize(static_cast<size_t>(plan.num_assignments()));
  dispatcher.combine(h, Tensor(out.data(), {s, kC}), Tensor(o.y.data(), {n, kC}));
  o.d_out.resize(out.size());
  dispatcher.combine_backward(h, Tensor(out.data(), {s, kC}), Tensor(dy.data(), {n, kC}),
                              Tensor(o.d_out.data(), {s, kC}), o.dweights.data());
  std::vector<float> d_rows = o.d_out;
  for (int64_t i = 0; i < h.num_local_experts(); ++i)
    for (int64_t row = o.offsets[i]; row < o.offsets[i + 1]; ++row)
      for (int64_t j = 0; j < kC; ++j)
        d_rows[row * kC + j] *= static_cast<float>(h.first_expert() + i + 1);
  dispatcher.dispatch_backward(h, Tensor(d_rows.data(), {s, kC}), Tensor(o.dx.data(), {n, kC}));
  return o;
}

// Distinct nodes each token's kept assignments reach.
std::vector<std::set<int>> nodes_reached(const RoutingPlan& plan, const ExpertPlacement& p,
                                         int per_node) {
  std::vector<std::set<int>> out(static_cast<size_t>(plan.num_tokens));
  for (int64_t a = 0; a < plan.num_assignments(); ++a)
    if (plan.slot[a] >= 0) out[a / plan.top_k].insert(p.owner(plan.expert[a]) / per_node);
  return out;
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want,
                  const std::vector<std::set<int>>& reached, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) {
    if (reached[i / kC].size() <= 1)
      EXPECT_EQ(got[i], want[i]) << what << " " << i << " (token on one node)";
    else
      EXPECT_NEAR(got[i], want[i], 1e-6f * (1.0f + std::fabs(want[i]))) << what << " " << i;
  }
}

// Inter-node bytes of one rank's own plan: rows, records and counts of its dispatch, and
// its rows of the other three exchanges (what it sends as a landing rank and the
// dweights depend on the other ranks' plans: they enter the job total).
struct Predicted {
  int64_t remote_rows = 0, remote_pairs = 0;
};

Predicted predict(const std::vector<std::set<int>>& reached, const RoutingPlan& plan,
                  const ExpertPlacement& placement, int per_node, int node) {
  Predicted p;
  for (const auto& nodes : reached)
    for (int m : nodes) p.remote_rows += m != node ? 1 : 0;
  for (int64_t a = 0; a < plan.num_assignments(); ++a)
    if (plan.slot[a] >= 0 && placement.owner(plan.expert[a]) / per_node != node) ++p.remote_pairs;
  return p;
}

void expect_same_as_flat(uint64_t seed, int64_t e, int64_t k, int64_t capacity) {
  MpiCommunicator ep(test::mpi_env().world());
  const int w = ep.size();
  const ExpertPlacement placement{e, w, ep.rank()};
  // rank 1 has no tokens: its blocks are empty everywhere
  const int64_t n = ep.rank() == 1 ? 0 : 24 + 5 * ep.rank();
  const Routing r = random_routing(ep.rank(), seed, n, e, k, capacity);
  AllToAllDispatcher flat(ep, placement);
  const Outputs want = run(flat, r);
  for (int g = 1; g <= w; ++g) {
    if (w % g != 0) continue;
    const std::string label = "N=" + std::to_string(w / g) + " G=" + std::to_string(g);
    const NodeMap nodes = NodeMap::blocks(w, g);
    ep.set_peer_nodes(nodes.node);
    TwoLevelAllToAll split(ep, nodes);
    NodeDedupDispatcher dedup(ep, split.intra(), split.inter(), placement);
    const std::vector<std::set<int>> reached = nodes_reached(*r.plan, placement, g);

    split.reset_stats();
    const Outputs got = run(dedup, r);
    const CommStats inter = split.inter().stats();

    EXPECT_EQ(got.offsets, want.offsets) << label;
    EXPECT_EQ(got.rows, want.rows) << label << ": expert rows differ";
    EXPECT_EQ(got.d_out, want.d_out) << label;
    EXPECT_EQ(got.dweights, want.dweights) << label;
    expect_close(got.y, want.y, reached, label + " y");
    expect_close(got.dx, want.dx, reached, label + " dx");

    // inter-node bytes: per exchange one row of C floats per (token, other node); the
    // records [count, (expert, weight)...]; dweights one float per remote pair; the counts
    // two int64 per other node
    const int node = ep.rank() / g;
    const Predicted p = predict(reached, *r.plan, placement, g, node);
    const int64_t row = kC * int64_t{sizeof(float)};
    int64_t job[4] = {inter.inter_node_bytes,
                      4 * p.remote_rows * row + (p.remote_rows + 2 * p.remote_pairs) * 4 +
                          p.remote_pairs * 4 + (w / g - 1) * 16,
                      p.remote_rows, p.remote_pairs};
    EXPECT_EQ(inter.inter_node_bytes, inter.bytes_sent) << label;
    ep.all_reduce<int64_t>(job);
    EXPECT_EQ(job[0], job[1]) << label << ": job inter-node bytes";
    if (w / g > 1) {
      EXPECT_GT(job[2], 0) << label << ": nothing crossed nodes";
      EXPECT_LE(job[2], job[3]) << label;
      if (k > 1 && e > w / g && capacity < 0) {  // a node holds two experts: some token uses both
        EXPECT_LT(job[2], job[3]) << label << ": no token had two experts on a remote node";
      }
    }
    ep.set_peer_nodes({});
  }
  if (capacity >= 0) {
    int64_t dropped = r.plan->num_dropped();
    ep.all_reduce<int64_t>({&dropped, 1});
    EXPECT_GT(dropped, 0) << "the capacity drops nothing";
  }
}

TEST(NodeDedupDispatcher, SameAsFlatDropless) { expect_same_as_flat(1, 8, 2, -1); }
TEST(NodeDedupDispatcher, SameAsFlatWithDrops) { expect_same_as_flat(2, 8, 2, 5); }
TEST(NodeDedupDispatcher, SameAsFlatTop3UnevenExperts) { expect_same_as_flat(3, 11, 3, -1); }
TEST(NodeDedupDispatcher, SameAsFlatTop4WithDrops) { expect_same_as_flat(4, 16, 4, 6); }
TEST(NodeDedupDispatcher, SameAsFlatTop1) { expect_same_as_flat(5, 9, 1, 7); }

TEST(NodeDedupDispatcher, DispatchBytesFollowThePlan) {
  // The dispatch alone, per rank: rows this rank sends across nodes = the other nodes its
  // tokens reach; its records; its counts.
  MpiCommunicator ep(test::mpi_env().world());
  const int w = ep.size(), g = w / 2;
  const int64_t e = 12, k = 3, n = 40;
  const ExpertPlacement placement{e, w, ep.rank()};
  const Routing r = random_routing(ep.rank(), 9, n, e, k, -1);
  const NodeMap nodes = NodeMap::blocks(w, g);
  ep.set_peer_nodes(nodes.node);
  TwoLevelAllToAll split(ep, nodes);
  NodeDedupDispatcher dedup(ep, split.intra(), split.inter(), placement);
  const std::vector<std::set<int>> reached = nodes_reached(*r.plan, placement, g);
  const Predicted p = predict(reached, *r.plan, placement, g, ep.rank() / g);
  split.reset_stats();
  std::vector<float> x = r.x;
  const DispatchHandle h = dedup.dispatch(Tensor(x.data(), {n, kC}), r.plan);
  const CommStats inter = split.inter().stats();
  EXPECT_EQ(inter.inter_node_bytes,
            p.remote_rows * kC * 4 + (p.remote_rows + 2 * p.remote_pairs) * 4 + 16);
  EXPECT_EQ(inter.calls, 3) << "counts, records, rows";
  EXPECT_EQ(split.intra().stats().calls, 2) << "counts, rows";
  EXPECT_EQ(split.intra().stats().inter_node_bytes, 0);
  ep.set_peer_nodes({});
}

}  // namespace
}  // namespace moe
