// moe-a2a-levels: the flat against the two-level all-to-all, measured and projected.
//
//   launch/emulated_cluster.sh -N 2 -G 4 build/moe-a2a-levels [--reps=R] [--warmup=W]
//                                        [--sizes=256,1024,...] [--ranks-per-node=G]
//                                        [--threads=T]
//   build/moe-a2a-levels --project        (the cost model at published GPU figures)
//
// Measure (under mpirun, world = N nodes x G ranks, blocked): for each block size S
// (bytes per peer) one equal-block all-to-all of W S bytes per rank, flat
// (Communicator::all_to_all) and two-level (TwoLevelAllToAll::all_to_all), repeated R
// times after W warm-ups, the two alternating so that drift hits both. Per repetition
// the time is the maximum over ranks (a barrier before each); reported are the median
// and the 10th / 90th percentiles. Exact counts per exchange, summed over all ranks:
// messages and bytes on intra- and inter-node links (the communicators' statistics).
// The start-up calibration of the cost model (cost_model.h) runs first and its
// predictions are printed next to the measurements.
//
// Project: flat and two-level time predicted by the cost model at published figures
// for 2..256 nodes x 8 GPUs and a fixed payload per GPU, and where two-level starts
// to win.
//
// Output: Markdown tables on rank 0 (stdout); --json=FILE also writes the numbers.

#include <omp.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "framework/cli/args.h"
#include "framework/core/timer.h"
#include "framework/parallel/cost_model.h"
#include "framework/parallel/mpi_communicator.h"
#include "framework/parallel/mpi_env.h"
#include "framework/parallel/topology.h"
#include "framework/parallel/two_level_all_to_all.h"

namespace moe {
namespace {

struct Options {
  std::vector<int64_t> sizes = {256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304};
  int reps = 50, warmup = 5, ranks_per_node = 0;
  int threads = 1;  // OpenMP threads of the layout copies (more than the cores a rank
                    // has makes idle threads spin against the other ranks)
  bool project = false;
  std::string json;
};

Options parse(int argc, char** argv) {
  namespace po = boost::program_options;
  Options o;
  std::string sizes;
  po::options_description desc("moe-a2a-levels");
  desc.add_options()("sizes", po::value(&sizes), "block bytes per peer, comma-separated")(
      "reps", po::value(&o.reps), "timed repetitions")("warmup", po::value(&o.warmup),
                                                       "untimed repetitions first")(
      "ranks-per-node", po::value(&o.ranks_per_node), "emulated nodes (0: from MPI)")(
      "threads", po::value(&o.threads), "OpenMP threads per rank")(
      "project", po::bool_switch(&o.project), "print the projection table")(
      "json", po::value(&o.json), "also write the results to this file");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    MOE_USER_FAIL(e.what());
  }
  if (!sizes.empty()) {
    o.sizes.clear();
    std::stringstream ss(sizes);
    for (std::string item; std::getline(ss, item, ',');) o.sizes.push_back(std::stoll(item));
  }
  for (int64_t s : o.sizes)
    MOE_USER_CHECK(s > 0 && s % 4 == 0, "--sizes: ", s, " is not a positive multiple of 4");
  MOE_USER_CHECK(o.reps > 0 && o.warmup >= 0, "--reps must be > 0 and --warmup >= 0");
  return o;
}

std::string bytes_text(double b) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(0);
  if (b >= (1 << 20)) os << b / (1 << 20) << " MiB";
  else if (b >= 1024) os << b / 1024 << " KiB";
  else os << b << " B";
  return os.str();
}

// Quantile q of `v` (sorted copy).
double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  return v[i];
}

