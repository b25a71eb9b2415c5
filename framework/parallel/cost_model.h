#pragma once
// A latency-bandwidth (Hockney) model of the flat and the two-level all-to-all, to
// choose between them (moe.dispatcher = auto) and to project them to large clusters
// (docs/parallelism.md, "Cost model"; moe-a2a-bench --project).
//
// Each link class c (intra-node, inter-node) costs alpha_c + bytes / beta_c per message
// from one rank. With N nodes of G ranks and S bytes per peer:
//
//   flat       intra and inter links work at once (NVLink and the NIC are separate
//              hardware); within a class the messages go one after the other:
//              T = max((G-1)(a_i + S/b_i), (N-1) G (a_e + S/b_e))
//   two-level  intra step, then inter step, plus the two layout copies of W S bytes
//              (read and write) at the copy bandwidth b_m:
//              T = (G-1)(a_i + N S/b_i) + (N-1)(a_e + G S/b_e) + 2 W S / b_m
//
// The inter-node bytes are the same; two-level trades (N-1)(G-1) inter-node latencies
// for one more pass of the data over the node's links and two copies, so it loses where
// S is large (bandwidth-bound, few nodes) and wins where S is small and N large
// (latency-bound): with a fixed payload per rank P = W S, S shrinks as the cluster
// grows, which is why the crossover is a cluster size.
//
// Calibration: measure_link_costs times ping-pongs between two ranks of one node and of
// two nodes (latency from 8-byte messages, bandwidth from 1 MiB ones) where the job has
// such pairs; the config (parallel.*_latency_us, *_bandwidth_gbs) overrides or fills in.

#include <string>

namespace moe {

class Communicator;
struct NodeMap;

struct LinkCost {
  double latency_s = 0.0;      // alpha: seconds per message
  double bandwidth_Bps = 0.0;  // beta: bytes per second of one rank's messages
};

struct AllToAllCostModel {
  LinkCost intra, inter;
  double copy_Bps = 0.0;  // local memory copy bandwidth (the layout transforms)

  // S = block bytes per peer, N nodes, G ranks per node.
  double flat_seconds(double block, int nodes, int per_node) const;
  double two_level_seconds(double block, int nodes, int per_node) const;
  // "intra 2.0 us 160 GB/s, inter 5.0 us 50 GB/s, copy 1000 GB/s"
  std::string describe() const;
};

// Representative published figures of an 8-GPU NVLink node with one 400 Gb/s NIC per GPU
// (docs/parallelism.md lists the sources): intra 160 GB/s, 2 us; inter 50 GB/s, 5 us;
// device memory copies 1000 GB/s.
AllToAllCostModel published_gpu_cluster();

// Where the model's figures come from, for the log.
struct CalibratedModel {
  AllToAllCostModel model;
  std::string intra_source, inter_source;  // "measured", "config" or "default"
};

// Collective over `world`, whose ranks sit on `nodes` (the world's NodeMap). Measures
// what the job can measure: a link class is timed when some two ranks are joined by it
// (world ranks 0 and 1 for intra when on one node, 0 and the first rank of node 1 for
// inter) and its config values are 0; config values > 0 are used as given; the rest
// come from `fallback`. Every rank returns rank 0's figures, so all choose alike.
CalibratedModel measure_link_costs(Communicator& world, const NodeMap& nodes,
                                   LinkCost intra_config, LinkCost inter_config,
                                   const AllToAllCostModel& fallback);

}  // namespace moe
