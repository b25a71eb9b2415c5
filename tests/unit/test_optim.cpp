// AdamW against the hand formula, the learning-rate schedules at their key steps, and
// global-norm clipping.

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "framework/optim/adamw.h"
#include "framework/optim/clip.h"
#include "framework/optim/lr_schedule.h"

namespace moe {
namespace {

// One matrix (decayed) and one norm weight (not decayed), with fixed values.
struct TwoParams {
  ParamStore store;
  Param* w;
  Param* norm;
  TwoParams() {
    w = &store.add({"layer.w", Shape{2, 3}, Shard::kReplicated, Init::normal(0.02f), true});
    norm = &store.add({"layer.norm.weight", Shape{3}, Shard::kReplicated, Init::ones(), false});
    for (int i = 0; i < 6; ++i) w->value.data()[i] = 0.1f * (i - 2);
    for (int i = 0; i < 3; ++i) norm->value.data()[i] = 1.0f + 0.5f * i;
  }
  void set_grads(float scale) {
    for (int i = 0; i < 6; ++i) w->grad.data()[i] = scale * (0.35f - 0.1f * i);
    for (int i = 0; i < 3; ++i) norm->grad.data()[i] = scale * (0.2f * i - 0.1f);
  }
};

// Hand-written AdamW in double for one element over a gradient sequence.
double adamw_reference(double p, const std::vector<double>& grads, const std::vector<double>& lrs,
                       const OptimConfig& c, bool decay) {
  double m = 0.0, v = 0.0;
  for (size_t t = 1; t <= grads.size(); ++t) {
    const double g = grads[t - 1], lr = lrs[t - 1];
    m = c.beta1 * m + (1.0 - c.beta1) * g;
    v = c.beta2 * v + (1.0 - c.beta2) * g * g;
    const double mhat = m / (1.0 - std::pow(double(c.beta1), double(t)));
    const double vhat = v / (1.0 - std::pow(double(c.beta2), double(t)));
    p -= lr * (mhat / (std::sqrt(vhat) + c.eps) + (decay ? c.weight_decay : 0.0) * p);
  }
  return p;
}

TEST(AdamW, MatchesTheHandFormulaAndSkipsDecayOnNorms) {
  OptimConfig c;
  c.beta1 = 0.9f;
  c.beta2 = 0.95f;
  c.eps = 1e-8f;
  c.weight_decay = 0.1f;
  TwoParams net;
  std::vector<float> w0(net.w->value.data(), net.w->value.data() + 6);
  std::vector<float> n0(net.norm->value.data(), net.norm->value.data() + 3);
  AdamW opt(net.store, c);
  const std::vector<double> lrs = {1e-2, 5e-3, 2e-2};
  const std::vector<double> scales = {1.0, -0.5, 2.0};
  for (size_t s = 0; s < lrs.size(); ++s) {
    net.set_grads(static_cast<float>(scales[s]));
    opt.step(static_cast<float>(lrs[s]));
  }
  EXPECT_EQ(opt.step_count(), 3);
  for (int i = 0; i < 6; ++i) {
    std::vector<double> g;
    for (double s : scales) g.push_back(float(s) * (0.35f - 0.1f * i));
    EXPECT_NEAR(net.w->value.data()[i], adamw_reference(w0[i], g, lrs, c, true), 1e-6) << i;
  }
  for (int i = 0; i < 3; ++i) {
    std::vector<double> g;
    for (double s : scales) g.push_back(float(s) * (0.2f * i - 0.1f));
    EXPECT_NEAR(net.norm->value.data()[i], adamw_reference(n0[i], g, lrs, c, false), 1e-6)
        << i;
  }
  // The state is exposed with the parameter's local shape.
  ASSERT_EQ(opt.num_states(), 2u);
  EXPECT_EQ(opt.exp_avg(0).shape, (Shape{2, 3}));
  EXPECT_EQ(opt.exp_avg_sq(1).shape, (Shape{3}));
  EXPECT_GT(opt.exp_avg_sq(1)[2], 0.0f);
}

TEST(AdamW, ZeroGradientOnlyDecays) {
  OptimConfig c;
  c.weight_decay = 0.5f;
  TwoParams net;
  const float w1 = net.w->value.data()[1], n1 = net.norm->value.data()[1];
  AdamW opt(net.store, c);  // grads are zero: the Adam term is 0 / (0 + eps) = 0
  opt.step(0.1f);
  EXPECT_FLOAT_EQ(net.w->value.data()[1], w1 * (1.0f - 0.1f * 0.5f));
  EXPECT_FLOAT_EQ(net.norm->value.data()[1], n1);
}

OptimConfig schedule_config(const char* kind) {
  OptimConfig c;
  c.lr = 1.0f;
  c.min_lr = 0.1f;
  c.warmup_steps = 10;
  c.schedule = *enum_from_name<ScheduleKind>(kind);
  c.decay_fraction = 0.2f;
  return c;
}

TEST(LrSchedule, Cosine) {
  const LrSchedule s(schedule_config("cosine"), 110);  // decay over steps 10..109
  EXPECT_FLOAT_EQ(s.lr(0), 0.1f);   // (0 + 1) / 10
  EXPECT_FLOAT_EQ(s.lr(4), 0.5f);
  EXPECT_FLOAT_EQ(s.lr(9), 1.0f);   // warmup reaches the peak
  EXPECT_FLOAT_EQ(s.lr(10), 1.0f);  // decay starts at the peak
  EXPECT_NEAR(s.lr(109), 0.1f, 1e-6);  // min_lr at the last step
  EXPECT_NEAR(s.lr(500), 0.1f, 1e-6);  // and after it
  for (int64_t step = 10; step < 109; ++step) EXPECT_GT(s.lr(step), s.lr(step + 1));
}

TEST(LrSchedule, CosineMidpointIsExact) {
  OptimConfig c = schedule_config("cosine");
  c.warmup_steps = 0;
  const LrSchedule s(c, 101);  // p = step / 100
  EXPECT_FLOAT_EQ(s.lr(0), 1.0f);
  EXPECT_FLOAT_EQ(s.lr(50), 0.55f);
  EXPECT_FLOAT_EQ(s.lr(100), 0.1f);
}

TEST(LrSchedule, Wsd) {
  const LrSchedule s(schedule_config("wsd"), 100);  // decay over the last 20 steps: 80..99
  EXPECT_FLOAT_EQ(s.lr(0), 0.1f);
  EXPECT_FLOAT_EQ(s.lr(9), 1.0f);
  EXPECT_FLOAT_EQ(s.lr(10), 1.0f);
  EXPECT_FLOAT_EQ(s.lr(79), 1.0f);            // stable phase
  EXPECT_FLOAT_EQ(s.lr(80), 1.0f - 0.9f / 20);  // first decay step
  EXPECT_FLOAT_EQ(s.lr(89), 0.55f);           // halfway
  EXPECT_FLOAT_EQ(s.lr(99), 0.1f);            // min_lr at the last step
  EXPECT_FLOAT_EQ(s.lr(150), 0.1f);
}

TEST(LrSchedule, Constant) {
  const LrSchedule s(schedule_config("constant"), 100);
  EXPECT_FLOAT_EQ(s.lr(0), 0.1f);
  EXPECT_FLOAT_EQ(s.lr(9), 1.0f);
  EXPECT_FLOAT_EQ(s.lr(10), 1.0f);
  EXPECT_FLOAT_EQ(s.lr(99), 1.0f);
  OptimConfig no_warmup = schedule_config("constant");
  no_warmup.warmup_steps = 0;
  EXPECT_FLOAT_EQ(LrSchedule(no_warmup, 5).lr(0), 1.0f);
}

TEST(Clip, GlobalNormOverAllParameters) {
  TwoParams net;
  net.set_grads(1.0f);
  double sq = 0.0;
  for (int i = 0; i < 6; ++i) sq += std::pow(double(0.35f - 0.1f * i), 2);
  for (int i = 0; i < 3; ++i) sq += std::pow(double(0.2f * i - 0.1f), 2);
  EXPECT_NEAR(grad_sum_squares(net.store), sq, 1e-9);
  // A filter selects parameters (the distributed trainer counts each shard once).
  EXPECT_NEAR(grad_sum_squares(net.store, [](const Param& p) { return !p.spec.weight_decay; }),
              0.01 + 0.01 + 0.09, 1e-7);

  // Below the threshold: measured, untouched.
  const float g0 = net.w->grad.data()[0];
  EXPECT_NEAR(clip_grad_norm(net.store, 10.0f), std::sqrt(sq), 1e-6);
  EXPECT_EQ(net.w->grad.data()[0], g0);

  // Above: every gradient scaled by max_norm / norm; the pre-clip norm is returned.
  const double norm = clip_grad_norm(net.store, 0.25f);
  EXPECT_NEAR(norm, std::sqrt(sq), 1e-6);
  EXPECT_NEAR(std::sqrt(grad_sum_squares(net.store)), 0.25, 1e-6);
  EXPECT_NEAR(net.w->grad.data()[0], g0 * 0.25 / std::sqrt(sq), 1e-6);
  EXPECT_NEAR(net.norm->grad.data()[2], 0.3 * 0.25 / std::sqrt(sq), 1e-6);

  // max_norm <= 0 only measures.
  net.set_grads(1.0f);
  clip_grad_norm(net.store, 0.0f);
  EXPECT_EQ(net.w->grad.data()[0], g0);
}

TEST(Clip, Coefficient) {
  EXPECT_EQ(clip_coefficient(0.5, 1.0f), 1.0f);
  EXPECT_FLOAT_EQ(clip_coefficient(4.0, 1.0f), 0.25f);
  EXPECT_EQ(clip_coefficient(4.0, 0.0f), 1.0f);
  EXPECT_EQ(clip_coefficient(std::nan(""), 1.0f), 1.0f);
  EXPECT_EQ(clip_coefficient(INFINITY, 1.0f), 1.0f);
}

}  // namespace
}  // namespace moe
