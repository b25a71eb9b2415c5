// moe.router_skew (framework/moe/router.h): the benchmark knob that biases the router
// toward a Zipf expert popularity. With zero router weights the logits are the bias
// alone, so the probabilities are exactly p_e = (e + 1)^-s / sum_j (j + 1)^-s.

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "framework/moe/router.h"

namespace moe {
namespace {

TEST(RouterSkew, ZeroWeightsGiveTheZipfPopularity) {
  MoeConfig config;
  config.num_experts = 8;
  config.top_k = 2;
  config.router_skew = 1.2f;
  ParamStore store;
  TopKRouter router(store, "layers.0.moe", 4, config, 0.02f, ExpertLocality::single(8));
  store.params().front().value.zero();  // the router weight (E, C)
  std::vector<float> u(3 * 4, 0.5f);    // (N, C), any rows
  const RouterChoices r = router.forward(Tensor(u.data(), Shape{3, 4}), {}, {});
  double norm = 0.0;
  for (int e = 0; e < 8; ++e) norm += std::pow(e + 1.0, -1.2);
  const Tensor p = router.probs();
  for (int t = 0; t < 3; ++t) {
    for (int e = 0; e < 8; ++e)
      EXPECT_NEAR(p.data[t * 8 + e], std::pow(e + 1.0, -1.2) / norm, 1e-6) << t << " " << e;
    EXPECT_EQ(r.experts[t * 2], 0);  // the most popular experts first
    EXPECT_EQ(r.experts[t * 2 + 1], 1);
  }
}

}  // namespace
}  // namespace moe
