// moe-bench SUBCOMMAND [--option=value ...]
// Benchmarks of framework parts that a training run cannot isolate. Subcommands:
//
//   a2a   the flat all-to-all-v expert dispatcher (AllToAllDispatcher over ep = world;
//         --dispatcher=shm: the shared-memory one, ShmDispatcher) against a plain
//         MPI_Alltoallv moving exactly the same bytes; run it under
//         mpirun (launch/mpirun.sh -np R build/moe-bench a2a ...). docs/benchmarks.md
//         quotes its figures.
//   fssdp-model   the projected step time of one MoE layer, plain ep vs fssdp, from 8
//         to 1,024 GPUs (a model: framework/cli/fssdp_model_command.h); one process.
//
// Exit status: 0 done, 2 bad subcommand or option (one line on rank 0), 1 any other
// failure (the whole MPI job ends).
//
// What `a2a` measures, per iteration i (all ranks; a barrier before each timed region;
// per quantity the maximum over ranks, then the median over iterations; "ms" fields):
//
//   fwd          dispatcher forward: dispatch (counts exchange, the gather of the rows
//                from token order into the send buffer and, for this rank's own experts,
//                into place; the row exchange into the expert-major rows) + combine (the
//                row exchange back, the weighted sum over the rows where they lie); with
//                --a2a-dtype=bf16 also the conversions (inside the gather and the sum
//                where they can be, separate passes over the received dispatch rows and
//                the sent combine rows)
//   bwd          dispatcher backward: combine_backward + dispatch_backward, the same two
//                row exchanges in reverse order with their copies
//   raw_pair     MPI_Alltoallv of dispatch's rows, then MPI_Alltoallv of combine's rows
//                (the same per-peer counts and element size, reverse direction), nothing
//                else
//   raw_counts   MPI_Alltoallv of the counts dispatch exchanges, alone
//   *_counts, *_rows   the dispatcher's time inside its counts / row exchanges, timed
//                from the outside (TimedCommunicator); *_local the rest of the region
//                (permute, conversions, weighted sums, bookkeeping, and time descheduled).
//                shm: *_counts its all-gathers (counts, where the experts' rows lie),
//                *_rows its barriers; its rows move by loads and stores, in *_local
//   *_cpu        CPU time instead of wall time (cpu_seconds): *_local_cpu is the local
//                work's cost even where ranks share cores; permute_cpu, convert_cpu,
//                weighted_sum_cpu time the forward's local steps alone (time_copies)
//
// fwd and raw_pair both move the rows twice (two exchanges), so ratio_forward =
// fwd / raw_pair is the dispatcher's cost per exchange relative to the bare
// collective; likewise ratio_backward. The *_rows_only ratios compare only the time
// inside the dispatcher's row exchanges. ratio_*_dedicated_estimate assumes a core per
// rank: (raw_pair + raw_counts + fwd_local_cpu) / raw_pair, i.e. no waiting while
// other ranks copy (it keeps raw_pair as measured here). The order of the dispatcher
// and raw regions alternates with i, so drift (other work on the machine) hits both.
//
// Bytes: bytes_per_exchange_* count what a rank sends to other ranks in one row
// exchange (its own block stays), mean and max over ranks and both directions;
// bytes_uniform_expected = N*K*(R-1)/R*C*b with b = 4 (fp32 rows) or 2 (bf16 rows).
// Experts are the identity (expert_out = the dispatched rows): the benchmark is about
// moving rows. The routing is dropless. With bf16 rows the tokens are bf16 values, as
// under mixed precision, so the round trip is exact.

#include <omp.h>
#include <time.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cmath>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "framework/cli/args.h"
#include "framework/cli/fssdp_model_command.h"
#include "framework/core/timer.h"
#include "framework/kernels/ops.h"
#include "framework/moe/all_to_all_dispatcher.h"
#include "framework/moe/shm_dispatcher.h"
#include "framework/moe/placement.h"
#include "framework/moe/routing_plan.h"
#include "framework/parallel/mpi_communicator.h"
#include "framework/parallel/mpi_env.h"

