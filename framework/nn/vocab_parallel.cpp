#include "framework/nn/vocab_parallel.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "framework/kernels/ops.h"
#include "framework/nn/sequence_parallel.h"
#include "framework/nn/tp_linear.h"

namespace moe {

namespace {

// This rank's rows of a (V, C) table split along the vocabulary.
Param& add_vocab_block(ParamStore& store, const std::string& name, int64_t vocab,
                       int64_t width, Init init, Communicator* tp, VocabRange range) {
  MOE_CHECK(range.size() > 0, name, ": tp rank ", tp_rank(tp), " of ", tp_size(tp),
            " holds no row of a vocabulary of ", vocab);
  const Shard shard = tp ? Shard::kVocab : Shard::kReplicated;
  return store.add_shard({name, Shape{vocab, width}, shard, init}, Shape{range.size(), width},
                         {range.begin, 0});
}

}  // namespace

VocabRange vocab_range(int64_t vocab, int tp, int rank) {
  const int64_t block = (vocab + tp - 1) / tp;
  return {std::min(vocab, rank * block), std::min(vocab, (rank + 1) * block)};
}

VocabParallelEmbedding::VocabParallelEmbedding(ParamStore& store, const std::string& name,
                                               int64_t vocab, int64_t width, Init init,
                                               Communicator* tp)
    : tp_(tp),
      range_(vocab_range(vocab, tp_size(tp), tp_rank(tp))),
      table_(add_vocab_block(store, name, vocab, width, init, tp, range_)),
      width_(width),
      y_(store.device()),
      mine_(store.device()),
      dy_mine_(store.device()) {}

Tensor VocabParallelEmbedding::forward_all_reduce(const int32_t* ids, int64_t n) {
  Tensor y = lookup(ids, n);
  all_reduce_tp(tp_, y);
  return y;
}

Tensor VocabParallelEmbedding::forward_reduce_scatter(const int32_t* ids, int64_t n) {
  return reduce_scatter_rows(tp_, lookup(ids, n), mine_);
}

void VocabParallelEmbedding::backward_all_gather(Tensor dy) {
  backward(all_gather_rows(tp_, dy, y_));
}

Tensor VocabParallelEmbedding::lookup(const int32_t* ids, int64_t n) {
  ids_.assign(ids, ids + n);
  Tensor y = y_.view({n, width_});
  // row i = my table row of ids[i]; -1 (zeros): another rank's row, added in the reduction
  std::vector<int32_t> row(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    row[i] = ids[i] >= range_.begin && ids[i] < range_.end
                 ? static_cast<int32_t>(ids[i] - range_.begin)
                 : -1;
  ops::permute_rows(table_.data(), row, {}, y);
  return y;
}

void VocabParallelEmbedding::backward(Tensor dy) {
  const int64_t n = static_cast<int64_t>(ids_.size());
  MOE_CHECK(dy.rows() == n && dy.cols() == width_, "VocabParallelEmbedding: gradient shape ",
            dy.shape.str());
  // my ids in token order (their rows of dy, their rows of the table block): the sums
  // over repeated ids run in token order
  std::vector<int32_t> rows, mine;
  for (int64_t i = 0; i < n; ++i)
    if (ids_[i] >= range_.begin && ids_[i] < range_.end) {
      rows.push_back(static_cast<int32_t>(i));
      mine.push_back(static_cast<int32_t>(ids_[i] - range_.begin));
    }
  Tensor d = dy;
  if (static_cast<int64_t>(rows.size()) < n) {
    d = dy_mine_.view({static_cast<int64_t>(rows.size()), width_});
    ops::permute_rows(dy, rows, {}, d);
  }
  ops::embedding_backward(d, mine, table_.dgrad());
}

VocabParallelHead::VocabParallelHead(ParamStore& store, const std::string& name,
                                     int64_t width, int64_t vocab, Init init,
                                     Communicator* tp)
    : tp_(tp),
      range_(vocab_range(vocab, tp_size(tp), tp_rank(tp))),
      local_(add_vocab_block(store, name, vocab, width, init, tp, range_), nullptr),
      dlogits_(store.device()),
      dh_mine_(store.device()) {}

void VocabParallelHead::forward_loss_all_reduce(Tensor h, const int32_t* targets, float scale,
                                                float* losses) {
  rows_ = h.rows();
  const Tensor logits = local_.forward(h);  // (N, V_r)
  Tensor dlogits = dlogits_.view(logits.shape);
  const bool host = logits.device == Device::kCpu;
  const Tensor x = host ? logits : logits_host_.view(logits.shape);
  const Tensor dx = host ? dlogits : dlogits_host_.view(logits.shape);
  if (!host) ops::copy(logits, x);  // device -> host
  vocab_parallel_cross_entropy(x.data, range_, targets, losses, dx.data, scale, rows_, tp_);
  if (!host) ops::copy(dx, dlogits);  // host -> device
}

Tensor VocabParallelHead::logits(Tensor h) {
  MOE_CHECK(tp_size(tp_) == 1, "VocabParallelHead::logits: the logits of ", tp_size(tp_),
            " tp ranks would need gathering");
  return local_.forward(h);  // (N, V)
}

Tensor VocabParallelHead::backward_all_reduce() {
  Tensor dh = local_.backward(dlogits_.view_of({rows_, range_.size()}));
  all_reduce_tp(tp_, dh);
  return dh;
}

Tensor VocabParallelHead::backward_reduce_scatter() {
  return reduce_scatter_rows(
      tp_, local_.backward(dlogits_.view_of({rows_, range_.size()})), dh_mine_);
}

void vocab_parallel_cross_entropy(const float* logits, VocabRange range,
                                  const int32_t* targets, float* losses, float* dlogits,
                                  float scale, int64_t rows, Communicator* tp) {
  const int64_t cols = range.size();
  std::vector<float> row_max(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = logits + r * cols;
    row_max[r] = *std::max_element(x, x + cols);
  }
  if (tp_size(tp) > 1) tp->all_reduce<float>(row_max, ReduceOp::kMax);
  // [S_n | z_n]: sum of exp over my columns, and the target's logit if it is mine
  std::vector<float> sums(static_cast<size_t>(2 * rows), 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = logits + r * cols;
    double s = 0.0;
    for (int64_t c = 0; c < cols; ++c) s += std::exp(static_cast<double>(x[c] - row_max[r]));
    sums[r] = static_cast<float>(s);
    const int64_t t = targets[r];
    if (t >= range.begin && t < range.end) sums[rows + r] = x[t - range.begin];
  }
  if (tp_size(tp) > 1) tp->all_reduce<float>(sums);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = targets[r];
    const float* x = logits + r * cols;
    float* dx = dlogits + r * cols;
    if (t < 0) {  // ignored position: no loss, no gradient
      losses[r] = 0.0f;
      std::fill_n(dx, cols, 0.0f);
      continue;
    }
    const float sum = sums[r], m = row_max[r];
    losses[r] = static_cast<float>(std::log(static_cast<double>(sum)) + m - sums[rows + r]);
    const float p_scale = scale / sum;
    for (int64_t c = 0; c < cols; ++c) dx[c] = p_scale * std::exp(x[c] - m);
    if (t >= range.begin && t < range.end) dx[t - range.begin] -= scale;
  }
}

}  // namespace moe
