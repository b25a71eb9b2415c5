// MoE layer: routing plan, aux losses, local dispatcher, grouped experts, MoELayer.
// Tiny shapes: N 12 tokens, C 8, E 4 experts, K 2, F 6.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "framework/kernels/cpu/cpu_ops.h"
#include "framework/kernels/ops.h"
#include "framework/moe/aux_loss.h"
#include "framework/moe/dispatcher.h"
#include "framework/moe/placement.h"
#include "framework/moe/moe_layer.h"
#include "framework/moe/routing_plan.h"
#include "tests/unit/gradcheck.h"

namespace moe {
namespace {

using testing::check_gradient;
using testing::dot;
using testing::random_vector;

constexpr int64_t kN = 12, kC = 8, kE = 4, kK = 2, kF = 6;

MoeConfig tiny_config(bool renormalize, float capacity_factor) {
  MoeConfig c;
  c.num_experts = kE;
  c.top_k = kK;
  c.expert_ffn = kF;
  c.num_shared = 1;
  c.shared_ffn = 5;
  c.capacity_factor = capacity_factor;
  c.renormalize = renormalize;
  // Large coefficients so the aux and z gradients weigh in the checked loss.
  c.aux_loss = 0.5f;
  c.z_loss = 0.1f;
  return c;
}

// A layer over its own store, initialised with wide weights so that routing is
// far from uniform.
struct TinyMoe {
  ParamStore store;
  LocalDispatcher dispatcher;
  MoELayer layer;
  explicit TinyMoe(const MoeConfig& config, uint64_t seed = 7)
      : layer(store, "layers.1.moe", kC, config, 0.5f, 0.3f,
              MoeRuntime::local(dispatcher, config.num_experts)) {
    store.initialize(seed);
  }
};

// Token t's choices [K] from a flat list written token by token.
RoutingPlan plan_from(const std::vector<int32_t>& experts, float weight, int64_t top_k,
                      int64_t capacity) {
  const int64_t n = static_cast<int64_t>(experts.size()) / top_k;
  std::vector<float> weights(experts.size(), weight);
  return build_routing_plan(experts, weights, n, top_k, kE, capacity);
}

// ---------------------------------------------------------------- routing plan

TEST(RoutingPlan, ExpertCapacity) {
  EXPECT_EQ(expert_capacity(1.0f, 12, 2, 4), 6);
  EXPECT_EQ(expert_capacity(0.5f, 12, 2, 4), 3);
  EXPECT_EQ(expert_capacity(1.25f, 12, 2, 4), 8);  // ceil(7.5)
  EXPECT_EQ(expert_capacity(1.1f, 20, 2, 4), 11);  // 1.1f is a bit above 1.1
  EXPECT_EQ(expert_capacity(0.0f, 12, 2, 4), -1);
  EXPECT_EQ(expert_capacity(-1.0f, 12, 2, 4), -1);
}

TEST(RoutingPlan, SlotsAreExpertMajorInTokenOrder) {
  // token:        0      1      2      3
  const std::vector<int32_t> experts = {2, 0, 0, 2, 3, 2, 0, 1};
  const RoutingPlan plan = plan_from(experts, 1.0f, 2, -1);
  EXPECT_EQ(plan.num_slots(), 8);
  EXPECT_EQ(plan.expert_offsets, (std::vector<int64_t>{0, 3, 4, 7, 8}));
  EXPECT_EQ(plan.token_of_slot, (std::vector<int32_t>{0, 1, 3, 3, 0, 1, 2, 2}));
  EXPECT_EQ(plan.slot, (std::vector<int32_t>{4, 0, 1, 5, 7, 6, 2, 3}));
  EXPECT_EQ(plan.counts_before, plan.counts_after);
}

TEST(RoutingPlan, CapacityDropsOverCapacityInGShardPriority) {
  // Tokens 0..8 pick expert 0 first, tokens 9..11 pick it second: 12 assignments
  // for a capacity of ceil(1.0 * 12 * 2 / 4) = 6.
  std::vector<int32_t> experts;
  for (int32_t t = 0; t < 12; ++t) {
    if (t < 9) {
      experts.push_back(0);
      experts.push_back(2 + t % 2);
    } else {
      experts.push_back(1);
      experts.push_back(0);
    }
  }
  const int64_t capacity = expert_capacity(1.0f, 12, 2, 4);
  const RoutingPlan plan = plan_from(experts, 0.5f, 2, capacity);
  // Expert 0 keeps the first choices of tokens 0..5; the first choices of 6, 7, 8
  // and the second choices of 9, 10, 11 are dropped.
  for (int64_t t = 0; t < 12; ++t)
    for (int64_t k = 0; k < 2; ++k) {
      const bool dropped = (k == 0 && t >= 6 && t <= 8) || (k == 1 && t >= 9);
      EXPECT_EQ(plan.slot[t * 2 + k] < 0, dropped) << "token " << t << " choice " << k;
    }
  EXPECT_EQ(plan.counts_before, (std::vector<int64_t>{12, 3, 5, 4}));
  EXPECT_EQ(plan.counts_after, (std::vector<int64_t>{6, 3, 5, 4}));
  EXPECT_EQ(plan.num_dropped(), 6);
  EXPECT_EQ(plan.token_of_slot[0], 0);
  EXPECT_EQ(plan.token_of_slot[5], 5);
}

TEST(RoutingPlan, FirstChoicesBeatEarlierTokensSecondChoices) {
  // Token 0's second choice is expert 1, which tokens 1..3 pick first. With a
  // capacity of 3 GShard admits the three first choices and drops token 0's second
  // choice, although token 0 comes first.
  const std::vector<int32_t> experts = {0, 1, 1, 2, 1, 3, 1, 0};
  const RoutingPlan plan = plan_from(experts, 1.0f, 2, 3);
  EXPECT_EQ(plan.slot[1], -1);
  for (int64_t t = 1; t < 4; ++t) EXPECT_GE(plan.slot[t * 2], 0);
  EXPECT_EQ(plan.num_dropped(), 1);
}

// Batch Priority Routing: within each round of choices, tokens with a higher combine
// weight are admitted first, so a confident later token keeps the slot an earlier
// unsure one would have taken.
TEST(RoutingPlan, BatchPriorityAdmitsConfidentTokensFirst) {
  // Three tokens, top-1, all on expert 0 with capacity 2; token 2 is the most confident.
  const std::vector<int32_t> experts = {0, 0, 0};
  const std::vector<float> weights = {0.4f, 0.3f, 0.9f};
  const RoutingPlan gshard = build_routing_plan(experts, weights, 3, 1, kE, 2);
  EXPECT_EQ(gshard.slot, (std::vector<int32_t>{0, 1, -1}));
  const RoutingPlan bpr =
      build_routing_plan(experts, weights, 3, 1, kE, 2,
                         Admission{RoutingPriority::kBatchPriority, {}, {}});
  EXPECT_EQ(bpr.slot, (std::vector<int32_t>{0, -1, 1}));  // slots stay in token order
  EXPECT_EQ(bpr.token_of_slot, (std::vector<int32_t>{0, 2}));
  // All first choices still precede any second choice.
  const std::vector<int32_t> two = {0, 1, 1, 0};
  const std::vector<float> w2 = {0.2f, 0.1f, 0.9f, 0.05f};
  const RoutingPlan p = build_routing_plan(
      two, w2, 2, 2, kE, 1, Admission{RoutingPriority::kBatchPriority, {}, {}});
  EXPECT_EQ(p.slot, (std::vector<int32_t>{0, -1, 1, -1}));
}

TEST(RoutingPlan, RejectsInvalidChoices) {
  EXPECT_THROW(plan_from({0, 0}, 1.0f, 2, -1), Error);  // same expert twice
  EXPECT_THROW(plan_from({0, 4}, 1.0f, 2, -1), Error);  // out of range
}

// ---------------------------------------------------------------- aux losses

// A batch split into R slices, each planned with queued_ahead from every slice's
// choice counts, keeps exactly the assignments the whole batch keeps: the routing
// of data-parallel ranks does not depend on the layout.
TEST(RoutingPlan, SlicesWithQueuedAheadKeepWhatTheWholeBatchKeeps) {
  const int64_t n = 24, k = 2;
  std::vector<int32_t> experts;
  for (int64_t t = 0; t < n; ++t) {
    const int32_t first = static_cast<int32_t>((t * t + 3 * t) % 3);  // skewed to 0..2
    experts.push_back(first);
    experts.push_back(static_cast<int32_t>((first + 1 + t % 3) % kE));
  }
  const std::vector<float> weights(experts.size(), 0.5f);
  for (int64_t capacity : {int64_t{-1}, int64_t{5}, int64_t{9}, int64_t{14}}) {
    const RoutingPlan whole = build_routing_plan(experts, weights, n, k, kE, capacity);
    for (int ranks : {2, 3, 4}) {
      const int64_t local = n / ranks;
      std::vector<int64_t> all_counts;
      for (int r = 0; r < ranks; ++r) {
        const auto c = choice_counts(std::span(experts).subspan(r * local * k, local * k),
                                     local, k, kE);
        all_counts.insert(all_counts.end(), c.begin(), c.end());
      }
      const auto kept = kept_counts_of_ranks(all_counts, ranks, k, kE, capacity);
      for (int r = 0; r < ranks; ++r) {
        const auto ahead = queued_ahead_of_rank(all_counts, ranks, r, k, kE);
        const auto mine = std::span(experts).subspan(r * local * k, local * k);
        const RoutingPlan part = build_routing_plan(
            mine, std::span(weights).subspan(r * local * k, local * k), local, k, kE,
            capacity, Admission{RoutingPriority::kChoiceMajor, ahead, {}});
        for (int64_t x = 0; x < kE; ++x)
          EXPECT_EQ(kept[r * kE + x], part.counts_after[x]) << "rank " << r << " expert " << x;
        for (int64_t a = 0; a < local * k; ++a)
          EXPECT_EQ(part.slot[a] >= 0, whole.slot[r * local * k + a] >= 0)
              << "capacity " << capacity << ", " << ranks << " ranks, rank " << r
              << ", assignment " << a;
      }
    }
    if (capacity == 5) {
      EXPECT_GT(whole.num_dropped(), 0);
    }
  }
}

TEST(ExpertPlacement, ContiguousBlocksFirstRanksHoldTheRemainder) {
  const ExpertPlacement p{10, 4, 0};
  const int64_t counts[] = {3, 3, 2, 2}, firsts[] = {0, 3, 6, 8};
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(p.count(r), counts[r]);
    EXPECT_EQ(p.first(r), firsts[r]);
    for (int64_t e = firsts[r]; e < firsts[r] + counts[r]; ++e) EXPECT_EQ(p.owner(e), r);
  }
  EXPECT_EQ(p.first(4), 10);
  for (int ep : {1, 2, 3, 5, 7, 16}) {
    const ExpertPlacement q{16, ep, 0};
    int64_t total = 0;
    for (int r = 0; r < ep; ++r) {
      EXPECT_EQ(q.first(r), total);
      EXPECT_GE(q.count(r), 1);
      total += q.count(r);
    }
    EXPECT_EQ(total, 16);
  }
}

// L_aux of a batch from its probability sums equals the per-token formula, and the
// gradient with global counts over N_g tokens, taken on a slice of N tokens, is
// N_g / N times the whole batch's per-token derivative.
TEST(AuxLoss, GlobalFormAgreesWithLocal) {
  const int64_t n = 6, k = 2;
  std::vector<float> probs(static_cast<size_t>(n * kE));
  for (size_t i = 0; i < probs.size(); ++i) probs[i] = 0.05f + 0.01f * static_cast<float>(i % 7);
  const std::vector<int64_t> counts = {4, 3, 3, 2};
  std::vector<double> sums(kE, 0.0);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t e = 0; e < kE; ++e) sums[e] += probs[t * kE + e];
  EXPECT_NEAR(switch_aux_loss_global(sums.data(), counts.data(), n, kE, k, 0.01f),
              switch_aux_loss(probs.data(), counts.data(), n, kE, k, 0.01f), 1e-12);
  std::vector<float> whole(probs.size(), 0.0f), slice(static_cast<size_t>(2 * kE), 0.0f);
  switch_aux_loss_backward(counts.data(), n, kE, k, 0.01f, 1.0f, whole.data());
  switch_aux_loss_backward(counts.data(), 2, kE, k, 0.01f, 1.0f, slice.data(), n);
  for (int64_t e = 0; e < kE; ++e) EXPECT_NEAR(slice[e], whole[e] * 3.0f, 1e-9);
}

