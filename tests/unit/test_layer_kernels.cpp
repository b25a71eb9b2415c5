// The kernels of the layers' own steps (residual add, row-broadcast add and its
// gradient, adaLN modulate and gated add, gathered row dots, the block transpose of the
// all-to-alls, node-limited masking, the grouped expert FFN): each fast kernel against
// its reference twin, each backward against central differences, and the op API's
// checks (shapes, devices and dtypes named in the error).
//
// Tolerances as in test_kernels.cpp: element-wise results are exact or within a few ulp
// (atol 1e-6); sums over n terms differ from the double-accumulating reference by
// float rounding, n u relative (atol 1e-5 for n of a few hundred); the expert GEMM
// chains compare like matmul (k^2 u for a k-term dot product of O(1) entries).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "framework/kernels/cpu/cpu_ops.h"
#include "framework/kernels/ops.h"
#include "tests/unit/gradcheck.h"

namespace moe {
namespace {

using moe::testing::check_gradient;
using moe::testing::dot;
using moe::testing::random_vector;
using Vec = std::vector<float>;

::testing::AssertionResult all_close(const Vec& actual, const Vec& expected, double atol,
                                     double rtol) {
  if (actual.size() != expected.size())
    return ::testing::AssertionFailure() << "sizes " << actual.size() << " vs " << expected.size();
  for (size_t i = 0; i < actual.size(); ++i) {
    const double err = std::fabs(static_cast<double>(actual[i]) - expected[i]);
    if (!(err <= atol + rtol * std::fabs(expected[i])))
      return ::testing::AssertionFailure() << "element " << i << ": " << actual[i]
                                           << " vs expected " << expected[i];
  }
  return ::testing::AssertionSuccess();
}

Tensor view(Vec& v, Shape s) { return Tensor(v.data(), s); }

// ---------------------------------------------------------------- add, scale, rows

TEST(LayerKernels, AddAndScaleFastEqualRef) {
  for (const int64_t n : {1, 33, 100003}) {  // 100003 takes the threaded path
    const Vec a = random_vector(n, 1), b = random_vector(n, 2);
    Vec ref(n), fast(n);
    cpu::ref::add(a.data(), b.data(), ref.data(), n);
    cpu::add(a.data(), b.data(), fast.data(), n);
    EXPECT_EQ(fast, ref) << n;  // one rounding each: bit-identical
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(ref[i], a[i] + b[i]);
    cpu::ref::scale(ref.data(), 0.37f, n);
    cpu::scale(fast.data(), 0.37f, n);
    EXPECT_EQ(fast, ref) << n;
  }
}

TEST(LayerKernels, AddRowsAndSumRowsFastEqualRefAndAreAdjoint) {
  for (const auto& [rows, cols, period] :
       {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {12, 5, 1}, {12, 5, 4}, {4096, 64, 16}}) {
    const Vec x = random_vector(rows * cols, 3), table = random_vector(period * cols, 4);
    Vec y_ref(rows * cols), y_fast(rows * cols);
    cpu::ref::add_rows(x.data(), table.data(), y_ref.data(), rows, cols, period);
    cpu::add_rows(x.data(), table.data(), y_fast.data(), rows, cols, period);
    EXPECT_EQ(y_fast, y_ref);
    // in place (a bias added to a layer's output)
    Vec in_place = x;
    cpu::add_rows(in_place.data(), table.data(), in_place.data(), rows, cols, period);
    EXPECT_EQ(in_place, y_ref);

    const Vec dy = random_vector(rows * cols, 5);
    Vec d_ref = random_vector(period * cols, 6), d_fast = d_ref;  // accumulates
    cpu::ref::sum_rows(dy.data(), d_ref.data(), rows, cols, period);
    cpu::sum_rows(dy.data(), d_fast.data(), rows, cols, period);
    EXPECT_TRUE(all_close(d_fast, d_ref, 1e-5 * static_cast<double>(rows / period + 1), 1e-5));
    // sum_rows is the adjoint of the table's use: <dy, add_rows(0, t)> = <sum_rows(dy), t>
    Vec zero(rows * cols, 0.0f), spread(rows * cols), summed(period * cols, 0.0f);
    cpu::ref::add_rows(zero.data(), table.data(), spread.data(), rows, cols, period);
    cpu::ref::sum_rows(dy.data(), summed.data(), rows, cols, period);
    EXPECT_NEAR(dot(dy.data(), spread.data(), rows * cols),
                dot(summed.data(), table.data(), period * cols), 1e-4);
  }
}

// ---------------------------------------------------------------- adaLN

TEST(LayerKernels, ModulateAndGatedAddFastEqualRefAndGradients) {
  const int64_t batch = 3, tokens = 5, width = 8, stride = 3 * width, n = batch * tokens * width;
  Vec x = random_vector(n, 7), mod = random_vector(batch * stride, 8), f = random_vector(n, 9);
  const Vec dy = random_vector(n, 10);
  const float* shift = mod.data();
  const float* scl = mod.data() + width;
  const float* gate = mod.data() + 2 * width;
  Vec y_ref(n), y_fast(n), o_ref(n), o_fast(n);
  cpu::ref::modulate_forward(x.data(), shift, scl, stride, y_ref.data(), batch, tokens, width);
  cpu::modulate_forward(x.data(), shift, scl, stride, y_fast.data(), batch, tokens, width);
  EXPECT_TRUE(all_close(y_fast, y_ref, 1e-6, 1e-6));
  cpu::ref::gated_add_forward(x.data(), gate, stride, f.data(), o_ref.data(), batch, tokens, width);
  cpu::gated_add_forward(x.data(), gate, stride, f.data(), o_fast.data(), batch, tokens, width);
  EXPECT_TRUE(all_close(o_fast, o_ref, 1e-6, 1e-6));

  Vec dx_ref(n), dx_fast(n), dmod_ref(batch * stride, 0.0f), dmod_fast(batch * stride, 0.0f);
  cpu::ref::modulate_backward(x.data(), scl, stride, dy.data(), dx_ref.data(), dmod_ref.data(),
                              dmod_ref.data() + width, batch, tokens, width);
  cpu::modulate_backward(x.data(), scl, stride, dy.data(), dx_fast.data(), dmod_fast.data(),
                         dmod_fast.data() + width, batch, tokens, width);
  Vec df_ref(n), df_fast(n);
  cpu::ref::gated_add_backward(gate, stride, f.data(), dy.data(), df_ref.data(),
                               dmod_ref.data() + 2 * width, batch, tokens, width);
  cpu::gated_add_backward(gate, stride, f.data(), dy.data(), df_fast.data(),
                          dmod_fast.data() + 2 * width, batch, tokens, width);
  EXPECT_TRUE(all_close(dx_fast, dx_ref, 1e-6, 1e-5));
  EXPECT_TRUE(all_close(df_fast, df_ref, 1e-6, 1e-5));
  EXPECT_TRUE(all_close(dmod_fast, dmod_ref, 1e-5, 1e-5));

  // backward against central differences of the reference forward: loss = <y, dy> + <o, dy>
  Vec y(n), o(n);
  auto loss = [&] {
    cpu::ref::modulate_forward(x.data(), shift, scl, stride, y.data(), batch, tokens, width);
    cpu::ref::gated_add_forward(x.data(), gate, stride, f.data(), o.data(), batch, tokens, width);
    return dot(y.data(), dy.data(), n) + dot(o.data(), dy.data(), n);
  };
  Vec dx_total = dx_ref;  // modulate's dx plus the gated add's identity path
  for (int64_t i = 0; i < n; ++i) dx_total[i] += dy[i];
  EXPECT_EQ(check_gradient("adaln.x", x.data(), dx_total.data(), n, loss), "");
  EXPECT_EQ(check_gradient("adaln.f", f.data(), df_ref.data(), n, loss), "");
  EXPECT_EQ(check_gradient("adaln.mod", mod.data(), dmod_ref.data(), batch * stride, loss), "");
}

// ---------------------------------------------------------------- gather_dot

TEST(LayerKernels, GatherDotFastEqualsRefWithDroppedRows) {
  const int64_t rows_a = 7, rows_b = 11, cols = 300, n = 20;
  const Vec a = random_vector(rows_a * cols, 11), b = random_vector(rows_b * cols, 12);
  std::vector<int32_t> ia(n), ib(n);
  for (int64_t i = 0; i < n; ++i) {
    ia[i] = static_cast<int32_t>(i % rows_a);
    ib[i] = i % 5 == 3 ? -1 : static_cast<int32_t>((3 * i) % rows_b);  // some dropped
  }
  Vec ref(n), fast(n), identity(n);
  cpu::ref::gather_dot(a.data(), ia.data(), b.data(), ib.data(), ref.data(), n, cols);
  cpu::gather_dot(a.data(), ia.data(), b.data(), ib.data(), fast.data(), n, cols);
  EXPECT_TRUE(all_close(fast, ref, 1e-5 * cols, 1e-5));
  for (int64_t i = 0; i < n; ++i) {
    if (ib[i] < 0) {
      EXPECT_EQ(fast[i], 0.0f);
    }
  }
  // a null index reads row i
  cpu::gather_dot(a.data(), nullptr, a.data(), nullptr, identity.data(), rows_a, cols);
  for (int64_t i = 0; i < rows_a; ++i)
    EXPECT_NEAR(identity[i], dot(a.data() + i * cols, a.data() + i * cols, cols), 1e-3);
}

// ---------------------------------------------------------------- transpose_blocks

TEST(LayerKernels, TransposeBlocksFastEqualsRefAndInverseUndoes) {
  const int64_t a_count = 3, b_count = 4, element = 12;  // bytes per element
  std::vector<int64_t> counts(a_count * b_count);
  for (size_t i = 0; i < counts.size(); ++i) counts[i] = static_cast<int64_t>((i * 7) % 5);  // zeros too
  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0}) * element;
  std::vector<unsigned char> src(total), ref(total), fast(total), back(total);
  for (int64_t i = 0; i < total; ++i) src[i] = static_cast<unsigned char>((i * 31 + 7) % 251);
  cpu::ref::transpose_blocks(src.data(), ref.data(), counts.data(), a_count, b_count, element, false);
  cpu::transpose_blocks(src.data(), fast.data(), counts.data(), a_count, b_count, element, false);
  EXPECT_EQ(fast, ref);
  // block (1, 2) starts, in [b][a] order, after every block of columns 0 and 1 and (0, 2)
  int64_t at_ba = 0, at_ab = 0;
  for (int64_t j = 0; j < 2; ++j)
    for (int64_t i = 0; i < a_count; ++i) at_ba += counts[i * b_count + j];
  at_ba += counts[0 * b_count + 2];
  for (int64_t q = 0; q < 1 * b_count + 2; ++q) at_ab += counts[q];
  for (int64_t e = 0; e < counts[1 * b_count + 2] * element; ++e)
    ASSERT_EQ(fast[at_ba * element + e], src[at_ab * element + e]);
  cpu::transpose_blocks(fast.data(), back.data(), counts.data(), a_count, b_count, element, true);
  EXPECT_EQ(back, src);
  cpu::ref::transpose_blocks(fast.data(), back.data(), counts.data(), a_count, b_count, element,
                             true);
  EXPECT_EQ(back, src);
}

