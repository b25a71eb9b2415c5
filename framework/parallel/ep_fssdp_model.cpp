#include "framework/parallel/ep_fssdp_model.h"

#include <algorithm>
#include <cmath>

#include "framework/core/error.h"

namespace moe {
namespace {

// Holders of an expert of `load` rows when no rank computes more than `cap` of it. The
// slack keeps l = h · cap (the bisection's exact answers) at h holders.
int64_t holders(double load, double cap) {
  return std::max<int64_t>(1, int64_t(std::ceil(load / cap * (1.0 - 1e-12))));
}

// Replicas each owner sends [R] when no rank computes more than `cap` rows: every piece
// l_e / h_e of an expert <= cap, and the owner's own pieces of its block (it keeps
// 1 / h_e of each owned expert) sum to <= cap, adding a holder where it takes off most.
std::vector<int64_t> copies_per_owner(const std::vector<double>& loads, int64_t per_owner,
                                      double cap) {
  std::vector<int64_t> copies(loads.size() / size_t(per_owner), 0);
  std::vector<int64_t> h(static_cast<size_t>(per_owner));  // [E / R] holders of the block
  for (size_t r = 0; r < copies.size(); ++r) {
    const double* l = &loads[r * size_t(per_owner)];
    double kept = 0.0;
    for (int64_t i = 0; i < per_owner; ++i) {
      h[size_t(i)] = holders(l[i], cap);
      kept += l[i] / double(h[size_t(i)]);
    }
    auto gain = [&](int64_t i) {  // rows the owner sheds with one more holder of expert i
      return l[i] / double(h[size_t(i)]) - l[i] / double(h[size_t(i)] + 1);
    };
    while (kept > cap * (1.0 + 1e-12)) {
      int64_t best = 0;
      for (int64_t i = 1; i < per_owner; ++i)
        if (gain(i) > gain(best)) best = i;
      kept -= gain(best);
      ++h[size_t(best)];
    }
    for (int64_t i = 0; i < per_owner; ++i) copies[r] += h[size_t(i)] - 1;
  }
  return copies;
}

int64_t replicas_at(const std::vector<double>& loads, int64_t per_owner, double cap) {
  int64_t sum = 0;
  for (int64_t n : copies_per_owner(loads, per_owner, cap)) sum += n;
  return sum;
}

// The cheaper of the flat and the two-level all-to-all (what moe.dispatcher = auto
// picks), for `block` bytes per peer.
double a2a_seconds(const GpuCluster& c, double block, int nodes, int per_node) {
  if (nodes == 1) return c.links.flat_seconds(block, 1, per_node);
  return std::min(c.links.flat_seconds(block, nodes, per_node),
                  c.links.two_level_seconds(block, nodes, per_node));
}

// One message of `bytes` on a link.
double message_seconds(const LinkCost& link, double bytes) {
  return link.latency_s + bytes / link.bandwidth_Bps;
}

// The sparse all-gather (forward) and reduce-scatter (backward) of the replicas: the
// owner that sends the most copies, or a receiver of `slots` copies, sets the pace.
double sparse_seconds(const MoeLayerShape& layer, const GpuCluster& c, int nodes,
                      int per_node, int slots, const std::vector<int64_t>& copies_per_owner) {
  const double p = layer.expert_param_bytes();
  const LinkCost& far = nodes > 1 ? c.links.inter : c.links.intra;
  double slowest = 0.0;
  int64_t total = 0;
  for (int64_t n : copies_per_owner) {
    const int64_t near = std::min<int64_t>(n, int64_t(per_node - 1) * slots);
    const int64_t away = n - near;
    slowest = std::max({slowest, double(near) * message_seconds(c.links.intra, p),
                        double(away) * message_seconds(c.links.inter, p)});
    total += n;
  }
  if (total > 0)  // a rank receives at most `slots` replicas
    slowest = std::max(slowest, double(std::min<int64_t>(slots, total)) * message_seconds(far, p));
  return 2.0 * slowest;
}

}  // namespace

GpuCluster published_h100_cluster() {
  GpuCluster c;
  c.links = published_gpu_cluster();
  return c;
}

std::vector<double> zipf_expert_shares(int64_t experts, int64_t top_k, double skew) {
  MOE_CHECK(experts >= 1 && top_k >= 1 && top_k <= experts && skew >= 0.0,
            "zipf_expert_shares: E=", experts, " K=", top_k, " s=", skew);
  const auto n = static_cast<size_t>(experts);
  std::vector<double> p(n), q(n);  // [E] popularity, shares
  for (int64_t e = 0; e < experts; ++e) p[size_t(e)] = std::pow(double(e + 1), -skew);
  // Water-filling: the first `full` experts saturate at 1, the rest share K − full in
  // proportion to p; p decreases, so the saturated ones are a prefix.
  double tail = 0.0;
  for (double x : p) tail += x;
  int64_t full = 0;
  while (full < top_k && double(top_k - full) * p[size_t(full)] / tail > 1.0) {
    tail -= p[size_t(full)];
    ++full;
  }
  const double c = double(top_k - full) / tail;
  for (int64_t e = 0; e < experts; ++e) q[size_t(e)] = e < full ? 1.0 : c * p[size_t(e)];
  return q;
}

double materialised_max_rows(const std::vector<double>& loads, int64_t per_owner,
                             double mean, int64_t replica_budget, int64_t* replicas) {
  MOE_CHECK(per_owner >= 1 && loads.size() % size_t(per_owner) == 0,
            "materialised_max_rows: ", loads.size(), " experts in blocks of ", per_owner);
  double hi = mean;  // the busiest owner's block: no replicas needed
  for (size_t b = 0; b < loads.size(); b += size_t(per_owner)) {
    double block = 0.0;
    for (int64_t i = 0; i < per_owner; ++i) block += loads[b + size_t(i)];
    hi = std::max(hi, block);
  }
  double lo = mean;
  if (replicas_at(loads, per_owner, lo) > replica_budget) {
    // replicas_at falls as the cap grows: bisect to the smallest cap within budget
    for (int i = 0; i < 200 && hi - lo > 1e-9 * hi; ++i) {
      const double mid = 0.5 * (lo + hi);
      (replicas_at(loads, per_owner, mid) <= replica_budget ? hi : lo) = mid;
    }
    lo = hi;
  }
  *replicas = replicas_at(loads, per_owner, lo);
  return lo;
}

EpVsFssdp project_ep_vs_fssdp(const MoeLayerShape& layer, const GpuCluster& cluster,
                              int ranks, double skew, int slots) {
  MOE_CHECK(ranks >= 1 && slots >= 0 && layer.experts_per_rank >= 1,
            "project_ep_vs_fssdp: ranks ", ranks, " slots ", slots);
  MOE_CHECK(ranks <= cluster.per_node || ranks % cluster.per_node == 0,
            "project_ep_vs_fssdp: ", ranks, " ranks are not whole nodes of ", cluster.per_node);
  const int per_node = std::min(ranks, cluster.per_node);
  const int nodes = ranks / per_node;
  const int64_t experts = layer.experts_per_rank * ranks;
  const std::vector<double> share = zipf_expert_shares(experts, layer.top_k, skew);
  std::vector<double> loads(share.size());  // [E] rows of the whole job
  for (size_t e = 0; e < share.size(); ++e)
    loads[e] = share[e] * double(ranks) * double(layer.tokens_per_rank);
  const double mean = double(layer.tokens_per_rank * layer.top_k);
  const double sec_per_row = layer.flops_per_row() / cluster.flops_per_s;
  const double bytes_per_row = double(layer.width) * layer.row_bytes;
  auto a2a = [&](double rows) {
    return 4.0 * a2a_seconds(cluster, std::max(mean, rows) * bytes_per_row / ranks, nodes, per_node);
  };

  EpVsFssdp out;
  out.ranks = ranks;
  double ep_rows = 0.0;
  for (int r = 0; r < ranks; ++r) {
    double rows = 0.0;
    for (int64_t i = 0; i < layer.experts_per_rank; ++i)
      rows += loads[size_t(r * layer.experts_per_rank + i)];
    ep_rows = std::max(ep_rows, rows);
  }
  out.ep = {ep_rows / mean, ep_rows * sec_per_row, a2a(ep_rows), 0.0, 0};

  int64_t replicas = 0;
  const double rows = materialised_max_rows(loads, layer.experts_per_rank, mean,
                                            int64_t(ranks) * slots, &replicas);
  const std::vector<int64_t> copies = copies_per_owner(loads, layer.experts_per_rank, rows);
  out.fssdp = {rows / mean, rows * sec_per_row, a2a(rows),
               sparse_seconds(layer, cluster, nodes, per_node, slots, copies), replicas};
  return out;
}

}  // namespace moe