TEST(AuxLoss, EqualsAlphaAtPerfectBalance) {
  const int64_t n = 8;
  std::vector<float> logits = random_vector(n * kE, 3, 2.0f);
  std::vector<float> probs(logits.size());
  cpu::softmax_forward(logits.data(), probs.data(), n, kE);
  const std::vector<int64_t> balanced(kE, n * kK / kE);
  // sum_e P_e = 1, so any p gives alpha when f_e = 1/E
  EXPECT_NEAR(switch_aux_loss(probs.data(), balanced.data(), n, kE, kK, 0.01f), 0.01, 1e-8);
  // Load and probability both piled on expert 0: above alpha.
  const std::vector<int64_t> skewed = {n, n / 2, n / 2, 0};
  std::vector<float> peaked(n * kE, 0.1f);
  for (int64_t t = 0; t < n; ++t) peaked[t * kE] = 0.7f;
  EXPECT_NEAR(switch_aux_loss(peaked.data(), skewed.data(), n, kE, kK, 0.01f),
              0.01 * 4 * (0.5 * 0.7 + 0.25 * 0.1 + 0.25 * 0.1), 1e-7);
}

TEST(AuxLoss, ZLossOfZeroLogits) {
  const std::vector<float> logits(5 * kE, 0.0f);
  const double lse = std::log(static_cast<double>(kE));
  EXPECT_NEAR(router_z_loss(logits.data(), 5, kE, 0.001f), 0.001 * lse * lse, 1e-9);
}

