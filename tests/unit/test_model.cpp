// The MoE language model as a whole: finite-difference gradient check of every
// parameter (routing frozen, since the top-k choice is piecewise constant), and
// layout-invariant initialisation.

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "framework/moe/dispatcher.h"
#include "models/moe_gpt/moe_gpt.h"
#include "tests/unit/gradcheck.h"

namespace moe {
namespace {

struct TinyGpt {
  ModelConfig model;
  MoeConfig moe;
  ParamStore store;
  LocalDispatcher dispatcher;
  std::unique_ptr<MoeGpt> gpt;
  std::vector<int32_t> inputs, targets;  // (B, T)
  int64_t batch = 2;

  explicit TinyGpt(float capacity_factor, bool renormalize) {
    model.vocab_size = 11;
    model.seq_len = 5;
    model.num_layers = 3;
    model.d_model = 8;
    model.num_heads = 2;
    model.dense_layers = 1;
    model.dense_ffn = 12;
    // Wide weights: gradients of O(0.1), so the absolute tolerance has no slack to hide
    // a wrong term in.
    model.init_std = 0.2f;
    moe.num_experts = 4;
    moe.top_k = 2;
    moe.expert_ffn = 6;
    moe.num_shared = 1;
    moe.shared_ffn = 5;
    moe.capacity_factor = capacity_factor;
    moe.renormalize = renormalize;
    moe.aux_loss = 0.1f;
    moe.z_loss = 0.01f;
    gpt = std::make_unique<MoeGpt>(model, moe, store,
                                   MoeRuntime::local(dispatcher, moe.num_experts));
    store.initialize(99);
    const int64_t n = batch * model.seq_len;
    for (int64_t i = 0; i < n; ++i) {
      inputs.push_back(static_cast<int32_t>((i * 7 + 3) % model.vocab_size));
      targets.push_back(static_cast<int32_t>((i * 5 + 1) % model.vocab_size));
    }
  }
  double loss() { return gpt->forward(inputs.data(), targets.data(), batch).total; }
};

class ModelGradTest : public ::testing::TestWithParam<std::pair<float, bool>> {};

TEST_P(ModelGradTest, EveryParameterMatchesFiniteDifferences) {
  const auto [capacity_factor, renormalize] = GetParam();
  TinyGpt t(capacity_factor, renormalize);
  t.store.zero_grad();
  const LossParts parts = t.gpt->forward(t.inputs.data(), t.targets.data(), t.batch);
  EXPECT_GT(parts.aux, 0.0);
  EXPECT_GT(parts.z, 0.0);
  t.gpt->backward();
  for (MoELayer* layer : t.gpt->moe_layers()) layer->freeze_routing(true);

  testing::GradCheckOptions options;
  options.atol = 1e-4;
  options.h = 1e-2;
  options.richardson = true;
  options.max_checks = 24;
  double grad_norm_sq = 0.0;
  int checked = 0;
  for (Param& p : t.store.params()) {
    std::vector<float> analytic(p.grad.data(), p.grad.data() + p.numel());
    for (float g : analytic) grad_norm_sq += static_cast<double>(g) * g;
    const std::string err = testing::check_gradient(p.spec.name, p.value.data(),
                                                    analytic.data(), p.numel(),
                                                    [&] { return t.loss(); }, options);
    EXPECT_TRUE(err.empty()) << err;
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(t.store.params().size()));
  EXPECT_GT(std::sqrt(grad_norm_sq), 0.1) << "gradients too small for the check to bite";
}

INSTANTIATE_TEST_SUITE_P(Routing, ModelGradTest,
                         ::testing::Values(std::make_pair(0.0f, false),
                                           std::make_pair(0.0f, true),
                                           std::make_pair(1.0f, false)));

TEST(ModelTest, ParameterNamesFollowTheSpec) {
  TinyGpt t(0.0f, false);
  for (const char* name :
       {"embed.weight", "layers.0.attn_norm.weight", "layers.0.attn.w_qkv",
        "layers.0.attn.w_out", "layers.0.ffn_norm.weight", "layers.0.mlp.w_gate",
        "layers.0.mlp.w_up", "layers.0.mlp.w_down", "layers.1.moe.router.weight",
        "layers.1.moe.experts.w_gate", "layers.1.moe.experts.w_up",
        "layers.1.moe.experts.w_down", "layers.2.moe.shared.w_gate", "final_norm.weight",
        "lm_head.weight"})
    EXPECT_NE(t.store.find(name), nullptr) << name;
  EXPECT_EQ(t.store.find("layers.1.mlp.w_gate"), nullptr);
  EXPECT_EQ(t.store.find("layers.1.moe.experts.w_down")->local_shape, (Shape{4, 8, 6}));
}

TEST(ModelTest, InitialisationDependsOnSeedAndNameOnly) {
  TinyGpt a(0.0f, false), b(0.0f, false);
  Param& pa = *a.store.find("layers.1.moe.experts.w_up");
  Param& pb = *b.store.find("layers.1.moe.experts.w_up");
  for (int64_t i = 0; i < pa.numel(); ++i) ASSERT_EQ(pa.value.data()[i], pb.value.data()[i]);
  b.store.initialize(100);
  EXPECT_NE(pa.value.data()[0], pb.value.data()[0]);
  // The output projection is initialised with sigma / sqrt(2L).
  double sq = 0.0;
  Param& out = *a.store.find("layers.2.moe.experts.w_down");
  for (int64_t i = 0; i < out.numel(); ++i) sq += out.value.data()[i] * out.value.data()[i];
  const double std_out = std::sqrt(sq / out.numel());
  EXPECT_NEAR(std_out, a.model.init_std / std::sqrt(6.0), 0.2 * a.model.init_std / std::sqrt(6.0));
}

TEST(ModelTest, LossStartsNearLogVocab) {
  TinyGpt t(0.0f, false);
  t.model.init_std = 0.02f;
  ParamStore store;
  LocalDispatcher dispatcher;
  MoeGpt gpt(t.model, t.moe, store, MoeRuntime::local(dispatcher, t.moe.num_experts));
  store.initialize(5);
  const LossParts parts = gpt.forward(t.inputs.data(), t.targets.data(), t.batch);
  EXPECT_NEAR(parts.ce, std::log(11.0), 0.05);
}

}  // namespace
}  // namespace moe
