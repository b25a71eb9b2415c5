// Locality-aware and bi-level routing of one MoE layer, on one process with a synthetic
// topology (ExpertLocality: 8 experts on 4 nodes of 2, the tokens on node 1):
//   - node-limited top-K (moe.max_nodes_per_token = M): no token reaches more than M
//     nodes (read from the routing plan), and the choice is DeepSeek-V3's (nodes by the
//     sum of their top-(K/M) scores, then top-K among the kept nodes' experts), and
//     moe.own_node_bonus shifts the tokens' own node's score by exactly the bonus;
//   - the LocMoE locality loss: its value is mu KL(P || D_l), its gradient matches
//     finite differences, and descending it raises the node-local share;
//   - SMILE bi-level routing: (N + G) C router parameters, all K experts of a token in
//     one group, weights p1 p2, and the layer's gradients (balance and z-loss of both
//     levels included) match finite differences.
// Tiny shapes: N 12 tokens, C 8, E 8 experts, K 2, F 6.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>
#include <set>
#include <vector>

#include "framework/moe/dispatcher.h"
#include "framework/moe/moe_layer.h"
#include "tests/unit/gradcheck.h"

namespace moe {
namespace {

using testing::check_gradient;
using testing::dot;
using testing::random_vector;

constexpr int64_t kN = 12, kC = 8, kE = 8, kK = 2, kF = 6;
constexpr int kNodes = 4, kTokenNode = 1;

MoeConfig config(int max_nodes = 0, float locality = 0.0f, bool bilevel = false) {
  MoeConfig c;
  c.num_experts = kE;
  c.top_k = kK;
  c.expert_ffn = kF;
  c.num_shared = 0;
  c.aux_loss = 0.5f;
  c.z_loss = 0.1f;
  c.max_nodes_per_token = max_nodes;
  c.locality_loss = locality;
  if (bilevel) {
    c.routing = RoutingKind::kBilevel;
    c.node_groups = kNodes;
  }
  return c;
}

ExpertLocality four_nodes() {
  ExpertLocality loc;
  loc.num_nodes = kNodes;
  for (int64_t e = 0; e < kE; ++e) loc.expert_node.push_back(static_cast<int>(e / 2));
  loc.token_node = kTokenNode;
  return loc;
}

struct Layer {
  ParamStore store;
  LocalDispatcher dispatcher;
  MoELayer layer;
  explicit Layer(const MoeConfig& c)
      : layer(store, "layers.1.moe", kC, c, 0.5f, 0.3f,
              MoeRuntime(MoeRuntimeSpec{.dispatcher = &dispatcher,
                                        .placement = ExpertPlacement::single(kE),
                                        .locality = four_nodes()})) {
    store.initialize(11);
  }
};

std::set<int> nodes_of_token(const RoutingPlan& plan, int64_t t) {
  std::set<int> nodes;
  for (int64_t k = 0; k < plan.top_k; ++k) nodes.insert(plan.expert[t * plan.top_k + k] / 2);
  return nodes;
}

TEST(NodeLimitedRouting, NoTokenReachesMoreThanMNodes) {
  // (M, K) with K > M, so the limit binds; nodes hold 2 experts each
  for (auto [m, k] : {std::pair{1, 2}, std::pair{2, 4}, std::pair{3, 4}}) {
    MoeConfig c = config(m);
    c.top_k = k;
    Layer l(c);
    std::vector<float> u = random_vector(kN * kC, 3, 2.0f);
    l.layer.forward(Tensor(u.data(), {kN, kC}));
    const RoutingPlan& plan = *l.layer.last_plan();
    for (int64_t t = 0; t < kN; ++t)
      EXPECT_LE(nodes_of_token(plan, t).size(), static_cast<size_t>(m)) << "token " << t;
  }
  // unlimited K = 4 does reach more nodes for some token (so the test above bites)
  MoeConfig c = config(0);
  c.top_k = 4;
  Layer l(c);
  std::vector<float> u = random_vector(kN * kC, 3, 2.0f);
  l.layer.forward(Tensor(u.data(), {kN, kC}));
  size_t widest = 0;
  for (int64_t t = 0; t < kN; ++t)
    widest = std::max(widest, nodes_of_token(*l.layer.last_plan(), t).size());
  EXPECT_GT(widest, 1u);
}

TEST(NodeLimitedRouting, ChoosesDeepSeekV3Nodes) {
  // M = 1, K = 2: each node scores the sum of its top-2 probabilities (both experts);
  // the token takes the best node's two experts, best first.
  Layer l(config(1));
  std::vector<float> u = random_vector(kN * kC, 4, 2.0f);
  l.layer.forward(Tensor(u.data(), {kN, kC}));
  const Tensor p = l.layer.router().probs();
  const RoutingPlan& plan = *l.layer.last_plan();
  for (int64_t t = 0; t < kN; ++t) {
    const float* pt = p.data + t * kE;
    int best = 0;
    for (int n = 1; n < kNodes; ++n)
      if (pt[2 * n] + pt[2 * n + 1] > pt[2 * best] + pt[2 * best + 1]) best = n;
    const int first = pt[2 * best] >= pt[2 * best + 1] ? 2 * best : 2 * best + 1;
    EXPECT_EQ(plan.expert[t * kK], first) << t;
    EXPECT_EQ(plan.expert[t * kK + 1], 4 * best + 1 - first) << t;
    EXPECT_FLOAT_EQ(plan.weight[t * kK], pt[first]);  // weights stay p
  }
}

TEST(NodeLimitedRouting, OwnNodeBonusKeepsNearTiesHome) {
  // moe.own_node_bonus = b: the tokens' node (1) scores b more; the best node by the
  // shifted scores wins. A small bonus moves some tokens home but not all; a large one
  // keeps every token on its node.
  std::vector<float> u = random_vector(kN * kC, 4, 2.0f);
  int64_t home_small = 0;
  for (float bonus : {0.0f, 0.1f, 10.0f}) {
    MoeConfig c = config(1);
    c.own_node_bonus = bonus;
    Layer l(c);
    l.layer.forward(Tensor(u.data(), {kN, kC}));
    const Tensor p = l.layer.router().probs();
    const RoutingPlan& plan = *l.layer.last_plan();
    int64_t home = 0;
    for (int64_t t = 0; t < kN; ++t) {
      const float* pt = p.data + t * kE;
      auto score = [&](int n) {
        return pt[2 * n] + pt[2 * n + 1] + (n == kTokenNode ? bonus : 0.0f);
      };
      int best = 0;
      for (int n = 1; n < kNodes; ++n)
        if (score(n) > score(best)) best = n;
      EXPECT_EQ(nodes_of_token(plan, t), std::set<int>{best}) << "bonus " << bonus << ", " << t;
      home += best == kTokenNode ? 1 : 0;
    }
    if (bonus == 0.1f) home_small = home;
    if (bonus == 10.0f) {
      EXPECT_EQ(home, kN);
    }
  }
  EXPECT_GT(home_small, 0);
  EXPECT_LT(home_small, kN);
}

TEST(NodeLimitedRouting, RejectsLimitsThatCannotHoldK) {
  MoeConfig c = config(1);
  c.top_k = 3;  // one node holds 2 experts
  EXPECT_THROW(Layer l(c), Error);
}

TEST(LocalityLoss, ValueIsMuKlOfMeanProbabilities) {
  const float mu = 0.7f;
  Layer l(config(0, mu));
  std::vector<float> u = random_vector(kN * kC, 5);
  l.layer.forward(Tensor(u.data(), {kN, kC}));
  const Tensor p = l.layer.router().probs();
  std::vector<double> mean(kE, 0.0);
  for (int64_t t = 0; t < kN; ++t)
    for (int64_t e = 0; e < kE; ++e) mean[e] += p.data[t * kE + e] / kN;
  const double eps = 1e-4, local = (1.0 - eps * 6) / 2;  // experts 2, 3 are on node 1
  double kl = 0.0;
  for (int64_t e = 0; e < kE; ++e) kl += mean[e] * std::log(mean[e] / (e / 2 == 1 ? local : eps));
  EXPECT_NEAR(l.layer.load_stats().locality_loss, mu * kl, 1e-6 * mu * kl);
  // node-local share: the assignments to experts 2 and 3
  const RoutingPlan& plan = *l.layer.last_plan();
  int64_t near = 0;
  for (int32_t e : plan.expert) near += e / 2 == kTokenNode;
  EXPECT_DOUBLE_EQ(l.layer.load_stats().node_local_fraction,
                   static_cast<double>(near) / (kN * kK));
}

TEST(LocalityLoss, GradientMatchesFiniteDifferences) {
  MoeConfig c = config(0, 1.0f);
  c.aux_loss = 0.0f;
  c.z_loss = 0.0f;
  Layer l(c);
  std::vector<float> u = random_vector(kN * kC, 6);
  std::vector<float> zero(kN * kC, 0.0f);
  const Tensor ut(u.data(), {kN, kC});
  l.layer.forward(ut);
  l.layer.freeze_routing(true);
  auto loss = [&] {
    l.layer.forward(ut);
    return l.layer.aux_loss();  // = L_loc here
  };
  l.store.zero_grad();
  loss();
  const Tensor du = l.layer.backward(Tensor(zero.data(), {kN, kC}));
  const std::vector<float> du_copy(du.data, du.data + du.numel());
  EXPECT_EQ(check_gradient("u", u.data(), du_copy.data(), kN * kC, loss), "");
  Param& w = l.layer.router().weight();
  const std::vector<float> g(w.grad.data(), w.grad.data() + w.numel());
  EXPECT_EQ(check_gradient("router.weight", w.value.data(), g.data(), w.numel(), loss), "");
}

TEST(LocalityLoss, DescentKeepsTokensOnTheirNode) {
  // Top-1: the loss constrains the mean distribution, so with K = 2 a token whose
  // probability sits on one local expert may still take a remote second choice.
  MoeConfig c = config(0, 1.0f);
  c.aux_loss = 0.0f;
  c.z_loss = 0.0f;
  c.top_k = 1;
  Layer l(c);
  std::vector<float> u = random_vector(kN * kC, 7);
  std::vector<float> zero(kN * kC, 0.0f);
  const Tensor ut(u.data(), {kN, kC});
  l.layer.forward(ut);
  const double before = l.layer.load_stats().node_local_fraction;
  Param& w = l.layer.router().weight();
  for (int step = 0; step < 200; ++step) {
    l.store.zero_grad();
    l.layer.forward(ut);
    l.layer.backward(Tensor(zero.data(), {kN, kC}));
    for (int64_t i = 0; i < w.numel(); ++i) w.value.data()[i] -= 1.0f * w.grad.data()[i];
  }
  l.layer.forward(ut);
  EXPECT_LT(before, 0.5);
  EXPECT_GE(l.layer.load_stats().node_local_fraction, 0.95);
}

TEST(BilevelRouting, ParametersAndChoices) {
  Layer l(config(0, 0.0f, /*bilevel=*/true));
  EXPECT_EQ(l.store.find("layers.1.moe.router.weight"), nullptr);
  EXPECT_EQ(l.store.find("layers.1.moe.router.node_weight")->spec.shape, (Shape{kNodes, kC}));
  EXPECT_EQ(l.store.find("layers.1.moe.router.local_weight")->spec.shape,
            (Shape{kE / kNodes, kC}));
  std::vector<float> u = random_vector(kN * kC, 8, 2.0f);
  l.layer.forward(Tensor(u.data(), {kN, kC}));
  const RoutingPlan& plan = *l.layer.last_plan();
  ASSERT_NE(l.layer.bilevel_router(), nullptr);
  for (int64_t t = 0; t < kN; ++t) EXPECT_EQ(nodes_of_token(plan, t).size(), 1u) << t;
  EXPECT_TRUE(std::isfinite(l.layer.aux_loss()));
  EXPECT_TRUE(std::isfinite(l.layer.z_loss()));
}

class BilevelGradient : public ::testing::TestWithParam<bool> {};

TEST_P(BilevelGradient, MatchesFiniteDifferences) {
  MoeConfig c = config(0, 0.0f, /*bilevel=*/true);
  c.renormalize = GetParam();
  c.num_shared = 1;
  c.shared_ffn = 5;
  Layer l(c);
  std::vector<float> u = random_vector(kN * kC, 1);
  std::vector<float> r = random_vector(kN * kC, 2);
  const Tensor ut(u.data(), {kN, kC});
  l.layer.forward(ut);
  l.layer.freeze_routing(true);
  auto loss = [&] {
    const Tensor y = l.layer.forward(ut);
    return dot(y.data, r.data(), kN * kC) + l.layer.aux_loss() + l.layer.z_loss();
  };
  l.store.zero_grad();
  loss();
  const Tensor du = l.layer.backward(Tensor(r.data(), {kN, kC}));
  const std::vector<float> du_copy(du.data, du.data + du.numel());
  EXPECT_EQ(check_gradient("u", u.data(), du_copy.data(), kN * kC, loss), "");
  for (Param& p : l.store.params()) {
    const std::vector<float> g(p.grad.data(), p.grad.data() + p.numel());
    EXPECT_EQ(check_gradient(p.spec.name, p.value.data(), g.data(), p.numel(), loss), "");
  }
}

INSTANTIATE_TEST_SUITE_P(RawAndRenormalised, BilevelGradient, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "renorm" : "raw"; });

}  // namespace
}  // namespace moe
