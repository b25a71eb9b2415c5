// Gradient checks of the layers under mixed precision (train.precision = bf16).
//
// A bf16 layer's forward is piecewise constant in its inputs at the scale of a bf16 ulp,
// so finite differences of it say nothing; instead every layer is built twice on the
// same parameter values, once with fp32 and once with bf16 matrix products, and the
// bf16 layer's analytic gradients (input and every parameter) are checked against
// central differences of the fp32 layer: the exact gradient, to the finite-difference
// error of tests/unit/gradcheck.h. The bf16 tolerance: each operand of a product carries
// a relative rounding error <= 2^-9, so a gradient element is off by at most ~2^-8 of
// the sum of its terms' magnitudes; checked as |a - n| <= 1e-2 max|n| + 3e-2 |n| per
// parameter (docs/precision.md). A wrong backward term is off by O(1) of max|n|. The
// checks also require the bf16 gradients to differ from the fp32 ones (the bf16 path ran).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "framework/moe/dispatcher.h"
#include "framework/moe/experts.h"
#include "framework/moe/moe_layer.h"
#include "framework/nn/attention.h"
#include "framework/nn/linear.h"
#include "framework/nn/mlp.h"
#include "models/moe_gpt/moe_gpt.h"
#include "tests/unit/gradcheck.h"

