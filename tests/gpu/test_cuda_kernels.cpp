// Every CUDA kernel of the op API against its CPU reference twin (moe::cpu::ref, the
// executable spec) on random shapes with the edge cases: zero rows, a single row or
// column, odd widths, K = E, experts without tokens, dropped slots (-1), repeated ids.
// Tolerances: element-wise fp32 1e-5 relative; reductions over n terms in fp32 on the
// GPU against double on the CPU, ~n u, so 1e-4 relative of the sum of magnitudes;
// products through cuBLAS (no TF32) the same. Where the kernel promises bits (the
// embedding gradient's order, permutes, top-k indices) the test asks for bits.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <cmath>
#include <numeric>
#include <vector>

#include "framework/kernels/cpu/cpu_ops.h"
#include "framework/kernels/cuda/cuda_ops.h"
#include "framework/kernels/ops.h"
#include "tests/unit/gradcheck.h"

namespace moe {
namespace {

using moe::testing::random_vector;
using Vec = std::vector<float>;

// A CUDA tensor holding `host`, and its buffer.
struct DeviceTensor {
  Buffer buffer{Device::kCuda};
  Tensor t;
  DeviceTensor(const Vec& host, Shape shape) {
    t = buffer.view(shape);
    ops::copy(Tensor(const_cast<float*>(host.data()), shape), t);
  }
  Vec host() const {
    Vec out(static_cast<size_t>(t.numel()));
    ops::copy(t, Tensor(out.data(), t.shape));
    return out;
  }
};

::testing::AssertionResult close(const Vec& actual, const Vec& expected, double rtol,
                                 double atol = 1e-6) {
  if (actual.size() != expected.size())
    return ::testing::AssertionFailure() << "sizes " << actual.size() << " vs " << expected.size();
  for (size_t i = 0; i < actual.size(); ++i) {
    const double err = std::fabs(static_cast<double>(actual[i]) - expected[i]);
    if (!(err <= atol + rtol * std::fabs(expected[i])))  // NaN never passes
      return ::testing::AssertionFailure()
             << "element " << i << ": " << actual[i] << " vs expected " << expected[i];
  }
  return ::testing::AssertionSuccess();
}

TEST(CudaKernels, MatmulAllTransposesBetaAndEdges) {
  struct Dims { int64_t m, n, k; };
  for (const Dims d : {Dims{1, 1, 1}, Dims{7, 33, 5}, Dims{65, 17, 129}, Dims{0, 5, 3},
                       Dims{4, 3, 0}})
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        for (const float beta : {0.0f, 1.0f, 0.5f}) {
          if (d.k == 0 && beta == 0.5f) continue;  // k = 0 scales C only by 0 or 1
          const Vec a = random_vector(d.m * d.k, 1), b = random_vector(d.k * d.n, 2);
          Vec c = random_vector(d.m * d.n, 3);
          DeviceTensor da(a, {ta ? d.k : d.m, ta ? d.m : d.k}),
              db(b, {tb ? d.n : d.k, tb ? d.k : d.n}), dc(c, {d.m, d.n});
          ops::matmul(da.t, db.t, dc.t, ta, tb, 1.5f, beta);
          cpu::ref::matmul(a.data(), b.data(), c.data(), d.m, d.n, d.k, ta, tb, 1.5f, beta);
          EXPECT_TRUE(close(dc.host(), c, 1e-4, 1e-5))
              << d.m << "x" << d.n << "x" << d.k << " ta " << ta << " tb " << tb;
        }
}

TEST(CudaKernels, ElementWise) {
  for (const int64_t n : {int64_t{1}, int64_t{1000}, int64_t{4099}}) {
    const Vec x = random_vector(n, 4, 3.0f), y0 = random_vector(n, 5), g = random_vector(n, 6);
    Vec ref(n), ref2(n);
    DeviceTensor dx(x, {n}), dy(y0, {n}), dg(g, {n}), out(Vec(n), {n}), out2(Vec(n), {n});
    ops::silu_forward(dx.t, out.t);
    cpu::ref::silu_forward(x.data(), ref.data(), n);
    EXPECT_TRUE(close(out.host(), ref, 1e-5));
    ops::silu_backward(dx.t, dg.t, out.t);
    cpu::ref::silu_backward(x.data(), g.data(), ref.data(), n);
    EXPECT_TRUE(close(out.host(), ref, 1e-5));
    ops::gelu_forward(dx.t, out.t);
    cpu::ref::gelu_forward(x.data(), ref.data(), n);
    EXPECT_TRUE(close(out.host(), ref, 1e-5));
    ops::gelu_backward(dx.t, dg.t, out.t);
    cpu::ref::gelu_backward(x.data(), g.data(), ref.data(), n);
    EXPECT_TRUE(close(out.host(), ref, 1e-5));
    ops::swiglu_forward(dx.t, dy.t, out.t);
    cpu::ref::swiglu_forward(x.data(), y0.data(), ref.data(), n);
    EXPECT_TRUE(close(out.host(), ref, 1e-5));
    ops::swiglu_backward(dx.t, dy.t, dg.t, out.t, out2.t);
    cpu::ref::swiglu_backward(x.data(), y0.data(), g.data(), ref.data(), ref2.data(), n);
    EXPECT_TRUE(close(out.host(), ref, 1e-5));
    EXPECT_TRUE(close(out2.host(), ref2, 1e-5));
    ops::add(dx.t, dy.t, out.t);
    cpu::ref::add(x.data(), y0.data(), ref.data(), n);
    EXPECT_EQ(out.host(), ref);
    Vec acc = y0;
    ops::axpy(0.75f, dx.t, dy.t);
    cpu::ref::axpy(0.75f, x.data(), acc.data(), n);
    EXPECT_TRUE(close(dy.host(), acc, 1e-6));
    ops::scale(dy.t, -2.0f);
    cpu::ref::scale(acc.data(), -2.0f, n);
    EXPECT_TRUE(close(dy.host(), acc, 1e-6));
    EXPECT_NEAR(ops::sum_squares(dx.t), cpu::ref::sum_squares(x.data(), n),
                1e-5 * cpu::ref::sum_squares(x.data(), n));
  }
}

TEST(CudaKernels, SumSquaresIsTheSameEveryRun) {
  const int64_t n = (int64_t{1} << 20) + 3;
  DeviceTensor x(random_vector(n, 7), {n});
  const double first = ops::sum_squares(x.t);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(ops::sum_squares(x.t), first);
}

TEST(CudaKernels, SoftmaxNormsAndCrossEntropy) {
  for (const auto& [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 1}, {3, 7}, {33, 257}, {130, 1000}, {0, 5}}) {
    const Vec x = random_vector(rows * cols, 8, 4.0f), dy = random_vector(rows * cols, 9);
    const Vec w = random_vector(cols, 10), b = random_vector(cols, 11);
    Vec ref(rows * cols), ref_dx(rows * cols), stat(rows), stat2(rows);
    DeviceTensor dx_(x, {rows, cols}), ddy(dy, {rows, cols}), dw(w, {cols}), dbias(b, {cols});
    DeviceTensor y(Vec(rows * cols), {rows, cols}), g(Vec(rows * cols), {rows, cols});
    DeviceTensor r1(Vec(rows), {rows}), r2(Vec(rows), {rows});
    ops::softmax_forward(dx_.t, y.t);
    cpu::ref::softmax_forward(x.data(), ref.data(), rows, cols);
    EXPECT_TRUE(close(y.host(), ref, 1e-5));
    ops::softmax_backward(y.t, ddy.t, g.t);
    cpu::ref::softmax_backward(ref.data(), dy.data(), ref_dx.data(), rows, cols);
    EXPECT_TRUE(close(g.host(), ref_dx, 1e-4, 1e-5));

    ops::rmsnorm_forward(dx_.t, dw.t, y.t, r1.t, 1e-6f);
    cpu::ref::rmsnorm_forward(x.data(), w.data(), ref.data(), stat.data(), rows, cols, 1e-6f);
    EXPECT_TRUE(close(y.host(), ref, 1e-5, 1e-5));
    Vec dw_ref = random_vector(cols, 12);
    DeviceTensor ddw(dw_ref, {cols});
    ops::rmsnorm_backward(dx_.t, dw.t, r1.t, ddy.t, g.t, ddw.t);
    cpu::ref::rmsnorm_backward(x.data(), w.data(), stat.data(), dy.data(), ref_dx.data(),
                               dw_ref.data(), rows, cols);
    EXPECT_TRUE(close(g.host(), ref_dx, 1e-4, 1e-5));
    EXPECT_TRUE(close(ddw.host(), dw_ref, 1e-4, 1e-4));

    ops::layernorm_forward(dx_.t, dw.t, dbias.t, y.t, r1.t, r2.t, 1e-6f);
    cpu::ref::layernorm_forward(x.data(), w.data(), b.data(), ref.data(), stat.data(),
                                stat2.data(), rows, cols, 1e-6f);
    EXPECT_TRUE(close(y.host(), ref, 1e-4, 1e-5));
    Vec db_ref = random_vector(cols, 13);
    DeviceTensor ddb(db_ref, {cols});
    ops::layernorm_backward(dx_.t, dw.t, r1.t, r2.t, ddy.t, g.t, ddw.t, ddb.t);
    cpu::ref::layernorm_backward(x.data(), w.data(), stat.data(), stat2.data(), dy.data(),
                                 ref_dx.data(), dw_ref.data(), db_ref.data(), rows, cols);
    EXPECT_TRUE(close(g.host(), ref_dx, 1e-4, 1e-5));
    EXPECT_TRUE(close(ddw.host(), dw_ref, 1e-4, 1e-4));
    EXPECT_TRUE(close(ddb.host(), db_ref, 1e-4, 1e-4));

    std::vector<int32_t> targets(rows);
    for (int64_t r = 0; r < rows; ++r)
      targets[r] = r % 4 == 3 ? -1 : static_cast<int32_t>((r * 7) % cols);
    Vec losses(rows);
    ops::cross_entropy(dx_.t, targets, r1.t, g.t, 0.5f);
    cpu::ref::cross_entropy(x.data(), targets.data(), losses.data(), ref_dx.data(), 0.5f, rows,
                            cols);
    EXPECT_TRUE(close(r1.host(), losses, 1e-5, 1e-5));
    EXPECT_TRUE(close(g.host(), ref_dx, 1e-5, 1e-6));
  }
}

TEST(CudaKernels, RowTablesAndAdaLn) {
  const int64_t batch = 3, tokens = 5, width = 7, stride = 6 * width;
  const int64_t rows = batch * tokens;
  const Vec x = random_vector(rows * width, 14), dy = random_vector(rows * width, 15);
  const Vec table = random_vector(tokens * width, 16), mod = random_vector(batch * stride, 17);
  Vec ref(rows * width), ref2(rows * width);
  DeviceTensor dx_(x, {rows, width}), ddy(dy, {rows, width}), dtab(table, {tokens, width});
  DeviceTensor dmod(mod, {batch, stride}), y(Vec(rows * width), {rows, width});
  DeviceTensor g(Vec(rows * width), {rows, width});
  ops::add_rows(dx_.t, dtab.t, y.t);
  cpu::ref::add_rows(x.data(), table.data(), ref.data(), rows, width, tokens);
  EXPECT_EQ(y.host(), ref);
  for (const int64_t period : {int64_t{1}, tokens}) {
    Vec tab_ref = random_vector(period * width, 18);
    DeviceTensor dt(tab_ref, {period, width});
    ops::sum_rows(ddy.t, dt.t);
    cpu::ref::sum_rows(dy.data(), tab_ref.data(), rows, width, period);
    EXPECT_TRUE(close(dt.host(), tab_ref, 1e-5, 1e-6)) << "period " << period;
  }
  ops::modulate_forward(dx_.t, dmod.t, 0, 1, y.t);
  cpu::ref::modulate_forward(x.data(), mod.data(), mod.data() + width, stride, ref.data(), batch,
                             tokens, width);
  EXPECT_TRUE(close(y.host(), ref, 1e-6));
  Vec dmod_ref = random_vector(batch * stride, 19);
  DeviceTensor ddmod(dmod_ref, {batch, stride});
  ops::modulate_backward(dx_.t, dmod.t, 0, 1, ddy.t, g.t, ddmod.t);
  cpu::ref::modulate_backward(x.data(), mod.data() + width, stride, dy.data(), ref.data(),
                              dmod_ref.data(), dmod_ref.data() + width, batch, tokens, width);
  EXPECT_TRUE(close(g.host(), ref, 1e-6));
  EXPECT_TRUE(close(ddmod.host(), dmod_ref, 1e-5, 1e-6));
  ops::gated_add_forward(dx_.t, dmod.t, 2, ddy.t, y.t);
  cpu::ref::gated_add_forward(x.data(), mod.data() + 2 * width, stride, dy.data(), ref.data(),
                              batch, tokens, width);
  EXPECT_TRUE(close(y.host(), ref, 1e-6));
  ops::gated_add_backward(dmod.t, 2, dx_.t, ddy.t, g.t, ddmod.t);
  cpu::ref::gated_add_backward(mod.data() + 2 * width, stride, x.data(), dy.data(), ref.data(),
                               dmod_ref.data() + 2 * width, batch, tokens, width);
  EXPECT_TRUE(close(g.host(), ref, 1e-6));
  EXPECT_TRUE(close(ddmod.host(), dmod_ref, 1e-5, 1e-6));
}

TEST(CudaKernels, RopeAndAttention) {
  for (const bool causal : {true, false})
    for (const auto& [batch, seq, heads, dim] : std::vector<std::array<int64_t, 4>>{
             {1, 1, 1, 2}, {2, 17, 3, 8}, {3, 64, 4, 16}}) {
      const int64_t rows = batch * seq, width = heads * dim;
      Vec qkv = random_vector(rows * 3 * width, 20);
      DeviceTensor dqkv_in(qkv, {rows, 3 * width});
      ops::rope_apply(dqkv_in.t, batch, heads, dim, width, 10000.0f, false);
      cpu::ref::rope_apply(qkv.data() + width, batch, seq, heads, dim, 3 * width, 10000.0f, false);
      EXPECT_TRUE(close(dqkv_in.host(), qkv, 1e-5, 1e-6));
      const Vec dout = random_vector(rows * width, 21);
      Vec att(batch * heads * seq * seq), out(rows * width), dqkv(rows * 3 * width),
          scratch(att.size());
      DeviceTensor datt(Vec(att.size()), {batch, heads, seq, seq}), dout_d(dout, {rows, width});
      DeviceTensor o(Vec(rows * width), {rows, width}), g(Vec(rows * 3 * width), {rows, 3 * width});
      DeviceTensor s(Vec(att.size()), {batch, heads, seq, seq});
      ops::attention_forward(dqkv_in.t, datt.t, o.t, batch, heads, causal);
      cpu::ref::attention_forward(qkv.data(), att.data(), out.data(), batch, seq, heads, dim,
                                  causal);
      EXPECT_TRUE(close(datt.host(), att, 1e-4, 1e-6));
      EXPECT_TRUE(close(o.host(), out, 1e-4, 1e-5));
      ops::attention_backward(dqkv_in.t, datt.t, dout_d.t, g.t, s.t, batch, heads, causal);
      cpu::ref::attention_backward(qkv.data(), att.data(), dout.data(), dqkv.data(),
                                   scratch.data(), batch, seq, heads, dim, causal);
      EXPECT_TRUE(close(g.host(), dqkv, 1e-4, 1e-5)) << batch << "x" << seq << " causal " << causal;
    }
}

TEST(CudaKernels, RoutingPermutesAndEmbeddings) {
  const int64_t n = 37, e = 8, cols = 13;
  const Vec scores = random_vector(n * e, 22);
  for (const int64_t k : {int64_t{1}, int64_t{3}, e}) {  // K = E included
    Vec values(n * k), ref_values(n * k);
    std::vector<int32_t> idx(n * k), ref_idx(n * k);
    DeviceTensor ds(scores, {n, e}), dv(Vec(n * k), {n, k});
    ops::topk(ds.t, dv.t, idx);
    cpu::ref::topk(scores.data(), ref_values.data(), ref_idx.data(), n, e, k);
    EXPECT_EQ(idx, ref_idx);
    EXPECT_EQ(dv.host(), ref_values);
  }
  const std::vector<int32_t> node{0, 0, 1, 1, 2, 2, 3, 3};
  Vec limited = scores;
  DeviceTensor dl(scores, {n, e});
  ops::limit_to_nodes(dl.t, node, 4, 2, 1, 1, 0.25f);
  cpu::ref::limit_to_nodes(limited.data(), n, e, node.data(), 4, 2, 1, 1, 0.25f);
  EXPECT_EQ(dl.host(), limited);

  const Vec src = random_vector(n * cols, 23);
  std::vector<int32_t> index(2 * n), slot(n * 2);
  Vec scale(2 * n);
  for (int64_t i = 0; i < 2 * n; ++i) {
    index[i] = i % 5 == 4 ? -1 : static_cast<int32_t>((i * 11) % n);
    scale[i] = 0.5f + static_cast<float>(i % 3);
  }
  for (int64_t i = 0; i < 2 * n; ++i)
    slot[i] = i % 7 == 6 ? -1 : static_cast<int32_t>((i * 5) % (2 * n));
  DeviceTensor dsrc(src, {n, cols}), dst(Vec(2 * n * cols), {2 * n, cols});
  Vec ref(2 * n * cols);
  ops::permute_rows(dsrc.t, index, scale, dst.t);
  cpu::ref::permute_rows(src.data(), index.data(), scale.data(), ref.data(), 2 * n, cols);
  EXPECT_EQ(dst.host(), ref);
  DeviceTensor comb(Vec(n * cols), {n, cols});
  Vec comb_ref(n * cols);
  ops::combine_rows(dst.t, slot, scale, comb.t);
  cpu::ref::combine_rows(ref.data(), slot.data(), scale.data(), comb_ref.data(), n, 2, cols);
  EXPECT_TRUE(close(comb.host(), comb_ref, 1e-5, 1e-6));
  Vec dots(n), dots_ref(n);
  std::vector<int32_t> a_row(n);
  for (int64_t i = 0; i < n; ++i) a_row[i] = i % 6 == 5 ? -1 : static_cast<int32_t>(n - 1 - i);
  ops::gather_dot(dsrc.t, a_row, comb.t, {}, dots);
  cpu::ref::gather_dot(src.data(), a_row.data(), comb_ref.data(), nullptr, dots_ref.data(), n,
                       cols);
  EXPECT_TRUE(close(dots, dots_ref, 1e-5, 1e-6));

  const int64_t vocab = 11;
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((i * i) % 7);  // repeats
  const Vec table = random_vector(vocab * cols, 24);
  DeviceTensor dtable(table, {vocab, cols}), emb(Vec(n * cols), {n, cols});
  Vec emb_ref(n * cols);
  ops::embedding_forward(dtable.t, ids, emb.t);
  cpu::ref::embedding_forward(table.data(), ids.data(), emb_ref.data(), n, cols);
  EXPECT_EQ(emb.host(), emb_ref);
  Vec grad_ref = table;
  ops::embedding_backward(dsrc.t, ids, dtable.t);
  cpu::ref::embedding_backward(src.data(), ids.data(), grad_ref.data(), n, cols);
  EXPECT_EQ(dtable.host(), grad_ref);  // the CPU's additions in the CPU's order
}

TEST(CudaKernels, TransposeBlocksAndPatches) {
  const std::vector<int64_t> counts{2, 0, 1, 3, 0, 0, 2, 1, 4, 1, 0, 2};
  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0}), cols = 3;
  const Vec src = random_vector(total * cols, 25);
  for (const bool inverse : {false, true}) {
    DeviceTensor dsrc(src, {total, cols}), dst(Vec(total * cols), {total, cols});
    Vec ref(total * cols);
    ops::transpose_blocks(Device::kCuda, dsrc.t.raw(), dst.t.raw(), counts, 3, 4,
                          cols * sizeof(float), inverse);
    cpu::ref::transpose_blocks(src.data(), ref.data(), counts.data(), 3, 4,
                               cols * sizeof(float), inverse);
    EXPECT_EQ(dst.host(), ref);
  }
  const int64_t batch = 2, channels = 3, height = 8, width = 8, patch = 4;
  const int64_t pixels = batch * channels * height * width;
  const Vec img = random_vector(pixels, 26);
  DeviceTensor dimg(img, {batch, channels, height, width}), dp(Vec(pixels), {pixels});
  Vec ref(pixels), back(pixels);
  ops::patchify(dimg.t, dp.t, patch);
  cpu::ref::patchify(img.data(), ref.data(), batch, channels, height, width, patch);
  EXPECT_EQ(dp.host(), ref);
  DeviceTensor dback(Vec(pixels), {batch, channels, height, width});
  ops::unpatchify(dp.t, dback.t, patch);
  EXPECT_EQ(dback.host(), img);
}

