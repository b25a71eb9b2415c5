// mpi-ranks: 1 2 3 4
// The flat and the two-level all-to-all dispatchers and the shared-memory one against the
// local one, under mpirun with ep = world (two-level: every emulated split of the world
// into N nodes of G):
//   - dispatch -> combine (identity experts, weights summing to one) returns the input,
//     and combine_backward -> dispatch_backward returns the gradient;
//   - with per-expert functions, combine outputs, dx and dweights equal the local
//     dispatcher's on the same plan exactly, dropless and with dropped assignments,
//     with expert counts that ep divides and that it does not (7 experts), and with
//     experts that get no rows;
//   - each expert's rows arrive grouped by source rank in token order;
//   - every exchange is counted in the communicator's stats;
//   - with the plan's group counts no counts exchange takes place;
//   - a bf16 wire moves bf16 rows exactly, at half the bytes;
//   - shared memory: the same bits whether the experts write into the dispatcher's rows
//     (expert_rows) or elsewhere, windows reused and grown alike on every rank with
//     several live handles, and the rows moved between ranks counted in the stats.
//
// Checks after a collective use EXPECT (not ASSERT): a rank leaving a test early would
// leave the others waiting in the next collective.

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "framework/core/bf16.h"
#include "framework/core/rng.h"
#include "framework/moe/all_to_all_dispatcher.h"
#include "framework/moe/dispatcher.h"
#include "framework/moe/routing_plan.h"
#include "framework/moe/shm_dispatcher.h"
#include "framework/parallel/mpi_communicator.h"
#include "framework/parallel/two_level_all_to_all.h"
#include "tests/parallel/mpi_test.h"