// ---------------------------------------------------------------- dispatcher

// dispatch -> combine with weights summing to one per token returns the input, and
// the backward pair returns the gradient.
void expect_round_trip(int64_t top_k, const std::vector<int32_t>& experts) {
  const int64_t n = static_cast<int64_t>(experts.size()) / top_k;
  auto plan = std::make_shared<const RoutingPlan>(
      plan_from(experts, 1.0f / static_cast<float>(top_k), top_k, -1));
  std::vector<float> x = random_vector(n * kC, 11);
  std::vector<float> g = random_vector(n * kC, 12);
  std::vector<float> y(x.size()), dx(x.size()), dw(static_cast<size_t>(n * top_k));
  LocalDispatcher dispatcher;
  const DispatchHandle h = dispatcher.dispatch(Tensor(x.data(), {n, kC}), plan);
  ASSERT_EQ(h.rows().rows(), n * top_k);
  ASSERT_EQ(h.num_local_experts(), kE);
  dispatcher.combine(h, h.rows(), Tensor(y.data(), {n, kC}));
  for (size_t i = 0; i < x.size(); ++i) EXPECT_FLOAT_EQ(y[i], x[i]) << i;

  std::vector<float> d_rows(static_cast<size_t>(n * top_k * kC));
  dispatcher.combine_backward(h, h.rows(), Tensor(g.data(), {n, kC}),
                              Tensor(d_rows.data(), {n * top_k, kC}), dw.data());
  dispatcher.dispatch_backward(h, Tensor(d_rows.data(), {n * top_k, kC}),
                               Tensor(dx.data(), {n, kC}));
  for (size_t i = 0; i < g.size(); ++i) EXPECT_FLOAT_EQ(dx[i], g[i]) << i;
  // dweights_{t,k} = <g_t, x_t> since every slot holds its token's row
  for (int64_t a = 0; a < n * top_k; ++a)
    EXPECT_NEAR(dw[a], dot(g.data() + (a / top_k) * kC, x.data() + (a / top_k) * kC, kC),
                1e-5);
}