TEST(CudaKernels, GroupedExpertsIncludingEmptyExperts) {
  const int64_t width = 24, hidden = 40;
  for (const bool gated : {true, false}) {
    // expert 1 and the last get no rows; odd counts elsewhere
    const std::vector<int64_t> offsets{0, 5, 5, 22, 23, 23};
    const int64_t experts = 5, s = offsets.back();
    const Vec x = random_vector(s * width, 27), dy = random_vector(s * width, 28);
    const Vec wg = random_vector(experts * hidden * width, 29, 0.2f);
    const Vec wu = random_vector(experts * hidden * width, 30, 0.2f);
    const Vec wd = random_vector(experts * width * hidden, 31, 0.2f);
    Vec gate(s * hidden), up(s * hidden), h(s * hidden), y(s * width);
    cpu::ref::expert_ffn_forward(x.data(), offsets.data(), experts, gated ? wg.data() : nullptr,
                                 wu.data(), wd.data(), gate.data(), up.data(), h.data(), y.data(),
                                 width, hidden);
    DeviceTensor dx(x, {s, width}), ddy(dy, {s, width});
    DeviceTensor dwg(wg, {experts, hidden, width}), dwu(wu, {experts, hidden, width});
    DeviceTensor dwd(wd, {experts, width, hidden});
    DeviceTensor ag(Vec(s * hidden), {s, hidden}), au(Vec(s * hidden), {s, hidden});
    DeviceTensor ah(Vec(s * hidden), {s, hidden}), dyv(Vec(s * width), {s, width});
    const ops::ExpertWeights w{gated ? dwg.t : Tensor(), dwu.t, dwd.t};
    const ops::ExpertActivations acts{ag.t, au.t, ah.t};
    ops::expert_ffn_forward(dx.t, offsets, w, acts, dyv.t);
    EXPECT_TRUE(close(dyv.host(), y, 1e-4, 1e-5));
    EXPECT_TRUE(close(ah.host(), h, 1e-4, 1e-5));
    Vec gwg = random_vector(wg.size(), 32), gwu = random_vector(wu.size(), 33),
        gwd = random_vector(wd.size(), 34);
    DeviceTensor dgwg(gwg, {experts, hidden, width}), dgwu(gwu, {experts, hidden, width});
    DeviceTensor dgwd(gwd, {experts, width, hidden});
    Vec dh(s * hidden), dgate(s * hidden), dup(s * hidden), gx(s * width);
    cpu::ref::expert_ffn_backward(x.data(), offsets.data(), experts, gated ? wg.data() : nullptr,
                                  wu.data(), wd.data(), gate.data(), up.data(), h.data(),
                                  dy.data(), gated ? gwg.data() : nullptr, gwu.data(), gwd.data(),
                                  dh.data(), dgate.data(), dup.data(), gx.data(), width, hidden);
    DeviceTensor s1(Vec(s * hidden), {s, hidden}), s2(Vec(s * hidden), {s, hidden});
    DeviceTensor s3(Vec(s * hidden), {s, hidden}), gdx(Vec(s * width), {s, width});
    ops::expert_ffn_backward(dx.t, offsets, w, acts, ddy.t,
                             {gated ? dgwg.t : Tensor(), dgwu.t, dgwd.t}, {s1.t, s2.t, s3.t},
                             gdx.t);
    EXPECT_TRUE(close(gdx.host(), gx, 1e-4, 1e-5)) << (gated ? "swiglu" : "gelu");
    EXPECT_TRUE(close(dgwu.host(), gwu, 1e-4, 1e-5));
    EXPECT_TRUE(close(dgwd.host(), gwd, 1e-4, 1e-5));
    if (gated) {
      EXPECT_TRUE(close(dgwg.host(), gwg, 1e-4, 1e-5));
    }
  }
}