void print_projection(std::ostream& out, nlohmann::json& record) {
  const AllToAllCostModel m = published_gpu_cluster();
  const int per_node = 8;
  const double payloads[] = {1.0 * (1 << 20), 16.0 * (1 << 20), 256.0 * (1 << 20)};
  out << "Cost model at published figures (" << m.describe() << "), " << per_node
      << " GPUs per node; payload = bytes one GPU sends in one all-to-all (all peers).\n\n"
      << "| nodes | GPUs |";
  for (double p : payloads)
    out << " " << bytes_text(p) << ": block | flat ms | two-level ms | speed-up |";
  out << "\n|---|---|";
  for (size_t i = 0; i < std::size(payloads); ++i) out << "---|---|---|---|";
  out << "\n";
  std::vector<int> crossover(std::size(payloads), -1);
  for (int nodes = 2; nodes <= 256; nodes *= 2) {
    out << "| " << nodes << " | " << nodes * per_node << " |";
    for (size_t i = 0; i < std::size(payloads); ++i) {
      const double block = payloads[i] / (nodes * per_node);
      const double flat = m.flat_seconds(block, nodes, per_node);
      const double two = m.two_level_seconds(block, nodes, per_node);
      if (two < flat && crossover[i] < 0) crossover[i] = nodes;
      out << std::fixed << " " << bytes_text(block) << " | " << std::setprecision(3)
          << flat * 1e3 << " | " << two * 1e3 << " | " << std::setprecision(2) << flat / two
          << "x |";
      record["projection"].push_back({{"nodes", nodes}, {"payload", payloads[i]},
                                      {"block", block}, {"flat_ms", flat * 1e3},
                                      {"two_level_ms", two * 1e3}});
    }
    out << "\n";
  }
  out << "\nTwo-level starts to win at:";
  for (size_t i = 0; i < std::size(payloads); ++i)
    out << " " << bytes_text(payloads[i]) << " per GPU: "
        << (crossover[i] < 0 ? std::string("never up to 256 nodes")
                             : std::to_string(crossover[i]) + " nodes (" +
                                   std::to_string(crossover[i] * per_node) + " GPUs)")
        << (i + 1 < std::size(payloads) ? ";" : ".\n");
}

struct Counted {
  int64_t intra_messages = 0, inter_messages = 0, intra_bytes = 0, inter_bytes = 0;
};

// Statistics summed over the world.
Counted job_counts(Communicator& world, const CommStats& st) {
  int64_t v[4] = {st.intra_node_messages, st.inter_node_messages, st.intra_node_bytes,
                  st.inter_node_bytes};
  world.all_reduce<int64_t>(v);
  return {v[0], v[1], v[2], v[3]};
}