// ---------------------------------------------------------------- limit_to_nodes

TEST(LayerKernels, LimitToNodesFastEqualsRefAndKeepsTheBestNodes) {
  const int64_t rows = 50, experts = 12, nodes = 4;
  const std::vector<int32_t> expert_node = {0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3};
  for (const float bonus : {0.0f, 0.3f}) {
    for (const int64_t keep : {1, 2, 3}) {
      Vec ref = random_vector(rows * experts, 13);
      for (int64_t e = 0; e < experts; ++e) ref[e] = 0.25f;  // row 0: all nodes tie
      Vec fast = ref;
      cpu::ref::limit_to_nodes(ref.data(), rows, experts, expert_node.data(), nodes, keep, 2, 1,
                               bonus);
      cpu::limit_to_nodes(fast.data(), rows, experts, expert_node.data(), nodes, keep, 2, 1,
                          bonus);
      EXPECT_EQ(fast, ref) << "keep " << keep << " bonus " << bonus;
      for (int64_t t = 0; t < rows; ++t) {
        std::vector<bool> kept(nodes, false);
        for (int64_t e = 0; e < experts; ++e)
          if (std::isfinite(fast[t * experts + e])) kept[expert_node[e]] = true;
        EXPECT_EQ(std::count(kept.begin(), kept.end(), true), keep) << "row " << t;
      }
      // row 0 ties every node: the lower nodes win, after the token's own node 1 when
      // the bonus lifts it
      const std::vector<int64_t> order =
          bonus > 0 ? std::vector<int64_t>{1, 0, 2, 3} : std::vector<int64_t>{0, 1, 2, 3};
      for (int64_t i = 0; i < nodes; ++i)
        EXPECT_EQ(std::isfinite(fast[order[i]]), i < keep) << "node " << order[i] << " keep " << keep;
    }
  }
}

