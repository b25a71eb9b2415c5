#include "framework/nn/vocab_parallel.h"

#include <algorithm>

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
      dh_mine_(store.device()),
      row_max_(store.device()),
      sums_(store.device()),
      losses_(store.device()) {}

void VocabParallelHead::forward_loss_all_reduce(Tensor h, const int32_t* targets, float scale,
                                                float* losses) {
  rows_ = h.rows();
  const Tensor logits = local_.forward(h);  // (N, V_r)
  // the losses go to the caller's host memory: directly on the CPU, else through losses_
  const Tensor host_losses(losses, Shape{rows_});
  const Tensor out = logits.device == Device::kCpu ? host_losses : losses_.view({rows_});
  vocab_parallel_cross_entropy(logits, range_, {targets, static_cast<size_t>(rows_)}, scale,
                               tp_, out, dlogits_.view(logits.shape), row_max_.view({rows_}),
                               sums_.view({2 * rows_}));
  if (out.data != host_losses.data) ops::copy(out, host_losses);
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

void vocab_parallel_cross_entropy(Tensor logits, VocabRange range,
                                  std::span<const int32_t> targets, float scale,
                                  Communicator* tp, Tensor losses, Tensor dlogits,
                                  Tensor row_max, Tensor sums) {
  const size_t rows = static_cast<size_t>(logits.rows());
  ops::vocab_row_max(logits, row_max);
  if (tp_size(tp) > 1) tp->all_reduce<float>({row_max.data, rows}, ReduceOp::kMax);
  // [S_n | z_n]: sum of exp over my columns, and the target's logit if it is mine
  ops::vocab_row_sums(logits, row_max, targets, range.begin, sums);
  if (tp_size(tp) > 1) tp->all_reduce<float>({sums.data, 2 * rows});
  ops::vocab_loss(logits, row_max, sums, targets, range.begin, scale, losses, dlogits);
}

}  // namespace moe