TEST(LocalDispatcher, DispatchCombineReturnsInputAndGradientTopK) {
  expect_round_trip(2, {2, 0, 0, 2, 3, 2, 0, 1, 1, 3, 3, 0});
}

TEST(LocalDispatcher, DispatchCombineReturnsInputAndGradientTop1) {
  expect_round_trip(1, {3, 3, 0, 1, 3, 2});  // expert 2 once, experts unevenly loaded
}

TEST(LocalDispatcher, DroppedAssignmentsContributeNothing) {
  // Both tokens choose experts 0 and 1. Capacity 2 keeps all four assignments;
  // capacity 1 keeps token 0's and drops both of token 1's, whose output is zero.
  const std::vector<int32_t> experts = {0, 1, 0, 1};
  auto plan = std::make_shared<const RoutingPlan>(plan_from(experts, 0.5f, 2, 2));
  ASSERT_EQ(plan->num_dropped(), 0);
  auto tight = std::make_shared<const RoutingPlan>(plan_from(experts, 0.5f, 2, 1));
  ASSERT_EQ(tight->slot, (std::vector<int32_t>{0, 1, -1, -1}));
  std::vector<float> x = random_vector(2 * kC, 13), y(x.size());
  LocalDispatcher dispatcher;
  const DispatchHandle h = dispatcher.dispatch(Tensor(x.data(), {2, kC}), tight);
  dispatcher.combine(h, h.rows(), Tensor(y.data(), {2, kC}));
  for (int64_t j = 0; j < kC; ++j) {
    EXPECT_FLOAT_EQ(y[j], x[j]);
    EXPECT_EQ(y[kC + j], 0.0f);
  }
}

