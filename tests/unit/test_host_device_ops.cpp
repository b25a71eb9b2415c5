// The pieces a device model adds to the CPU path, checked on the CPU: the squared-error
// op (DiT's loss) is its reference loop bit for bit, the vocabulary-parallel loss ops
// compute the LM loss, and the named host/device crossings hand CPU tensors back
// untouched (the CPU path copies nothing).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "framework/kernels/cpu/cpu_ops.h"
#include "framework/kernels/host_copy.h"
#include "framework/kernels/ops.h"
#include "framework/tensor/param_store.h"
#include "tests/unit/gradcheck.h"

namespace moe {
namespace {

using moe::testing::random_vector;

TEST(SquaredError, IsTheSerialDoubleSumBitForBit) {
  for (const int64_t n : {int64_t{0}, int64_t{1}, int64_t{1001}}) {
    std::vector<float> pred = random_vector(n, 1, 2.0f), target = random_vector(n, 2);
    std::vector<float> dpred(static_cast<size_t>(n)), dref(static_cast<size_t>(n));
    double expected = 0.0;  // the loop DiT's loss ran before it became an op
    for (int64_t i = 0; i < n; ++i) {
      const float diff = pred[i] - target[i];
      expected += static_cast<double>(diff) * diff;
      dref[i] = 0.5f * diff;
    }
    const double sum = ops::squared_error(Tensor(pred.data(), {n}), Tensor(target.data(), {n}),
                                          Tensor(dpred.data(), {n}), 0.5f);
    EXPECT_EQ(sum, expected) << n;
    EXPECT_EQ(dpred, dref) << n;
    std::vector<float> dfast(static_cast<size_t>(n));
    EXPECT_EQ(cpu::squared_error(pred.data(), target.data(), dfast.data(), 0.5f, n),
              cpu::ref::squared_error(pred.data(), target.data(), dref.data(), 0.5f, n));
    EXPECT_EQ(dfast, dref);
  }
}

TEST(SquaredError, ChecksItsOperands) {
  std::vector<float> a(4), b(3), d(4);
  EXPECT_THROW(ops::squared_error(Tensor(a.data(), {4}), Tensor(b.data(), {3}),
                                  Tensor(d.data(), {4}), 1.0f),
               Error);
}

// The vocabulary-parallel loss as three ops: the fast kernels are the reference's bits,
// and one block holding every column is the loss of the whole row (against the plain
// cross-entropy written out in double), ignored targets included.
TEST(VocabLoss, FastIsReferenceAndOneBlockIsTheWholeRow) {
  const int64_t rows = 37, cols = 300;
  const std::vector<float> logits = random_vector(rows * cols, 5, 4.0f);
  std::vector<int32_t> targets(rows);
  for (int64_t r = 0; r < rows; ++r) targets[r] = r % 7 == 3 ? -1 : static_cast<int32_t>((r * 61) % cols);
  std::vector<float> max(rows), sums(2 * rows), losses(rows), dlogits(rows * cols);
  std::vector<float> rmax(rows), rsums(2 * rows), rlosses(rows), rdlogits(rows * cols);
  cpu::vocab_row_max(logits.data(), max.data(), rows, cols);
  cpu::vocab_row_sums(logits.data(), max.data(), targets.data(), 0, sums.data(), rows, cols);
  cpu::vocab_loss(logits.data(), max.data(), sums.data(), targets.data(), 0, 0.25f,
                  losses.data(), dlogits.data(), rows, cols);
  cpu::ref::vocab_row_max(logits.data(), rmax.data(), rows, cols);
  cpu::ref::vocab_row_sums(logits.data(), rmax.data(), targets.data(), 0, rsums.data(), rows,
                           cols);
  cpu::ref::vocab_loss(logits.data(), rmax.data(), rsums.data(), targets.data(), 0, 0.25f,
                       rlosses.data(), rdlogits.data(), rows, cols);
  EXPECT_EQ(max, rmax);
  EXPECT_EQ(sums, rsums);
  EXPECT_EQ(losses, rlosses);
  EXPECT_EQ(dlogits, rdlogits);
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = logits.data() + r * cols;
    if (targets[r] < 0) {
      EXPECT_EQ(losses[r], 0.0f);
      for (int64_t c = 0; c < cols; ++c) EXPECT_EQ(dlogits[r * cols + c], 0.0f);
      continue;
    }
    double m = x[0], s = 0.0;
    for (int64_t c = 0; c < cols; ++c) m = std::max(m, static_cast<double>(x[c]));
    for (int64_t c = 0; c < cols; ++c) s += std::exp(x[c] - m);
    EXPECT_NEAR(losses[r], std::log(s) + m - x[targets[r]], 1e-5) << r;
    for (int64_t c = 0; c < cols; ++c)
      EXPECT_NEAR(dlogits[r * cols + c],
                  0.25 * (std::exp(x[c] - m) / s - (c == targets[r] ? 1.0 : 0.0)), 1e-6);
  }
}

// A block that does not hold a row's target contributes 0 as its target logit.
TEST(VocabLoss, TargetOutsideTheBlock) {
  const std::vector<float> logits = {1.0f, 2.0f, 3.0f, 4.0f};  // (2, 2), columns [10, 12)
  const std::vector<int32_t> targets = {11, 3};
  std::vector<float> max(2), sums(4);
  ops::vocab_row_max(Tensor(const_cast<float*>(logits.data()), {2, 2}), Tensor(max.data(), {2}));
  ops::vocab_row_sums(Tensor(const_cast<float*>(logits.data()), {2, 2}), Tensor(max.data(), {2}),
                      targets, 10, Tensor(sums.data(), {4}));
  EXPECT_EQ(max, (std::vector<float>{2.0f, 4.0f}));
  EXPECT_EQ(sums[2], 2.0f);  // row 0's target, column 11
  EXPECT_EQ(sums[3], 0.0f);  // row 1's target lies in another block
}

// The multi-tensor optimizer ops are the per-tensor kernels' bits: the clip (scale) and
// AdamW of every tensor, and every sum of squares, including an empty tensor.
TEST(MultiTensor, IsThePerTensorPathBitForBit) {
  const std::vector<int64_t> sizes = {5, 0, 40000, 3};
  std::vector<std::vector<float>> p, g, m, v;
  for (size_t t = 0; t < sizes.size(); ++t)
    for (auto* x : {&p, &g, &m, &v}) x->push_back(random_vector(sizes[t], 10 * t + x->size()));
  for (auto& x : v)
    for (float& e : x) e = std::fabs(e);  // second moments are non-negative
  auto p2 = p, g2 = g, m2 = m, v2 = v;
  const ops::AdamWStep step{1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 3};
  std::vector<ops::AdamWTensors> tensors;
  std::vector<Tensor> grads;
  for (size_t t = 0; t < sizes.size(); ++t) {
    const Shape shape{sizes[t]};
    tensors.push_back({Tensor(p[t].data(), shape), Tensor(g[t].data(), shape),
                       Tensor(m[t].data(), shape), Tensor(v[t].data(), shape), t % 2 == 0});
    grads.push_back(Tensor(g2[t].data(), shape));
  }
  std::vector<double> sums(sizes.size());
  ops::sum_squares_multi(grads, sums);
  for (size_t t = 0; t < sizes.size(); ++t) EXPECT_EQ(sums[t], ops::sum_squares(grads[t]));
  ops::adamw_multi(tensors, step, 0.5f);
  for (size_t t = 0; t < sizes.size(); ++t) {  // as the trainer did: scale, then adamw
    const Shape shape{sizes[t]};
    ops::scale(Tensor(g2[t].data(), shape), 0.5f);
    ops::AdamWStep own = step;
    own.weight_decay = t % 2 == 0 ? step.weight_decay : 0.0f;
    ops::adamw(Tensor(p2[t].data(), shape), Tensor(g2[t].data(), shape),
               Tensor(m2[t].data(), shape), Tensor(v2[t].data(), shape), own);
  }
  EXPECT_EQ(p, p2);
  EXPECT_EQ(g, g2);
  EXPECT_EQ(m, m2);
  EXPECT_EQ(v, v2);
}

TEST(HostCopy, CpuTensorsCrossUntouched) {
  std::vector<float> x = random_vector(6, 3);
  const Tensor t(x.data(), {2, 3});
  Buffer host, device;
  EXPECT_EQ(ops::to_host(t, host).data, x.data());
  EXPECT_EQ(ops::to_device(t, Device::kCpu, device).data, x.data());
  EXPECT_EQ(host.size(), 0);  // no staging was touched
  EXPECT_EQ(device.size(), 0);
}

TEST(ParamStore, ParametersLiveOnTheStoresDevice) {
  ParamStore store;
  EXPECT_EQ(store.device(), Device::kCpu);
  Param& p = store.add({"w", Shape{3, 4}, Shard::kReplicated, Init::normal(0.02f)});
  EXPECT_EQ(p.value.device(), Device::kCpu);
  EXPECT_EQ(p.grad.device(), Device::kCpu);
  EXPECT_EQ(p.data().device, Device::kCpu);
}

}  // namespace
}  // namespace moe