namespace moe {
namespace {

using testing::check_gradient;
using testing::dot;
using testing::fill_uniform;
using testing::random_vector;

constexpr int64_t kB = 2, kT = 6, kN = kB * kT, kC = 16, kH = 2, kF = 24;

// A layer on its own store: run(x) is its forward on x (N, C_in) -> (N, C_out), back(dy)
// its backward -> dx; settle(), if set, runs once after the first forward (the MoE layer
// freezes its routing there); losses(), if set, the layer's own loss terms of the last
// forward, which its backward differentiates too (the MoE layer's aux and z losses).
struct Instance {
  ParamStore store;
  LocalDispatcher dispatcher;  // for the MoE layer
  std::function<Tensor(Tensor)> run, back;
  std::function<void()> settle;
  std::function<double()> losses;
};

using Build = std::function<void(Instance&)>;

// The layer of `build` with matrix products of `dtype`, parameters away from their init
// (the same values for both dtypes: they depend on the registration order only).
std::unique_ptr<Instance> make_instance(DType dtype, const Build& build) {
  auto in = std::make_unique<Instance>();
  in->store.set_matmul_dtype(dtype);
  build(*in);
  uint64_t seed = 300;
  for (Param& p : in->store.params()) {
    const float offset = p.spec.init.kind == Init::kOnes ? 1.0f : 0.0f;
    fill_uniform(p.value.data(), p.numel(), seed++, 0.5f);
    for (int64_t i = 0; i < p.numel(); ++i) p.value.data()[i] += offset;
  }
  return in;
}

double max_abs(const std::vector<float>& v) {
  double m = 0.0;
  for (float x : v) m = std::max(m, std::fabs(static_cast<double>(x)));
  return m;
}

// The bf16 layer's gradients of sum(y * r) (+ its own losses) against central
// differences of the fp32 one.
void expect_bf16_gradients(const Build& build, int64_t in_cols, int64_t out_cols) {
  auto f32 = make_instance(DType::kF32, build);
  auto b16 = make_instance(DType::kBF16, build);
  std::vector<float> x = random_vector(kN * in_cols, 1);
  const std::vector<float> r = random_vector(kN * out_cols, 2);
  const Tensor xt(x.data(), {kN, in_cols});

  std::vector<std::vector<float>> grads[2];  // [fp32, bf16]: dx, then each parameter's
  for (int i = 0; i < 2; ++i) {
    Instance& in = i == 0 ? *f32 : *b16;
    in.store.zero_grad();
    in.run(xt);
    if (in.settle) in.settle();
    const Tensor dx = in.back(Tensor(const_cast<float*>(r.data()), {kN, out_cols}));
    grads[i].emplace_back(dx.data, dx.data + dx.numel());
    for (Param& p : in.store.params())
      grads[i].emplace_back(p.grad.data(), p.grad.data() + p.numel());
  }
  auto loss = [&] {
    const double y_r = dot(f32->run(xt).data, r.data(), kN * out_cols);
    return y_r + (f32->losses ? f32->losses() : 0.0);
  };
  double moved = 0.0;  // largest |bf16 - fp32| of the analytic gradients
  for (size_t g = 0; g < grads[1].size(); ++g) {
    float* values = g == 0 ? x.data() : f32->store.params()[g - 1].value.data();
    const std::string what = g == 0 ? "input" : f32->store.params()[g - 1].spec.name;
    testing::GradCheckOptions options;
    options.atol = 1e-2 * max_abs(grads[0][g]);
    options.rtol = 3e-2;
    EXPECT_EQ(check_gradient(what, values, grads[1][g].data(),
                             static_cast<int64_t>(grads[1][g].size()), loss, options),
              "");
    for (size_t j = 0; j < grads[1][g].size(); ++j)
      moved = std::max(moved, std::fabs(static_cast<double>(grads[1][g][j]) - grads[0][g][j]));
  }
  EXPECT_GT(moved, 0.0) << "the bf16 gradients equal the fp32 ones: no bf16 product ran";
}

TEST(Bf16Layers, LinearWithBias) {
  expect_bf16_gradients(
      [](Instance& in) {
        auto layer = std::make_shared<Linear>(in.store, "fc.weight", kC, kF, Init::normal(0.1f),
                                              "fc.bias");
        in.run = [layer](Tensor x) { return layer->forward(x); };
        in.back = [layer](Tensor dy) { return layer->backward(dy); };
      },
      kC, kF);
}

TEST(Bf16Layers, SwiGLUMlp) {
  expect_bf16_gradients(
      [](Instance& in) {
        auto layer = std::make_shared<SwiGLUMlp>(in.store, "mlp", kC, kF, 0.1f, 0.1f);
        in.run = [layer](Tensor x) { return layer->forward(x); };
        in.back = [layer](Tensor dy) { return layer->backward(dy); };
      },
      kC, kC);
}

TEST(Bf16Layers, GeluMlp) {
  expect_bf16_gradients(
      [](Instance& in) {
        auto layer = std::make_shared<GeluMlp>(in.store, "mlp", kC, kF, 0.1f, 0.1f);
        in.run = [layer](Tensor x) { return layer->forward(x); };
        in.back = [layer](Tensor dy) { return layer->backward(dy); };
      },
      kC, kC);
}

TEST(Bf16Layers, CausalRotaryAttention) {
  expect_bf16_gradients(
      [](Instance& in) {
        auto layer = std::make_shared<SelfAttention>(in.store, "attn", kC, kH, true, true,
                                                     10000.0f, 0.1f, 0.1f);
        in.run = [layer](Tensor x) { return layer->forward(x, kB, kT); };
        in.back = [layer](Tensor dy) { return layer->backward(dy); };
      },
      kC, kC);
}

// Routed experts on an expert-ordered buffer of kN rows over 3 experts, one of them
// empty (SwiGLU or GELU).
class Bf16GroupedExperts : public ::testing::TestWithParam<ExpertActivation> {};

TEST_P(Bf16GroupedExperts, MatchFiniteDifferences) {
  const ExpertActivation act = GetParam();
  expect_bf16_gradients(
      [act](Instance& in) {
        const ExpertPlacement placement{3, 1, 0};
        auto layer = std::make_shared<GroupedExperts>(in.store, "moe", kC, kF, placement, 0.1f,
                                                      0.1f, act);
        const std::vector<int64_t> offsets = {0, 5, 5, kN};
        in.run = [layer, offsets](Tensor x) { return layer->forward(x, offsets); };
        in.back = [layer](Tensor dy) { return layer->backward(dy); };
      },
      kC, kC);
}

INSTANTIATE_TEST_SUITE_P(Activations, Bf16GroupedExperts,
                         ::testing::Values(ExpertActivation::kSwiGLU, ExpertActivation::kGelu),
                         [](const auto& info) {
                           return info.param == ExpertActivation::kGelu ? "gelu" : "swiglu";
                         });

// The whole MoE layer (router fp32, experts and shared expert bf16) with its aux and z
// losses; routing frozen after the first forward so that finite differences see a
// smooth loss (both layers choose the same experts: the router is fp32 in both).
TEST(Bf16Layers, MoELayerWithSharedExpert) {
  MoeConfig config;
  config.num_experts = 4;
  config.top_k = 2;
  config.expert_ffn = kF;
  config.num_shared = 1;
  config.shared_ffn = 8;
  config.aux_loss = 0.5f;  // large, so that the router's loss gradients weigh in
  config.z_loss = 0.1f;
  expect_bf16_gradients(
      [config](Instance& in) {
        auto layer = std::make_shared<MoELayer>(
            in.store, "layers.1.moe", kC, config, 0.3f, 0.2f,
            MoeRuntime::local(in.dispatcher, config.num_experts));
        in.run = [layer](Tensor x) { return layer->forward(x); };
        in.back = [layer](Tensor dy) { return layer->backward(dy); };
        in.settle = [layer] { layer->freeze_routing(true); };
        in.losses = [layer] { return layer->aux_loss() + layer->z_loss(); };
      },
      kC, kC);
}

// The whole language model: embedding, norms, attention, dense and MoE FFNs and the LM
// head, every parameter against finite differences of the fp32 model.
TEST(Bf16Layers, MoeGptEveryParameter) {
  ModelConfig model;
  model.vocab_size = 11;
  model.seq_len = 5;
  model.num_layers = 2;
  model.d_model = 8;
  model.num_heads = 2;
  model.dense_layers = 1;
  model.dense_ffn = 12;
  model.init_std = 0.2f;
  MoeConfig moe;
  moe.num_experts = 4;
  moe.top_k = 2;
  moe.expert_ffn = 6;
  moe.num_shared = 1;
  moe.shared_ffn = 5;
  moe.aux_loss = 0.1f;
  moe.z_loss = 0.01f;
  const int64_t batch = 2, n = batch * model.seq_len;
  std::vector<int32_t> inputs, targets;
  for (int64_t i = 0; i < n; ++i) {
    inputs.push_back(static_cast<int32_t>((i * 7 + 3) % model.vocab_size));
    targets.push_back(static_cast<int32_t>((i * 5 + 1) % model.vocab_size));
  }
  struct Gpt {
    ParamStore store;
    LocalDispatcher dispatcher;
    std::unique_ptr<MoeGpt> gpt;
  };
  auto make = [&](DType dtype) {
    auto g = std::make_unique<Gpt>();
    g->store.set_matmul_dtype(dtype);
    g->gpt = std::make_unique<MoeGpt>(model, moe, g->store,
                                      MoeRuntime::local(g->dispatcher, moe.num_experts));
    g->store.initialize(99);
    return g;
  };
  auto f32 = make(DType::kF32), b16 = make(DType::kBF16);
  for (Gpt* g : {f32.get(), b16.get()}) {
    g->store.zero_grad();
    g->gpt->forward(inputs.data(), targets.data(), batch);
    g->gpt->backward();
    for (MoELayer* layer : g->gpt->moe_layers()) layer->freeze_routing(true);
  }
  auto loss = [&] { return f32->gpt->forward(inputs.data(), targets.data(), batch).total; };
  testing::GradCheckOptions options;
  options.richardson = true;
  options.max_checks = 24;
  options.rtol = 3e-2;
  double moved = 0.0;
  for (size_t i = 0; i < f32->store.params().size(); ++i) {
    Param& p32 = f32->store.params()[i];
    const Param& p16 = b16->store.params()[i];
    ASSERT_EQ(p32.spec.name, p16.spec.name);
    const std::vector<float> exact(p32.grad.data(), p32.grad.data() + p32.numel());
    const std::vector<float> mixed(p16.grad.data(), p16.grad.data() + p16.numel());
    options.atol = 1e-2 * max_abs(exact);
    EXPECT_EQ(check_gradient(p32.spec.name, p32.value.data(), mixed.data(), p32.numel(), loss,
                             options),
              "");
    for (int64_t j = 0; j < p32.numel(); ++j)
      moved = std::max(moved, std::fabs(static_cast<double>(mixed[j]) - exact[j]));
  }
  EXPECT_GT(moved, 0.0);
}

}  // namespace
}  // namespace moe
