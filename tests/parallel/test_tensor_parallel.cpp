// mpi-ranks: 1 2 4
// Column- and row-parallel linear layers over tp = world against the unsharded Linear
// with the same initial weights: outputs, input gradients and every weight and bias
// gradient block, alone and chained as a Megatron MLP (column -> GELU -> row, one
// all-reduce each way). The layers built from them likewise against their unsharded
// selves: attention split by heads, the SwiGLU and GELU MLPs, and the vocabulary-
// parallel embedding, LM head and cross-entropy on a vocabulary tp does not divide; and
// the whole MoE language model: same losses, every gradient block, and routing plans
// identical on every tp rank (the router sees the same replicated input on each).
// Sequence parallelism: the MLPs and attention fed each rank's rows give that rank's
// rows of the unsharded output and input gradient, with the same bytes as the
// all-reduces they replace; the MoE language model with sequence parallelism (router
// over the tp ranks' distinct rows, norm and router gradients summed over tp by the
// gradient sync) equals one process, with the same routing plan row for row.
//
// Checks after a collective use EXPECT (not ASSERT): a rank leaving a test early would
// leave the others waiting in the next collective.

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "framework/kernels/cpu/cpu_ops.h"
#include "framework/kernels/ops.h"
#include "framework/moe/dispatcher.h"
#include "framework/nn/attention.h"
#include "framework/nn/linear.h"
#include "framework/nn/mlp.h"
#include "framework/nn/sequence_parallel.h"
#include "framework/nn/tp_linear.h"
#include "framework/nn/vocab_parallel.h"
#include "framework/parallel/grad_sync.h"
#include "framework/parallel/mpi_communicator.h"
#include "models/moe_gpt/moe_gpt.h"
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
  ColumnParallelLinear column(tp_store, "w", kIn, kOut, Init::normal(0.3f), &tp, "b");
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
  RowParallelLinear row(tp_store, "w", kIn, kOut, Init::normal(0.3f), &tp, "b");
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
  ColumnParallelLinear tp_fc1(tp_store, "fc1", kIn, hidden, Init::normal(0.4f), &tp);
  RowParallelLinear tp_fc2(tp_store, "fc2", hidden, kIn, Init::normal(0.4f), &tp);
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