// ---------------------------------------------------------------- MoE layer

// The layer output computed with plain loops from the parameter values and the plan.
std::vector<double> naive_forward(TinyMoe& m, const std::vector<float>& u) {
  const RoutingPlan& plan = *m.layer.last_plan();
  auto swiglu = [&](const float* wg, const float* wu, const float* wd, int64_t f,
                    const float* x, double* y) {
    for (int64_t i = 0; i < f; ++i) {
      double g = 0.0, v = 0.0;
      for (int64_t j = 0; j < kC; ++j) {
        g += wg[i * kC + j] * x[j];
        v += wu[i * kC + j] * x[j];
      }
      const double h = g / (1.0 + std::exp(-g)) * v;
      for (int64_t j = 0; j < kC; ++j) y[j] += wd[j * f + i] * h;
    }
  };
  std::vector<double> y(static_cast<size_t>(kN * kC), 0.0);
  GroupedExperts& ex = m.layer.experts();
  for (int64_t t = 0; t < kN; ++t) {
    std::vector<double> acc(kC, 0.0);
    for (int64_t k = 0; k < kK; ++k) {
      const int64_t a = t * kK + k;
      if (plan.slot[a] < 0) continue;
      const int64_t e = plan.expert[a];
      std::vector<double> ye(kC, 0.0);
      swiglu(ex.w_gate()->value.data() + e * kF * kC, ex.w_up().value.data() + e * kF * kC,
             ex.w_down().value.data() + e * kC * kF, kF, u.data() + t * kC, ye.data());
      for (int64_t j = 0; j < kC; ++j) acc[j] += plan.weight[a] * ye[j];
    }
    const int64_t fs = 5;  // shared_ffn of tiny_config
    swiglu(m.store.find("layers.1.moe.shared.w_gate")->value.data(),
           m.store.find("layers.1.moe.shared.w_up")->value.data(),
           m.store.find("layers.1.moe.shared.w_down")->value.data(), fs, u.data() + t * kC,
           acc.data());
    std::copy(acc.begin(), acc.end(), y.begin() + t * kC);
  }
  return y;
}

TEST(MoELayer, RegistersParametersOfTheSpec) {
  TinyMoe m(tiny_config(false, 0.0f));
  EXPECT_EQ(m.store.find("layers.1.moe.router.weight")->spec.shape, (Shape{kE, kC}));
  EXPECT_EQ(m.store.find("layers.1.moe.experts.w_gate")->spec.shape, (Shape{kE, kF, kC}));
  EXPECT_EQ(m.store.find("layers.1.moe.experts.w_up")->spec.shape, (Shape{kE, kF, kC}));
  EXPECT_EQ(m.store.find("layers.1.moe.experts.w_down")->spec.shape, (Shape{kE, kC, kF}));
  EXPECT_EQ(m.store.find("layers.1.moe.experts.w_down")->spec.shard, Shard::kExpertRow);
  EXPECT_EQ(m.store.find("layers.1.moe.experts.w_up")->spec.shard, Shard::kExpertColumn);
  EXPECT_EQ(m.store.find("layers.1.moe.shared.w_down")->spec.shape, (Shape{kC, 5}));

  MoeConfig no_shared = tiny_config(false, 0.0f);
  no_shared.num_shared = 0;
  TinyMoe n(no_shared);
  EXPECT_EQ(n.store.find("layers.1.moe.shared.w_gate"), nullptr);
  EXPECT_EQ(n.layer.shared(), nullptr);
}