// ---------------------------------------------------------------- experts

struct ExpertCase {
  int64_t width = 24, hidden = 16;
  std::vector<int64_t> offsets;  // [E + 1]
  Vec x, w_gate, w_up, w_down;
  ExpertCase(std::vector<int64_t> rows_per_expert, bool gated) {
    offsets.push_back(0);
    for (int64_t r : rows_per_expert) offsets.push_back(offsets.back() + r);
    const int64_t e = static_cast<int64_t>(rows_per_expert.size()), s = offsets.back();
    x = random_vector(s * width, 20);
    if (gated) w_gate = random_vector(e * hidden * width, 21, 0.3f);
    w_up = random_vector(e * hidden * width, 22, 0.3f);
    w_down = random_vector(e * width * hidden, 23, 0.3f);
  }
  int64_t experts() const { return static_cast<int64_t>(offsets.size()) - 1; }
  int64_t slots() const { return offsets.back(); }
  const float* gate() const { return w_gate.empty() ? nullptr : w_gate.data(); }
};

TEST(ExpertFfn, FastEqualsRefForSwigluAndGelu) {
  // skewed counts (one expert over the even share runs with threaded BLAS) and an empty one
  for (const bool gated : {true, false}) {
    ExpertCase c({300, 0, 7, 41, 1}, gated);
    const int64_t s = c.slots(), f = c.hidden, w = c.width, e = c.experts();
    Vec g_ref(s * f), u_ref(s * f), h_ref(s * f), y_ref(s * w);
    Vec g_fast(s * f), u_fast(s * f), h_fast(s * f), y_fast(s * w);
    cpu::ref::expert_ffn_forward(c.x.data(), c.offsets.data(), e, c.gate(), c.w_up.data(),
                                 c.w_down.data(), g_ref.data(), u_ref.data(), h_ref.data(),
                                 y_ref.data(), w, f);
    cpu::expert_ffn_forward(c.x.data(), c.offsets.data(), e, c.gate(), c.w_up.data(),
                            c.w_down.data(), g_fast.data(), u_fast.data(), h_fast.data(),
                            y_fast.data(), w, f);
    EXPECT_TRUE(all_close(y_fast, y_ref, 1e-4, 1e-4)) << (gated ? "swiglu" : "gelu");

    const Vec dy = random_vector(s * w, 24);
    auto run_backward = [&](bool fast, Vec& dx, Vec& dwg, Vec& dwu, Vec& dwd) {
      Vec dh(s * f), dg(s * f), du(s * f);
      dx.assign(s * w, 0.0f);
      dwg.assign(c.w_gate.size(), 0.0f);
      dwu.assign(c.w_up.size(), 0.0f);
      dwd.assign(c.w_down.size(), 0.0f);
      auto fn = fast ? &cpu::expert_ffn_backward : &cpu::ref::expert_ffn_backward;
      fn(c.x.data(), c.offsets.data(), e, c.gate(), c.w_up.data(), c.w_down.data(),
         g_ref.data(), u_ref.data(), h_ref.data(), dy.data(), gated ? dwg.data() : nullptr,
         dwu.data(), dwd.data(), dh.data(), dg.data(), du.data(), dx.data(), w, f);
    };
    Vec dx_ref, dwg_ref, dwu_ref, dwd_ref, dx_fast, dwg_fast, dwu_fast, dwd_fast;
    run_backward(false, dx_ref, dwg_ref, dwu_ref, dwd_ref);
    run_backward(true, dx_fast, dwg_fast, dwu_fast, dwd_fast);
    EXPECT_TRUE(all_close(dx_fast, dx_ref, 1e-4, 1e-4));
    EXPECT_TRUE(all_close(dwu_fast, dwu_ref, 1e-3, 1e-4));
    EXPECT_TRUE(all_close(dwd_fast, dwd_ref, 1e-3, 1e-4));
    EXPECT_TRUE(all_close(dwg_fast, dwg_ref, 1e-3, 1e-4));
  }
}