namespace moe {
namespace {

constexpr const char* kUsage =
    "usage: moe-bench a2a [--tokens=N] [--width=C] [--experts=E] [--top-k=K] [--skew=S]\n"
    "                     [--iters=I] [--warmup=W] [--seed=X] [--threads=T]\n"
    "                     [--counts=plan|exchange] [--a2a-dtype=fp32|bf16]\n"
    "                     [--dispatcher=flat|shm]\n"
    "Run under mpirun: launch/mpirun.sh -np R build/moe-bench a2a ...\n"
    "       moe-bench fssdp-model --help   (a projection, one process)\n";

struct A2aOptions {
  int64_t tokens = 2048;  // N, tokens per rank
  int64_t width = 256;    // C, floats per row
  int64_t experts = 16;   // E, over ep = world ranks
  int64_t top_k = 2;      // K
  double skew = 0.0;      // Zipf exponent of expert popularity; 0 = uniform
  int iters = 30;         // timed iterations
  int warmup = 5;         // untimed iterations first
  uint64_t seed = 1;
  int threads = 0;        // OpenMP threads per rank; 0 = cores / ranks on the node
  // Where receivers learn their row counts: "plan" (the plan carries every rank's
  // kept counts, as the MoE layer fills it from its routing all-gather in training)
  // or "exchange" (the dispatcher's own counts all-to-all).
  std::string counts = "plan";
  std::string a2a_dtype = "fp32";  // the dispatcher's rows on the wire: fp32 or bf16
  std::string dispatcher = "flat";  // flat (AllToAllDispatcher) or shm (ShmDispatcher)
  DType wire() const { return a2a_dtype == "bf16" ? DType::kBF16 : DType::kF32; }
};

// Every rank parses the same argv, so a bad option fails on all ranks alike (user
// error, no collective started yet).
A2aOptions parse_a2a_options(int argc, char** argv, int ranks) {
  namespace po = boost::program_options;
  A2aOptions o;
  po::options_description desc("a2a");
  desc.add_options()
      ("tokens", po::value(&o.tokens)->default_value(o.tokens), "tokens per rank")
      ("width", po::value(&o.width)->default_value(o.width), "floats per token row")
      ("experts", po::value(&o.experts)->default_value(o.experts), "experts, >= ranks")
      ("top-k", po::value(&o.top_k)->default_value(o.top_k), "experts per token")
      ("skew", po::value(&o.skew)->default_value(o.skew), "Zipf exponent, 0 = uniform")
      ("iters", po::value(&o.iters)->default_value(o.iters), "timed iterations")
      ("warmup", po::value(&o.warmup)->default_value(o.warmup), "untimed iterations")
      ("seed", po::value(&o.seed)->default_value(o.seed), "routing seed")
      ("threads", po::value(&o.threads)->default_value(o.threads), "threads per rank")
      ("counts", po::value(&o.counts)->default_value(o.counts), "plan or exchange")
      ("a2a-dtype", po::value(&o.a2a_dtype)->default_value(o.a2a_dtype), "fp32 or bf16")
      ("dispatcher", po::value(&o.dispatcher)->default_value(o.dispatcher), "flat or shm");
  try {
    po::variables_map vm;
    po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    MOE_USER_FAIL("a2a: ", e.what());
  }
  MOE_USER_CHECK(o.tokens >= 1, "a2a: --tokens must be >= 1, got ", o.tokens);
  MOE_USER_CHECK(o.width >= 1, "a2a: --width must be >= 1, got ", o.width);
  MOE_USER_CHECK(o.experts >= ranks, "a2a: --experts=", o.experts, " over ", ranks,
                 " ranks (ep = world): every rank needs at least one expert");
  MOE_USER_CHECK(o.top_k >= 1 && o.top_k <= o.experts, "a2a: --top-k must be in [1, ",
                 o.experts, "], got ", o.top_k);
  MOE_USER_CHECK(std::isfinite(o.skew) && o.skew >= 0.0, "a2a: --skew must be >= 0, got ",
                 o.skew);
  MOE_USER_CHECK(o.iters >= 1, "a2a: --iters must be >= 1, got ", o.iters);
  MOE_USER_CHECK(o.warmup >= 0, "a2a: --warmup must be >= 0, got ", o.warmup);
  MOE_USER_CHECK(o.threads >= 0, "a2a: --threads must be >= 0, got ", o.threads);
  MOE_USER_CHECK(o.counts == "plan" || o.counts == "exchange",
                 "a2a: --counts must be plan or exchange, got '", o.counts, "'");
  MOE_USER_CHECK(o.a2a_dtype == "fp32" || o.a2a_dtype == "bf16",
                 "a2a: --a2a-dtype must be fp32 or bf16, got '", o.a2a_dtype, "'");
  MOE_USER_CHECK(o.dispatcher == "flat" || o.dispatcher == "shm",
                 "a2a: --dispatcher must be flat or shm, got '", o.dispatcher, "'");
  MOE_USER_CHECK(o.dispatcher == "flat" || o.a2a_dtype == "fp32",
                 "a2a: --dispatcher=shm has no wire to narrow; use --a2a-dtype=fp32");
  return o;
}

// Uniform in [0, 1) from 53 random bits.
double uniform(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1p-53; }

// CPU seconds this process has used (all its threads). Unlike wall time it does not
// grow while the rank is descheduled, so it measures the cost of local work on a
// machine whose ranks share cores.
double cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// Random routing of this rank's N tokens: each token picks K distinct experts without
// replacement with probability proportional to popularity p_e = (1 + pos(e))^-skew,
// where pos is a random permutation of the experts shared by all ranks (so the hot
// experts land on random owners, not all on ep rank 0). Combine weights are random and
// sum to 1 per token. Dropless.
std::shared_ptr<const RoutingPlan> make_routing(const A2aOptions& o, int rank) {
  const int64_t n = o.tokens, k = o.top_k, e = o.experts;
  std::mt19937_64 shared_rng(o.seed);
  std::vector<int64_t> pos(static_cast<size_t>(e));  // [E] popularity rank of expert
  std::iota(pos.begin(), pos.end(), 0);
  std::shuffle(pos.begin(), pos.end(), shared_rng);
  std::vector<double> popularity(static_cast<size_t>(e));  // [E]
  for (int64_t i = 0; i < e; ++i)
    popularity[i] = std::pow(static_cast<double>(pos[i] + 1), -o.skew);

  std::mt19937_64 rng(o.seed * 1000003 + static_cast<uint64_t>(rank) + 1);
  std::vector<int32_t> chosen(static_cast<size_t>(n * k));  // [N*K]
  std::vector<float> weights(static_cast<size_t>(n * k));   // [N*K]
  std::vector<double> left(popularity.size());
  for (int64_t t = 0; t < n; ++t) {
    left = popularity;
    double weight_sum = 0.0;
    for (int64_t j = 0; j < k; ++j) {
      double u = uniform(rng) * std::accumulate(left.begin(), left.end(), 0.0);
      int64_t pick = 0;
      while (pick < e - 1 && (left[pick] == 0.0 || u >= left[pick])) u -= left[pick++];
      while (left[pick] == 0.0) --pick;  // rounding walked past the last candidate
      left[pick] = 0.0;
      chosen[t * k + j] = static_cast<int32_t>(pick);
      weights[t * k + j] = static_cast<float>(0.1 + uniform(rng));
      weight_sum += weights[t * k + j];
    }
    for (int64_t j = 0; j < k; ++j)
      weights[t * k + j] = static_cast<float>(weights[t * k + j] / weight_sum);
  }
  return std::make_shared<const RoutingPlan>(
      build_routing_plan(chosen, weights, n, k, e, /*capacity=*/-1));
}

// Forwards all_to_all_v, all_to_all_blocks, all_gather and barrier to `inner` and adds
// the wall seconds of each all_to_all_v and all_gather to `counts_s` (int64 payload: the
// dispatcher's counts exchange; shm's all-gathers) and of each all_to_all_blocks and
// barrier to `rows_s` (the flat dispatcher's row exchanges; shm's barriers), and their
// CPU seconds to `comm_cpu_s`.
// The benchmark's way of splitting the dispatcher's time without touching the
// dispatcher; it adds a virtual call and four clock reads per exchange (well under a
// microsecond). The dispatchers call no other collective.
class TimedCommunicator final : public Communicator {
 public:
  explicit TimedCommunicator(Communicator& inner) : inner_(inner) {}
  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  MPI_Comm mpi_comm() const override { return inner_.mpi_comm(); }
  void barrier() override {
    const double cpu_start = cpu_seconds();
    {
      ScopedTimer timer(rows_s);
      inner_.barrier();
    }
    comm_cpu_s += cpu_seconds() - cpu_start;
  }
  std::unique_ptr<Communicator> split(int, int) const override { unused("split"); }