TEST(MoELayer, ForwardMatchesNaiveReference) {
  for (float cf : {0.0f, 0.5f}) {
    TinyMoe m(tiny_config(true, cf));
    std::vector<float> u = random_vector(kN * kC, 1);
    const Tensor y = m.layer.forward(Tensor(u.data(), {kN, kC}));
    const std::vector<double> ref = naive_forward(m, u);
    for (int64_t i = 0; i < kN * kC; ++i) EXPECT_NEAR(y[i], ref[i], 1e-5) << "cf " << cf;
  }
}

struct GradCase {
  bool renormalize;
  float capacity_factor;
  bool gelu = false;            // GELU experts and shared expert (V-MoE)
  bool batch_priority = false;  // Batch Priority Routing
};

class MoELayerGradient : public ::testing::TestWithParam<GradCase> {};

// loss = sum(y * r) + L_aux + L_z with routing frozen, checked against finite
// differences w.r.t. the input and every parameter.
TEST_P(MoELayerGradient, MatchesFiniteDifferences) {
  const GradCase c = GetParam();
  MoeConfig config = tiny_config(c.renormalize, c.capacity_factor);
  if (c.gelu) config.expert_act = ExpertActivation::kGelu;
  config.batch_priority = c.batch_priority;
  TinyMoe m(config);
  std::vector<float> u = random_vector(kN * kC, 1);
  std::vector<float> r = random_vector(kN * kC, 2);
  const Tensor ut(u.data(), {kN, kC});
  m.layer.forward(ut);
  m.layer.freeze_routing(true);
  if (c.capacity_factor > 0.0f) {
    ASSERT_GT(m.layer.load_stats().dropped_fraction, 0.0);
  }
  auto loss = [&] {
    const Tensor y = m.layer.forward(ut);
    return dot(y.data, r.data(), kN * kC) + m.layer.aux_loss() + m.layer.z_loss();
  };
  m.store.zero_grad();
  loss();
  const Tensor du = m.layer.backward(Tensor(r.data(), {kN, kC}));
  const std::vector<float> du_copy(du.data, du.data + du.numel());
  EXPECT_EQ(check_gradient("u", u.data(), du_copy.data(), kN * kC, loss), "");
  for (Param& p : m.store.params()) {
    const std::vector<float> g(p.grad.data(), p.grad.data() + p.numel());
    EXPECT_EQ(check_gradient(p.spec.name, p.value.data(), g.data(), p.numel(), loss), "");
  }
}

INSTANTIATE_TEST_SUITE_P(RawAndRenormalised, MoELayerGradient,
                         ::testing::Values(GradCase{false, 0.0f}, GradCase{true, 0.0f},
                                           GradCase{false, 0.5f}, GradCase{true, 0.5f},
                                           GradCase{false, 0.5f, true, true},
                                           GradCase{true, 0.0f, true, false}),
                         [](const auto& info) {
                           return std::string(info.param.renormalize ? "renorm" : "raw") +
                                  (info.param.capacity_factor > 0 ? "_capacity" : "_dropless") +
                                  (info.param.gelu ? "_gelu" : "") +
                                  (info.param.batch_priority ? "_bpr" : "");
                         });

