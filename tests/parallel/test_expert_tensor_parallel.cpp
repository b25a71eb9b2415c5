// mpi-ranks: 2 4 8
// Expert-tensor parallelism (framework/moe/etp_dispatcher.h) against one process holding
// every expert whole. The world is split as experts are in training with edp = 1:
// etp groups of consecutive ranks, ep groups of the ranks with one etp coordinate.
//   - etp = 2 and 4, SwiGLU and GELU experts, dropless and with dropped assignments:
//     the combined outputs, dx and dweights of every rank equal the unsplit experts'
//     on the same tokens and plan, and every weight-gradient block equals its block of
//     the unsplit gradients summed over every rank's tokens;
//   - the bytes on the ep and etp groups are the analytic count;
//   - tp slicing: the ranks of a tp group feed identical tokens; each dispatches its
//     share, every rank gets the whole outputs and gradients, and the expert gradients
//     count every token once (they would be tp times too large if the shared tokens
//     travelled once per tp rank);
//   - a whole MoE layer (router, global-batch capacity, shared expert) under tp = etp = 2
//     with identical inputs on each tp group equals one process running the global
//     batch: outputs, input gradients and every parameter gradient.
//
// Checks after a collective use EXPECT (not ASSERT): a rank leaving a test early would
// leave the others waiting in the next collective.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "framework/core/rng.h"
#include "framework/moe/all_to_all_dispatcher.h"
#include "framework/moe/etp_dispatcher.h"
#include "framework/moe/experts.h"
#include "framework/moe/moe_layer.h"
#include "framework/parallel/mpi_communicator.h"
#include "tests/parallel/mpi_test.h"

