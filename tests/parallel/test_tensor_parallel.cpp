// mpi-ranks: 1 2 4
// Column- and row-parallel linear layers over tp = world against the unsharded Linear
// with the same initial weights: outputs, input gradients and every weight and bias
// gradient block, alone and chained as a Megatron MLP (column -> GELU -> row, one
// all-reduce each way).
//
// Checks after a collective use EXPECT (not ASSERT): a rank leaving a test early would
// leave the others waiting in the next collective.

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "framework/kernels/ops.h"
#include "framework/nn/linear.h"
#include "framework/nn/tp_linear.h"
#include "framework/parallel/mpi_communicator.h"
#include "tests/parallel/mpi_test.h"

namespace moe {
namespace {

constexpr int64_t kN = 5, kIn = 8, kOut = 12;  // divisible by tp = 1, 2, 4
constexpr uint64_t kSeed = 21;

std::vector<float> pattern(int64_t n, float scale, int shift) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = scale * static_cast<float>((i * 7 + shift) % 13 - 6);
  return v;
}

// rows [r0, r0 + rows) x cols [c0, c0 + cols) of a row-major matrix with `ld` columns
std::vector<float> block(const float* m, int64_t ld, int64_t r0, int64_t rows, int64_t c0,
                         int64_t cols) {
  std::vector<float> out;
  for (int64_t r = r0; r < r0 + rows; ++r)
    for (int64_t c = c0; c < c0 + cols; ++c) out.push_back(m[r * ld + c]);
  return out;
}

void expect_near(const std::vector<float>& got, const std::vector<float>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], 1e-5f * (1.0f + std::fabs(want[i]))) << what << " " << i;
}

std::vector<float> values(Tensor t) { return {t.data, t.data + t.numel()}; }
std::vector<float> values(const Buffer& b, int64_t n) { return {b.data(), b.data() + n}; }

TEST(TensorParallel, ColumnParallelMatchesTheUnshardedLayer) {
  MpiCommunicator tp(test::mpi_env().world());
  const int64_t block_out = kOut / tp.size(), r0 = tp.rank() * block_out;
  ParamStore full_store, tp_store;
  Linear full(full_store, "w", kIn, kOut, Init::normal(0.3f), "b");
  ColumnParallelLinear column(tp_store, "w", kIn, kOut, Init::normal(0.3f), tp, "b");
  full_store.initialize(kSeed);
  tp_store.initialize(kSeed);
  // a non-zero bias entry (global index 1, on tp rank 0's block) in both
  full_store.find("b")->value.data()[1] = 0.5f;
  if (tp.rank() == 0) tp_store.find("b")->value.data()[1] = 0.5f;

  std::vector<float> x = pattern(kN * kIn, 0.1f, 3), dy_full = pattern(kN * kOut, 0.05f, 1);
  const Tensor y_full = full.forward(Tensor(x.data(), {kN, kIn}));
  const Tensor y = column.forward(Tensor(x.data(), {kN, kIn}));
  expect_near(values(y), block(y_full.data, kOut, 0, kN, r0, block_out), "y");

  std::vector<float> dy = block(dy_full.data(), kOut, 0, kN, r0, block_out);
  const Tensor dx_full = full.backward(Tensor(dy_full.data(), {kN, kOut}));
  const Tensor dx = column.backward_all_reduce(Tensor(dy.data(), {kN, block_out}));
  expect_near(values(dx), values(dx_full), "dx");
  expect_near(values(tp_store.find("w")->grad, block_out * kIn),
              block(full_store.find("w")->grad.data(), kIn, r0, block_out, 0, kIn), "dW");
  expect_near(values(tp_store.find("b")->grad, block_out),
              block(full_store.find("b")->grad.data(), kOut, 0, 1, r0, block_out), "db");
}