// GELU experts: w_fc1 / w_fc2 instead of w_gate / w_up / w_down, a GELU shared expert,
// and Expert_e(u) = W_fc2[e] gelu(W_fc1[e] u) checked on one token.
TEST(MoELayer, GeluExpertsFollowTheSpec) {
  MoeConfig config = tiny_config(false, 0.0f);
  config.expert_act = ExpertActivation::kGelu;
  config.num_shared = 0;
  TinyMoe m(config);
  EXPECT_EQ(m.store.find("layers.1.moe.experts.w_gate"), nullptr);
  EXPECT_EQ(m.store.find("layers.1.moe.experts.w_fc1")->spec.shape, (Shape{kE, kF, kC}));
  EXPECT_EQ(m.store.find("layers.1.moe.experts.w_fc2")->spec.shape, (Shape{kE, kC, kF}));
  EXPECT_EQ(m.layer.experts().w_gate(), nullptr);
  config.num_shared = 1;
  TinyMoe s(config);
  EXPECT_NE(s.store.find("layers.1.moe.shared.w_fc1"), nullptr);

  std::vector<float> u = random_vector(kC, 3);
  const Tensor y = m.layer.forward(Tensor(u.data(), {1, kC}));
  const RoutingPlan& plan = *m.layer.last_plan();
  const float* w1 = m.store.find("layers.1.moe.experts.w_fc1")->value.data();
  const float* w2 = m.store.find("layers.1.moe.experts.w_fc2")->value.data();
  std::vector<double> expected(kC, 0.0);
  for (int64_t k = 0; k < kK; ++k) {
    const int e = plan.expert[k];
    for (int64_t f = 0; f < kF; ++f) {
      double pre = 0.0;
      for (int64_t j = 0; j < kC; ++j) pre += w1[(e * kF + f) * kC + j] * u[j];
      const double act = 0.5 * pre * (1.0 + std::erf(pre / std::sqrt(2.0)));
      for (int64_t i = 0; i < kC; ++i) expected[i] += plan.weight[k] * w2[(e * kC + i) * kF + f] * act;
    }
  }
  for (int64_t i = 0; i < kC; ++i) EXPECT_NEAR(y[i], expected[i], 1e-5) << i;
}

// The aux and z gradients alone (dy = 0), so they cannot hide behind the main term.
TEST(MoELayer, AuxAndZLossGradients) {
  MoeConfig config = tiny_config(false, 0.0f);
  config.aux_loss = 1.0f;
  config.z_loss = 1.0f;
  TinyMoe m(config);
  std::vector<float> u = random_vector(kN * kC, 1);
  std::vector<float> zero(kN * kC, 0.0f);
  const Tensor ut(u.data(), {kN, kC});
  m.layer.forward(ut);
  m.layer.freeze_routing(true);
  auto loss = [&] {
    m.layer.forward(ut);
    return m.layer.aux_loss() + m.layer.z_loss();
  };
  m.store.zero_grad();
  loss();
  const Tensor du = m.layer.backward(Tensor(zero.data(), {kN, kC}));
  const std::vector<float> du_copy(du.data, du.data + du.numel());
  EXPECT_EQ(check_gradient("u", u.data(), du_copy.data(), kN * kC, loss), "");
  Param& w = m.layer.router().weight();
  const std::vector<float> g(w.grad.data(), w.grad.data() + w.numel());
  EXPECT_GT(std::sqrt(cpu::sum_squares(g.data(), w.numel())), 1e-2);
  EXPECT_EQ(check_gradient("router.weight", w.value.data(), g.data(), w.numel(), loss), "");
}

TEST(MoELayer, DroplessEqualsHugeCapacityFactor) {
  TinyMoe dropless(tiny_config(true, 0.0f));
  TinyMoe huge(tiny_config(true, 100.0f));
  std::vector<float> u = random_vector(kN * kC, 1);
  const Tensor a = dropless.layer.forward(Tensor(u.data(), {kN, kC}));
  const Tensor b = huge.layer.forward(Tensor(u.data(), {kN, kC}));
  for (int64_t i = 0; i < kN * kC; ++i) EXPECT_EQ(a[i], b[i]);
  EXPECT_EQ(dropless.layer.last_plan()->slot, huge.layer.last_plan()->slot);
  EXPECT_EQ(huge.layer.load_stats().dropped_fraction, 0.0);
  EXPECT_EQ(dropless.layer.aux_loss(), huge.layer.aux_loss());
}