TEST(ExpertFfn, BackwardMatchesFiniteDifferences) {
  for (const bool gated : {true, false}) {
    ExpertCase c({3, 0, 5}, gated);
    const int64_t s = c.slots(), f = c.hidden, w = c.width, e = c.experts();
    const Vec r = random_vector(s * w, 25);
    Vec g(s * f), u(s * f), h(s * f), y(s * w);
    auto loss = [&] {
      cpu::ref::expert_ffn_forward(c.x.data(), c.offsets.data(), e, c.gate(), c.w_up.data(),
                                   c.w_down.data(), g.data(), u.data(), h.data(), y.data(), w, f);
      return dot(y.data(), r.data(), s * w);
    };
    loss();
    Vec dh(s * f), dg(s * f), du(s * f), dx(s * w), dwg(c.w_gate.size()), dwu(c.w_up.size()),
        dwd(c.w_down.size());
    cpu::expert_ffn_backward(c.x.data(), c.offsets.data(), e, c.gate(), c.w_up.data(),
                             c.w_down.data(), g.data(), u.data(), h.data(), r.data(),
                             gated ? dwg.data() : nullptr, dwu.data(), dwd.data(), dh.data(),
                             dg.data(), du.data(), dx.data(), w, f);
    EXPECT_EQ(check_gradient("experts.x", c.x.data(), dx.data(), s * w, loss), "");
    EXPECT_EQ(check_gradient("experts.w_up", c.w_up.data(), dwu.data(), e * f * w, loss), "");
    EXPECT_EQ(check_gradient("experts.w_down", c.w_down.data(), dwd.data(), e * f * w, loss), "");
    if (gated) {
      EXPECT_EQ(check_gradient("experts.w_gate", c.w_gate.data(), dwg.data(), e * f * w, loss),
                "");
    }
  }
}

