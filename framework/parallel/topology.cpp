#include "framework/parallel/topology.h"

#include <map>
#include <sstream>

#include "framework/core/error.h"
#include "framework/parallel/communicator.h"

namespace moe {

NodeMap NodeMap::blocks(int size, int ranks_per_node) {
  MOE_CHECK(ranks_per_node > 0 && size % ranks_per_node == 0, "NodeMap: ", ranks_per_node,
            " ranks per node do not divide ", size, " ranks");
  NodeMap map;
  map.node.resize(static_cast<size_t>(size));
  for (int r = 0; r < size; ++r) map.node[r] = r / ranks_per_node;
  map.num_nodes = size / ranks_per_node;
  map.ranks_per_node = ranks_per_node;
  return map;
}

NodeMap NodeMap::from_labels(const std::vector<int>& labels) {
  NodeMap map;
  std::map<int, int> index;  // label -> node number by first appearance
  for (int label : labels) {
    auto [it, inserted] = index.emplace(label, static_cast<int>(index.size()));
    map.node.push_back(it->second);
  }
  map.num_nodes = std::max<int>(1, static_cast<int>(index.size()));
  // blocked: node n holds exactly the ranks [n*G, (n+1)*G)
  const int size = static_cast<int>(labels.size());
  map.ranks_per_node = size % map.num_nodes == 0 ? size / map.num_nodes : 0;
  for (int r = 0; r < size && map.ranks_per_node > 0; ++r)
    if (map.node[r] != r / map.ranks_per_node) map.ranks_per_node = 0;
  if (size == 0) map.ranks_per_node = 1;
  return map;
}

NodeMap NodeMap::restrict_to(const std::vector<int>& members) const {
  std::vector<int> labels;
  labels.reserve(members.size());
  for (int m : members) {
    MOE_CHECK(m >= 0 && m < size(), "NodeMap: member ", m, " of ", size(), " ranks");
    labels.push_back(node[m]);
  }
  return from_labels(labels);
}

std::string NodeMap::describe() const {
  std::ostringstream os;
  os << num_nodes << (num_nodes == 1 ? " node" : " nodes");
  if (blocked())
    os << " x " << ranks_per_node << (ranks_per_node == 1 ? " rank" : " ranks");
  else
    os << " (uneven: " << size() << " ranks)";
  return os.str();
}

Topology discover_topology(Communicator& world, int node_label, int ranks_per_node) {
  Topology topology;
  if (ranks_per_node > 0) {
    MOE_USER_CHECK(world.size() % ranks_per_node == 0, "parallel.ranks_per_node: ",
                   ranks_per_node, " does not divide the job's ", world.size(), " ranks");
    topology.world = NodeMap::blocks(world.size(), ranks_per_node);
    topology.from_config = true;
    return topology;
  }
  std::vector<int> labels(static_cast<size_t>(world.size()));  // [rank]
  world.all_gather(std::span<const int>(&node_label, 1), std::span<int>(labels));
  topology.world = NodeMap::from_labels(labels);
  return topology;
}

}  // namespace moe