namespace moe {
namespace {

constexpr int64_t kC = 8, kF = 16, kE = 6, kK = 2, kN = 14;
constexpr uint64_t kSeed = 5;

// The tokens, plan and output gradient of token group g: a function of g only, so any
// rank can rebuild another's.
struct Tokens {
  std::shared_ptr<const RoutingPlan> plan;
  std::vector<float> x, dy;  // (N, C) each
};

Tokens make_tokens(int group, int64_t capacity) {
  const PhiloxKey key = philox_key(300 + group, hash_name("test.etp"));
  auto uniform = [&](uint64_t a, uint64_t b) {
    return uniform_from_bits(static_cast<uint32_t>(random_u64(key, a, b)));
  };
  std::vector<int32_t> experts(static_cast<size_t>(kN * kK));
  std::vector<float> weights(experts.size());
  for (int64_t t = 0; t < kN; ++t) {
    // K distinct experts from a random walk that skips repeats; the first choice is
    // one of the three lowest experts, so a small capacity drops assignments
    int32_t e = static_cast<int32_t>(random_u64(key, t, 0) % 3);
    for (int64_t j = 0; j < kK; ++j) {
      while (std::find(experts.begin() + t * kK, experts.begin() + t * kK + j, e) !=
             experts.begin() + t * kK + j)
        e = (e + 1) % kE;
      experts[t * kK + j] = e;
      weights[t * kK + j] = 0.2f + 0.6f * uniform(t, 1 + j);
      e = static_cast<int32_t>((e + 1 + random_u64(key, t, 9) % kE) % kE);
    }
  }
  Tokens out;
  out.plan = std::make_shared<const RoutingPlan>(
      build_routing_plan(experts, weights, kN, kK, kE, capacity));
  out.x.resize(static_cast<size_t>(kN * kC));
  out.dy.resize(out.x.size());
  for (size_t i = 0; i < out.x.size(); ++i) {
    out.x[i] = uniform(100 + i, 0) - 0.5f;
    out.dy[i] = uniform(100 + i, 1) - 0.5f;
  }
  return out;
}

struct Result {
  std::vector<float> y, dx, dweights;
};

// forward and backward of dispatch -> experts -> combine
Result run(Dispatcher& dispatcher, GroupedExperts& experts, const Tokens& tokens) {
  std::vector<float> x = tokens.x, dy = tokens.dy;
  const DispatchHandle h = dispatcher.dispatch(Tensor(x.data(), {kN, kC}), tokens.plan);
  const Tensor out = experts.forward(h.rows(), h.expert_offsets());
  Result r;
  r.y.resize(x.size());
  r.dx.resize(x.size());
  r.dweights.resize(static_cast<size_t>(kN * kK));
  dispatcher.combine(h, out, Tensor(r.y.data(), {kN, kC}));
  std::vector<float> d_out(static_cast<size_t>(out.numel()));
  const Tensor d_out_t(d_out.data(), out.shape);
  dispatcher.combine_backward(h, out, Tensor(dy.data(), {kN, kC}), d_out_t, r.dweights.data());
  const Tensor d_rows = experts.backward(d_out_t);
  dispatcher.dispatch_backward(h, d_rows, Tensor(r.dx.data(), {kN, kC}));
  return r;
}

float max_abs(const std::vector<float>& v) {
  float m = 0.0f;
  for (float x : v) m = std::max(m, std::fabs(x));
  return m;
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const float tol = 1e-5f * std::max(1.0f, max_abs(want));
  int bad = 0;
  for (size_t i = 0; i < want.size() && bad < 5; ++i)
    if (!(std::fabs(got[i] - want[i]) <= tol)) {
      ADD_FAILURE() << what << "[" << i << "] " << got[i] << " vs " << want[i];
      ++bad;
    }
}

// Every parameter block of `split` equals its block of the logical gradient in `whole`.
void expect_grad_blocks(const ParamStore& split, ParamStore& whole, const std::string& what) {
  for (const Param& p : split.params()) {
    const Param* w = whole.find(p.spec.name);
    ASSERT_NE(w, nullptr) << p.spec.name;
    const Shape& full = p.spec.shape;
    const Shape& local = p.local_shape;
    ASSERT_EQ(full.rank, 3) << p.spec.name;
    std::vector<float> got(p.grad.data(), p.grad.data() + p.numel()), want;
    for (int64_t a = 0; a < local[0]; ++a)
      for (int64_t b = 0; b < local[1]; ++b)
        for (int64_t c = 0; c < local[2]; ++c)
          want.push_back(w->grad.data()[((p.offset[0] + a) * full[1] + p.offset[1] + b) * full[2] +
                                        p.offset[2] + c]);
    expect_close(got, want, what + " grad " + p.spec.name);
  }
}

struct Layout {
  int tp = 1, etp = 1;  // tp: ranks sharing tokens (1: every rank its own)
};

// The etp, ep and tp groups of this rank in the default order (etp fastest, edp = 1).
struct Groups {
  MpiCommunicator world{test::mpi_env().world()};
  std::unique_ptr<MpiCommunicator> etp, ep, tp;
  explicit Groups(Layout l) {
    const int r = world.rank();
    etp = MpiCommunicator::split(world, r / l.etp, r % l.etp);
    ep = MpiCommunicator::split(world, r % l.etp, r / l.etp);
    tp = MpiCommunicator::split(world, r / l.tp, r % l.tp);
  }
};

void expect_same_as_whole(Layout layout, ExpertActivation act, int64_t capacity,
                          const std::string& what) {
  Groups g(layout);
  const int world = g.world.size();
  // one process, every expert whole: each token group's pass, weight gradients summed
  ParamStore whole_store;
  GroupedExperts whole(whole_store, "t", kC, kF, ExpertPlacement::single(kE), 0.3f, 0.2f, act);
  whole_store.initialize(kSeed);
  LocalDispatcher local;
  Result want;
  const int my_group = g.world.rank() / layout.tp;
  for (int group = 0; group < world / layout.tp; ++group) {
    Result r = run(local, whole, make_tokens(group, capacity));
    if (group == my_group) want = std::move(r);
  }

  const ExpertPlacement placement{kE, g.ep->size(), g.ep->rank()};
  ParamStore store;
  GroupedExperts split(store, "t", kC, kF, placement, 0.3f, 0.2f, act,
                       ExpertTensorSplit{g.etp->size(), g.etp->rank()});
  store.initialize(kSeed);
  AllToAllDispatcher a2a(*g.ep, placement);
  EtpDispatcher etp(a2a, *g.etp, layout.tp > 1 ? g.tp.get() : nullptr);
  const Tokens tokens = make_tokens(my_group, capacity);
  if (capacity >= 0) {
    EXPECT_GT(tokens.plan->num_dropped(), 0) << what << ": nothing dropped";
  }
  const Result got = run(etp, split, tokens);
  expect_close(got.y, want.y, what + " y");
  expect_close(got.dx, want.dx, what + " dx");
  expect_close(got.dweights, want.dweights, what + " dweights");
  expect_grad_blocks(store, whole_store, what);
}

std::string name(Layout l, ExpertActivation act, int64_t capacity) {
  return "tp " + std::to_string(l.tp) + " etp " + std::to_string(l.etp) +
         (act == ExpertActivation::kGelu ? " gelu" : " swiglu") +
         (capacity < 0 ? " dropless" : " capacity " + std::to_string(capacity));
}

TEST(ExpertTensorParallel, SplitExpertsEqualWholeExperts) {
  const int world = Groups(Layout{}).world.size();
  for (int etp : {2, 4}) {
    if (world % etp != 0) continue;
    for (ExpertActivation act : {ExpertActivation::kSwiGLU, ExpertActivation::kGelu})
      for (int64_t capacity : {int64_t{-1}, int64_t{3}})
        expect_same_as_whole(Layout{1, etp}, act, capacity, name(Layout{1, etp}, act, capacity));
  }
}

TEST(ExpertTensorParallel, TpSlicesCountEveryTokenOnce) {
  const int world = Groups(Layout{}).world.size();
  for (Layout l : {Layout{2, 1}, Layout{2, 2}, Layout{4, 4}, Layout{4, 2}}) {
    if (world % l.tp != 0 || world % l.etp != 0 || l.etp > l.tp) continue;
    for (int64_t capacity : {int64_t{-1}, int64_t{3}})
      expect_same_as_whole(l, ExpertActivation::kSwiGLU, capacity,
                           name(l, ExpertActivation::kSwiGLU, capacity));
  }
}

// One MoE layer at tp = etp = 2, ep = dp = world / 2 (edp 1): dense grid rank = tp_rank +
// 2 dp_rank, expert grid rank = etp_rank + 2 ep_rank. The tp pair of dp rank d holds
// rows [d N, (d + 1) N) of the global batch, both the same; capacity 1.0 drops
// assignments by the global batch's queues. Balance and z losses are off: their
// per-rank gradients are scaled for the data-parallel average (aux_loss.h).
TEST(ExpertTensorParallel, MoeLayerWithTpGroupsEqualsOneProcess) {
  MpiCommunicator world(test::mpi_env().world());
  const int r = world.rank(), dp_size = world.size() / 2, d = r / 2;
  const auto pair = MpiCommunicator::split(world, r / 2, r % 2);    // tp = etp
  const auto column = MpiCommunicator::split(world, r % 2, r / 2);  // dp = ep
  const MoeConfig config{.num_experts = kE, .top_k = kK, .expert_ffn = kF, .num_shared = 1,
                         .shared_ffn = 6, .capacity_factor = 1.0f, .aux_loss = 0.0f,
                         .z_loss = 0.0f};
  const int64_t n = kN, global = dp_size * n;
  const PhiloxKey key = philox_key(77, hash_name("test.etp.layer"));
  std::vector<float> u(static_cast<size_t>(global * kC)), dy(u.size());
  for (size_t i = 0; i < u.size(); ++i) {
    u[i] = 2.0f * uniform_from_bits(static_cast<uint32_t>(random_u64(key, i, 0))) - 1.0f;
    dy[i] = uniform_from_bits(static_cast<uint32_t>(random_u64(key, i, 1))) - 0.5f;
  }

  ParamStore whole_store;
  LocalDispatcher local;
  MoELayer whole(whole_store, "layers.1.moe", kC, config, 0.5f, 0.3f,
                 MoeRuntime::local(local, kE));
  whole_store.initialize(kSeed);
  std::vector<float> u_all = u, dy_all = dy;
  const Tensor y_all = whole.forward(Tensor(u_all.data(), {global, kC}));
  const Tensor du_all = whole.backward(Tensor(dy_all.data(), {global, kC}));
  auto rows = [&](Tensor t) {  // dp rank d's rows of a (global, C) tensor
    return std::vector<float>(t.data + d * n * kC, t.data + (d + 1) * n * kC);
  };
  const std::vector<float> want_y = rows(y_all), want_du = rows(du_all);

  const ExpertPlacement placement{kE, column->size(), column->rank()};
  ParamStore store;
  AllToAllDispatcher a2a(*column, placement);
  EtpDispatcher etp(a2a, *pair, pair.get());
  MoELayer layer(store, "layers.1.moe", kC, config, 0.5f, 0.3f,
                 MoeRuntime(MoeRuntimeSpec{.dispatcher = &etp,
                                           .placement = placement,
                                           .tokens = column.get(),
                                           .etp = {pair->size(), pair->rank()}}));
  store.initialize(kSeed);
  std::vector<float> u_mine(u.begin() + d * n * kC, u.begin() + (d + 1) * n * kC);
  std::vector<float> dy_mine(dy.begin() + d * n * kC, dy.begin() + (d + 1) * n * kC);
  const Tensor y = layer.forward(Tensor(u_mine.data(), {n, kC}));
  EXPECT_GT(layer.load_stats().dropped_fraction, 0.0) << "the capacity drops nothing";
  expect_close(std::vector<float>(y.data, y.data + y.numel()), want_y, "layer y");
  const Tensor du = layer.backward(Tensor(dy_mine.data(), {n, kC}));
  expect_close(std::vector<float>(du.data, du.data + du.numel()), want_du, "layer du");

  // replicated parameters: the dp ranks' gradients add up to the global batch's; expert
  // blocks (edp 1) hold theirs already
  for (Param& p : store.params()) {
    if (is_expert_shard(p.spec.shard)) continue;
    column->all_reduce<float>({p.grad.data(), static_cast<size_t>(p.numel())});
    const Param* w = whole_store.find(p.spec.name);
    expect_close(std::vector<float>(p.grad.data(), p.grad.data() + p.numel()),
                 std::vector<float>(w->grad.data(), w->grad.data() + w->numel()),
                 "grad " + p.spec.name);
  }
  ParamStore experts_only;
  for (const Param& p : store.params())
    if (is_expert_shard(p.spec.shard)) {
      Param& q = experts_only.add_shard(p.spec, p.local_shape, p.offset);
      std::copy(p.grad.data(), p.grad.data() + p.numel(), q.grad.data());
    }
  expect_grad_blocks(experts_only, whole_store, "layer");
}

// Bytes each group moves in one forward + backward: ep, the kept rows that cross ep
// ranks in each of the four exchanges (and the [E] counts); etp, the rows every member
// received, gathered twice and reduce-scattered twice (and the [E_local] counts).
TEST(ExpertTensorParallel, BytesPerGroupAreTheAnalyticCount) {
  const int world = Groups(Layout{}).world.size();
  for (int etp_size : {2, 4}) {
    if (world % etp_size != 0) continue;
    Groups g(Layout{1, etp_size});
    const ExpertPlacement placement{kE, g.ep->size(), g.ep->rank()};
    ParamStore store;
    GroupedExperts split(store, "t", kC, kF, placement, 0.3f, 0.2f, ExpertActivation::kSwiGLU,
                         ExpertTensorSplit{g.etp->size(), g.etp->rank()});
    store.initialize(kSeed);
    AllToAllDispatcher a2a(*g.ep, placement);
    EtpDispatcher etp(a2a, *g.etp);
    const Tokens tokens = make_tokens(g.world.rank(), -1);
    g.ep->stats() = CommStats{};
    g.etp->stats() = CommStats{};
    run(etp, split, tokens);
    const CommStats ep_stats = g.ep->stats(), etp_stats = g.etp->stats();

    constexpr int64_t kFloat = sizeof(float), kInt = sizeof(int64_t);
    // rows out: this rank's rows for experts on other ep ranks (dispatch and
    // combine_backward); rows in: other sources' rows for this rank's experts (combine
    // and dispatch_backward send them back); S_j = rows in + this rank's own
    int64_t out = 0, in = 0, mine = 0;
    for (int s = 0; s < g.ep->size(); ++s) {
      const Tokens source = make_tokens(g.etp->size() * s + g.etp->rank(), -1);
      for (int64_t e = 0; e < kE; ++e) {
        const int64_t rows = source.plan->counts_after[e];
        const bool here = placement.owner(e) == g.ep->rank(), from_me = s == g.ep->rank();
        if (from_me && !here) out += rows;
        if (!from_me && here) in += rows;
        if (here) mine += rows;
      }
    }
    const int64_t remote_counts = kE - placement.num_local();
    EXPECT_EQ(ep_stats.bytes_sent, 2 * (out + in) * kC * kFloat + remote_counts * kInt)
        << "etp " << etp_size;

    int64_t total = mine;
    g.etp->all_reduce<int64_t>({&total, 1});
    const int64_t m = etp_size - 1;
    EXPECT_EQ(etp_stats.bytes_sent,
              m * placement.num_local() * kInt +   // counts
                  2 * m * mine * kC * kFloat +      // all-gathers: my rows to m members
                  2 * (total - mine) * kC * kFloat)  // reduce-scatters: their rows' partials
        << "etp " << etp_size;
  }
}

}  // namespace
}  // namespace moe
