#include "framework/parallel/cost_model.h"

#include <algorithm>
#include <cstring>
#include <iomanip>
#include <sstream>
#include <vector>

#include "framework/core/timer.h"
#include "framework/parallel/communicator.h"
#include "framework/parallel/topology.h"

namespace moe {

double AllToAllCostModel::flat_seconds(double block, int nodes, int per_node) const {
  const double intra_s = (per_node - 1) * (intra.latency_s + block / intra.bandwidth_Bps);
  const double inter_s =
      double(nodes - 1) * per_node * (inter.latency_s + block / inter.bandwidth_Bps);
  return std::max(intra_s, inter_s);
}

double AllToAllCostModel::two_level_seconds(double block, int nodes, int per_node) const {
  const double world = double(nodes) * per_node;
  const double intra_s =
      (per_node - 1) * (intra.latency_s + nodes * block / intra.bandwidth_Bps);
  const double inter_s = (nodes - 1) * (inter.latency_s + per_node * block / inter.bandwidth_Bps);
  return intra_s + inter_s + 2.0 * world * block / copy_Bps;
}

std::string AllToAllCostModel::describe() const {
  std::ostringstream os;
  os << std::fixed << std::setprecision(1) << "intra " << intra.latency_s * 1e6 << " us "
     << intra.bandwidth_Bps * 1e-9 << " GB/s, inter " << inter.latency_s * 1e6 << " us "
     << inter.bandwidth_Bps * 1e-9 << " GB/s, copy " << copy_Bps * 1e-9 << " GB/s";
  return os.str();
}

AllToAllCostModel published_gpu_cluster() {
  AllToAllCostModel m;
  m.intra = {2e-6, 160e9};
  m.inter = {5e-6, 50e9};
  m.copy_Bps = 1000e9;
  return m;
}

namespace {

// Median one-way time of a ping-pong of `bytes` between ranks a and b (others idle).
double ping_pong(Communicator& world, int a, int b, size_t bytes, int reps) {
  std::vector<uint8_t> buffer(bytes);
  std::vector<double> times;
  const int me = world.rank();
  for (int i = 0; i < reps + 1; ++i) {  // the first round trip warms the connection up
    Stopwatch watch;
    if (me == a) {
      world.send<uint8_t>(buffer, b, 7);
      world.recv<uint8_t>(buffer, b, 7);
    } else if (me == b) {
      world.recv<uint8_t>(buffer, a, 7);
      world.send<uint8_t>(buffer, a, 7);
    }
    if (i > 0) times.push_back(watch.seconds() / 2);
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return times[times.size() / 2];
}

// alpha from 8-byte messages, beta from 1 MiB ones, measured on rank a.
LinkCost measure_link(Communicator& world, int a, int b) {
  constexpr size_t kLarge = size_t{1} << 20;
  const double small = ping_pong(world, a, b, 8, 50);
  const double large = ping_pong(world, a, b, kLarge, 10);
  LinkCost cost;
  cost.latency_s = small;
  cost.bandwidth_Bps = double(kLarge) / std::max(large - small, 1e-9);
  return cost;
}

double measure_copy_Bps() {
  constexpr size_t kBytes = size_t{16} << 20;
  std::vector<char> src(kBytes, 1), dst(kBytes);
  double best = 1e9;
  for (int i = 0; i < 5; ++i) {
    Stopwatch watch;
    std::memcpy(dst.data(), src.data(), kBytes);
    best = std::min(best, watch.seconds());
  }
  return double(kBytes) / best;
}

LinkCost pick(const LinkCost& config, const LinkCost& measured, bool measurable,
              const LinkCost& fallback, std::string& source) {
  LinkCost out = fallback;
  source = "default";
  if (measurable) out = measured, source = "measured";
  if (config.latency_s > 0) out.latency_s = config.latency_s;
  if (config.bandwidth_Bps > 0) out.bandwidth_Bps = config.bandwidth_Bps;
  if (config.latency_s > 0 || config.bandwidth_Bps > 0)
    source = config.latency_s > 0 && config.bandwidth_Bps > 0 ? "config" : source + "+config";
  return out;
}

}  // namespace

CalibratedModel measure_link_costs(Communicator& world, const NodeMap& nodes,
                                   LinkCost intra_config, LinkCost inter_config,
                                   const AllToAllCostModel& fallback) {
  // Pairs from rank 0: its node's next rank, and the first rank of another node.
  int intra_peer = -1, inter_peer = -1;
  for (int r = 1; r < nodes.size(); ++r) {
    if (intra_peer < 0 && nodes.node[r] == nodes.node[0]) intra_peer = r;
    if (inter_peer < 0 && nodes.node[r] != nodes.node[0]) inter_peer = r;
  }
  const bool time_intra = intra_peer > 0 && !(intra_config.latency_s > 0 && intra_config.bandwidth_Bps > 0);
  const bool time_inter = inter_peer > 0 && !(inter_config.latency_s > 0 && inter_config.bandwidth_Bps > 0);
  LinkCost intra, inter;
  world.barrier();
  if (time_intra) intra = measure_link(world, 0, intra_peer);
  if (time_inter) inter = measure_link(world, 0, inter_peer);
  // rank 0's figures everywhere
  double figures[5] = {intra.latency_s, intra.bandwidth_Bps, inter.latency_s,
                       inter.bandwidth_Bps, world.rank() == 0 ? measure_copy_Bps() : 0.0};
  world.broadcast<double>(figures, 0);
  intra = {figures[0], figures[1]};
  inter = {figures[2], figures[3]};
  CalibratedModel out;
  out.model.intra = pick(intra_config, intra, time_intra, fallback.intra, out.intra_source);
  out.model.inter = pick(inter_config, inter, time_inter, fallback.inter, out.inter_source);
  out.model.copy_Bps = figures[4];
  return out;
}

}  // namespace moe