// The block [offset, offset + local_shape) of the logical tensor `full` (row-major,
// of shape `local.spec.shape`): what `local` must hold.
std::vector<float> logical_block(const float* full, const Param& local) {
  const Shape& g = local.spec.shape;
  const Shape& l = local.local_shape;
  std::vector<float> out;
  std::array<int64_t, Shape::kMaxDims> idx{};
  for (int64_t i = 0; i < l.numel(); ++i) {
    int64_t at = 0;
    for (int d = 0; d < g.rank; ++d) at = at * g[d] + local.offset[d] + idx[d];
    out.push_back(full[at]);
    for (int d = l.rank - 1; d >= 0; --d) {
      if (++idx[d] < l[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

// Every parameter of `sharded` holds its block of the same parameter's gradient in
// `full`, and its annotation says how it is split.
void expect_grad_blocks(ParamStore& full, ParamStore& sharded, int tp) {
  ASSERT_EQ(full.params().size(), sharded.params().size());
  for (Param& p : sharded.params()) {
    const Param* f = full.find(p.spec.name);
    ASSERT_NE(f, nullptr) << p.spec.name;
    EXPECT_EQ(f->spec.shape, p.spec.shape) << p.spec.name;
    if (tp > 1 && p.numel() < f->numel()) {
      EXPECT_NE(p.spec.shard, Shard::kReplicated) << p.spec.name;
    }
    expect_near(values(p.grad, p.numel()), logical_block(f->grad.data(), p),
                p.spec.name.c_str());
  }
}

TEST(TensorParallel, AttentionSplitByHeadsMatchesTheUnshardedLayer) {
  MpiCommunicator tp(test::mpi_env().world());
  constexpr int64_t kB = 2, kT = 5, kC = 16, kH = 4;  // 4 heads: tp = 1, 2, 4
  for (bool causal_rotary : {true, false}) {
    ParamStore full_store, tp_store;
    SelfAttention full(full_store, "attn", kC, kH, causal_rotary, causal_rotary, 10000.0f,
                       0.3f, 0.2f);
    SelfAttention sharded(tp_store, "attn", kC, kH, causal_rotary, causal_rotary, 10000.0f,
                          0.3f, 0.2f, &tp);
    full_store.initialize(kSeed);
    tp_store.initialize(kSeed);
    EXPECT_EQ(tp_store.find("attn.w_qkv")->local_shape, (Shape{3, kC / tp.size(), kC}));
    std::vector<float> x = pattern(kB * kT * kC, 0.2f, 2), dy = pattern(kB * kT * kC, 0.1f, 5);
    const std::vector<float> y_want = values(full.forward(Tensor(x.data(), {kB * kT, kC}), kB, kT));
    const std::vector<float> dx_want = values(full.backward(Tensor(dy.data(), {kB * kT, kC})));
    expect_near(values(sharded.forward(Tensor(x.data(), {kB * kT, kC}), kB, kT)), y_want, "y");
    expect_near(values(sharded.backward(Tensor(dy.data(), {kB * kT, kC}))), dx_want, "dx");
    expect_grad_blocks(full_store, tp_store, tp.size());
  }
}

template <class M>
void check_mlp(Communicator& tp) {
  constexpr int64_t kC = 6, kF = 12;
  ParamStore full_store, tp_store;
  M full(full_store, "mlp", kC, kF, 0.4f, 0.3f);
  M sharded(tp_store, "mlp", kC, kF, 0.4f, 0.3f, &tp);
  full_store.initialize(kSeed);
  tp_store.initialize(kSeed);
  std::vector<float> x = pattern(kN * kC, 0.2f, 4), dy = pattern(kN * kC, 0.1f, 6);
  const std::vector<float> y_want = values(full.forward(Tensor(x.data(), {kN, kC})));
  const std::vector<float> dx_want = values(full.backward(Tensor(dy.data(), {kN, kC})));
  expect_near(values(sharded.forward(Tensor(x.data(), {kN, kC}))), y_want, "y");
  expect_near(values(sharded.backward(Tensor(dy.data(), {kN, kC}))), dx_want, "dx");
  expect_grad_blocks(full_store, tp_store, tp.size());
}

TEST(TensorParallel, SwiGLUMlpMatchesTheUnshardedLayer) {
  MpiCommunicator tp(test::mpi_env().world());
  check_mlp<SwiGLUMlp>(tp);
}

TEST(TensorParallel, GeluMlpMatchesTheUnshardedLayer) {
  MpiCommunicator tp(test::mpi_env().world());
  check_mlp<GeluMlp>(tp);
}

TEST(TensorParallel, VocabParallelEmbeddingHeadAndLossMatchTheUnshardedOnes) {
  // 11 rows over tp 2: 6 + 5, over tp 4: 3 + 3 + 3 + 2 (a padded last block).
  MpiCommunicator tp(test::mpi_env().world());
  constexpr int64_t kV = 11, kC = 4, kRows = 7;
  const VocabRange mine = vocab_range(kV, tp.size(), tp.rank());
  EXPECT_EQ(mine.begin, tp.rank() * ((kV + tp.size() - 1) / tp.size()));
  ParamStore full_store, tp_store;
  VocabParallelEmbedding full_embed(full_store, "embed", kV, kC, Init::normal(0.5f), nullptr);
  VocabParallelHead full_head(full_store, "head", kC, kV, Init::normal(0.5f), nullptr);
  VocabParallelEmbedding embed(tp_store, "embed", kV, kC, Init::normal(0.5f), &tp);
  VocabParallelHead head(tp_store, "head", kC, kV, Init::normal(0.5f), &tp);
  full_store.initialize(kSeed);
  tp_store.initialize(kSeed);
  // ids and targets in every block, the last row (V - 1) included; one ignored position
  const std::vector<int32_t> ids = {0, 10, 3, 7, 10, 5, 9}, targets = {10, 2, -1, 6, 0, 10, 4};
  const float scale = 1.0f / 6.0f;

  std::vector<float> want_losses(kRows), losses(kRows);
  const Tensor h_full = full_embed.forward_all_reduce(ids.data(), kRows);
  full_head.forward_loss_all_reduce(h_full, targets.data(), scale, want_losses.data());
  const Tensor h = embed.forward_all_reduce(ids.data(), kRows);
  expect_near(values(h), values(h_full), "embedding");
  head.forward_loss_all_reduce(h, targets.data(), scale, losses.data());
  expect_near(losses, want_losses, "losses");
  EXPECT_EQ(losses[2], 0.0f);
  // the unsharded loss is the plain cross-entropy of the full logits
  std::vector<float> logits(kV), ref_loss(1);
  const float* w = full_store.find("head")->value.data();
  for (int64_t v = 0; v < kV; ++v) {
    logits[v] = 0.0f;
    for (int64_t c = 0; c < kC; ++c) logits[v] += h_full.data[c] * w[v * kC + c];
  }
  cpu::cross_entropy(logits.data(), targets.data(), ref_loss.data(), nullptr, 1.0f, 1, kV);
  EXPECT_NEAR(want_losses[0], ref_loss[0], 1e-5f);

  const std::vector<float> dh_want = values(full_head.backward_all_reduce());
  const Tensor dh = head.backward_all_reduce();
  expect_near(values(dh), dh_want, "dh");
  full_embed.backward(Tensor(const_cast<float*>(dh_want.data()), {kRows, kC}));
  embed.backward(dh);
  expect_grad_blocks(full_store, tp_store, tp.size());
}

// Every rank's copy of `v` equals rank 0's, bit for bit.
template <class T>
void expect_same_on_all_ranks(Communicator& comm, const std::vector<T>& v, const char* what) {
  std::vector<T> all(v.size() * static_cast<size_t>(comm.size()));
  comm.all_gather<T>(v, all);
  for (int r = 1; r < comm.size(); ++r)
    for (size_t i = 0; i < v.size(); ++i)
      EXPECT_EQ(all[r * v.size() + i], all[i]) << what << " on tp rank " << r << " at " << i;
}

// rows [r0, r0 + rows) of a row-major matrix with `cols` columns
std::vector<float> row_block(const std::vector<float>& m, int64_t cols, RowRange r) {
  return block(m.data(), cols, r.begin, r.size(), 0, cols);
}

// A tp block fed this rank's rows gives this rank's rows of the unsharded result, and
// exchanges exactly the bytes of the non-sequence-parallel layer's two all-reduces:
// all-gather + reduce-scatter forward and backward, 4 (tp - 1) (N/tp) C floats per rank.
template <class M>
void check_sequence_parallel_mlp(MpiCommunicator& tp) {
  constexpr int64_t kC = 6, kF = 12, kRows = 8;  // rows divisible by tp = 1, 2, 4
  ParamStore full_store, ar_store, sp_store;
  M full(full_store, "mlp", kC, kF, 0.4f, 0.3f);
  M all_reduce(ar_store, "mlp", kC, kF, 0.4f, 0.3f, &tp);
  M sequence(sp_store, "mlp", kC, kF, 0.4f, 0.3f, &tp, /*sequence_parallel=*/true);
  for (ParamStore* s : {&full_store, &ar_store, &sp_store}) s->initialize(kSeed);
  std::vector<float> x = pattern(kRows * kC, 0.2f, 4), dy = pattern(kRows * kC, 0.1f, 6);
  const std::vector<float> y_want = values(full.forward(Tensor(x.data(), {kRows, kC})));
  const std::vector<float> dx_want = values(full.backward(Tensor(dy.data(), {kRows, kC})));
  const RowRange mine = sequence_rows(kRows, &tp);
  std::vector<float> x_r = row_block(x, kC, mine), dy_r = row_block(dy, kC, mine);
  tp.stats() = {};
  expect_near(values(sequence.forward(Tensor(x_r.data(), {mine.size(), kC}))),
              row_block(y_want, kC, mine), "sp y");
  expect_near(values(sequence.backward(Tensor(dy_r.data(), {mine.size(), kC}))),
              row_block(dx_want, kC, mine), "sp dx");
  const int64_t sp_bytes = tp.stats().bytes_sent;
  expect_grad_blocks(full_store, sp_store, tp.size());
  tp.stats() = {};
  all_reduce.forward(Tensor(x.data(), {kRows, kC}));
  all_reduce.backward(Tensor(dy.data(), {kRows, kC}));
  const int64_t analytic = 4 * (tp.size() - 1) * (kRows / tp.size()) * kC * 4;
  EXPECT_EQ(sp_bytes, analytic);
  EXPECT_EQ(tp.stats().bytes_sent, analytic);  // the all-reduce version's ring bytes
}

TEST(TensorParallel, SequenceParallelSwiGLUMlpMatchesTheUnshardedLayerWithEqualBytes) {
  MpiCommunicator tp(test::mpi_env().world());
  check_sequence_parallel_mlp<SwiGLUMlp>(tp);
}

TEST(TensorParallel, SequenceParallelGeluMlpMatchesTheUnshardedLayerWithEqualBytes) {
  MpiCommunicator tp(test::mpi_env().world());
  check_sequence_parallel_mlp<GeluMlp>(tp);
}

TEST(TensorParallel, SequenceParallelAttentionMatchesTheUnshardedLayer) {
  MpiCommunicator tp(test::mpi_env().world());
  constexpr int64_t kB = 2, kT = 6, kC = 16, kH = 4;  // B*T = 12 rows: tp = 1, 2, 4
  ParamStore full_store, tp_store;
  SelfAttention full(full_store, "attn", kC, kH, true, true, 10000.0f, 0.3f, 0.2f);
  SelfAttention sharded(tp_store, "attn", kC, kH, true, true, 10000.0f, 0.3f, 0.2f, &tp,
                        /*sequence_parallel=*/true);
  full_store.initialize(kSeed);
  tp_store.initialize(kSeed);
  std::vector<float> x = pattern(kB * kT * kC, 0.2f, 2), dy = pattern(kB * kT * kC, 0.1f, 5);
  const std::vector<float> y_want = values(full.forward(Tensor(x.data(), {kB * kT, kC}), kB, kT));
  const std::vector<float> dx_want = values(full.backward(Tensor(dy.data(), {kB * kT, kC})));
  const RowRange mine = sequence_rows(kB * kT, &tp);
  std::vector<float> x_r = row_block(x, kC, mine), dy_r = row_block(dy, kC, mine);
  expect_near(values(sharded.forward(Tensor(x_r.data(), {mine.size(), kC}), kB, kT)),
              row_block(y_want, kC, mine), "y");
  expect_near(values(sharded.backward(Tensor(dy_r.data(), {mine.size(), kC}))),
              row_block(dx_want, kC, mine), "dx");
  expect_grad_blocks(full_store, tp_store, tp.size());
}

TEST(TensorParallel, MoeGptMatchesOneProcessAndEveryTpRankRoutesAlike) {
  MpiCommunicator tp(test::mpi_env().world());
  ModelConfig model;
  model.vocab_size = 11;  // blocks 6 + 5 at tp 2, 3 + 3 + 3 + 2 at tp 4
  model.seq_len = 5;
  model.num_layers = 3;
  model.d_model = 16;
  model.num_heads = 4;
  model.dense_layers = 1;
  model.dense_ffn = 12;
  model.init_std = 0.2f;
  MoeConfig moe;
  moe.num_experts = 4;
  moe.top_k = 2;
  moe.expert_ffn = 6;
  moe.num_shared = 1;
  moe.shared_ffn = 8;
  moe.capacity_factor = 1.0f;  // drops: the admission order must agree too
  moe.aux_loss = 0.1f;
  moe.z_loss = 0.01f;
  ParamStore full_store, tp_store;
  LocalDispatcher full_dispatcher, tp_dispatcher;
  MoeGpt full(model, moe, full_store, MoeRuntime::local(full_dispatcher, moe.num_experts));
  const MoeRuntime runtime(MoeRuntimeSpec{.dispatcher = &tp_dispatcher,
                                          .placement = ExpertPlacement::single(moe.num_experts),
                                          .tp = &tp});
  MoeGpt sharded(model, moe, tp_store, runtime);
  full_store.initialize(99);
  tp_store.initialize(99);
  const int64_t batch = 2, n = batch * model.seq_len;
  std::vector<int32_t> inputs, targets;
  for (int64_t i = 0; i < n; ++i) {
    inputs.push_back(static_cast<int32_t>((i * 7 + 3) % model.vocab_size));
    targets.push_back(static_cast<int32_t>((i * 5 + 1) % model.vocab_size));
  }
  const LossParts want = full.forward(inputs.data(), targets.data(), batch);
  const LossParts got = sharded.forward(inputs.data(), targets.data(), batch);
  EXPECT_NEAR(got.ce, want.ce, 1e-5 * want.ce);
  EXPECT_NEAR(got.aux, want.aux, 1e-5 * want.aux);
  EXPECT_NEAR(got.z, want.z, 1e-5 * want.z);
  full.backward();
  sharded.backward();
  expect_grad_blocks(full_store, tp_store, tp.size());

  const std::vector<MoELayer*> full_layers = full.moe_layers(), layers = sharded.moe_layers();
  ASSERT_EQ(layers.size(), 2u);
  for (size_t l = 0; l < layers.size(); ++l) {
    const RoutingPlan& plan = *layers[l]->last_plan();
    const RoutingPlan& want_plan = *full_layers[l]->last_plan();
    expect_same_on_all_ranks(tp, plan.expert, "experts");
    expect_same_on_all_ranks(tp, plan.slot, "slots");
    expect_same_on_all_ranks(tp, plan.weight, "combine weights");
    EXPECT_EQ(plan.expert, want_plan.expert);
    EXPECT_EQ(plan.slot, want_plan.slot);
    EXPECT_TRUE(std::count(plan.slot.begin(), plan.slot.end(), -1) > 0)
        << "layer " << l << " drops nothing: the admission order goes untested";
  }
}

TEST(TensorParallel, SequenceParallelMoeGptMatchesOneProcess) {
  MpiCommunicator tp(test::mpi_env().world());
  ModelConfig model;
  model.vocab_size = 11;
  model.seq_len = 6;  // B*T = 12 rows: 12 / tp per rank
  model.num_layers = 3;
  model.d_model = 16;
  model.num_heads = 4;
  model.dense_layers = 1;
  model.dense_ffn = 12;
  model.init_std = 0.2f;
  MoeConfig moe;
  moe.num_experts = 4;
  moe.top_k = 2;
  moe.expert_ffn = 6;
  moe.num_shared = 1;
  moe.shared_ffn = 8;
  moe.capacity_factor = 1.0f;  // drops: admission must follow the global token order
  moe.aux_loss = 0.1f;
  moe.z_loss = 0.01f;
  ParamStore full_store, sp_store;
  LocalDispatcher full_dispatcher, sp_dispatcher;
  MoeGpt full(model, moe, full_store, MoeRuntime::local(full_dispatcher, moe.num_experts));
  // Every rank holds every expert (ep = 1, edp = tp) and routes its own rows; the
  // token group is the tp group (dp = 1).
  const MoeRuntime runtime(MoeRuntimeSpec{.dispatcher = &sp_dispatcher,
                                          .placement = ExpertPlacement::single(moe.num_experts),
                                          .tokens = &tp,
                                          .tp = &tp,
                                          .sequence_parallel = true});
  MoeGpt sharded(model, moe, sp_store, runtime);
  full_store.initialize(99);
  sp_store.initialize(99);
  const int64_t batch = 2, n = batch * model.seq_len;
  std::vector<int32_t> inputs, targets;
  for (int64_t i = 0; i < n; ++i) {
    inputs.push_back(static_cast<int32_t>((i * 7 + 3) % model.vocab_size));
    targets.push_back(static_cast<int32_t>((i * 5 + 1) % model.vocab_size));
  }
  const LossParts want = full.forward(inputs.data(), targets.data(), batch);
  const LossParts got = sharded.forward(inputs.data(), targets.data(), batch);
  EXPECT_NEAR(got.ce, want.ce, 1e-5 * want.ce);
  EXPECT_NEAR(got.aux, want.aux, 1e-5 * want.aux);
  EXPECT_NEAR(got.z, want.z, 1e-5 * want.z);
  full.backward();
  sharded.backward();
  for (const Param& p : sp_store.params())
    EXPECT_EQ(p.spec.sequence_parallel, tp.size() > 1 && p.spec.shard == Shard::kReplicated)
        << p.spec.name;
  // dp = 1: the dp group is this rank alone; experts and the split regions' replicated
  // parameters are summed over the tp ranks.
  const auto self = tp.split(tp.rank(), 0);
  GradSync sync(sp_store, *self, tp, /*token_shards=*/1, 1 << 20, &tp);
  sync.all_reduce();
  expect_grad_blocks(full_store, sp_store, tp.size());

  const std::vector<MoELayer*> full_layers = full.moe_layers(), layers = sharded.moe_layers();
  const RowRange mine = sequence_rows(n, &tp);
  for (size_t l = 0; l < layers.size(); ++l) {
    const RoutingPlan& plan = *layers[l]->last_plan();
    const RoutingPlan& want_plan = *full_layers[l]->last_plan();
    const auto k = static_cast<size_t>(moe.top_k);
    const std::vector<int32_t> want_experts(want_plan.expert.begin() + mine.begin * k,
                                            want_plan.expert.begin() + mine.end * k);
    EXPECT_EQ(plan.expert, want_experts) << "layer " << l;
    // kept iff kept by one process (slots differ: they index this rank's buffer)
    for (size_t a = 0; a < plan.slot.size(); ++a)
      EXPECT_EQ(plan.slot[a] >= 0, want_plan.slot[mine.begin * k + a] >= 0) << "layer " << l;
    EXPECT_TRUE(std::count(want_plan.slot.begin(), want_plan.slot.end(), -1) > 0)
        << "layer " << l << " drops nothing: the admission order goes untested";
  }
}

}  // namespace
}  // namespace moe