  void reset() { counts_s = rows_s = comm_cpu_s = 0.0; }
  double counts_s = 0.0, rows_s = 0.0, comm_cpu_s = 0.0;

 protected:
  void all_to_all_v_raw(const void* send, const int64_t* send_counts, void* recv,
                        const int64_t* recv_counts, CommType type) override {
    const size_t n = static_cast<size_t>(size());
    const std::span<const int64_t> sc(send_counts, n), rc(recv_counts, n);
    const size_t send_total = static_cast<size_t>(std::accumulate(sc.begin(), sc.end(), 0L));
    const size_t recv_total = static_cast<size_t>(std::accumulate(rc.begin(), rc.end(), 0L));
    const double cpu_start = cpu_seconds();
    MOE_CHECK(type == CommType::kInt64, "TimedCommunicator: unexpected all_to_all_v type");
    {
      ScopedTimer timer(counts_s);
      inner_.all_to_all_v<int64_t>({static_cast<const int64_t*>(send), send_total}, sc,
                                   {static_cast<int64_t*>(recv), recv_total}, rc);
    }
    comm_cpu_s += cpu_seconds() - cpu_start;
  }
  void all_to_all_blocks_raw(const void* send, const std::vector<CommBlock>* send_blocks,
                             void* recv, const std::vector<CommBlock>* recv_blocks,
                             CommType type) override {
    const size_t n = static_cast<size_t>(size());
    const std::span<const std::vector<CommBlock>> sb(send_blocks, n), rb(recv_blocks, n);
    const double cpu_start = cpu_seconds();
    {
      ScopedTimer timer(rows_s);
      if (type == CommType::kBFloat16)
        inner_.all_to_all_blocks<bf16>(span_of<const bf16>(send, sb), sb,
                                       span_of<bf16>(recv, rb), rb);
      else
        inner_.all_to_all_blocks<float>(span_of<const float>(send, sb), sb,
                                        span_of<float>(recv, rb), rb);
    }
    comm_cpu_s += cpu_seconds() - cpu_start;
  }
  void all_reduce_raw(void*, int64_t, CommType, ReduceOp) override { unused("all_reduce"); }
  void all_gather_raw(const void* send, int64_t count, void* recv, CommType type) override {
    MOE_CHECK(type == CommType::kInt64, "TimedCommunicator: unexpected all_gather type");
    const double cpu_start = cpu_seconds();
    {
      ScopedTimer timer(counts_s);
      const size_t n = static_cast<size_t>(count);
      inner_.all_gather<int64_t>({static_cast<const int64_t*>(send), n},
                                 {static_cast<int64_t*>(recv), n * static_cast<size_t>(size())});
    }
    comm_cpu_s += cpu_seconds() - cpu_start;
  }
  void reduce_scatter_raw(const void*, void*, int64_t, CommType, ReduceOp) override {
    unused("reduce_scatter");
  }
  void all_to_all_raw(const void*, void*, int64_t, CommType) override { unused("all_to_all"); }
  void all_gather_v_raw(const void*, void*, const int64_t*, CommType) override {
    unused("all_gather_v");
  }
  void reduce_scatter_v_raw(const void*, const int64_t*, void*, CommType, ReduceOp) override {
    unused("reduce_scatter_v");
  }
  void broadcast_raw(void*, int64_t, CommType, int) override { unused("broadcast"); }
  void send_raw(const void*, int64_t, CommType, int, int) override { unused("send"); }
  void recv_raw(void*, int64_t, CommType, int, int) override { unused("recv"); }