TEST(TensorParallel, RowParallelMatchesTheUnshardedLayer) {
  MpiCommunicator tp(test::mpi_env().world());
  const int64_t block_in = kIn / tp.size(), c0 = tp.rank() * block_in;
  ParamStore full_store, tp_store;
  Linear full(full_store, "w", kIn, kOut, Init::normal(0.3f), "b");
  RowParallelLinear row(tp_store, "w", kIn, kOut, Init::normal(0.3f), tp, "b");
  full_store.initialize(kSeed);
  tp_store.initialize(kSeed);
  full_store.find("b")->value.data()[2] = -0.25f;
  tp_store.find("b")->value.data()[2] = -0.25f;

  std::vector<float> x = pattern(kN * kIn, 0.1f, 5), dy = pattern(kN * kOut, 0.05f, 2);
  std::vector<float> x_r = block(x.data(), kIn, 0, kN, c0, block_in);
  const Tensor y_full = full.forward(Tensor(x.data(), {kN, kIn}));
  const Tensor y = row.forward_all_reduce(Tensor(x_r.data(), {kN, block_in}));
  expect_near(values(y), values(y_full), "y");

  const Tensor dx_full = full.backward(Tensor(dy.data(), {kN, kOut}));
  const Tensor dx = row.backward(Tensor(dy.data(), {kN, kOut}));
  expect_near(values(dx), block(dx_full.data, kIn, 0, kN, c0, block_in), "dx");
  expect_near(values(tp_store.find("w")->grad, kOut * block_in),
              block(full_store.find("w")->grad.data(), kIn, 0, kOut, c0, block_in), "dW");
  expect_near(values(tp_store.find("b")->grad, kOut), values(full_store.find("b")->grad, kOut),
              "db");
}

TEST(TensorParallel, ColumnThenRowIsTheMegatronMlp) {
  // y = W2 gelu(W1 x): column-parallel W1, local GELU on the rank's hidden slice,
  // row-parallel W2; one all-reduce forward (row) and one backward (column).
  MpiCommunicator tp(test::mpi_env().world());
  const int64_t hidden = kOut, block_h = hidden / tp.size();
  ParamStore full_store, tp_store;
  Linear fc1(full_store, "fc1", kIn, hidden, Init::normal(0.4f));
  Linear fc2(full_store, "fc2", hidden, kIn, Init::normal(0.4f));
  ColumnParallelLinear tp_fc1(tp_store, "fc1", kIn, hidden, Init::normal(0.4f), tp);
  RowParallelLinear tp_fc2(tp_store, "fc2", hidden, kIn, Init::normal(0.4f), tp);
  full_store.initialize(kSeed);
  tp_store.initialize(kSeed);

  std::vector<float> x = pattern(kN * kIn, 0.2f, 4), dy = pattern(kN * kIn, 0.1f, 6);
  // unsharded
  const Tensor u = fc1.forward(Tensor(x.data(), {kN, kIn}));
  std::vector<float> g(static_cast<size_t>(kN * hidden)), du(g.size());
  cpu::gelu_forward(u.data, g.data(), kN * hidden);
  const Tensor y_full = fc2.forward(Tensor(g.data(), {kN, hidden}));
  const std::vector<float> y_want = values(y_full);
  const Tensor dg = fc2.backward(Tensor(dy.data(), {kN, kIn}));
  cpu::gelu_backward(u.data, dg.data, du.data(), kN * hidden);
  const std::vector<float> dx_want = values(fc1.backward(Tensor(du.data(), {kN, hidden})));
  // tensor-parallel
  const Tensor u_r = tp_fc1.forward(Tensor(x.data(), {kN, kIn}));
  std::vector<float> g_r(static_cast<size_t>(kN * block_h)), du_r(g_r.size());
  cpu::gelu_forward(u_r.data, g_r.data(), kN * block_h);
  const Tensor y = tp_fc2.forward_all_reduce(Tensor(g_r.data(), {kN, block_h}));
  expect_near(values(y), y_want, "y");
  const Tensor dg_r = tp_fc2.backward(Tensor(dy.data(), {kN, kIn}));
  cpu::gelu_backward(u_r.data, dg_r.data, du_r.data(), kN * block_h);
  const Tensor dx = tp_fc1.backward_all_reduce(Tensor(du_r.data(), {kN, block_h}));
  expect_near(values(dx), dx_want, "dx");
}

}  // namespace
}  // namespace moe
