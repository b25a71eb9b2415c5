// ViT-MoE and DiT-MoE as a whole: finite-difference gradient checks of every parameter
// on tiny shapes (routing frozen: the top-k choice is piecewise constant), the
// documented initial state, parameter names, and the diffusion process.

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "framework/moe/dispatcher.h"
#include "models/dit_moe/diffusion.h"
#include "models/dit_moe/dit_moe.h"
#include "models/vit_moe/vit_moe.h"
#include "tests/unit/gradcheck.h"

namespace moe {
namespace {

using testing::fill_uniform;
using testing::random_vector;

ModelConfig tiny_image_model(const std::string& family) {
  ModelConfig m;
  m.family = family;
  m.image_size = 8;
  m.image_channels = 2;
  m.patch_size = 4;  // 4 patches
  m.num_classes = 3;
  m.num_layers = 2;
  m.d_model = 8;
  m.num_heads = 2;
  m.dense_layers = 0;
  m.dense_ffn = 12;
  m.init_std = 0.2f;  // wide weights: gradients with no slack for a wrong term
  return m;
}

MoeConfig tiny_moe(const std::string& act, float capacity_factor, bool bpr) {
  MoeConfig e;
  e.num_experts = 4;
  e.top_k = 2;
  e.expert_ffn = 6;
  e.num_shared = 1;
  e.shared_ffn = 5;
  e.expert_act = *enum_from_name<ExpertActivation>(act);
  e.capacity_factor = capacity_factor;
  e.batch_priority = bpr;
  e.aux_loss = 0.1f;
  e.z_loss = 0.01f;
  return e;
}

// Zero-initialised parameters (ViT head, DiT adaLN and final layer) would hide every
// gradient behind them: give them values too.
void fill_zero_params(ParamStore& store) {
  uint64_t seed = 500;
  for (Param& p : store.params())
    if (p.spec.init.kind == Init::kZeros) fill_uniform(p.value.data(), p.numel(), seed++, 0.3f);
}

// Checks every parameter of `store` against central differences of `loss`, after one
// forward + backward has filled the gradients.
void check_all_parameters(ParamStore& store, const std::function<double()>& loss) {
  testing::GradCheckOptions options;
  options.atol = 1e-4;
  options.richardson = true;
  options.max_checks = 16;
  double grad_norm_sq = 0.0;
  for (Param& p : store.params()) {
    std::vector<float> analytic(p.grad.data(), p.grad.data() + p.numel());
    for (float g : analytic) grad_norm_sq += static_cast<double>(g) * g;
    EXPECT_EQ(testing::check_gradient(p.spec.name, p.value.data(), analytic.data(), p.numel(),
                                      loss, options),
              "");
  }
  EXPECT_GT(std::sqrt(grad_norm_sq), 0.1) << "gradients too small for the check to bite";
}

struct VitCase {
  std::string pool, pos, act;
  float capacity;
  bool bpr;
  int moe_every;
};

class VitGradTest : public ::testing::TestWithParam<VitCase> {};

TEST_P(VitGradTest, EveryParameterMatchesFiniteDifferences) {
  const VitCase v = GetParam();
  ModelConfig m = tiny_image_model("vit_moe");
  m.pool = *enum_from_name<PoolKind>(v.pool);
  m.pos_embed = *enum_from_name<PosEmbedKind>(v.pos);
  m.moe_every = v.moe_every;
  ParamStore store;
  LocalDispatcher dispatcher;
  VitMoe vit(m, tiny_moe(v.act, v.capacity, v.bpr), store,
             MoeRuntime::local(dispatcher, tiny_moe(v.act, v.capacity, v.bpr).num_experts));
  store.initialize(3);
  fill_zero_params(store);
  const int64_t batch = 3;
  std::vector<float> images = random_vector(batch * 2 * 8 * 8, 1);
  const std::vector<int32_t> labels = {2, 0, 1};
  store.zero_grad();
  const LossParts parts = vit.forward(images.data(), labels.data(), batch);
  EXPECT_GT(parts.aux, 0.0);
  vit.backward();
  for (MoELayer* layer : vit.moe_layers()) layer->freeze_routing(true);
  check_all_parameters(store, [&] { return vit.forward(images.data(), labels.data(), batch).total; });
}

INSTANTIATE_TEST_SUITE_P(
    Variants, VitGradTest,
    ::testing::Values(VitCase{"cls", "learned", "gelu", 1.0f, true, 2},
                      VitCase{"gap", "sincos", "swiglu", 0.0f, false, 1}),
    [](const auto& info) { return info.param.pool + "_" + info.param.pos + "_" + info.param.act; });

TEST(VitMoe, LayoutNamesAndInitialLoss) {
  ModelConfig m = tiny_image_model("vit_moe");
  m.num_layers = 4;
  m.moe_every = 2;
  m.init_std = 0.02f;
  ParamStore store;
  LocalDispatcher dispatcher;
  VitMoe vit(m, tiny_moe("gelu", 1.25f, true), store,
             MoeRuntime::local(dispatcher, tiny_moe("gelu", 1.25f, true).num_experts));
  store.initialize(1);
  EXPECT_EQ(vit.moe_layer_blocks(), (std::vector<int>{1, 3}));  // V-MoE: every other block
  EXPECT_EQ(vit.tokens_per_image(), 5);                         // 4 patches + CLS
  for (const char* name : {"patch_embed.weight", "patch_embed.bias", "cls_token", "pos_embed",
                           "layers.0.norm1.weight", "layers.0.attn.w_qkv", "layers.0.mlp.w_fc1",
                           "layers.1.moe.experts.w_fc1", "layers.1.moe.shared.w_fc2",
                           "final_norm.bias", "head.weight", "head.bias"})
    EXPECT_NE(store.find(name), nullptr) << name;
  EXPECT_EQ(store.find("pos_embed")->spec.shape, (Shape{5, 8}));
  // The zero head gives every class the same logit: loss ln(classes).
  std::vector<float> images = random_vector(2 * 2 * 8 * 8, 1);
  const std::vector<int32_t> labels = {0, 2};
  EXPECT_NEAR(vit.forward(images.data(), labels.data(), 2).ce, std::log(3.0), 1e-6);
}

class DitGradTest : public ::testing::TestWithParam<int> {};  // moe_every

TEST_P(DitGradTest, EveryParameterMatchesFiniteDifferences) {
  ModelConfig m = tiny_image_model("dit_moe");
  m.moe_every = GetParam();
  ParamStore store;
  LocalDispatcher dispatcher;
  DitMoe dit(m, tiny_moe("swiglu", 0.0f, false), store,
             MoeRuntime::local(dispatcher, tiny_moe("swiglu", 0.0f, false).num_experts));
  store.initialize(4);
  fill_zero_params(store);
  const int64_t batch = 3, n = batch * 2 * 8 * 8;
  std::vector<float> x = random_vector(n, 1), target = random_vector(n, 2);
  const std::vector<float> t = {3.0f, 500.0f, 998.0f};
  const std::vector<int32_t> y = {2, 3, 0};  // 3 = the null class
  auto loss = [&] {
    dit.forward(x.data(), t.data(), y.data(), batch);
    return dit.loss(target.data()).total;
  };
  store.zero_grad();
  loss();
  dit.backward();
  for (MoELayer* layer : dit.moe_layers()) layer->freeze_routing(true);
  check_all_parameters(store, loss);
}

INSTANTIATE_TEST_SUITE_P(Layouts, DitGradTest, ::testing::Values(1, 2));

TEST(DitMoe, ZeroInitPredictsZeroAndNamesFollowTheSpec) {
  ModelConfig m = tiny_image_model("dit_moe");
  ParamStore store;
  LocalDispatcher dispatcher;
  DitMoe dit(m, tiny_moe("swiglu", 0.0f, false), store,
             MoeRuntime::local(dispatcher, tiny_moe("swiglu", 0.0f, false).num_experts));
  store.initialize(1);
  for (const char* name : {"patch_embed.weight", "t_embed.fc1.weight", "t_embed.fc2.bias",
                           "y_embed.weight", "layers.0.adaln.weight", "layers.0.adaln.bias",
                           "layers.0.attn.w_qkv", "layers.1.moe.experts.w_gate",
                           "layers.1.moe.shared.w_up", "final.adaln.weight",
                           "final.linear.weight", "final.linear.bias"})
    EXPECT_NE(store.find(name), nullptr) << name;
  EXPECT_EQ(store.find("y_embed.weight")->spec.shape, (Shape{4, 8}));  // + null class
  EXPECT_EQ(store.find("layers.0.adaln.weight")->spec.shape, (Shape{48, 8}));
  EXPECT_EQ(store.find("final.linear.weight")->spec.shape, (Shape{32, 8}));
  EXPECT_EQ(store.find("pos_embed"), nullptr);  // sin-cos: fixed
  EXPECT_EQ(dit.moe_layer_blocks(), (std::vector<int>{0, 1}));
  std::vector<float> x = random_vector(2 * 2 * 8 * 8, 1);
  const std::vector<float> t = {1.0f, 2.0f};
  const std::vector<int32_t> y = {0, 3};
  const Tensor pred = dit.forward(x.data(), t.data(), y.data(), 2);
  for (int64_t i = 0; i < pred.numel(); ++i) ASSERT_EQ(pred[i], 0.0f);
}

TEST(Diffusion, ExamplesFollowTheSchedules) {
  DiffusionConfig d;
  const Diffusion ddpm(d);
  ASSERT_EQ(ddpm.timesteps(), 1000);
  EXPECT_NEAR(ddpm.alpha_bar(0), 1.0 - 1e-4, 1e-9);
  double prod = 1.0;
  for (int t = 0; t < 1000; ++t) prod *= 1.0 - (1e-4 + (0.02 - 1e-4) * t / 999.0);
  EXPECT_NEAR(ddpm.alpha_bar(999), prod, 1e-9);

  const std::vector<float> x0 = random_vector(64, 1);
  std::vector<float> xt(64), target(64), xt2(64), target2(64);
  float t_in = 0, t_in2 = 0;
  ddpm.make_example(x0.data(), 64, "train", 7, 3, 5, xt.data(), target.data(), &t_in);
  ddpm.make_example(x0.data(), 64, "train", 7, 3, 5, xt2.data(), target2.data(), &t_in2);
  EXPECT_EQ(xt, xt2);  // a pure function of (seed, step, sample)
  EXPECT_EQ(t_in, t_in2);
  const int t = static_cast<int>(t_in);
  ASSERT_EQ(static_cast<float>(t), t_in);
  for (int i = 0; i < 64; ++i)  // x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, target eps
    EXPECT_NEAR(xt[i], std::sqrt(ddpm.alpha_bar(t)) * x0[i] +
                           std::sqrt(1 - ddpm.alpha_bar(t)) * target[i], 1e-5);
  ddpm.make_example(x0.data(), 64, "train", 7, 4, 5, xt2.data(), target2.data(), &t_in2);
  EXPECT_NE(target, target2);  // another step draws other noise

  d.objective = DiffusionObjective::kRectifiedFlow;
  const Diffusion flow(d);
  flow.make_example(x0.data(), 64, "train", 7, 3, 5, xt.data(), target.data(), &t_in);
  const double tf = t_in / 1000.0;
  ASSERT_GT(tf, 0.0);
  ASSERT_LT(tf, 1.0);
  for (int i = 0; i < 64; ++i) {  // x_t = (1 - t) x0 + t eps, target eps - x0
    const double eps = target[i] + x0[i];
    EXPECT_NEAR(xt[i], (1 - tf) * x0[i] + tf * eps, 1e-4);
  }
}

TEST(Diffusion, SamplingIsDeterministicAndGuidanceMatters) {
  ModelConfig m = tiny_image_model("dit_moe");
  ParamStore store;
  LocalDispatcher dispatcher;
  DitMoe dit(m, tiny_moe("swiglu", 0.0f, false), store,
             MoeRuntime::local(dispatcher, tiny_moe("swiglu", 0.0f, false).num_experts));
  store.initialize(2);
  fill_zero_params(store);
  const Diffusion diffusion(DiffusionConfig{});
  SampleOptions options;
  options.steps = 4;
  options.guidance = 3.0f;
  const std::vector<int32_t> labels = {0, 1, 2};
  std::vector<double> seen;
  const std::vector<float> a = sample_images(dit, diffusion, m, labels, options,
                                             [&](int, double t) { seen.push_back(t); });
  EXPECT_EQ(seen, (std::vector<double>{750, 500, 250, 0}));
  const std::vector<float> b = sample_images(dit, diffusion, m, labels, options);
  EXPECT_EQ(a, b);
  options.guidance = 1.0f;
  const std::vector<float> c = sample_images(dit, diffusion, m, labels, options);
  EXPECT_NE(a, c);
  for (float v : a) {
    EXPECT_TRUE(std::isfinite(v));
    EXPECT_LE(std::fabs(v), 1.0f + 1e-5f);  // DDIM ends on its clipped x0 estimate
  }
}

}  // namespace
}  // namespace moe