 private:
  [[noreturn]] static void unused(const char* call) {
    MOE_FAIL("TimedCommunicator: ", call, " is not forwarded (the dispatcher never calls it)");
  }
  // The buffer of a block exchange, as long as its furthest block reaches.
  template <class T, class P>
  static std::span<T> span_of(P* data, std::span<const std::vector<CommBlock>> blocks) {
    int64_t end = 0;
    for (const auto& list : blocks)
      for (const CommBlock& b : list) end = std::max(end, b.offset + b.count);
    return {static_cast<T*>(data), static_cast<size_t>(end)};
  }
  Communicator& inner_;
};

// Per-iteration milliseconds of one rank, one vector per measured quantity. Wall time
// unless the name ends in _cpu (CPU time of the process, see cpu_seconds).
struct Series {
  static constexpr const char* kNames[] = {
      "fwd",           "dispatch",          "combine",           "fwd_counts",
      "fwd_rows",      "fwd_local",         "fwd_local_cpu",     "bwd",
      "combine_backward", "dispatch_backward", "bwd_rows",       "bwd_local",
      "bwd_local_cpu", "raw_pair",          "raw_dispatch_rows", "raw_combine_rows",
      "raw_counts",    "permute_cpu",       "convert_cpu",       "weighted_sum_cpu"};
  static constexpr size_t kCount = std::size(kNames);

