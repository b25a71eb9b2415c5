#pragma once
// Topology: which node each rank runs on (DESIGN.md: two-level all-to-all, locality-
// aware routing, intra- vs inter-node telemetry).
//
// Discovered from MPI: the ranks that share memory (MPI_COMM_TYPE_SHARED) are one node.
// parallel.ranks_per_node = G > 0 overrides it: ranks [n*G, (n+1)*G) form node n, an
// emulated layout for experiments and tests on one machine (the link-class statistics
// then describe the emulated nodes, not the wires).
//
// A NodeMap describes the ranks of one group (the world, or an ep group): node[i] is
// the node of group rank i, numbered 0, 1, ... in order of first appearance. The
// group is *blocked* when its ranks fill the nodes in consecutive runs of equal length
// G (group rank r = n*G + l: node n, local index l); the two-level all-to-all, node-
// limited and bi-level routing need a blocked group.
//
//   world: 8 ranks, 2 nodes of 4            node = {0,0,0,0,1,1,1,1}, G = 4
//   ep group {0,1,4,5} of that world        node = {0,0,1,1},         G = 2
//   ep group {0,1,2,4} (not blocked)        node = {0,0,0,1},         G = 0

#include <string>
#include <vector>

namespace moe {

class Communicator;

struct NodeMap {
  std::vector<int> node;   // [size] node index of each group rank
  int num_nodes = 1;
  int ranks_per_node = 1;  // G when blocked, else 0

  int size() const { return static_cast<int>(node.size()); }
  bool blocked() const { return ranks_per_node > 0; }
  int local_index(int rank) const { return rank % ranks_per_node; }  // blocked only

  // `size` ranks, `ranks_per_node` consecutive ones per node (it must divide size).
  static NodeMap blocks(int size, int ranks_per_node);
  // From any node labels [size]: renumbers them by first appearance and finds G.
  static NodeMap from_labels(const std::vector<int>& labels);
  // The map of the group whose members are these ranks of this map, in group order.
  NodeMap restrict_to(const std::vector<int>& members) const;
  // "2 nodes x 4 ranks" or "3 nodes (uneven)"
  std::string describe() const;
};

struct Topology {
  NodeMap world;               // node of every world rank
  bool from_config = false;    // parallel.ranks_per_node set (emulated nodes)
};

// Collective over `world`. ranks_per_node > 0: blocks of that many ranks (it must
// divide the world size). 0: the ranks all-gather node_label, any integer that is the
// same exactly for the ranks of one node (MpiEnv::node_leader(), the lowest world rank
// sharing memory with this one). mpirun's default placement (--map-by slot) puts ranks
// node by node, which gives a blocked map when the nodes hold equal numbers of ranks.
Topology discover_topology(Communicator& world, int node_label, int ranks_per_node);

}  // namespace moe
