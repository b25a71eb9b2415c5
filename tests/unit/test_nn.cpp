// Dense layers: finite-difference gradient checks of every layer w.r.t. its input and
// every parameter, gradient accumulation over micro-batches, causality of attention,
// and a few forward identities that tie the layers to docs/architecture.md.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "framework/nn/attention.h"
#include "framework/nn/embedding.h"
#include "framework/nn/layernorm.h"
#include "framework/nn/linear.h"
#include "framework/nn/mlp.h"
#include "framework/nn/rmsnorm.h"
#include "tests/unit/gradcheck.h"

namespace moe {
namespace {

using testing::check_gradient;
using testing::dot;
using testing::fill_uniform;
using testing::random_vector;

// Tiny shapes: B sequences of T tokens, width C, H heads, hidden F, vocabulary V.
constexpr int64_t kB = 2, kT = 5, kN = kB * kT, kC = 8, kH = 2, kF = 12, kV = 11;

// One layer wired to a fixed input, so tests can run it without knowing its type.
// Members are destroyed in reverse order: the closures (which own the layer) go before
// the store whose parameters the layer references.
struct LayerCase {
  ParamStore store;
  std::vector<float> x;                    // (N, C) input; empty for Embedding
  std::function<Tensor()> forward;         // runs on x and the current parameters
  std::function<Tensor(Tensor)> backward;  // dy -> dx; an empty Tensor when x is absent
};

// Parameters away from their ones/zeros init, so that every term of a backward pass
// (including the norm weights and biases) is exercised with non-trivial values.
void randomize_params(ParamStore& store) {
  uint64_t seed = 100;
  for (Param& p : store.params()) {
    const float offset = p.spec.init.kind == Init::kOnes ? 1.0f : 0.0f;
    fill_uniform(p.value.data(), p.numel(), seed++, 0.5f);
    for (int64_t i = 0; i < p.numel(); ++i) p.value.data()[i] += offset;
  }
}

// Wires a layer with forward(Tensor) / backward(Tensor) on an (N, C) input.
template <class Layer, class Make>
std::unique_ptr<LayerCase> make_case(Make make) {
  auto c = std::make_unique<LayerCase>();
  std::shared_ptr<Layer> layer = make(c->store);
  c->x = random_vector(kN * kC, 1);
  LayerCase* raw = c.get();
  c->forward = [raw, layer] { return layer->forward(Tensor(raw->x.data(), {kN, kC})); };
  c->backward = [layer](Tensor dy) { return layer->backward(dy); };
  randomize_params(c->store);
  return c;
}

std::unique_ptr<LayerCase> make_attention_case(bool causal, bool rotary) {
  auto c = std::make_unique<LayerCase>();
  auto layer = std::make_shared<SelfAttention>(c->store, "attn", kC, kH, causal, rotary,
                                               10000.0f, 0.02f, 0.01f);
  c->x = random_vector(kN * kC, 2);
  LayerCase* raw = c.get();
  c->forward = [raw, layer] {
    return layer->forward(Tensor(raw->x.data(), {kN, kC}), kB, kT);
  };
  c->backward = [layer](Tensor dy) { return layer->backward(dy); };
  randomize_params(c->store);
  return c;
}

std::unique_ptr<LayerCase> make_embedding_case() {
  auto c = std::make_unique<LayerCase>();
  auto layer = std::make_shared<Embedding>(c->store, "embed.weight", kV, kC,
                                           Init::normal(0.02f));
  // Repeated ids: their gradients must add up in the same table row.
  auto ids = std::make_shared<std::vector<int32_t>>(
      std::vector<int32_t>{3, 0, 10, 3, 7, 7, 7, 1, 0, 5});
  c->forward = [layer, ids] {
    return layer->forward(ids->data(), static_cast<int64_t>(ids->size()));
  };
  c->backward = [layer](Tensor dy) {
    layer->backward(dy);
    return Tensor();
  };
  randomize_params(c->store);
  return c;
}

// The values of a view; empty for the empty Tensor a layer without dx returns.
std::vector<float> to_vector(Tensor t) {
  if (t.data == nullptr) return {};
  return std::vector<float>(t.data, t.data + t.numel());
}

struct NamedCase {
  std::string name;
  std::function<std::unique_ptr<LayerCase>()> make;
};

// Failure messages name the case instead of dumping its bytes.
void PrintTo(const NamedCase& c, std::ostream* os) { *os << c.name; }

std::vector<NamedCase> all_cases() {
  return {
      {"Linear",
       [] {
         return make_case<Linear>([](ParamStore& s) {
           return std::make_shared<Linear>(s, "lin.weight", kC, 6, Init::normal(0.02f));
         });
       }},
      {"Embedding", make_embedding_case},
      {"RMSNorm",
       [] {
         return make_case<RMSNorm>([](ParamStore& s) {
           return std::make_shared<RMSNorm>(s, "norm.weight", kC, 1e-6f);
         });
       }},
      {"LayerNormAffine",
       [] {
         return make_case<LayerNorm>([](ParamStore& s) {
           return std::make_shared<LayerNorm>(s, "ln", kC, 1e-6f, true);
         });
       }},
      {"LayerNormPlain",
       [] {
         return make_case<LayerNorm>([](ParamStore& s) {
           return std::make_shared<LayerNorm>(s, "ln", kC, 1e-6f, false);
         });
       }},
      {"AttentionCausalRotary", [] { return make_attention_case(true, true); }},
      {"AttentionBidirectional", [] { return make_attention_case(false, false); }},
      {"SwiGLUMlp",
       [] {
         return make_case<SwiGLUMlp>([](ParamStore& s) {
           return std::make_shared<SwiGLUMlp>(s, "mlp", kC, kF, 0.02f, 0.01f);
         });
       }},
      {"GeluMlp",
       [] {
         return make_case<GeluMlp>([](ParamStore& s) {
           return std::make_shared<GeluMlp>(s, "mlp", kC, kF, 0.02f, 0.01f);
         });
       }},
  };
}

class LayerGradTest : public ::testing::TestWithParam<NamedCase> {};

// loss = sum(y * r): backward with dy = r must give d loss / d(input and parameters).
TEST_P(LayerGradTest, MatchesFiniteDifferences) {
  std::unique_ptr<LayerCase> c = GetParam().make();
  const Tensor y0 = c->forward();
  std::vector<float> r = random_vector(y0.numel(), 7);
  c->store.zero_grad();
  const Tensor dx = c->backward(Tensor(r.data(), y0.shape));
  // Copies: the checks below rerun forward, which may reuse the layer's buffers.
  const std::vector<float> dx_copy = to_vector(dx);
  std::vector<std::vector<float>> grads;
  for (Param& p : c->store.params())
    grads.emplace_back(p.grad.data(), p.grad.data() + p.numel());

  const auto loss = [&] {
    const Tensor y = c->forward();
    return dot(y.data, r.data(), y.numel());
  };
  testing::GradCheckOptions options;
  options.max_checks = 1 << 20;  // tiny shapes: check every element
  if (!c->x.empty()) {
    ASSERT_EQ(dx_copy.size(), c->x.size());
    EXPECT_EQ(check_gradient("x", c->x.data(), dx_copy.data(),
                             static_cast<int64_t>(c->x.size()), loss, options),
              "");
  }
  ASSERT_FALSE(c->x.empty() && c->store.params().empty());
  size_t i = 0;
  for (Param& p : c->store.params()) {
    EXPECT_EQ(check_gradient(p.spec.name, p.value.data(), grads[i++].data(), p.numel(),
                             loss, options),
              "");
  }
}

// Micro-batches add up: two forward/backward passes give twice the parameter gradient
// of one, while dx is overwritten, not accumulated.
TEST_P(LayerGradTest, GradientsAccumulateOverTwoBackwardCalls) {
  std::unique_ptr<LayerCase> c = GetParam().make();
  const Tensor y0 = c->forward();
  std::vector<float> r = random_vector(y0.numel(), 8);
  c->store.zero_grad();
  const Tensor dx1 = c->backward(Tensor(r.data(), y0.shape));
  const std::vector<float> dx_once = to_vector(dx1);
  std::vector<std::vector<float>> once;
  for (Param& p : c->store.params())
    once.emplace_back(p.grad.data(), p.grad.data() + p.numel());

  const Tensor y1 = c->forward();
  const std::vector<float> dx_twice = to_vector(c->backward(Tensor(r.data(), y1.shape)));
  ASSERT_EQ(dx_twice.size(), dx_once.size());
  for (size_t j = 0; j < dx_twice.size(); ++j)
    EXPECT_NEAR(dx_twice[j], dx_once[j], 1e-6f * (1.0f + std::fabs(dx_once[j])))
        << "dx[" << j << "]";
  size_t i = 0;
  for (Param& p : c->store.params()) {
    const std::vector<float>& g = once[i++];
    for (int64_t j = 0; j < p.numel(); ++j)
      EXPECT_NEAR(p.grad.data()[j], 2.0f * g[j], 1e-5f * (1.0f + std::fabs(g[j])))
          << p.spec.name << "[" << j << "]";
  }
}

INSTANTIATE_TEST_SUITE_P(Layers, LayerGradTest, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<NamedCase>& info) {
                           return info.param.name;
                         });

// Max |a[r, :] - b[r, :]| over rows [row_begin, row_end) of (N, C) matrices.
float max_row_diff(const float* a, const float* b, int64_t row_begin, int64_t row_end) {
  float worst = 0.0f;
  for (int64_t i = row_begin * kC; i < row_end * kC; ++i)
    worst = std::max(worst, std::fabs(a[i] - b[i]));
  return worst;
}

// Changing tokens after position t leaves the causal output at positions <= t unchanged.
TEST(SelfAttentionTest, CausalOutputIgnoresLaterTokens) {
  std::unique_ptr<LayerCase> c = make_attention_case(true, true);
  const Tensor y = c->forward();
  const std::vector<float> base(y.data, y.data + y.numel());
  const std::vector<float> x0 = c->x;
  for (int64_t t = 0; t + 1 < kT; ++t) {
    c->x = x0;
    for (int64_t b = 0; b < kB; ++b)
      fill_uniform(c->x.data() + (b * kT + t + 1) * kC, (kT - t - 1) * kC, 50 + t);
    const Tensor y2 = c->forward();
    for (int64_t b = 0; b < kB; ++b) {
      const int64_t row0 = b * kT;
      EXPECT_LE(max_row_diff(y2.data, base.data(), row0, row0 + t + 1), 1e-6f)
          << "sequence " << b << ", positions <= " << t;
      // The later positions do see the change: the test perturbs something real.
      EXPECT_GT(max_row_diff(y2.data, base.data(), row0 + t + 1, row0 + kT), 1e-4f);
    }
  }
}

// Without the mask, the first position sees a change of the last token.
TEST(SelfAttentionTest, BidirectionalOutputSeesLaterTokens) {
  std::unique_ptr<LayerCase> c = make_attention_case(false, false);
  const Tensor y = c->forward();
  const std::vector<float> base(y.data, y.data + y.numel());
  fill_uniform(c->x.data() + (kT - 1) * kC, kC, 60);
  const Tensor y2 = c->forward();
  EXPECT_GT(max_row_diff(y2.data, base.data(), 0, 1), 1e-4f);
}

// One token attends only to itself (and rotary at position 0 is the identity), so
// y = W_out v with v = the last C rows of W_qkv times x: checks the [q | k | v] layout.
TEST(SelfAttentionTest, SingleTokenIsValueThenOutputProjection) {
  ParamStore store;
  SelfAttention attn(store, "attn", kC, kH, true, true, 10000.0f, 0.02f, 0.02f);
  randomize_params(store);
  std::vector<float> x = random_vector(kC, 3);
  const Tensor y = attn.forward(Tensor(x.data(), {1, kC}), 1, 1);
  const float* w_qkv = store.find("attn.w_qkv")->value.data();  // (3C, C)
  const float* w_out = store.find("attn.w_out")->value.data();  // (C, C)
  std::vector<double> v(kC, 0.0);
  for (int64_t i = 0; i < kC; ++i)
    for (int64_t j = 0; j < kC; ++j) v[i] += w_qkv[(2 * kC + i) * kC + j] * x[j];
  for (int64_t i = 0; i < kC; ++i) {
    double expected = 0.0;
    for (int64_t j = 0; j < kC; ++j) expected += w_out[i * kC + j] * v[j];
    EXPECT_NEAR(y[i], expected, 1e-5) << i;
  }
}

TEST(NormTest, RMSNormMatchesFormula) {
  ParamStore store;
  RMSNorm norm(store, "norm.weight", kC, 1e-6f);
  randomize_params(store);
  std::vector<float> x = random_vector(kN * kC, 4);
  const Tensor y = norm.forward(Tensor(x.data(), {kN, kC}));
  const float* w = norm.weight().value.data();
  for (int64_t n = 0; n < kN; ++n) {
    double ms = 0.0;
    for (int64_t i = 0; i < kC; ++i) ms += x[n * kC + i] * x[n * kC + i];
    const double rstd = 1.0 / std::sqrt(ms / kC + 1e-6);
    for (int64_t i = 0; i < kC; ++i)
      EXPECT_NEAR(y[n * kC + i], x[n * kC + i] * rstd * w[i], 1e-5);
  }
}

TEST(NormTest, ParametersAndWeightDecay) {
  ParamStore store;
  RMSNorm rms(store, "layers.0.attn_norm.weight", kC, 1e-6f);
  LayerNorm affine(store, "ln_a", kC, 1e-6f, true);
  LayerNorm plain(store, "ln_p", kC, 1e-6f, false);
  store.initialize(1);
  ASSERT_EQ(store.params().size(), 3u);
  EXPECT_FALSE(plain.affine());
  EXPECT_EQ(plain.weight(), nullptr);
  for (const char* name : {"layers.0.attn_norm.weight", "ln_a.weight", "ln_a.bias"}) {
    const Param* p = store.find(name);
    ASSERT_NE(p, nullptr) << name;
    EXPECT_FALSE(p->spec.weight_decay) << name;
    EXPECT_EQ(p->local_shape, Shape({kC})) << name;
  }
  EXPECT_EQ(store.find("ln_a.weight")->value.data()[0], 1.0f);
  EXPECT_EQ(store.find("ln_a.bias")->value.data()[0], 0.0f);
  EXPECT_EQ(rms.weight().value.data()[kC - 1], 1.0f);
}

TEST(EmbeddingTest, LooksUpRowsAndRejectsBadIds) {
  ParamStore store;
  Embedding embed(store, "embed.weight", kV, kC, Init::normal(0.02f));
  store.initialize(5);
  const std::vector<int32_t> ids = {4, 0, 4};
  const Tensor y = embed.forward(ids.data(), 3);
  const float* table = embed.weight().value.data();
  for (int64_t n = 0; n < 3; ++n)
    for (int64_t i = 0; i < kC; ++i) EXPECT_EQ(y[n * kC + i], table[ids[n] * kC + i]);
  const std::vector<int32_t> bad = {1, static_cast<int32_t>(kV)};
  EXPECT_THROW(embed.forward(bad.data(), 2), Error);
}

}  // namespace
}  // namespace moe