  explicit Series(int iters) : ms(kCount, std::vector<double>(static_cast<size_t>(iters))) {}
  double& at(const char* name, int iter) {
    for (size_t i = 0; i < kCount; ++i)
      if (std::strcmp(kNames[i], name) == 0) return ms[i][static_cast<size_t>(iter)];
    MOE_FAIL("Series: no quantity ", name);
  }
  std::vector<std::vector<double>> ms;  // [quantity][iteration]
};

// int counts and displacements of one side of the raw MPI_Alltoallv, in floats.
struct RawSide {
  std::vector<int> counts, displs;  // [R]
  RawSide(const std::vector<int64_t>& rows, int64_t cols) {
    int64_t offset = 0;
    for (int64_t r : rows) {
      MOE_CHECK(offset + r * cols <= INT32_MAX, "a2a: raw exchange over int counts");
      counts.push_back(static_cast<int>(r * cols));
      displs.push_back(static_cast<int>(offset));
      offset += r * cols;
    }
  }
};

// Everything one iteration touches; allocated and page-faulted before timing.
struct A2aBench {
  A2aOptions opt;
  MpiCommunicator& world;
  TimedCommunicator ep;
  AllToAllDispatcher flat;              // also what sizes the raw baseline
  std::unique_ptr<ShmDispatcher> shm;   // --dispatcher=shm
  std::shared_ptr<const RoutingPlan> plan;
  Buffer x, y, dy, dx, d_expert_out, dweights;  // (N, C) x4, (S_recv, C), [N*K]
  Buffer raw_send, raw_recv;                    // (S, C), (S_recv, C)
  Buffer convert_scratch{Device::kCpu, DType::kBF16};  // (S_recv, C) for time_copies
  std::vector<int64_t> send_rows, recv_rows;    // [R] rows to / from each rank
  std::vector<int64_t> counts_send, counts_recv;  // [E], [R * E_local] counts baseline
  std::vector<int> counts_sc, counts_sd, counts_rc, counts_rd;

  A2aBench(const A2aOptions& o, MpiCommunicator& w)
      : opt(o),
        world(w),
        ep(w),
        flat(ep, ExpertPlacement{o.experts, w.size(), w.rank()}, token_ranks(o, w), nullptr,
             o.wire()),
        plan(make_routing(o, w.rank())) {
    if (o.counts == "plan") plan = with_group_counts(*plan, w);
    if (o.dispatcher == "shm")
      shm = std::make_unique<ShmDispatcher>(ep, ExpertPlacement{o.experts, w.size(), w.rank()});
  }
  Dispatcher& dispatcher() { return shm ? static_cast<Dispatcher&>(*shm) : flat; }