TEST(CudaKernels, AdamW) {
  const int64_t n = 1001;
  Vec p = random_vector(n, 35), g = random_vector(n, 36), m = random_vector(n, 37, 0.1f);
  Vec v = random_vector(n, 38, 0.1f);
  for (float& x : v) x = std::fabs(x);
  DeviceTensor dp(p, {n}), dg(g, {n}), dm(m, {n}), dv(v, {n});
  for (int64_t step = 1; step <= 3; ++step) {
    ops::adamw(dp.t, dg.t, dm.t, dv.t, {1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, step});
    cpu::ref::adamw(p.data(), g.data(), m.data(), v.data(), n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f,
                    step);
  }
  EXPECT_TRUE(close(dp.host(), p, 1e-6, 1e-7));
  EXPECT_TRUE(close(dm.host(), m, 1e-6, 1e-7));
  EXPECT_TRUE(close(dv.host(), v, 1e-6, 1e-7));
}

// bf16 of an fp32 (finite) by round to nearest, ties to even: the CPU's definition.
uint16_t bf16_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

float bf16_value(uint16_t bits) {
  const uint32_t u = uint32_t{bits} << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// The mixed-precision pieces the bf16 mode builds on: conversion (bits, ties included)
// and bf16 x bf16 products with fp32 sums, against the CPU product of the rounded values.
TEST(CudaKernels, Bf16ConversionAndProducts) {
  const int64_t m = 37, n = 29, k = 515;
  Vec a = random_vector(m * k, 40), b = random_vector(k * n, 41);
  a[0] = 1.00390625f;  // halfway between two bf16 values: ties to even (down)
  a[1] = 1.01171875f;  // halfway, rounds up to even
  DeviceTensor da(a, {m, k}), db(b, {k, n});
  Buffer a16(Device::kCuda, DType::kBF16), b16(Device::kCuda, DType::kBF16);
  const Tensor ta = a16.view({m, k}), tb = b16.view({k, n});
  cuda::convert_to_bf16(da.t.data, ta.ptr<bf16>(), m * k);
  cuda::convert_to_bf16(db.t.data, tb.ptr<bf16>(), k * n);
  std::vector<bf16> got(static_cast<size_t>(m * k));
  ops::copy(ta, Tensor(got.data(), {m, k}, DType::kBF16));
  Vec ra(a.size()), rb(b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(got[i].bits, bf16_bits(a[i])) << "element " << i << " = " << a[i];
    ra[i] = bf16_value(bf16_bits(a[i]));
  }
  for (size_t i = 0; i < b.size(); ++i) rb[i] = bf16_value(bf16_bits(b[i]));
  DeviceTensor back(Vec(a.size()), {m, k});
  cuda::convert_from_bf16(ta.ptr<bf16>(), back.t.data, m * k);
  EXPECT_EQ(back.host(), ra);  // exact

  Vec c = random_vector(m * n, 42), expected = c;
  DeviceTensor dc(c, {m, n});
  cuda::matmul_bf16(ta.ptr<bf16>(), tb.ptr<bf16>(), dc.t.data, m, n, k, false, false, true);
  cpu::ref::matmul(ra.data(), rb.data(), expected.data(), m, n, k, false, false, 1.0f, 1.0f);
  EXPECT_TRUE(close(dc.host(), expected, 1e-4, 1e-4));
}

// max |actual - expected| <= rtol * max |expected|: agreement at bf16 resolution, where
// element-wise relative errors of values near 0 say nothing.
::testing::AssertionResult close_in_norm(const Vec& actual, const Vec& expected, double rtol) {
  double err = 0.0, scale = 0.0;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (!std::isfinite(actual[i])) return ::testing::AssertionFailure() << "element " << i;
    err = std::max(err, std::fabs(static_cast<double>(actual[i]) - expected[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(expected[i])));
  }
  if (err <= rtol * scale) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "max error " << err << " > " << rtol << " x " << scale;
}

// The mixed-precision attention (cuDNN's fused SDPA) against the CPU reference of the bf16
// attention on the same bf16 q, k, v: out within 1e-2 of max |out| (cuDNN rounds O to
// bf16), dq, dk, dv within 2e-2 (bf16 outputs, P rounded per key block), and backward
// repeats bit for bit (deterministic algorithm).
TEST(CudaKernels, MixedAttentionThroughCudnn) {
#ifndef MOE_WITH_CUDNN
  GTEST_SKIP() << "built without cuDNN's frontend";
#endif
  for (const bool causal : {true, false})
    for (const auto& [batch, seq, heads, dim] : std::vector<std::array<int64_t, 4>>{
             {1, 1, 1, 8}, {2, 17, 3, 8}, {2, 130, 4, 64}, {1, 256, 2, 128}}) {
      const int64_t rows = batch * seq, width = heads * dim;
      Vec qkv = random_vector(rows * 3 * width, 50);
      std::vector<bf16> q16(qkv.size());
      cpu::ref::convert_to_bf16(qkv.data(), q16.data(), static_cast<int64_t>(qkv.size()));
      const Vec dout = random_vector(rows * width, 51);
      Vec stats(batch * heads * seq * 2), out(rows * width), dqkv(rows * 3 * width);
      cpu::ref::attention_forward_bf16(q16.data(), stats.data(), out.data(), batch, seq, heads,
                                       dim, causal);
      cpu::ref::attention_backward_bf16(q16.data(), stats.data(), out.data(), dout.data(),
                                        dqkv.data(), batch, seq, heads, dim, causal);

      Buffer qkv16(Device::kCuda, DType::kBF16);
      const Tensor tq = qkv16.view({rows, 3 * width});
      ops::copy(Tensor(q16.data(), tq.shape, DType::kBF16), tq);
      DeviceTensor s(Vec(stats.size()), {batch, heads, seq, 2}), o(Vec(out.size()), {rows, width});
      DeviceTensor d_o(dout, {rows, width}), g(Vec(dqkv.size()), {rows, 3 * width});
      ops::attention_forward_mixed(tq, s.t, o.t, batch, heads, causal);
      EXPECT_TRUE(close_in_norm(o.host(), out, 1e-2)) << batch << "x" << seq << "x" << heads
                                                      << "x" << dim << " causal " << causal;
      ops::attention_backward_mixed(tq, s.t, o.t, d_o.t, g.t, batch, heads, causal);
      const Vec first = g.host();
      EXPECT_TRUE(close_in_norm(first, dqkv, 2e-2)) << batch << "x" << seq << "x" << heads
                                                    << "x" << dim << " causal " << causal;
      ops::attention_backward_mixed(tq, s.t, o.t, d_o.t, g.t, batch, heads, causal);
      EXPECT_EQ(g.host(), first) << "backward is not deterministic";
    }
}

// A CUDA bf16 tensor holding bf16(host) (round to nearest even, on the host).
struct DeviceBf16 {
  Buffer buffer{Device::kCuda, DType::kBF16};
  Tensor t;
  DeviceBf16(const Vec& host, Shape shape) {
    std::vector<bf16> bits(host.size());
    cpu::ref::convert_to_bf16(host.data(), bits.data(), static_cast<int64_t>(host.size()));
    t = buffer.view(shape);
    ops::copy(Tensor(bits.data(), shape, DType::kBF16), t);
  }
  Vec host() const {
    std::vector<bf16> bits(static_cast<size_t>(t.numel()));
    ops::copy(t, Tensor(bits.data(), t.shape, DType::kBF16));
    Vec out(bits.size());
    cpu::ref::convert_from_bf16(bits.data(), out.data(), static_cast<int64_t>(bits.size()));
    return out;
  }
};

// The grouped experts in mixed precision (bf16 operands, fp32 sums) against the CPU
// reference on the same bf16 inputs, with experts without rows: fp32 outputs within 1e-3
// of their maximum, the bf16 ones (h, dgate, dup) within 1e-2 (a sum in another order
// can round to the neighbouring bf16: docs/precision.md).
TEST(CudaKernels, GroupedExpertsInBf16) {
  const int64_t width = 24, hidden = 40;
  for (const bool gated : {true, false}) {
    const std::vector<int64_t> offsets{0, 5, 5, 22, 23, 23};
    const int64_t experts = 5, s = offsets.back();
    const auto round = [](Vec v) {  // the bf16 values of v, as floats
      std::vector<bf16> bits(v.size());
      cpu::ref::convert_to_bf16(v.data(), bits.data(), static_cast<int64_t>(v.size()));
      cpu::ref::convert_from_bf16(bits.data(), v.data(), static_cast<int64_t>(v.size()));
      return v;
    };
    const Vec x = round(random_vector(s * width, 60)), dy = round(random_vector(s * width, 61));
    const Vec wg = round(random_vector(experts * hidden * width, 62, 0.2f));
    const Vec wu = round(random_vector(experts * hidden * width, 63, 0.2f));
    const Vec wd = round(random_vector(experts * width * hidden, 64, 0.2f));
    DeviceBf16 x16(x, {s, width}), dy16(dy, {s, width}), wg16(wg, {experts, hidden, width});
    DeviceBf16 wu16(wu, {experts, hidden, width}), wd16(wd, {experts, width, hidden});
    std::vector<bf16> xb(x.size()), dyb(dy.size()), wgb(wg.size()), wub(wu.size()), wdb(wd.size());
    for (auto [from, to] : {std::pair{&x, &xb}, {&dy, &dyb}, {&wg, &wgb}, {&wu, &wub}, {&wd, &wdb}})
      cpu::ref::convert_to_bf16(from->data(), to->data(), static_cast<int64_t>(from->size()));

    Vec gate(s * hidden), up(s * hidden), y(s * width);
    std::vector<bf16> h(static_cast<size_t>(s * hidden));
    cpu::ref::expert_ffn_forward_bf16(xb.data(), offsets.data(), experts,
                                      gated ? wgb.data() : nullptr, wub.data(), wdb.data(),
                                      gate.data(), up.data(), h.data(), y.data(), width, hidden);
    DeviceTensor ag(Vec(s * hidden), {s, hidden}), au(Vec(s * hidden), {s, hidden});
    DeviceTensor yd(Vec(s * width), {s, width});
    DeviceBf16 hd(Vec(s * hidden), {s, hidden});
    const ops::ExpertWeights w{gated ? wg16.t : Tensor(), wu16.t, wd16.t};
    const ops::ExpertActivations acts{gated ? ag.t : Tensor(), au.t, hd.t};
    ops::expert_ffn_forward(x16.t, offsets, w, acts, yd.t);
    Vec hf(h.size());
    cpu::ref::convert_from_bf16(h.data(), hf.data(), static_cast<int64_t>(h.size()));
    EXPECT_TRUE(close_in_norm(yd.host(), y, 1e-3)) << (gated ? "swiglu" : "gelu");
    EXPECT_TRUE(close_in_norm(au.host(), up, 1e-3));
    EXPECT_TRUE(close_in_norm(hd.host(), hf, 1e-2));

    Vec gwg(wg.size()), gwu(wu.size()), gwd(wd.size()), dh(s * hidden), gx(s * width);
    std::vector<bf16> dgate(static_cast<size_t>(s * hidden)), dup(dgate.size());
    cpu::ref::expert_ffn_backward_bf16(xb.data(), offsets.data(), experts,
                                       gated ? wgb.data() : nullptr, wub.data(), wdb.data(),
                                       gate.data(), up.data(), h.data(), dyb.data(),
                                       gated ? gwg.data() : nullptr, gwu.data(), gwd.data(),
                                       dh.data(), dgate.data(), dup.data(), gx.data(), width,
                                       hidden);
    DeviceTensor dgwg(Vec(wg.size()), {experts, hidden, width});
    DeviceTensor dgwu(Vec(wu.size()), {experts, hidden, width});
    DeviceTensor dgwd(Vec(wd.size()), {experts, width, hidden});
    DeviceTensor dhd(Vec(s * hidden), {s, hidden}), gxd(Vec(s * width), {s, width});
    DeviceBf16 dgd(Vec(s * hidden), {s, hidden}), dud(Vec(s * hidden), {s, hidden});
    ops::expert_ffn_backward(x16.t, offsets, w, acts, dy16.t,
                             {gated ? dgwg.t : Tensor(), dgwu.t, dgwd.t},
                             {gated ? dgd.t : Tensor(), dud.t, dhd.t}, gxd.t);
    EXPECT_TRUE(close_in_norm(gxd.host(), gx, 1e-2)) << (gated ? "swiglu" : "gelu");
    EXPECT_TRUE(close_in_norm(dgwu.host(), gwu, 1e-2));
    EXPECT_TRUE(close_in_norm(dgwd.host(), gwd, 1e-3));
    EXPECT_TRUE(close_in_norm(dhd.host(), dh, 1e-3));
    if (gated) {
      EXPECT_TRUE(close_in_norm(dgwg.host(), gwg, 1e-2));
    }
  }
}

// DiT's loss: dpred element-wise (1e-6), the sum over n terms in double in another order
// (1e-12 relative), the same bits every run, and nothing for n = 0.
TEST(CudaKernels, SquaredError) {
  for (const int64_t n : {int64_t{0}, int64_t{1}, int64_t{4099}, (int64_t{1} << 17) + 5}) {
    const Vec pred = random_vector(n, 43, 2.0f), target = random_vector(n, 44);
    Vec ref(static_cast<size_t>(n));
    DeviceTensor dp(pred, {n}), dt(target, {n}), dd(Vec(static_cast<size_t>(n)), {n});
    const double sum = ops::squared_error(dp.t, dt.t, dd.t, 0.25f);
    const double expected =
        cpu::ref::squared_error(pred.data(), target.data(), ref.data(), 0.25f, n);
    EXPECT_NEAR(sum, expected, 1e-12 * expected) << n;
    EXPECT_TRUE(close(dd.host(), ref, 1e-6)) << n;
    EXPECT_EQ(ops::squared_error(dp.t, dt.t, dd.t, 0.25f), sum) << n;
  }
}

// The LM loss over a vocabulary block: max exact, sums to 1e-6 relative (double sums in
// another order, rounded to fp32), losses and dlogits to 1e-5; ignored targets, targets
// outside the block, a single row and a single column.
TEST(CudaKernels, VocabLoss) {
  struct Dims { int64_t rows, cols, begin; };
  for (const Dims d : {Dims{1, 1, 0}, Dims{5, 257, 0}, Dims{300, 1000, 500}, Dims{0, 7, 0}}) {
    const Vec logits = random_vector(d.rows * d.cols, 45, 5.0f);
    std::vector<int32_t> targets(static_cast<size_t>(d.rows));
    for (int64_t r = 0; r < d.rows; ++r)
      targets[r] = r % 5 == 4 ? -1 : static_cast<int32_t>((r * 37) % (d.begin + d.cols));
    Vec max(d.rows), sums(2 * d.rows), losses(d.rows), dlogits(d.rows * d.cols);
    cpu::ref::vocab_row_max(logits.data(), max.data(), d.rows, d.cols);
    cpu::ref::vocab_row_sums(logits.data(), max.data(), targets.data(), d.begin, sums.data(),
                             d.rows, d.cols);
    cpu::ref::vocab_loss(logits.data(), max.data(), sums.data(), targets.data(), d.begin, 0.5f,
                         losses.data(), dlogits.data(), d.rows, d.cols);
    DeviceTensor dl(logits, {d.rows, d.cols}), dmax(Vec(d.rows), {d.rows}),
        dsums(Vec(2 * d.rows), {2 * d.rows}), dloss(Vec(d.rows), {d.rows}),
        dd(Vec(d.rows * d.cols), {d.rows, d.cols});
    ops::vocab_row_max(dl.t, dmax.t);
    EXPECT_EQ(dmax.host(), max) << d.rows << "x" << d.cols;
    ops::vocab_row_sums(dl.t, dmax.t, targets, d.begin, dsums.t);
    EXPECT_TRUE(close(dsums.host(), sums, 1e-6)) << d.rows << "x" << d.cols;
    ops::vocab_loss(dl.t, dmax.t, dsums.t, targets, d.begin, 0.5f, dloss.t, dd.t);
    EXPECT_TRUE(close(dloss.host(), losses, 1e-5, 1e-5)) << d.rows << "x" << d.cols;
    EXPECT_TRUE(close(dd.host(), dlogits, 1e-5, 1e-6)) << d.rows << "x" << d.cols;
  }
}

// The multi-tensor optimizer ops against the CPU reference per tensor: the clip scale and
// AdamW (1e-6 relative, as AdamW's own test), the sums of squares (1e-12 relative: double
// sums in another order), an empty tensor and one of several chunks; the same bits on a
// second run.
TEST(CudaKernels, MultiTensorAdamWAndSumsOfSquares) {
  const std::vector<int64_t> sizes = {7, 0, (int64_t{1} << 17) + 11, 1};
  const ops::AdamWStep step{1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 4};
  std::vector<Vec> p, g, m, v;
  std::vector<DeviceTensor> dp, dg, dm, dv;
  std::vector<ops::AdamWTensors> tensors;
  std::vector<Tensor> grads;
  for (size_t t = 0; t < sizes.size(); ++t) {
    const int64_t n = sizes[t];
    p.push_back(random_vector(n, 50 + t));
    g.push_back(random_vector(n, 60 + t));
    m.push_back(random_vector(n, 70 + t, 0.1f));
    Vec sq = random_vector(n, 80 + t, 0.1f);
    for (float& e : sq) e = std::fabs(e);
    v.push_back(sq);
  }
  dp.reserve(sizes.size()); dg.reserve(sizes.size()); dm.reserve(sizes.size()); dv.reserve(sizes.size());
  for (size_t t = 0; t < sizes.size(); ++t) {
    dp.emplace_back(p[t], Shape{sizes[t]});
    dg.emplace_back(g[t], Shape{sizes[t]});
    dm.emplace_back(m[t], Shape{sizes[t]});
    dv.emplace_back(v[t], Shape{sizes[t]});
    tensors.push_back({dp[t].t, dg[t].t, dm[t].t, dv[t].t, t != 2});
    grads.push_back(dg[t].t);
  }
  std::vector<double> sums(sizes.size()), again(sizes.size());
  ops::sum_squares_multi(grads, sums);
  ops::sum_squares_multi(grads, again);
  EXPECT_EQ(sums, again);
  ops::adamw_multi(tensors, step, 0.25f);
  for (size_t t = 0; t < sizes.size(); ++t) {
    const int64_t n = sizes[t];
    const double expected = cpu::ref::sum_squares(g[t].data(), n);
    EXPECT_NEAR(sums[t], expected, 1e-12 * expected) << t;
    cpu::ref::scale(g[t].data(), 0.25f, n);
    cpu::ref::adamw(p[t].data(), g[t].data(), m[t].data(), v[t].data(), n, step.lr, step.beta1,
                    step.beta2, step.eps, t != 2 ? step.weight_decay : 0.0f, step.step);
    EXPECT_EQ(dg[t].host(), g[t]) << t;
    EXPECT_TRUE(close(dm[t].host(), m[t], 1e-6)) << t;
    EXPECT_TRUE(close(dv[t].host(), v[t], 1e-6)) << t;
    EXPECT_TRUE(close(dp[t].host(), p[t], 1e-6)) << t;
  }
}

}  // namespace
}  // namespace moe
