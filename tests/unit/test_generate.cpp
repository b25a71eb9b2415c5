// Incremental decoding (models/moe_gpt/generate.h): the KV-cached attention equals the
// full causal attention row for row, whatever the order and grouping of the rows; the
// decoder's logits give the training model's loss, and a token decoded step by step gets
// the logits of a full forward over its prefix; the sampling rule (sampling.h) is greedy
// at temperature 0, reproducible, and draws from the distribution it documents.
// tests/reference/generate.sh compares whole greedy generations with PyTorch.

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "framework/core/rng.h"
#include "framework/nn/attention.h"
#include "models/generation.h"
#include "models/moe_gpt/generate.h"
#include "models/moe_gpt/moe_gpt.h"

namespace moe {
namespace {

std::vector<float> random_floats(int64_t n, uint64_t seed) {
  const PhiloxKey key = philox_key(seed, hash_name("test_generate"));
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) x[i] = normal_at(key, static_cast<uint64_t>(i));
  return x;
}

TEST(KvCacheAttention, EqualsFullForwardRowByRow) {
  const int64_t B = 2, T = 7, C = 16, H = 4;
  ParamStore store;
  SelfAttention attn(store, "attn", C, H, /*causal=*/true, /*rotary=*/true, 10000.0f, 0.3f, 0.3f);
  store.initialize(3);
  std::vector<float> x = random_floats(B * T * C, 1);  // (B, T, C)
  Tensor full_out = attn.forward(Tensor(x.data(), {B * T, C}), B, T);
  const std::vector<float> full(full_out.data, full_out.data + B * T * C);

  // Sequence 0's first four tokens and sequence 1's first two in one call (a batched
  // prompt), then the rest one row per call, the sequences interleaved.
  KvCache cache(C);
  cache.reset(B);
  std::vector<std::vector<std::pair<int32_t, int32_t>>> calls = {
      {{0, 0}, {0, 1}, {0, 2}, {0, 3}, {1, 0}, {1, 1}}};
  for (int32_t t = 2; t < T; ++t) {
    if (t + 2 < T) calls.push_back({{0, t + 2}, {1, t}});
    else calls.push_back({{1, t}});
  }
  std::vector<float> cached(full.size(), NAN);
  for (const auto& call : calls) {
    std::vector<float> rows;
    std::vector<int32_t> seq, pos;
    for (auto [s, t] : call) {
      rows.insert(rows.end(), x.begin() + (s * T + t) * C, x.begin() + (s * T + t + 1) * C);
      seq.push_back(s);
      pos.push_back(t);
    }
    const int64_t n = static_cast<int64_t>(call.size());
    Tensor y = attn.forward_cached(Tensor(rows.data(), {n, C}), seq, pos, cache);
    for (int64_t i = 0; i < n; ++i)
      std::copy(y.data + i * C, y.data + (i + 1) * C, cached.begin() + (seq[i] * T + pos[i]) * C);
  }
  for (size_t i = 0; i < full.size(); ++i)
    ASSERT_NEAR(cached[i], full[i], 1e-5 * (1 + std::abs(full[i]))) << "element " << i;
  EXPECT_EQ(cache.length(0), T);
  EXPECT_EQ(cache.length(1), T);
}

Config tiny_config(bool renormalize) {
  Config c;
  c.model.vocab_size = 13;
  c.model.seq_len = 6;
  c.model.num_layers = 3;
  c.model.d_model = 16;
  c.model.num_heads = 2;
  c.model.dense_layers = 1;
  c.model.dense_ffn = 24;
  c.model.init_std = 0.2f;  // wide weights: routing and logits far from uniform
  c.moe.num_experts = 4;
  c.moe.top_k = 2;
  c.moe.expert_ffn = 12;
  c.moe.num_shared = 1;
  c.moe.shared_ffn = 8;
  c.moe.capacity_factor = 0.0f;
  c.moe.renormalize = renormalize;
  return c;
}

class DecoderTest : public ::testing::TestWithParam<bool> {};

TEST_P(DecoderTest, LogitsGiveTheTrainingModelsLoss) {
  const Config c = tiny_config(GetParam());
  ParamStore store;
  LocalDispatcher dispatcher;
  MoeGpt gpt(c.model, c.moe, store, MoeRuntime::local(dispatcher, c.moe.num_experts));
  store.initialize(11);
  MoeGptDecoder decoder(c);
  for (Param& p : decoder.store().params()) {
    Param* source = store.find(p.spec.name);
    ASSERT_NE(source, nullptr) << p.spec.name;
    ASSERT_EQ(source->spec.shape, p.spec.shape) << p.spec.name;
    std::copy(source->value.data(), source->value.data() + p.numel(), p.value.data());
  }
  EXPECT_EQ(decoder.store().numel(), store.numel());

  const int64_t B = 3, T = c.model.seq_len, V = c.model.vocab_size;
  std::vector<int32_t> inputs, targets, seq, pos;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      inputs.push_back(static_cast<int32_t>((b * 5 + t * 7 + 1) % V));
      targets.push_back(static_cast<int32_t>((b * 3 + t * 11 + 2) % V));
      seq.push_back(static_cast<int32_t>(b));
      pos.push_back(static_cast<int32_t>(t));
    }
  const double want = gpt.forward(inputs.data(), targets.data(), B).ce;
  decoder.reset(B);
  Tensor logits = decoder.forward(inputs, seq, pos);  // (B*T, V)
  const std::vector<float> prefill(logits.data, logits.data + B * T * V);
  double ce = 0.0;
  for (int64_t i = 0; i < B * T; ++i) {
    const float* row = prefill.data() + i * V;
    double m = row[0], sum = 0.0;
    for (int64_t v = 1; v < V; ++v) m = std::max<double>(m, row[v]);
    for (int64_t v = 0; v < V; ++v) sum += std::exp(row[v] - m);
    ce += std::log(sum) + m - row[targets[i]];
  }
  EXPECT_NEAR(ce / static_cast<double>(B * T), want, 1e-5 * want);