namespace moe {
namespace {

constexpr int64_t kC = 6;  // row width

float random_uniform(PhiloxKey key, uint64_t a, uint64_t b) {
  return uniform_from_bits(static_cast<uint32_t>(random_u64(key, a, b)));
}

struct Routing {
  std::shared_ptr<const RoutingPlan> plan;
  std::vector<float> x;  // (N, C)
};

// This rank's tokens and a random plan over all experts; distinct choices per token.
Routing random_routing(int rank, int64_t n, int64_t e, int64_t k, int64_t capacity,
                       bool unit_weights) {
  const PhiloxKey key = philox_key(100 + rank, hash_name("test.dispatcher"));
  std::vector<int32_t> experts(static_cast<size_t>(n * k));
  std::vector<float> weights(experts.size());
  for (int64_t t = 0; t < n; ++t) {
    // a skewed choice: the first choice favours low experts
    const int64_t first = static_cast<int64_t>(random_u64(key, t, 0) % (e * e)) % e;
    for (int64_t j = 0; j < k; ++j) {
      experts[t * k + j] = static_cast<int32_t>((first + j * (1 + random_u64(key, t, 1) % (e - 1))) % e);
      weights[t * k + j] = unit_weights ? 1.0f / static_cast<float>(k)
                                        : 0.1f + 0.8f * random_uniform(key, t, 2 + j);
    }
    // distinct choices: fall back to consecutive experts on a collision
    for (int64_t j = 1; j < k; ++j)
      for (int64_t i = 0; i < j; ++i)
        if (experts[t * k + j] == experts[t * k + i])
          experts[t * k + j] = static_cast<int32_t>((first + j) % e);
  }
  Routing r;
  r.plan = std::make_shared<const RoutingPlan>(
      build_routing_plan(experts, weights, n, k, e, capacity));
  r.x.resize(static_cast<size_t>(n * kC));
  for (size_t i = 0; i < r.x.size(); ++i)
    r.x[i] = random_uniform(key, 1000 + static_cast<int64_t>(i), 7) - 0.5f;
  return r;
}

// Expert e's function: f_e(u) = (e + 1) * u + 0.25 * e, row by row, on `rows` rows of
// local experts [first, first + offsets.size() - 1).
std::vector<float> apply_experts(Tensor rows, std::span<const int64_t> offsets,
                                 int64_t first) {
  std::vector<float> out(static_cast<size_t>(rows.numel()));
  for (size_t i = 0; i + 1 < offsets.size(); ++i) {
    const float scale = static_cast<float>(first + static_cast<int64_t>(i) + 1);
    for (int64_t s = offsets[i]; s < offsets[i + 1]; ++s)
      for (int64_t j = 0; j < kC; ++j)
        out[s * kC + j] = scale * rows.data[s * kC + j] + 0.25f * static_cast<float>(scale - 1);
  }
  return out;
}

struct Outputs {
  std::vector<float> y, dx, dweights;
};

void round_all_to_bf16(std::vector<float>& v) {
  for (float& x : v) x = round_to_bf16(x);
}

// forward (dispatch, experts, combine) and backward (combine_backward, d experts,
// dispatch_backward) through `dispatcher`; the experts' backward is f_e'(u) = e + 1.
// round_rows: the expert outputs and their input gradients are rounded to bf16 before
// they go back, as the MoE layer does with moe.a2a_dtype = bf16, and the experts round
// the gradient they receive, as mixed-precision experts do before their products.
// place_rows: the experts' rows go where the dispatcher's expert_rows() asks (the MoE
// layer's way), else into the caller's own buffers.
Outputs run(Dispatcher& dispatcher, const Routing& r, const std::vector<float>& dy,
            bool round_rows = false, bool place_rows = false) {
  using Which = Dispatcher::ExpertRows;
  const RoutingPlan& plan = *r.plan;
  const int64_t n = plan.num_tokens;
  std::vector<float> x = r.x;
  const DispatchHandle h = dispatcher.dispatch(Tensor(x.data(), {n, kC}), r.plan);
  std::vector<float> out = apply_experts(h.rows(), h.expert_offsets(), h.first_expert());
  if (round_rows) round_all_to_bf16(out);
  const int64_t s = h.rows().rows();
  // (S, C) rows: the dispatcher's own when placing (holding `own`'s values unless they are
  // the dispatcher's output, which other ranks may be writing already), else `own`
  auto rows_for = [&](Which which, std::vector<float>& own) {
    const Tensor t = place_rows ? dispatcher.expert_rows(h, which) : Tensor();
    EXPECT_TRUE(!place_rows || t.data != nullptr) << "no expert rows to place into";
    if (t.data == nullptr) return Tensor(own.data(), {s, kC});
    if (which != Which::kOutputGrad) std::copy(own.begin(), own.end(), t.data);
    return t;
  };
  Outputs o;
  o.y.resize(x.size());
  o.dx.resize(x.size());
  o.dweights.resize(static_cast<size_t>(plan.num_assignments()));
  const Tensor out_rows = rows_for(Which::kOutput, out);
  dispatcher.combine(h, out_rows, Tensor(o.y.data(), {n, kC}));
  std::vector<float> dout_own(static_cast<size_t>(s * kC), -7.0f);  // overwritten
  const Tensor dout = rows_for(Which::kOutputGrad, dout_own);
  std::vector<float> dy_copy = dy;
  dispatcher.combine_backward(h, out_rows, Tensor(dy_copy.data(), {n, kC}), dout,
                              o.dweights.data());
  std::vector<float> d_rows(dout.data, dout.data + s * kC);
  if (round_rows) round_all_to_bf16(d_rows);
  for (size_t i = 0; i + 1 < h.expert_offsets().size(); ++i)
    for (int64_t row = h.expert_offsets()[i]; row < h.expert_offsets()[i + 1]; ++row)
      for (int64_t j = 0; j < kC; ++j)
        d_rows[row * kC + j] *= static_cast<float>(h.first_expert() + static_cast<int64_t>(i) + 1);
  if (round_rows) round_all_to_bf16(d_rows);
  dispatcher.dispatch_backward(h, rows_for(Which::kInputGrad, d_rows),
                               Tensor(o.dx.data(), {n, kC}));
  return o;
}

void expect_equal(const Outputs& got, const Outputs& want, const std::string& what) {
  for (size_t i = 0; i < want.y.size(); ++i) EXPECT_EQ(got.y[i], want.y[i]) << what << " y " << i;
  for (size_t i = 0; i < want.dx.size(); ++i)
    EXPECT_EQ(got.dx[i], want.dx[i]) << what << " dx " << i;
  for (size_t i = 0; i < want.dweights.size(); ++i)
    EXPECT_EQ(got.dweights[i], want.dweights[i]) << what << " dweights " << i;
}

void expect_same_as_local(int64_t n, int64_t e, int64_t k, int64_t capacity) {
  MpiCommunicator ep(test::mpi_env().world());
  const ExpertPlacement placement{e, ep.size(), ep.rank()};
  const Routing r = random_routing(ep.rank(), n, e, k, capacity, /*unit_weights=*/false);
  std::vector<float> dy(r.x.size());
  for (size_t i = 0; i < dy.size(); ++i) dy[i] = 0.01f * static_cast<float>(i % 17) - 0.08f;

  LocalDispatcher local;
  AllToAllDispatcher flat(ep, placement);
  const Outputs want = run(local, r, dy);
  expect_equal(run(flat, r, dy), want, "flat");
  for (int g = 1; g <= ep.size(); ++g) {
    if (ep.size() % g != 0) continue;
    TwoLevelAllToAll two(ep, NodeMap::blocks(ep.size(), g));
    AllToAllDispatcher two_level(ep, placement, {}, &two);
    expect_equal(run(two_level, r, dy), want, "two-level G=" + std::to_string(g));
  }
  ShmDispatcher shm(ep, placement);
  expect_equal(run(shm, r, dy), want, "shared memory");
  expect_equal(run(shm, r, dy, false, /*place_rows=*/true), want, "shared memory, placed");
  if (capacity >= 0) {
    EXPECT_GT(r.plan->num_dropped(), 0) << "the capacity drops nothing";
  }
}

// With the plan's group counts (what the MoE layer derives from its all-gathered routing
// counts) the dispatcher skips the counts exchange and still matches the local oracle.
TEST(AllToAllDispatcher, GroupCountsReplaceTheCountsExchange) {
  MpiCommunicator ep(test::mpi_env().world());
  const int64_t n = 36, e = 7, k = 2;
  const Routing base = random_routing(ep.rank(), n, e, k, 8, /*unit_weights=*/false);
  RoutingPlan with_counts = *base.plan;
  with_counts.group_counts_after.resize(static_cast<size_t>(ep.size() * e));
  ep.all_gather<int64_t>(base.plan->counts_after, with_counts.group_counts_after);
  Routing r{std::make_shared<const RoutingPlan>(std::move(with_counts)), base.x};
  std::vector<float> dy(r.x.size(), 0.25f);
  std::vector<int> token_ranks(static_cast<size_t>(ep.size()));
  for (int i = 0; i < ep.size(); ++i) token_ranks[i] = i;
  LocalDispatcher local;
  AllToAllDispatcher flat(ep, ExpertPlacement{e, ep.size(), ep.rank()}, token_ranks);
  const Outputs want = run(local, r, dy);
  ep.stats() = CommStats{};
  const Outputs got = run(flat, r, dy);
  EXPECT_EQ(ep.stats().calls, 4) << "one exchange per step, no counts exchange";
  EXPECT_EQ(got.y, want.y);
  EXPECT_EQ(got.dx, want.dx);
  EXPECT_EQ(got.dweights, want.dweights);
  // two-level: the plan of what each rank forwards follows from the group counts too
  for (int g = 1; g <= ep.size(); ++g) {
    if (ep.size() % g != 0) continue;
    TwoLevelAllToAll two(ep, NodeMap::blocks(ep.size(), g));
    AllToAllDispatcher two_level(ep, ExpertPlacement{e, ep.size(), ep.rank()}, token_ranks,
                                 &two);
    two.reset_stats();
    const Outputs hier = run(two_level, r, dy);
    EXPECT_EQ(two.intra().stats().calls + two.inter().stats().calls, 8)
        << "two steps per exchange, no counts exchange, G=" << g;
    expect_equal(hier, want, "two-level with group counts G=" + std::to_string(g));
  }
}

// moe.a2a_dtype = bf16: on bf16 inputs, with the rows that go back rounded to bf16 (the
// MoE layer's part), the bf16 wire moves every row exactly: flat and two-level equal the
// local dispatcher bit for bit, with drops and uneven experts; and the rows of a forward
// cost half the bytes of the fp32 wire.
TEST(AllToAllDispatcher, Bf16WireIsExactOnBf16RowsAndHalvesTheBytes) {
  MpiCommunicator ep(test::mpi_env().world());
  const int64_t n = 33, e = 7, k = 2;
  Routing r = random_routing(ep.rank(), n, e, k, 8, /*unit_weights=*/false);
  round_all_to_bf16(r.x);
  std::vector<float> dy(r.x.size());
  for (size_t i = 0; i < dy.size(); ++i) dy[i] = 0.01f * static_cast<float>(i % 17) - 0.08f;
  const ExpertPlacement placement{e, ep.size(), ep.rank()};
  LocalDispatcher local;
  const Outputs want = run(local, r, dy, /*round_rows=*/true);
  AllToAllDispatcher flat16(ep, placement, {}, nullptr, DType::kBF16);
  expect_equal(run(flat16, r, dy, true), want, "flat, bf16 wire");
  for (int g = 1; g <= ep.size(); ++g) {
    if (ep.size() % g != 0) continue;
    TwoLevelAllToAll two(ep, NodeMap::blocks(ep.size(), g));
    AllToAllDispatcher two_level(ep, placement, {}, &two, DType::kBF16);
    expect_equal(run(two_level, r, dy, true), want, "two-level, bf16 wire, G=" + std::to_string(g));
  }
  // bytes of dispatch + combine: rows at 2 bytes instead of 4 (the counts exchange alike)
  AllToAllDispatcher flat32(ep, placement);
  int64_t bytes[2];
  for (int wire = 0; wire < 2; ++wire) {
    AllToAllDispatcher& d = wire == 0 ? flat32 : flat16;
    std::vector<float> x = r.x, y(x.size());
    ep.stats() = CommStats{};
    const DispatchHandle h = d.dispatch(Tensor(x.data(), {n, kC}), r.plan);
    d.combine(h, h.rows(), Tensor(y.data(), {n, kC}));
    bytes[wire] = ep.stats().bytes_sent;
  }
  const int64_t counts = (e - placement.num_local()) * int64_t{sizeof(int64_t)};
  EXPECT_EQ(bytes[1] - counts, (bytes[0] - counts) / 2);
}

TEST(AllToAllDispatcher, SameAsLocalDropless) { expect_same_as_local(40, 8, 2, -1); }
TEST(AllToAllDispatcher, SameAsLocalWithDrops) { expect_same_as_local(40, 8, 2, 6); }
TEST(AllToAllDispatcher, SameAsLocalUnevenExperts) { expect_same_as_local(33, 7, 3, -1); }
TEST(AllToAllDispatcher, SameAsLocalTop1) { expect_same_as_local(25, 5, 1, 4); }
// Few tokens over many experts: most experts get no rows, among them ones just before
// and just after each rank's own experts (their empty blocks sit at the edges of the
// rows that stay on the rank).
TEST(AllToAllDispatcher, SameAsLocalWithExpertsNobodyChose) {
  expect_same_as_local(3, 8, 1, -1);
  expect_same_as_local(2, 7, 2, -1);
}

TEST(AllToAllDispatcher, DispatchCombineReturnsInputAndGradient) {
  MpiCommunicator ep(test::mpi_env().world());
  const int64_t n = 30, e = 6, k = 2;
  const Routing r = random_routing(ep.rank(), n, e, k, -1, /*unit_weights=*/true);
  AllToAllDispatcher flat(ep, ExpertPlacement{e, ep.size(), ep.rank()});
  std::vector<float> x = r.x, y(x.size()), dx(x.size());
  std::vector<float> dw(static_cast<size_t>(n * k));
  const DispatchHandle h = flat.dispatch(Tensor(x.data(), {n, kC}), r.plan);
  flat.combine(h, h.rows(), Tensor(y.data(), {n, kC}));
  for (size_t i = 0; i < x.size(); ++i) EXPECT_FLOAT_EQ(y[i], x[i]) << i;

  std::vector<float> g(x.size());
  for (size_t i = 0; i < g.size(); ++i) g[i] = 0.5f - 0.03f * static_cast<float>(i % 29);
  const int64_t s = h.rows().rows();
  std::vector<float> d_rows(static_cast<size_t>(s * kC));
  flat.combine_backward(h, h.rows(), Tensor(g.data(), {n, kC}), Tensor(d_rows.data(), {s, kC}),
                        dw.data());
  flat.dispatch_backward(h, Tensor(d_rows.data(), {s, kC}), Tensor(dx.data(), {n, kC}));
  for (size_t i = 0; i < g.size(); ++i) EXPECT_FLOAT_EQ(dx[i], g[i]) << i;
  for (int64_t a = 0; a < n * k; ++a) {
    double dot = 0.0;  // dweights_{t,k} = <g_t, x_t>: every slot holds its token's row
    for (int64_t j = 0; j < kC; ++j) dot += double{g[(a / k) * kC + j]} * x[(a / k) * kC + j];
    EXPECT_NEAR(dw[a], dot, 1e-5) << a;
  }
}

TEST(AllToAllDispatcher, ExpertRowsComeInSourceThenTokenOrder) {
  // Row j of token t on rank r is encoded as x = r * 1000 + t; an expert's rows must be
  // sorted by (source rank, token), the global token order.
  MpiCommunicator ep(test::mpi_env().world());
  const int64_t n = 24, e = 5, k = 2;
  Routing r = random_routing(ep.rank(), n, e, k, -1, /*unit_weights=*/true);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < kC; ++j) r.x[t * kC + j] = static_cast<float>(ep.rank() * 1000 + t);
  AllToAllDispatcher flat(ep, ExpertPlacement{e, ep.size(), ep.rank()});
  const DispatchHandle h = flat.dispatch(Tensor(r.x.data(), {n, kC}), r.plan);
  int64_t total = 0;
  for (int64_t i = 0; i < h.num_local_experts(); ++i) {
    for (int64_t s = h.expert_offsets()[i] + 1; s < h.expert_offsets()[i + 1]; ++s)
      EXPECT_LT(h.rows().data[(s - 1) * kC], h.rows().data[s * kC]) << "expert " << i;
    total += h.local_count(i);
  }
  // every kept assignment arrives exactly once somewhere
  int64_t sent = r.plan->num_slots();
  ep.all_reduce<int64_t>({&total, 1});
  ep.all_reduce<int64_t>({&sent, 1});
  EXPECT_EQ(total, sent);
}

TEST(AllToAllDispatcher, ExchangesAreCountedInStats) {
  MpiCommunicator ep(test::mpi_env().world());
  const int64_t n = 20, e = 4, k = 2;
  const Routing r = random_routing(ep.rank(), n, e, k, -1, /*unit_weights=*/true);
  AllToAllDispatcher flat(ep, ExpertPlacement{e, ep.size(), ep.rank()});
  ep.stats() = CommStats{};
  std::vector<float> x = r.x, y(x.size());
  const DispatchHandle h = flat.dispatch(Tensor(x.data(), {n, kC}), r.plan);
  // rows this rank's plan sends to other ranks, times C floats
  const ExpertPlacement placement{e, ep.size(), ep.rank()};
  int64_t remote_rows = 0;
  for (int64_t x_e = 0; x_e < e; ++x_e)
    if (placement.owner(x_e) != ep.rank()) remote_rows += r.plan->counts_after[x_e];
  int64_t remote_counts = e - placement.num_local();  // int64 counts to other ranks
  EXPECT_EQ(ep.stats().bytes_sent,
            remote_rows * kC * int64_t{sizeof(float)} + remote_counts * int64_t{sizeof(int64_t)});
  EXPECT_EQ(ep.stats().calls, 2);
  flat.combine(h, h.rows(), Tensor(y.data(), {n, kC}));
  EXPECT_EQ(ep.stats().calls, 3);
}

// Several live handles (one per MoE layer, as in a model) take distinct windows; a
// released one is reused, and a dispatch with more rows than any window holds grows one,
// on every rank alike (a rank that disagreed would stop with an internal error). Each
// handle keeps its rows: the results of interleaved layers equal the local oracle's.
TEST(ShmDispatcher, LiveHandlesKeepTheirWindowsAndWindowsGrow) {
  MpiCommunicator ep(test::mpi_env().world());
  const int64_t e = 6, k = 2;
  const ExpertPlacement placement{e, ep.size(), ep.rank()};
  ShmDispatcher shm(ep, placement);
  LocalDispatcher local;
  for (int64_t n : {12, 40, 9, 64}) {  // 40 and 64 outgrow the windows made before them
    const Routing a = random_routing(ep.rank(), n, e, k, -1, false);
    const Routing b = random_routing(ep.rank() + 7, n + 3, e, k, -1, false);
    std::vector<float> xa = a.x, xb = b.x, ya(xa.size()), yb(xb.size()), wa(xa.size()),
        wb(xb.size());
    const DispatchHandle ha = shm.dispatch(Tensor(xa.data(), {n, kC}), a.plan);
    const DispatchHandle hb = shm.dispatch(Tensor(xb.data(), {n + 3, kC}), b.plan);
    EXPECT_NE(ha.rows().data, hb.rows().data) << "two live handles share rows";
    shm.combine(hb, hb.rows(), Tensor(yb.data(), {n + 3, kC}));
    shm.combine(ha, ha.rows(), Tensor(ya.data(), {n, kC}));
    const DispatchHandle la = local.dispatch(Tensor(xa.data(), {n, kC}), a.plan);
    local.combine(la, la.rows(), Tensor(wa.data(), {n, kC}));
    const DispatchHandle lb = local.dispatch(Tensor(xb.data(), {n + 3, kC}), b.plan);
    local.combine(lb, lb.rows(), Tensor(wb.data(), {n + 3, kC}));
    EXPECT_EQ(ya, wa) << "n " << n;
    EXPECT_EQ(yb, wb) << "n " << n;
  }
}

// The rows a rank writes into or reads from other ranks' segments are counted as sent on
// the intra-node link: per forward the bytes of the flat dispatcher's two row exchanges,
// summed over the ranks, plus the all-gathered counts and regions.
TEST(ShmDispatcher, RowsMovedAreCountedInStats) {
  MpiCommunicator ep(test::mpi_env().world());
  const int64_t n = 20, e = 4, k = 2;
  const Routing r = random_routing(ep.rank(), n, e, k, -1, /*unit_weights=*/true);
  const ExpertPlacement placement{e, ep.size(), ep.rank()};
  ShmDispatcher shm(ep, placement);
  AllToAllDispatcher flat(ep, placement);
  int64_t bytes[2], counts[2];
  for (int which = 0; which < 2; ++which) {
    Dispatcher& d = which == 0 ? static_cast<Dispatcher&>(flat) : shm;
    std::vector<float> x = r.x, y(x.size());
    ep.stats() = CommStats{};
    const DispatchHandle h = d.dispatch(Tensor(x.data(), {n, kC}), r.plan);
    d.combine(h, h.rows(), Tensor(y.data(), {n, kC}));
    bytes[which] = ep.stats().bytes_sent;
    EXPECT_EQ(ep.stats().intra_node_bytes, bytes[which]);
    for (size_t i = 0; i < x.size(); ++i) EXPECT_FLOAT_EQ(y[i], x[i]) << i;
  }
  // counts: flat sends E less its own experts' int64s; shm all-gathers E + 1 (dispatch)
  // and 1 (combine: where the outputs lie) to each peer
  counts[0] = (e - placement.num_local()) * int64_t{sizeof(int64_t)};
  counts[1] = (ep.size() - 1) * (e + 2) * int64_t{sizeof(int64_t)};
  int64_t rows[2] = {bytes[0] - counts[0], bytes[1] - counts[1]};
  ep.all_reduce<int64_t>({rows, 2});
  EXPECT_EQ(rows[1], rows[0]);
  if (ep.size() > 1) {
    EXPECT_GT(rows[1], 0);
  }
}

}  // namespace
}  // namespace moe