TEST(MoELayer, BiasBalancingMovesBiasAndSelectionButNotWeights) {
  MoeConfig config = tiny_config(false, 0.0f);
  config.bias_balance = true;
  config.bias_update_rate = 0.01f;
  TinyMoe m(config);
  // loads {10, 2, 6, 6}, mean 6: the overloaded expert's bias falls, the
  // underloaded one's rises, the balanced ones stay
  const std::vector<int64_t> load = {10, 2, 6, 6};
  m.layer.update_bias(load.data());
  EXPECT_FLOAT_EQ(m.layer.bias()[0], -0.01f);
  EXPECT_FLOAT_EQ(m.layer.bias()[1], 0.01f);
  EXPECT_EQ(m.layer.bias()[2], 0.0f);
  EXPECT_EQ(m.layer.bias()[3], 0.0f);

  std::vector<float> u = random_vector(kN * kC, 1);
  const Tensor ut(u.data(), {kN, kC});
  std::fill(m.layer.bias().begin(), m.layer.bias().end(), 0.0f);
  m.layer.forward(ut);
  const std::vector<int32_t> unbiased = m.layer.last_plan()->expert;
  const Tensor p = m.layer.router().probs();
  const std::vector<float> probs(p.data, p.data + p.numel());

  // Expert 3 gets a bias no probability can beat: every token picks it first.
  m.layer.bias()[3] = 2.0f;
  m.layer.forward(ut);
  const RoutingPlan& plan = *m.layer.last_plan();
  EXPECT_NE(plan.expert, unbiased);
  EXPECT_EQ(m.layer.load_stats().assigned[3], kN);
  const Tensor p2 = m.layer.router().probs();
  for (int64_t t = 0; t < kN; ++t) {
    EXPECT_EQ(plan.expert[t * kK], 3);
    for (int64_t k = 0; k < kK; ++k) {
      const int64_t e = plan.expert[t * kK + k];
      EXPECT_EQ(p2[t * kE + e], probs[t * kE + e]);             // p ignores the bias
      EXPECT_EQ(plan.weight[t * kK + k], probs[t * kE + e]);    // weight = p, not p + b
    }
  }
}

TEST(MoELayer, LoadStats) {
  TinyMoe m(tiny_config(false, 0.5f));
  std::vector<float> u = random_vector(kN * kC, 1);
  m.layer.forward(Tensor(u.data(), {kN, kC}));
  const RoutingPlan& plan = *m.layer.last_plan();
  const ExpertLoadStats& s = m.layer.load_stats();
  const int64_t capacity = expert_capacity(0.5f, kN, kK, kE);
  ASSERT_EQ(capacity, 3);
  std::vector<int64_t> assigned(kE, 0);
  for (int32_t e : plan.expert) ++assigned[e];
  EXPECT_EQ(s.assigned, assigned);
  int64_t max_load = 0, dropped = 0;
  for (int64_t e = 0; e < kE; ++e) {
    EXPECT_EQ(s.kept[e], std::min(assigned[e], capacity));
    max_load = std::max(max_load, assigned[e]);
    dropped += assigned[e] - s.kept[e];
  }
  EXPECT_DOUBLE_EQ(s.max_over_mean, static_cast<double>(max_load) / (kN * kK / kE));
  EXPECT_DOUBLE_EQ(s.dropped_fraction, static_cast<double>(dropped) / (kN * kK));
  EXPECT_GT(s.dropped_fraction, 0.0);
}

TEST(MoELayer, FrozenRoutingKeepsChoices) {
  TinyMoe m(tiny_config(false, 0.0f));
  EXPECT_THROW(m.layer.freeze_routing(true), Error);  // nothing to freeze yet
  std::vector<float> u = random_vector(kN * kC, 1);
  m.layer.forward(Tensor(u.data(), {kN, kC}));
  const std::vector<int32_t> before = m.layer.last_plan()->expert;
  m.layer.freeze_routing(true);
  std::vector<float> other = random_vector(kN * kC, 5);
  m.layer.forward(Tensor(other.data(), {kN, kC}));
  EXPECT_EQ(m.layer.last_plan()->expert, before);
  m.layer.freeze_routing(false);
  m.layer.forward(Tensor(other.data(), {kN, kC}));
  EXPECT_NE(m.layer.last_plan()->expert, before);
}

}  // namespace
}  // namespace moe