  // Token by token, the sequences side by side: the same logits at every position.
  decoder.reset(B);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> ids, s, p;
    for (int64_t b = 0; b < B; ++b) {
      ids.push_back(inputs[b * T + t]);
      s.push_back(static_cast<int32_t>(b));
      p.push_back(static_cast<int32_t>(t));
    }
    Tensor step = decoder.forward(ids, s, p);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t v = 0; v < V; ++v)
        ASSERT_NEAR(step.data[b * V + v], prefill[(b * T + t) * V + v], 1e-5)
            << "sequence " << b << " position " << t << " token " << v;
  }
}

INSTANTIATE_TEST_SUITE_P(Routing, DecoderTest, ::testing::Values(false, true));

TEST(Generate, GreedyContinuesWithTheArgmaxOfEachStep) {
  const Config c = tiny_config(false);
  MoeGptDecoder decoder(c);
  decoder.store().initialize(5);
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3}, {4}};
  SamplingOptions greedy;
  greedy.temperature = 0.0f;
  std::vector<std::pair<int64_t, int32_t>> streamed;
  const auto out = generate(decoder, prompts, 4, greedy,
                            [&](int64_t s, int32_t t) { streamed.emplace_back(s, t); });
  ASSERT_EQ(out.size(), 2u);
  ASSERT_EQ(streamed.size(), 8u);
  for (size_t s = 0; s < prompts.size(); ++s) {
    ASSERT_EQ(out[s].size(), 4u);
    // Each new token is the argmax of a fresh full forward over everything before it.
    std::vector<int32_t> context = prompts[s];
    for (int32_t token : out[s]) {
      decoder.reset(1);
      std::vector<int32_t> seq(context.size(), 0), pos;
      for (size_t t = 0; t < context.size(); ++t) pos.push_back(static_cast<int32_t>(t));
      Tensor logits = decoder.forward(context, seq, pos);
      const float* last = logits.data + (context.size() - 1) * c.model.vocab_size;
      EXPECT_EQ(token, std::max_element(last, last + c.model.vocab_size) - last);
      context.push_back(token);
    }
  }
}

TEST(Sampling, GreedyTakesTheFirstLargest) {
  SamplingOptions greedy;
  greedy.temperature = 0.0f;
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(choose_token(logits, greedy, 0, 0), 1);
  SamplingOptions top1;  // top_k = 1 is greedy at any temperature
  top1.top_k = 1;
  for (uint64_t step = 0; step < 20; ++step) EXPECT_EQ(choose_token(logits, top1, 3, step), 1);
}

// Frequencies of 20000 draws (steps 0..19999) with `options` over logits log(p).
std::vector<double> frequencies(const std::vector<double>& p, const SamplingOptions& options) {
  std::vector<float> logits;
  for (double x : p) logits.push_back(static_cast<float>(std::log(x)));
  std::vector<double> f(p.size(), 0.0);
  const int draws = 20000;
  for (int i = 0; i < draws; ++i) f[choose_token(logits, options, 0, i)] += 1.0 / draws;
  return f;
}

TEST(Sampling, DrawsFromTheDocumentedDistribution) {
  const std::vector<double> p = {0.1, 0.5, 0.2, 0.15, 0.05};
  SamplingOptions plain;
  const std::vector<double> f = frequencies(p, plain);
  for (size_t i = 0; i < p.size(); ++i) EXPECT_NEAR(f[i], p[i], 0.015) << "token " << i;

  SamplingOptions top_k;  // the two most probable, renormalised: 5/7 and 2/7
  top_k.top_k = 2;
  const std::vector<double> fk = frequencies(p, top_k);
  EXPECT_NEAR(fk[1], 5.0 / 7, 0.015);
  EXPECT_NEAR(fk[2], 2.0 / 7, 0.015);
  EXPECT_EQ(fk[0] + fk[3] + fk[4], 0.0);

  SamplingOptions top_p;  // 0.5 + 0.2 + 0.15 = 0.85 is the first mass >= 0.8
  top_p.top_p = 0.8f;
  const std::vector<double> fp = frequencies(p, top_p);
  EXPECT_NEAR(fp[1], 0.5 / 0.85, 0.015);
  EXPECT_NEAR(fp[2], 0.2 / 0.85, 0.015);
  EXPECT_NEAR(fp[3], 0.15 / 0.85, 0.015);
  EXPECT_EQ(fp[0] + fp[4], 0.0);

  SamplingOptions cold;  // temperature 0.5 squares the odds
  cold.temperature = 0.5f;
  const std::vector<double> fc = frequencies(p, cold);
  double z = 0.0;
  for (double x : p) z += x * x;
  for (size_t i = 0; i < p.size(); ++i) EXPECT_NEAR(fc[i], p[i] * p[i] / z, 0.015);
}

TEST(Sampling, ReproducibleForASeed) {
  const std::vector<float> logits = {0.1f, 0.3f, 0.2f, 0.4f, 0.0f, 0.25f};
  SamplingOptions a, b;
  a.seed = b.seed = 42;
  SamplingOptions other;
  other.seed = 43;
  int differ = 0;
  for (uint64_t step = 0; step < 200; ++step) {
    EXPECT_EQ(choose_token(logits, a, 2, step), choose_token(logits, b, 2, step));
    differ += choose_token(logits, a, 2, step) != choose_token(logits, other, 2, step);
  }
  EXPECT_GT(differ, 50);  // another seed, other draws
}

}  // namespace
}  // namespace moe
