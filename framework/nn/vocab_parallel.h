#pragma once
// Vocabulary-parallel token embedding, LM head and cross-entropy (Megatron-LM): the
// (V, C) tables are split along the vocabulary over the tp ranks (Shard::kVocab), and
// the loss is computed from each rank's block of the logits without ever gathering
// the (N, V) logits.
//
// Blocks: rank r holds rows [r B, min(V, (r + 1) B)) with B = ceil(V / tp). When tp does
// not divide V the last block is short by tp B - V rows: that padding exists only as a
// missing tail, so a padded row can never win the max nor take a share of the
// softmax, and it carries no loss and no gradient; the logical (V, C) tensor, and so
// the checkpoint, is the same for every tp. Every rank must hold at least one row
// (validated: (tp - 1) B < V).
//
//   embedding  y = sum over tp of (ids in my block ? table_r[id - begin] : 0): one
//              all-reduce of (N, C) forward; backward scatters dy into my rows, no
//              exchange.
//   head       logits_r = h W_r^T (N, V_r); backward dh = sum over tp of dlogits_r W_r,
//              one all-reduce of (N, C).
//   loss       per position n with target t (t < 0: ignored, no loss):
//                m_n  = max over tp of max_v logits_r[n, v]           all-reduce (N)
//                S_n  = sum over tp of sum_v exp(logits_r[n, v] - m_n)  \ one all-reduce
//                z_n  = logits[n, t] from the rank holding t (0 elsewhere) / of (2N)
//                loss_n = log S_n + m_n - z_n
//              dlogits_r[n, v] = scale (exp(logits_r[n, v] - m_n) / S_n - [v == t]).
// Sequence parallelism (framework/nn/sequence_parallel.h): the embedding's all-reduce
// becomes a reduce-scatter (each rank keeps its rows of the sum; backward all-gathers
// dy); the head takes the all-gathered rows, as Megatron-LM does, and its backward
// reduce-scatters dh to each rank's rows.
// A null tp is one rank holding the whole vocabulary (no exchange).

#include <cstdint>
#include <string>
#include <span>
#include <vector>

#include "framework/nn/linear.h"
#include "framework/parallel/communicator.h"

namespace moe {

struct VocabRange {
  int64_t begin = 0, end = 0;  // this rank's rows [begin, end)
  int64_t size() const { return end - begin; }
};
// Rows of rank `rank` of `tp` ranks: blocks of ceil(vocab / tp), the last one short.
VocabRange vocab_range(int64_t vocab, int tp, int rank);

class VocabParallelEmbedding {
 public:
  VocabParallelEmbedding(ParamStore& store, const std::string& name, int64_t vocab,
                         int64_t width, Init init, Communicator* tp);

  // ids (n) in [0, V) -> (n, C), the same on every tp rank. The ids are copied.
  Tensor forward_all_reduce(const int32_t* ids, int64_t n);
  // dy (n, C), the same on every tp rank: dtable_r[id - begin] += dy[i] for my ids.
  void backward(Tensor dy);
  // Sequence parallel: ids (n) -> this rank's rows (n/tp, C) of the embedding.
  Tensor forward_reduce_scatter(const int32_t* ids, int64_t n);
  // dy (n/tp, C), this rank's rows: gathered, then as backward.
  void backward_all_gather(Tensor dy);

 private:
  Tensor lookup(const int32_t* ids, int64_t n);  // my rows of the table, zeros elsewhere

  Communicator* tp_;
  VocabRange range_;
  Param& table_;  // (V_r, C)
  int64_t width_;
  std::vector<int32_t> ids_;  // (n) ids of the last forward
  Buffer y_, mine_;           // (n, C), (n/tp, C)
  Buffer dy_mine_;            // (n_r, C) the gradient rows of my ids (tp > 1)
};

// The LM head with its cross-entropy: logits of the rank's vocabulary block only.
class VocabParallelHead {
 public:
  VocabParallelHead(ParamStore& store, const std::string& name, int64_t width,
                    int64_t vocab, Init init, Communicator* tp);

  // h (N, C) and targets (N) -> losses (N) (0 where target < 0); keeps
  // dlogits = scale * dloss_n/dlogits for backward (scale 1/N: the mean's gradient).
  void forward_loss_all_reduce(Tensor h, const int32_t* targets, float scale, float* losses);
  // Logits (N, V) of h (N, C), for inference on one rank (no tensor parallelism).
  Tensor logits(Tensor h);
  // dh (N, C) of sum_n scale * loss_n, summed over the tp ranks; accumulates dW_r.
  Tensor backward_all_reduce();
  // Sequence parallel: this rank's rows (N/tp, C) of dh, summed over the tp ranks.
  Tensor backward_reduce_scatter();

 private:
  Communicator* tp_;
  VocabRange range_;
  Linear local_;    // over this rank's (V_r, C) block
  Buffer dlogits_;  // (N, V_r)
  Buffer dh_mine_;  // (N/tp, C)
  Buffer row_max_, sums_;  // (N), (2, N) scratch of the loss
  Buffer losses_;          // (N) a device model's losses, before they go to the host
  int64_t rows_ = 0;
};

// The loss above on one rank's block logits (N, V_r) of the columns [range.begin,
// range.end) of the full logits, every tensor on the logits' device: losses (N) and
// dlogits (N, V_r), which may alias logits; row_max (N) and sums (2N) are scratch. Three
// ops (ops::vocab_row_max, vocab_row_sums, vocab_loss) with an all-reduce over tp
// between each two (tp null: one rank holds every column).
void vocab_parallel_cross_entropy(Tensor logits, VocabRange range,
                                  std::span<const int32_t> targets, float scale,
                                  Communicator* tp, Tensor losses, Tensor dlogits,
                                  Tensor row_max, Tensor sums);

}  // namespace moe