// ---------------------------------------------------------------- decoding

TEST(DecodeKernels, RopeAtPositionsAndCachedAttentionFastEqualRef) {
  const int64_t rows = 5, heads = 2, d = 8, width = heads * d, stride = 3 * width;
  const std::vector<int32_t> pos = {0, 3, 7, 1, 12};
  Vec ref = random_vector(rows * stride, 40), fast = ref;
  cpu::ref::rope_apply_at(ref.data() + width, pos.data(), rows, heads, d, stride, 10000.0f);
  cpu::rope_apply_at(fast.data() + width, pos.data(), rows, heads, d, stride, 10000.0f);
  EXPECT_TRUE(all_close(fast, ref, 1e-6, 1e-5));
  // position 0 is the identity
  const Vec x = random_vector(stride, 41);
  Vec y = x;
  const int32_t zero = 0;
  cpu::rope_apply_at(y.data(), &zero, 1, heads, d, stride, 10000.0f);
  EXPECT_EQ(y, x);

  // two sequences' caches of 4 and 9 positions; each query attends over its own
  const std::vector<int64_t> len = {4, 9, 1, 9, 4};
  const Vec k0 = random_vector(9 * width, 42), v0 = random_vector(9 * width, 43);
  const Vec k1 = random_vector(9 * width, 44), v1 = random_vector(9 * width, 45);
  const std::vector<const float*> keys = {k0.data(), k1.data(), k0.data(), k1.data(), k1.data()};
  const std::vector<const float*> values = {v0.data(), v1.data(), v0.data(), v1.data(), v1.data()};
  Vec out_ref(rows * width), out_fast(rows * width);
  cpu::ref::attention_decode(ref.data(), stride, keys.data(), values.data(), len.data(),
                             out_ref.data(), rows, heads, d);
  cpu::attention_decode(ref.data(), stride, keys.data(), values.data(), len.data(),
                        out_fast.data(), rows, heads, d);
  EXPECT_TRUE(all_close(out_fast, out_ref, 1e-5, 1e-4));
  // one cached position: the output is that position's value
  for (int64_t j = 0; j < width; ++j) EXPECT_NEAR(out_fast[2 * width + j], v0[j], 1e-6);
}