int run(const MpiEnv& env, const Options& o) {
  MpiCommunicator world(env.world());
  const int w = world.size();
  omp_set_num_threads(o.threads);
  nlohmann::json record = {{"ranks", w}};
  if (o.project) {
    if (world.rank() == 0) print_projection(std::cout, record);
    if (world.rank() == 0 && !o.json.empty()) std::ofstream(o.json) << record.dump(1) << "\n";
    return 0;
  }
  const Topology topo = discover_topology(world, env.node_leader(), o.ranks_per_node);
  const NodeMap& nodes = topo.world;
  MOE_USER_CHECK(nodes.blocked() && nodes.num_nodes > 1,
                 "the job must span several nodes of equal size, placed node by node (has ",
                 nodes.describe(), "); use --ranks-per-node or launch/emulated_cluster.sh");
  world.set_peer_nodes(nodes.node);
  TwoLevelAllToAll two(world, nodes);
  const int n = nodes.num_nodes, g = nodes.ranks_per_node;
  const CalibratedModel cost =
      measure_link_costs(world, nodes, {}, {}, published_gpu_cluster());
  record["nodes"] = n;
  record["ranks_per_node"] = g;
  record["cost_model"] = cost.model.describe();

  std::ostringstream table;
  table << "| block per peer | flat messages intra / inter | flat bytes intra / inter | "
           "two-level messages intra / inter | two-level bytes intra / inter | flat ms "
           "median [p10, p90] | two-level ms median [p10, p90] | flat / two-level | model "
           "flat / two-level ms |\n|---|---|---|---|---|---|---|---|---|\n";
  for (int64_t size : o.sizes) {
    const size_t floats = static_cast<size_t>(size / 4 * w);
    std::vector<float> send(floats, 1.0f), recv_flat(floats), recv_two(floats);
    for (size_t i = 0; i < floats; ++i) send[i] = static_cast<float>(world.rank() * 7 + i % 1000);
    // exact counts of one exchange each
    world.stats() = {};
    world.all_to_all<float>(send, recv_flat);
    const Counted flat_counts = job_counts(world, world.stats());
    two.reset_stats();
    two.all_to_all<float>(send, recv_two);
    const Counted two_counts = job_counts(world, two.stats());
    MOE_CHECK(recv_flat == recv_two, "two-level delivered other data than flat");

    std::vector<double> flat_ms, two_ms;
    for (int rep = 0; rep < o.warmup + o.reps; ++rep) {
      double t[2] = {0, 0};
      for (int order = 0; order < 2; ++order) {
        const bool flat = (order == 0) == (rep % 2 == 0);
        world.barrier();
        Stopwatch watch;
        if (flat) world.all_to_all<float>(send, recv_flat);
        else two.all_to_all<float>(send, recv_two);
        t[flat ? 0 : 1] = watch.seconds();
      }
      world.all_reduce<double>(t, ReduceOp::kMax);
      if (rep < o.warmup) continue;
      flat_ms.push_back(t[0] * 1e3);
      two_ms.push_back(t[1] * 1e3);
    }
    const double fm = quantile(flat_ms, 0.5), tm = quantile(two_ms, 0.5);
    const double model_flat = cost.model.flat_seconds(double(size), n, g) * 1e3;
    const double model_two = cost.model.two_level_seconds(double(size), n, g) * 1e3;
    table << std::fixed << "| " << bytes_text(double(size)) << " | "
          << flat_counts.intra_messages << " / " << flat_counts.inter_messages << " | "
          << bytes_text(double(flat_counts.intra_bytes)) << " / "
          << bytes_text(double(flat_counts.inter_bytes)) << " | " << two_counts.intra_messages
          << " / " << two_counts.inter_messages << " | "
          << bytes_text(double(two_counts.intra_bytes)) << " / "
          << bytes_text(double(two_counts.inter_bytes)) << " | " << std::setprecision(3) << fm
          << " [" << quantile(flat_ms, 0.1) << ", " << quantile(flat_ms, 0.9) << "] | " << tm
          << " [" << quantile(two_ms, 0.1) << ", " << quantile(two_ms, 0.9) << "] | "
          << std::setprecision(2) << fm / tm << "x | " << std::setprecision(3) << model_flat
          << " / " << model_two << " |\n";
    record["sizes"].push_back(
        {{"block", size},
         {"flat", {{"intra_messages", flat_counts.intra_messages},
                   {"inter_messages", flat_counts.inter_messages},
                   {"intra_bytes", flat_counts.intra_bytes},
                   {"inter_bytes", flat_counts.inter_bytes},
                   {"ms_median", fm}, {"ms_p10", quantile(flat_ms, 0.1)},
                   {"ms_p90", quantile(flat_ms, 0.9)}}},
         {"two_level", {{"intra_messages", two_counts.intra_messages},
                        {"inter_messages", two_counts.inter_messages},
                        {"intra_bytes", two_counts.intra_bytes},
                        {"inter_bytes", two_counts.inter_bytes},
                        {"ms_median", tm}, {"ms_p10", quantile(two_ms, 0.1)},
                        {"ms_p90", quantile(two_ms, 0.9)}}},
         {"model_flat_ms", model_flat}, {"model_two_level_ms", model_two}});
  }
  if (world.rank() == 0) {
    std::cout << n << " nodes x " << g << " ranks ("
              << (topo.from_config ? "--ranks-per-node" : "MPI shared memory") << "), "
              << o.reps << " repetitions after " << o.warmup
              << " warm-ups; counts per exchange summed over all ranks; calibrated model: "
              << cost.model.describe() << " (intra " << cost.intra_source << ", inter "
              << cost.inter_source << ")\n\n"
              << table.str();
    if (!o.json.empty()) std::ofstream(o.json) << record.dump(1) << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  return moe::cli::run_mpi_tool(
      "moe-a2a-levels",
      "usage: moe-a2a-levels [--sizes=B,...] [--reps=R] [--warmup=W] [--ranks-per-node=G] "
      "[--threads=T] [--project] [--json=FILE]\n",
      argc, argv, [](int n, char** args, int) { return moe::parse(n, args); },
      [](const moe::MpiEnv& mpi, const moe::Options& o) { return moe::run(mpi, o); });
}
