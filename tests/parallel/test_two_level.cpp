// mpi-ranks: 2 4 8
// The two-level all-to-all delivers exactly what the flat one delivers, on every
// (nodes N, ranks per node G) with N * G = world (so (2,2) at 4 ranks and (2,4), (4,2)
// at 8, the degenerate (1,W) and (W,1) too), with emulated nodes (NodeMap::blocks, as
// parallel.ranks_per_node gives them) under plain mpirun:
//   - variable counts: random uneven, many zeros, all zeros, and large blocks
//     (hundreds of KiB); forward and reverse; the counts exchange itself;
//   - equal blocks (capacity-padded buffers);
//   - bytes and messages per link class: the same inter-node bytes as flat, carried in
//     at most N-1 inter-node messages instead of (N-1)*G;
//   - NodeMap and topology arithmetic (blocked / not blocked groups).
//
// Checks after a collective use EXPECT (not ASSERT), so no rank leaves a test early.

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "framework/core/rng.h"
#include "framework/parallel/mpi_communicator.h"
#include "framework/parallel/topology.h"
#include "framework/parallel/two_level_all_to_all.h"
#include "tests/parallel/mpi_test.h"

namespace moe {
namespace {

// Every (N, G) with N * G = world.
std::vector<int> ranks_per_node_choices(int world) {
  std::vector<int> out;
  for (int g = 1; g <= world; ++g)
    if (world % g == 0) out.push_back(g);
  return out;
}

enum class Counts { kUneven, kSparse, kZero, kLarge };

// Block this rank sends to d: a function of (case, seed, src, dst), so every rank can
// compute what it receives without asking.
int64_t block_count(Counts kind, uint64_t seed, int src, int dst) {
  const PhiloxKey key = philox_key(seed, hash_name("test.two_level"));
  const uint64_t r = random_u64(key, static_cast<uint64_t>(src), static_cast<uint64_t>(dst));
  switch (kind) {
    case Counts::kUneven: return static_cast<int64_t>(r % 37);
    case Counts::kSparse: return r % 3 == 0 ? static_cast<int64_t>(r % 11) : 0;
    case Counts::kZero: return 0;
    case Counts::kLarge: return 60000 + static_cast<int64_t>(r % 50000);  // 240-440 KiB
  }
  return 0;
}

// Element i of the block src -> dst: unique over the whole exchange.
float element(int src, int dst, int64_t i) {
  return static_cast<float>(src * 1000003 + dst * 7919) + static_cast<float>(i % 4096) * 0.25f;
}

struct Exchange {
  std::vector<int64_t> send_counts, recv_counts;
  std::vector<float> send;
};

Exchange make_exchange(Counts kind, uint64_t seed, int rank, int world) {
  Exchange x;
  for (int d = 0; d < world; ++d) {
    x.send_counts.push_back(block_count(kind, seed, rank, d));
    x.recv_counts.push_back(block_count(kind, seed, d, rank));
    for (int64_t i = 0; i < x.send_counts.back(); ++i) x.send.push_back(element(rank, d, i));
  }
  return x;
}

int64_t total(const std::vector<int64_t>& v) {
  int64_t t = 0;
  for (int64_t c : v) t += c;
  return t;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

void expect_same_as_flat(Counts kind, uint64_t seed) {
  MpiCommunicator world(test::mpi_env().world());
  const int w = world.size();
  for (int g : ranks_per_node_choices(w)) {
    const NodeMap nodes = NodeMap::blocks(w, g);
    world.set_peer_nodes(nodes.node);
    TwoLevelAllToAll two(world, nodes);
    const Exchange x = make_exchange(kind, seed + static_cast<uint64_t>(g), world.rank(), w);

    // forward: flat vs two-level, with the counts exchange
    std::vector<float> flat(static_cast<size_t>(total(x.recv_counts)));
    world.stats() = {};
    world.all_to_all_v<float>(x.send, x.send_counts, flat, x.recv_counts);
    const CommStats flat_stats = world.stats();
    const std::vector<int64_t> ones(static_cast<size_t>(w), 1);
    std::vector<int64_t> received;
    two.reset_stats();
    const TwoLevelPlan plan = two.all_to_all_counts(x.send_counts, ones, received);
    EXPECT_EQ(received, x.recv_counts) << "counts, G=" << g;
    EXPECT_EQ(plan.recv, x.recv_counts) << "G=" << g;
    EXPECT_EQ(plan.send, x.send_counts) << "G=" << g;
    two.reset_stats();
    std::vector<float> hier(flat.size());
    two.all_to_all_v<float>(plan, x.send, hier);
    const CommStats two_stats = two.stats();
    EXPECT_TRUE(same_bits(flat, hier)) << "forward differs, N=" << w / g << " G=" << g;

    // link classes: the same inter-node bytes over the job (a rank forwards its node
    // peers' blocks, so per rank they differ), in at most N-1 messages per rank
    int64_t inter[2] = {two_stats.inter_node_bytes, flat_stats.inter_node_bytes};
    world.all_reduce<int64_t>(inter);
    EXPECT_EQ(inter[0], inter[1]) << "G=" << g;
    EXPECT_LE(two_stats.inter_node_messages, w / g - 1) << "G=" << g;
    EXPECT_LE(flat_stats.inter_node_messages, (w / g - 1) * g) << "G=" << g;
    EXPECT_EQ(flat_stats.intra_node_bytes + flat_stats.inter_node_bytes, flat_stats.bytes_sent);

    // reverse: the received blocks go back where they came from
    std::vector<float> back_flat(x.send.size()), back_two(x.send.size());
    world.all_to_all_v<float>(flat, x.recv_counts, back_flat, x.send_counts);
    two.all_to_all_v_reverse<float>(plan, hier, back_two);
    EXPECT_TRUE(same_bits(back_flat, back_two)) << "reverse differs, G=" << g;
    EXPECT_TRUE(same_bits(back_two, x.send)) << "round trip differs, G=" << g;

    // the convenience form (counts exchange inside)
    std::vector<float> again(flat.size());
    two.all_to_all_v<float>(x.send, x.send_counts, again, x.recv_counts);
    EXPECT_TRUE(same_bits(flat, again)) << "G=" << g;
    world.set_peer_nodes({});
  }
}

TEST(TwoLevelAllToAll, UnevenCountsSameAsFlat) { expect_same_as_flat(Counts::kUneven, 1); }
TEST(TwoLevelAllToAll, SparseCountsSameAsFlat) { expect_same_as_flat(Counts::kSparse, 2); }
TEST(TwoLevelAllToAll, ZeroCountsSameAsFlat) { expect_same_as_flat(Counts::kZero, 3); }
TEST(TwoLevelAllToAll, LargeCountsSameAsFlat) { expect_same_as_flat(Counts::kLarge, 4); }

TEST(TwoLevelAllToAll, CountVectorsPlanTheirRows) {
  // Per-destination vectors of counts (as a dispatcher sends per-expert counts): every
  // rank receives each source's vector, and the plan's blocks are their sums.
  MpiCommunicator world(test::mpi_env().world());
  const int w = world.size();
  for (int g : ranks_per_node_choices(w)) {
    const NodeMap nodes = NodeMap::blocks(w, g);
    TwoLevelAllToAll two(world, nodes);
    std::vector<int64_t> segment, counts;  // segment[d] = d % 3 + 1 entries
    for (int d = 0; d < w; ++d) {
      segment.push_back(d % 3 + 1);
      for (int j = 0; j <= d % 3; ++j) counts.push_back(world.rank() * 100 + d * 10 + j);
    }
    std::vector<int64_t> received;
    const TwoLevelPlan plan = two.all_to_all_counts(counts, segment, received);
    const int mine = world.rank() % 3 + 1;
    ASSERT_EQ(received.size(), static_cast<size_t>(w * mine));
    for (int s = 0; s < w; ++s) {
      int64_t rows = 0;
      for (int j = 0; j < mine; ++j) {
        const int64_t want = s * 100 + world.rank() * 10 + j;
        EXPECT_EQ(received[s * mine + j], want) << "from " << s;
        rows += want;
      }
      EXPECT_EQ(plan.recv[s], rows);
    }
  }
}

TEST(TwoLevelAllToAll, EqualBlocksSameAsFlat) {
  MpiCommunicator world(test::mpi_env().world());
  const int w = world.size();
  for (int64_t block : {int64_t{0}, int64_t{1}, int64_t{13}, int64_t{70000}}) {
    std::vector<float> send(static_cast<size_t>(block * w));
    for (int d = 0; d < w; ++d)
      for (int64_t i = 0; i < block; ++i) send[d * block + i] = element(world.rank(), d, i);
    std::vector<float> flat(send.size());
    world.all_to_all<float>(send, flat);
    for (int g : ranks_per_node_choices(w)) {
      TwoLevelAllToAll two(world, NodeMap::blocks(w, g));
      std::vector<float> hier(send.size());
      two.all_to_all<float>(send, hier);
      EXPECT_TRUE(same_bits(flat, hier)) << "block " << block << " G=" << g;
    }
  }
}

TEST(NodeMap, BlocksAndRestriction) {
  const NodeMap world = NodeMap::blocks(8, 4);
  EXPECT_EQ(world.num_nodes, 2);
  EXPECT_EQ(world.ranks_per_node, 4);
  EXPECT_EQ(world.node, (std::vector<int>{0, 0, 0, 0, 1, 1, 1, 1}));
  const NodeMap ep = world.restrict_to({0, 1, 4, 5});
  EXPECT_TRUE(ep.blocked());
  EXPECT_EQ(ep.num_nodes, 2);
  EXPECT_EQ(ep.ranks_per_node, 2);
  const NodeMap uneven = world.restrict_to({0, 1, 2, 4});
  EXPECT_FALSE(uneven.blocked());
  EXPECT_EQ(uneven.num_nodes, 2);
  const NodeMap one = world.restrict_to({4, 5, 6});
  EXPECT_EQ(one.num_nodes, 1);
  EXPECT_EQ(one.ranks_per_node, 3);
  // labels in any order: interleaved nodes are not blocked
  const NodeMap interleaved = NodeMap::from_labels({7, 3, 7, 3});
  EXPECT_EQ(interleaved.node, (std::vector<int>{0, 1, 0, 1}));
  EXPECT_FALSE(interleaved.blocked());
  EXPECT_EQ(world.describe(), "2 nodes x 4 ranks");
}

TEST(Topology, OverrideAndDiscovery) {
  MpiCommunicator world(test::mpi_env().world());
  const int w = world.size();
  const Topology emulated = discover_topology(world, test::mpi_env().node_leader(), 1);
  EXPECT_TRUE(emulated.from_config);
  EXPECT_EQ(emulated.world.num_nodes, w);
  // plain mpirun on one machine: one node holding every rank
  const Topology found = discover_topology(world, test::mpi_env().node_leader(), 0);
  EXPECT_FALSE(found.from_config);
  EXPECT_EQ(found.world.num_nodes * found.world.ranks_per_node, w);
}

}  // namespace
}  // namespace moe
