#pragma once
// `moe-bench fssdp-model`: the projected step time of one MoE layer under plain expert
// parallelism and under fssdp (framework/parallel/ep_fssdp_model.h) over cluster sizes
// and router skews, printed as a markdown table (docs/benchmarks.md quotes it). Pure
// arithmetic: one process, no MPI.

#include <iomanip>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "framework/cli/args.h"
#include "framework/parallel/ep_fssdp_model.h"

namespace moe {

inline constexpr const char* kFssdpModelUsage =
    "usage: moe-bench fssdp-model [--ranks=8,16,...,1024] [--skew=0,1.2,2]\n"
    "                             [--tokens=N] [--width=C] [--expert-ffn=F] [--top-k=K]\n"
    "                             [--experts-per-rank=E/R] [--slots=S] [--tflops=T]\n"
    "Projects one MoE layer's step time, plain ep vs fssdp, at published GPU figures\n"
    "(a model, not a measurement; defaults: configs/moe_gpt_gpu.ini's MoE layer).\n";

struct FssdpModelOptions {
  std::vector<int> ranks = {8, 16, 32, 64, 128, 256, 512, 1024};
  std::vector<double> skews = {0.0, 1.2, 2.0};
  MoeLayerShape layer{16 * 1024, 1024, 512, 4, 4};  // moe_gpt_gpu: batch 16 x 1024 tokens
  int slots = 2;                                    // parallel.materialize_slots default
  double tflops = 400.0;
};

// "8,16,32" -> numbers in [lo, hi], each a user error naming `flag` if it is not one.
template <class T>
std::vector<T> parse_list(const std::string& flag, const std::string& text, T lo, T hi) {
  std::vector<T> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');)
    out.push_back(cli::parse_number<T>(flag, item, lo, hi));
  MOE_USER_CHECK(!out.empty(), flag, ": needs at least one value");
  return out;
}

inline FssdpModelOptions parse_fssdp_model_options(int argc, char** argv) {
  FssdpModelOptions o;
  cli::ArgReader args(argc, argv);
  while (args.next()) {
    const std::string flag = args.arg();
    auto whole = [&](int64_t hi) { return cli::parse_number<int64_t>(flag, args.value(), 1, hi); };
    if (flag == "--ranks") o.ranks = parse_list<int>(flag, args.value(), 1, 1 << 20);
    else if (flag == "--skew") o.skews = parse_list<double>(flag, args.value(), 0.0, 100.0);
    else if (flag == "--tokens") o.layer.tokens_per_rank = whole(int64_t(1) << 30);
    else if (flag == "--width") o.layer.width = whole(1 << 20);
    else if (flag == "--expert-ffn") o.layer.expert_ffn = whole(1 << 20);
    else if (flag == "--top-k") o.layer.top_k = whole(1024);
    else if (flag == "--experts-per-rank") o.layer.experts_per_rank = whole(1024);
    else if (flag == "--slots") o.slots = cli::parse_number<int>(flag, args.value(), 0, 1024);
    else if (flag == "--tflops") o.tflops = cli::parse_number<double>(flag, args.value(), 1e-3, 1e6);
    else MOE_USER_FAIL("unknown argument '", flag, "'");
  }
  const int per_node = published_h100_cluster().per_node;
  for (int r : o.ranks) {
    MOE_USER_CHECK(r <= per_node || r % per_node == 0, "--ranks: ", r,
                   " is neither at most one node nor whole nodes of ", per_node, " GPUs");
    MOE_USER_CHECK(o.layer.top_k <= o.layer.experts_per_rank * r, "--top-k=",
                   o.layer.top_k, " exceeds the ", o.layer.experts_per_rank * r,
                   " experts of ", r, " ranks");
  }
  return o;
}

// The smallest power-of-two tokens per GPU from which fssdp is faster at every larger
// one up to 2^20, or 0 if it never is.
inline int64_t fssdp_pays_from(MoeLayerShape layer, const GpuCluster& c, int ranks, double skew,
                               int slots) {
  int64_t from = 0;
  for (int64_t n = int64_t(1) << 20; n >= 16; n /= 2) {
    layer.tokens_per_rank = n;
    const EpVsFssdp p = project_ep_vs_fssdp(layer, c, ranks, skew, slots);
    if (!(p.fssdp.total_s() < p.ep.total_s() * (1.0 - 1e-9))) break;
    from = n;
  }
  return from;
}

inline int run_fssdp_model(int argc, char** argv) {
  const FssdpModelOptions o = parse_fssdp_model_options(argc, argv);
  GpuCluster c = published_h100_cluster();
  c.flops_per_s = o.tflops * 1e12;
  const MoeLayerShape& l = o.layer;
  std::cout << "Model, not a measurement: " << c.links.describe() << ", " << c.per_node
            << " GPUs per node, " << o.tflops << " TFLOP/s; layer: " << l.tokens_per_rank
            << " tokens per GPU, width " << l.width << ", " << l.experts_per_rank
            << " SwiGLU experts of width " << l.expert_ffn << " per GPU, top-" << l.top_k
            << ", bf16 rows and replicas, " << o.slots << " slots; ms per layer and step "
            << "(forward + backward).\n\n"
            << "| skew | GPUs | ep rows max/mean | ep compute | ep a2a | ep ms | fssdp rows "
               "max/mean | replicas | fssdp compute | fssdp a2a | sparse | fssdp ms | "
               "ep / fssdp | fssdp pays from (tokens/GPU) |\n"
            << "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (double skew : o.skews) {
    for (int r : o.ranks) {
      const EpVsFssdp p = project_ep_vs_fssdp(l, c, r, skew, o.slots);
      const int64_t from = fssdp_pays_from(l, c, r, skew, o.slots);
      std::cout << std::fixed << "| " << std::setprecision(1) << skew << " | " << r << " | "
                << std::setprecision(2) << p.ep.rows_max_over_mean << " | "
                << std::setprecision(3) << p.ep.compute_s * 1e3 << " | " << p.ep.a2a_s * 1e3
                << " | " << p.ep.total_s() * 1e3 << " | " << std::setprecision(2)
                << p.fssdp.rows_max_over_mean << " | " << p.fssdp.replicas << " | "
                << std::setprecision(3) << p.fssdp.compute_s * 1e3 << " | "
                << p.fssdp.a2a_s * 1e3 << " | " << p.fssdp.sparse_s * 1e3 << " | "
                << p.fssdp.total_s() * 1e3 << " | " << std::setprecision(2)
                << p.ep.total_s() / p.fssdp.total_s() << "x | "
                << (from > 0 ? std::to_string(from) : std::string("never")) << " |\n";
    }
  }
  return 0;
}

}  // namespace moe