  // ep = world: ep rank r is token rank r; none in exchange mode.
  static std::vector<int> token_ranks(const A2aOptions& o, const MpiCommunicator& w) {
    std::vector<int> ranks;
    if (o.counts == "plan")
      for (int r = 0; r < w.size(); ++r) ranks.push_back(r);
    return ranks;
  }
  // The plan with every rank's kept counts, gathered once (not timed: in training they
  // come from the routing all-gather the MoE layer does anyway).
  static std::shared_ptr<const RoutingPlan> with_group_counts(const RoutingPlan& p,
                                                              MpiCommunicator& w) {
    RoutingPlan out = p;
    out.group_counts_after.resize(static_cast<size_t>(w.size() * p.num_experts));
    w.all_gather<int64_t>(p.counts_after, out.group_counts_after);
    return std::make_shared<const RoutingPlan>(std::move(out));
  }
};

double ms_since(const Stopwatch& watch) { return watch.seconds() * 1e3; }

void fill_random(Buffer& b, int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Tensor t = b.view({n});
  for (int64_t i = 0; i < n; ++i) t[i] = static_cast<float>(uniform(rng) - 0.5);
}

// One dispatch to learn the exchange sizes, then every buffer at its final size.
void prepare(A2aBench& b) {
  const int64_t n = b.opt.tokens, c = b.opt.width, k = b.opt.top_k;
  fill_random(b.x, n * c, b.opt.seed + 17 * (b.world.rank() + 1));
  fill_random(b.dy, n * c, b.opt.seed + 31 * (b.world.rank() + 1));
  if (b.opt.wire() == DType::kBF16) {  // bf16 values, as mixed precision's expert inputs
    Buffer rounded(Device::kCpu, DType::kBF16);
    ops::convert(b.x.view({n * c}), rounded.view({n * c}));
    ops::convert(rounded.view({n * c}), b.x.view({n * c}));
  }
  b.y.resize(n * c);
  b.dx.resize(n * c);
  b.dweights.resize(n * k);
  const DispatchHandle handle = b.flat.dispatch(b.x.view({n, c}), b.plan);
  const auto* state = dynamic_cast<const AllToAllState*>(handle.state());
  MOE_CHECK(state != nullptr, "a2a: the dispatcher's handle has no all-to-all state");
  b.send_rows = state->send_rows;
  b.recv_rows = state->recv_rows;
  b.d_expert_out.resize(handle.rows().numel());
  b.raw_send.resize(b.plan->num_slots() * c);
  b.raw_recv.resize(handle.rows().numel());
  MOE_CHECK(b.raw_recv.size() == handle.rows().numel(), "a2a: raw receive buffer size");
  // The counts baseline sends what dispatch's counts exchange sends: E_local(d) int64
  // to each rank d, E_local(self) from each.
  const ExpertPlacement placement{b.opt.experts, b.world.size(), b.world.rank()};
  b.counts_send.assign(static_cast<size_t>(b.opt.experts), 1);
  b.counts_recv.assign(static_cast<size_t>(b.world.size() * placement.num_local()), 0);
  for (int d = 0; d < b.world.size(); ++d) {
    b.counts_sc.push_back(static_cast<int>(placement.count(d)));
    b.counts_sd.push_back(static_cast<int>(placement.first(d)));
    b.counts_rc.push_back(static_cast<int>(placement.num_local()));
    b.counts_rd.push_back(static_cast<int>(d * placement.num_local()));
  }
}

// Identity experts and weights summing to 1 per token: combine must return x.
void check_round_trip(A2aBench& b) {
  const int64_t n = b.opt.tokens, c = b.opt.width;
  const DispatchHandle handle = b.dispatcher().dispatch(b.x.view({n, c}), b.plan);
  b.dispatcher().combine(handle, handle.rows(), b.y.view({n, c}));
  double worst = 0.0;
  for (int64_t i = 0; i < n * c; ++i)
    worst = std::max(worst, static_cast<double>(std::abs(b.y.data()[i] - b.x.data()[i])));
  MOE_CHECK(worst < 1e-5, "a2a: dispatch -> combine does not return the input (max error ",
            worst, ")");
}

// (a) the dispatcher: forward (dispatch + combine) and backward (combine_backward +
// dispatch_backward), each after a barrier. *_local = the region less its
// exchanges: permute, conversions, weighted sums, bookkeeping, and on a shared
// machine also time descheduled; *_local_cpu the same in CPU time.
void time_dispatcher(A2aBench& b, Series& s, int iter) {
  const int64_t n = b.opt.tokens, c = b.opt.width;
  b.ep.reset();
  b.world.barrier();
  double cpu_start = cpu_seconds();
  Stopwatch watch;
  Dispatcher& dispatcher = b.dispatcher();
  const DispatchHandle handle = dispatcher.dispatch(b.x.view({n, c}), b.plan);
  const double dispatch_ms = ms_since(watch);
  dispatcher.combine(handle, handle.rows(), b.y.view({n, c}));
  s.at("fwd", iter) = ms_since(watch);
  s.at("fwd_local_cpu", iter) = (cpu_seconds() - cpu_start - b.ep.comm_cpu_s) * 1e3;
  s.at("dispatch", iter) = dispatch_ms;
  s.at("combine", iter) = s.at("fwd", iter) - dispatch_ms;
  s.at("fwd_counts", iter) = b.ep.counts_s * 1e3;
  s.at("fwd_rows", iter) = b.ep.rows_s * 1e3;
  s.at("fwd_local", iter) = s.at("fwd", iter) - (b.ep.counts_s + b.ep.rows_s) * 1e3;

  // where the MoE layer's experts would take their output gradient from
  Tensor d_expert_out = dispatcher.expert_rows(handle, Dispatcher::ExpertRows::kOutputGrad);
  if (d_expert_out.data == nullptr) d_expert_out = b.d_expert_out.view(handle.rows().shape);
  b.ep.reset();
  b.world.barrier();
  cpu_start = cpu_seconds();
  watch.reset();
  dispatcher.combine_backward(handle, handle.rows(), b.dy.view({n, c}), d_expert_out,
                              b.dweights.data());
  const double combine_backward_ms = ms_since(watch);
  dispatcher.dispatch_backward(handle, d_expert_out, b.dx.view({n, c}));
  s.at("bwd", iter) = ms_since(watch);
  s.at("bwd_local_cpu", iter) = (cpu_seconds() - cpu_start - b.ep.comm_cpu_s) * 1e3;
  s.at("combine_backward", iter) = combine_backward_ms;
  s.at("dispatch_backward", iter) = s.at("bwd", iter) - combine_backward_ms;
  s.at("bwd_rows", iter) = b.ep.rows_s * 1e3;
  s.at("bwd_local", iter) = s.at("bwd", iter) - b.ep.rows_s * 1e3;
}

// (c) The forward's local steps on their own, in CPU time, to say which costs what: the
// gather of all S rows from token order (the dispatcher's pack of the rows for other
// ranks plus its copy of its own rows into place: the same rows, one pass), one
// conversion of S_recv rows from bf16 to fp32 (a bf16 wire converts the received rows of
// dispatch and the sent rows of combine in such passes; fp32 converts nothing) and
// combine's weighted sum (N*K rows in, N out). ops::permute_rows, ops::convert and
// ops::combine_rows on one buffer, the work of the dispatcher's calls.
void time_copies(A2aBench& b, Series& s, int iter) {
  const RoutingPlan& plan = *b.plan;
  const int64_t c = b.opt.width;
  double start = cpu_seconds();
  ops::permute_rows(b.x.view({plan.num_tokens, c}), plan.token_of_slot, {},
                    b.raw_send.view({plan.num_slots(), c}));
  s.at("permute_cpu", iter) = (cpu_seconds() - start) * 1e3;
  const Shape received{b.raw_recv.size()};
  Tensor received16 = b.convert_scratch.view(received);
  start = cpu_seconds();
  ops::convert(received16, b.d_expert_out.view(received));
  s.at("convert_cpu", iter) = (cpu_seconds() - start) * 1e3;
  start = cpu_seconds();
  ops::combine_rows(b.raw_send.view({plan.num_slots(), c}), plan.slot, plan.weight,
                    b.y.view({plan.num_tokens, c}));
  s.at("weighted_sum_cpu", iter) = (cpu_seconds() - start) * 1e3;
}

// (b) the baseline: MPI_Alltoallv called directly (not through the Communicator) so it
// is the bare collective, with the per-peer counts of the dispatcher's two row
// exchanges (dispatch: send_rows out, recv_rows in; combine: the reverse) in elements of
// the wire's size (bf16: 2-byte elements, half the bytes), back to back after one
// barrier; then, after another barrier, the counts exchange alone.
void time_raw(A2aBench& b, Series& s, int iter) {
  const RawSide rows_out(b.send_rows, b.opt.width), rows_in(b.recv_rows, b.opt.width);
  const MPI_Comm comm = b.world.mpi_comm();
  const MPI_Datatype element = b.opt.wire() == DType::kBF16 ? MPI_UINT16_T : MPI_FLOAT;
  b.world.barrier();
  Stopwatch watch;
  MPI_CHECK(MPI_Alltoallv(b.raw_send.data(), rows_out.counts.data(), rows_out.displs.data(),
                          element, b.raw_recv.data(), rows_in.counts.data(),
                          rows_in.displs.data(), element, comm));
  const double first_ms = ms_since(watch);
  MPI_CHECK(MPI_Alltoallv(b.raw_recv.data(), rows_in.counts.data(), rows_in.displs.data(),
                          element, b.raw_send.data(), rows_out.counts.data(),
                          rows_out.displs.data(), element, comm));
  s.at("raw_pair", iter) = ms_since(watch);
  s.at("raw_dispatch_rows", iter) = first_ms;
  s.at("raw_combine_rows", iter) = s.at("raw_pair", iter) - first_ms;

  b.world.barrier();
  watch.reset();
  MPI_CHECK(MPI_Alltoallv(b.counts_send.data(), b.counts_sc.data(), b.counts_sd.data(),
                          MPI_INT64_T, b.counts_recv.data(), b.counts_rc.data(),
                          b.counts_rd.data(), MPI_INT64_T, comm));
  s.at("raw_counts", iter) = ms_since(watch);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

// x rounded to `decimals` places (so the JSON shows 0.3238, not 0.32380000000000003).
double round_to(double x, int decimals) {
  const double scale = std::pow(10.0, decimals);
  return std::round(x * scale) / scale;
}

// Bytes this rank sends to other ranks in one row exchange of each direction, and the
// global expert load (max / mean assignments per expert).
nlohmann::json volume_record(A2aBench& b) {
  const int rank = b.world.rank(), ranks = b.world.size();
  const double row_bytes = static_cast<double>(b.opt.width) * dtype_size(b.opt.wire());
  double out = 0.0, in = 0.0;
  for (int d = 0; d < ranks; ++d)
    if (d != rank) {
      out += static_cast<double>(b.send_rows[d]) * row_bytes;
      in += static_cast<double>(b.recv_rows[d]) * row_bytes;
    }
  // dispatch sends `out`, combine sends back what dispatch received: `in`
  double sums[2] = {out, in}, maxes[2] = {out, in};
  b.world.all_reduce<double>(sums);
  b.world.all_reduce<double>(maxes, ReduceOp::kMax);
  std::vector<double> load(b.plan->counts_before.begin(), b.plan->counts_before.end());
  b.world.all_reduce<double>(load);
  const double mean_load = std::accumulate(load.begin(), load.end(), 0.0) / load.size();
  return {{"bytes_per_exchange_mean", (sums[0] + sums[1]) / (2.0 * ranks)},
          {"bytes_per_exchange_max", std::max(maxes[0], maxes[1])},
          {"bytes_uniform_expected", static_cast<double>(b.opt.tokens * b.opt.top_k) *
                                         (ranks - 1) / ranks * row_bytes},
          {"expert_load_max_over_mean",
           round_to(*std::max_element(load.begin(), load.end()) / mean_load, 3)}};
}

// Max over ranks per iteration, then the median over iterations, of every quantity.
// Ratios are dispatcher / raw pair (both two row exchanges, see the top comment).
// The dedicated-core estimate replaces the dispatcher's measured wall time, which on a
// machine with more ranks than cores includes waiting while other ranks copy, by what
// it would be if every rank had its own core: the raw exchanges, the counts exchange
// alone and the local work's CPU time.
nlohmann::json summary_record(A2aBench& b, Series& s) {
  std::map<std::string, double> med;
  nlohmann::json ms;
  for (size_t q = 0; q < Series::kCount; ++q) {
    b.world.all_reduce<double>(s.ms[q], ReduceOp::kMax);
    med[Series::kNames[q]] = median(s.ms[q]);
    ms[Series::kNames[q]] = round_to(med[Series::kNames[q]], 4);
  }
  const double raw = med["raw_pair"];
  const double fwd_dedicated = raw + med["raw_counts"] + med["fwd_local_cpu"];
  const double bwd_dedicated = raw + med["bwd_local_cpu"];
  return {{"ms", ms},
          {"ratio_forward", round_to(med["fwd"] / raw, 3)},
          {"ratio_backward", round_to(med["bwd"] / raw, 3)},
          {"ratio_forward_rows_only", round_to(med["fwd_rows"] / raw, 3)},
          {"ratio_backward_rows_only", round_to(med["bwd_rows"] / raw, 3)},
          {"ratio_forward_dedicated_estimate", round_to(fwd_dedicated / raw, 3)},
          {"ratio_backward_dedicated_estimate", round_to(bwd_dedicated / raw, 3)}};
}

int run_a2a(const MpiEnv& env, const A2aOptions& opt) {
  MpiCommunicator world(env.world());
  const int threads =
      opt.threads > 0 ? opt.threads : std::max(1, omp_get_num_procs() / env.local_size());
  omp_set_num_threads(threads);
  A2aBench bench(opt, world);
  prepare(bench);
  check_round_trip(bench);
  Series series(opt.iters);
  Series discard(1);
  for (int i = -opt.warmup; i < opt.iters; ++i) {
    Series& s = i < 0 ? discard : series;
    const int at = std::max(i, 0);
    if ((i & 1) == 0) {
      time_dispatcher(bench, s, at);
      time_raw(bench, s, at);
    } else {
      time_raw(bench, s, at);
      time_dispatcher(bench, s, at);
    }
    time_copies(bench, s, at);
  }
  nlohmann::json record = {{"bench", "a2a"},          {"ranks", world.size()},
                           {"tokens", opt.tokens},    {"width", opt.width},
                           {"experts", opt.experts},  {"top_k", opt.top_k},
                           {"skew", opt.skew},        {"iters", opt.iters},
                           {"threads", threads},      {"counts", opt.counts},
                           {"a2a_dtype", opt.a2a_dtype},
                           {"dispatcher", opt.dispatcher}};
  record.update(volume_record(bench));
  record.update(summary_record(bench, series));
  if (world.rank() == 0) std::cout << record.dump() << std::endl;
  return 0;
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  // fssdp-model is arithmetic: no MPI, so it runs without mpirun
  if (argc >= 2 && std::strcmp(argv[1], "fssdp-model") == 0)
    return moe::cli::run_tool(
        "moe-bench fssdp-model", moe::kFssdpModelUsage, argc - 1, argv + 1,
        [&] { return moe::run_fssdp_model(argc - 1, argv + 1); }, "fewer or smaller --ranks");
  return moe::cli::run_mpi_tool(
      "moe-bench", moe::kUsage, argc, argv,
      [](int n, char** args, int ranks) {
        MOE_USER_CHECK(n >= 2, "no subcommand (expected: a2a or fssdp-model)");
        MOE_USER_CHECK(std::strcmp(args[1], "a2a") == 0, "unknown subcommand '", args[1],
                       "' (expected: a2a or fssdp-model)");
        return moe::parse_a2a_options(n - 1, args + 1, ranks);
      },
      [](const moe::MpiEnv& mpi, const moe::A2aOptions& o) { return moe::run_a2a(mpi, o); });
}