// ---------------------------------------------------------------- the op API

TEST(OpApi, DispatchesToTheCpuKernels) {
  Vec a = random_vector(6 * 4, 30), b = random_vector(5 * 4, 31), c(6 * 5), expected(6 * 5);
  ops::matmul(view(a, {6, 4}), view(b, {5, 4}), view(c, {6, 5}), false, true);
  cpu::ref::matmul(a.data(), b.data(), expected.data(), 6, 5, 4, false, true, 1.0f, 0.0f);
  EXPECT_TRUE(all_close(c, expected, 1e-5, 1e-5));
  // a weight of more dims is read as the matrix of its rows: (3, 2, 4) is (6, 4)
  Vec c2(5 * 6);
  ops::matmul(view(b, {5, 4}), view(a, {3, 2, 4}), view(c2, {5, 6}), false, true);
  for (int64_t i = 0; i < 5; ++i)
    for (int64_t j = 0; j < 6; ++j) EXPECT_NEAR(c2[i * 6 + j], c[j * 5 + i], 1e-5);
}

// The message of the moe::Error `fn` throws ("" when it throws none).
template <class Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(OpApi, RejectsShapesThatDoNotFitNamingTheOp) {
  Vec a(6 * 4), b(5 * 3), c(6 * 5);
  const std::string chain = error_of([&] {
    ops::matmul(view(a, {6, 4}), view(b, {5, 3}), view(c, {6, 5}), false, true);
  });
  EXPECT_NE(chain.find("matmul"), std::string::npos) << chain;
  const std::string out = error_of([&] { ops::add(view(a, {24}), view(a, {24}), view(b, {15})); });
  EXPECT_NE(out.find("add: out"), std::string::npos) << out;
  const std::string chunk = error_of([&] {
    ops::modulate_forward(view(a, {6, 4}), view(c, {2, 5}), 0, 1, view(a, {6, 4}));
  });
  EXPECT_NE(chunk.find("modulate_forward: chunk 1"), std::string::npos) << chunk;
}

TEST(OpApi, NamesTheDtypeAndDeviceWithoutAKernel) {
  Buffer half(Device::kCpu, DType::kBF16);
  const Tensor h = half.view({4, 4});
  EXPECT_EQ(h.data, nullptr);  // no fp32 view of bf16 storage
  EXPECT_NE(h.raw(), nullptr);
  EXPECT_EQ(h.bytes(), 32u);
  Vec x(16);
  const std::string msg = error_of([&] { ops::add(h, view(x, {4, 4}), view(x, {4, 4})); });
  EXPECT_NE(msg.find("add: no kernel for bf16 on cpu"), std::string::npos) << msg;
  const std::string typed = error_of([&] { (void)h.ptr<float>(); });
  EXPECT_NE(typed.find("holds bf16, read as fp32"), std::string::npos) << typed;
  EXPECT_NE(h.ptr<bf16>(), nullptr);
  // device memory needs the CUDA backend (and a GPU); a CPU-only build says so
#ifndef MOE_WITH_CUDA
  const std::string cuda = error_of([] { Buffer(Device::kCuda).resize(8); });
  EXPECT_NE(cuda.find("no CUDA backend"), std::string::npos) << cuda;
#endif
}

TEST(OpApi, BufferKeepsItsDtypeAcrossMovesAndSlices) {
  Buffer ids(Device::kCpu, DType::kI32);
  Tensor t = ids.view({3, 2});
  t.ptr<int32_t>()[5] = 7;
  Buffer moved = std::move(ids);
  EXPECT_EQ(moved.dtype(), DType::kI32);
  EXPECT_EQ(moved.size(), 6);
  const Tensor row = moved.view_of({3, 2}).slice_rows(2, 1);
  EXPECT_EQ(row.dtype, DType::kI32);
  EXPECT_EQ(row.ptr<int32_t>()[1], 7);
}

}  // namespace
}  // namespace moe
