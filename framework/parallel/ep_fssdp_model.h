#pragma once
// A model (not a measurement) of one MoE layer's step time under plain expert
// parallelism and under fssdp (sharded experts with materialised replicas), to project
// both from 8 to thousands of GPUs under a skewed router (docs/benchmarks.md, "Projection:
// plain ep vs fssdp"; `moe-bench fssdp-model`).
//
// Load. Expert popularity is Zipf(s) over the E experts, p_e ∝ (e + 1)^-s. A token picks
// K distinct experts, so expert e receives a share q_e = min(1, c · p_e) of the tokens,
// c such that Σ q_e = K (the hottest experts saturate at one row per token). With R ranks
// of N tokens the layer computes l_e = q_e · R · N rows of expert e; the mean per rank is
// N · K.
//
// Plain ep: rank r owns the contiguous block of E / R experts r·E/R.. (in popularity
// order, so rank 0 holds the hottest block: the worst placement); its time is
//   compute  (Σ_{e in block} l_e) · flops_per_row / device rate
//   a2a      4 exchanges (dispatch, combine, and their backward twins) of the busiest
//            rank's bytes: block per peer S = max(N · K, its rows) · C · b / R, at the
//            cost model's cheaper of flat and two-level (what moe.dispatcher = auto picks)
//
// fssdp: the same owners, plus replicas (R · slots in the job). The rows of an expert with
// h holders split evenly, so with a cap of L rows per rank an expert needs
// h_e >= l_e / L holders, and an owner, which keeps 1 / h_e of each expert it owns, needs
// Σ_{e in its block} l_e / h_e <= L (more holders where that sheds most rows). The busiest
// rank computes the smallest L >= N · K whose replicas Σ (h_e − 1) fit the budget: the
// outcome of a replica plan that packs the pieces perfectly, so a lower bound on what the
// greedy plan (framework/moe/fssdp_plan.h) reaches. With no slots it is plain ep. Its time is
//   compute  L · flops_per_row / device rate
//   a2a      as above with L rows
//   sparse   the sparse all-gather of the replicas' weights (forward) and the
//            reduce-scatter of their gradients (backward), P = expert parameter bytes
//            each: the owner sending the most replicas sends them one after the other,
//            the first (G − 1) · slots to its node's ranks, the rest across nodes (links
//            work at once as in the flat all-to-all); a rank receives at most `slots`
//            (counted at the inter-node link). Twice that owner's time, or the receivers'.
//
// A replica pays when what it takes off the busiest rank, about N · K rows of compute and
// of receiving in 4 exchanges, costs more than moving its weights and gradients:
//   2 (α_inter + P / β_inter) < N · K · (flops_per_row / rate + 4 · C · b / β_inter)
// where the exchanges are bandwidth-bound; small blocks are latency-bound and save less.
// The projection finds the crossover by evaluating both sides, not by this estimate.

#include <cstdint>
#include <vector>

#include "framework/parallel/cost_model.h"

namespace moe {

// One MoE layer of SwiGLU experts, per GPU.
struct MoeLayerShape {
  int64_t tokens_per_rank = 0;   // N
  int64_t width = 0;             // C
  int64_t expert_ffn = 0;        // F
  int64_t top_k = 0;             // K
  int64_t experts_per_rank = 0;  // E / R: the experts grow with the cluster
  double row_bytes = 2.0;        // b: bytes per activation element on the wire (bf16)
  double weight_bytes = 2.0;     // w: bytes per expert parameter in a replica (bf16)

  // up, gate, down: 3 GEMMs of C x F, 2 flops per multiply-add, backward twice forward
  double flops_per_row() const { return 18.0 * double(width) * double(expert_ffn); }
  double expert_param_bytes() const { return 3.0 * double(width) * double(expert_ffn) * weight_bytes; }
};

struct GpuCluster {
  AllToAllCostModel links;
  int per_node = 8;                // G
  double flops_per_s = 400e12;     // dense bf16 GEMM rate a GPU sustains
};

// The published figures of the a2a projection (published_gpu_cluster(): intra 160 GB/s
// 2 us, inter 50 GB/s 5 us per GPU), 8 GPUs per node, 400 TFLOP/s.
GpuCluster published_h100_cluster();

struct LayerTime {
  double rows_max_over_mean = 0.0;  // the busiest rank's rows over N · K
  double compute_s = 0.0, a2a_s = 0.0, sparse_s = 0.0;
  int64_t replicas = 0;             // materialised replicas in the job (fssdp)
  double total_s() const { return compute_s + a2a_s + sparse_s; }
};

struct EpVsFssdp {
  int ranks = 0;
  LayerTime ep, fssdp;
};

// q_e for e = 0..experts-1 (decreasing, each <= 1, summing to top_k); skew 0 = uniform.
std::vector<double> zipf_expert_shares(int64_t experts, int64_t top_k, double skew);

// The busiest rank's rows L after materialisation (above): loads [E] in rows, owned in
// blocks of `per_owner`; `replicas` gets the replicas at L.
double materialised_max_rows(const std::vector<double>& loads, int64_t per_owner,
                             double mean, int64_t replica_budget, int64_t* replicas);

// Both layouts' time for one layer and step on `ranks` GPUs (a multiple of per_node, or
// fewer: one node). `slots` = parallel.materialize_slots.
EpVsFssdp project_ep_vs_fssdp(const MoeLayerShape& layer, const GpuCluster& cluster,
                              int ranks, double skew, int slots);

}  // namespace moe
