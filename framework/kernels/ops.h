#pragma once
// The op API: the one way layers, the MoE layer, the dispatchers, the optimizer and the
// models run a kernel. Each op takes Tensors (which carry their device and dtype),
// checks that the shapes fit together, and calls the kernel of that device and dtype:
//
//   ops::<op>  ->  moe::cpu::<op>        fp32 on the CPU (framework/kernels/cpu/)
//                  moe::cuda::<op>       fp32 on the GPU, with the CUDA backend
//                                        (framework/kernels/cuda/: the same kernel list;
//                                        the rank's GPU is framework/kernels/device.h)
//
// An op asked for a (device, dtype) it has no kernel for fails with a moe::Error naming
// the op, the device and the dtype. Every CPU kernel has a reference twin
// (moe::cpu::ref::<op>) that the tests compare it with.
//
// Conventions: row-major, contiguous views; a Tensor read as a matrix is (rows, cols)
// with rows = all leading dims (Tensor::rows()). Shapes in comments use the glossary of
// docs/architecture.md (B batch, T sequence, C width, H heads, D head dim, E experts,
// K top-k, F expert width, V vocabulary, N rows/tokens, S slots). "accumulate" means +=,
// otherwise outputs are overwritten. Index arrays (token ids, slots, expert choices) are
// host spans of int32 (a CUDA kernel uploads them). Backward ops never allocate.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "framework/tensor/tensor.h"

namespace moe::ops {

// ---- the process's kernels ----

// Prepares the CPU kernels: selects OpenBLAS's AVX-512 GEMM when the CPU has it, which
// re-executes the program once with OPENBLAS_CORETYPE set. Call it first thing in
// main(), before MPI_Init; it returns normally when nothing needs changing.
void select_cpu_kernels(char** argv);
// The CPU GEMM in use, e.g. "OpenBLAS SkylakeX", for the start-up line.
std::string cpu_gemm_name();
// Threads a CPU kernel may use on this rank.
int num_threads();
// The bf16 GEMM (train.precision = bf16), e.g. "oneDNN 2.6.3 gemm:jit, ISA
// avx512_core_bf16", and whether it runs on bf16 instructions: without them the bf16
// products run as fp32 GEMMs on widened operands (same results, about half the speed).
std::string cpu_bf16_gemm_name();
bool cpu_bf16_gemm_native();

// ---- matrix products ----

// c = alpha op(a) op(b) + beta c. op(a) is (m, k): a is (m, k), or (k, m) when trans_a;
// op(b) is (k, n): b is (k, n), or (n, k) when trans_b; c is (m, n). Each operand is
// read as a matrix (Tensor::rows(), Tensor::cols()). a and b are both fp32 or both bf16
// (mixed precision: exact products summed in fp32); c is fp32. With bf16 operands
// alpha is 1 and beta 0 (overwrite) or 1 (accumulate).
void matmul(Tensor a, Tensor b, Tensor c, bool trans_a, bool trans_b, float alpha = 1.0f,
            float beta = 0.0f);

// dst = src in dst's dtype, same element count: fp32 -> bf16 rounds to nearest even
// (framework/core/bf16.h), bf16 -> fp32 is exact.
void convert(Tensor src, Tensor dst);

// The routed experts' weights (or their gradients): gate and up (E_local, F, C), down
// (E_local, C, F); gate empty for GELU experts (up is then fc1 and down fc2).
struct ExpertWeights {
  Tensor gate, up, down;
};
// Per-row intermediates of the experts, (S, F) each: the pre-activations gate and up and
// the hidden h (gate unused by GELU experts).
struct ExpertActivations {
  Tensor gate, up, h;
};
// One FFN per expert on an expert-ordered buffer x (S, C): rows [offsets[i],
// offsets[i+1]) go through local expert i (offsets has E_local + 1 entries, the last S).
//   SwiGLU: y = (silu(x W_gate^T) * (x W_up^T)) W_down^T;  GELU: y = gelu(x W_fc1^T) W_fc2^T
// acts are kept for backward; y (S, C) overwritten.
// Mixed precision: x, the weights (and backward dy) bf16; then acts.h and the backward's
// d_acts.gate, d_acts.up are bf16 (GEMM operands), the rest fp32.
void expert_ffn_forward(Tensor x, std::span<const int64_t> offsets, const ExpertWeights& w,
                        const ExpertActivations& acts, Tensor y);
// dy (S, C) -> dx (S, C); dw accumulates; scratch (S, F) each: d_acts.h, .gate, .up.
void expert_ffn_backward(Tensor x, std::span<const int64_t> offsets, const ExpertWeights& w,
                         const ExpertActivations& acts, Tensor dy, const ExpertWeights& dw,
                         const ExpertActivations& d_acts, Tensor dx);

// ---- element-wise ----

void add(Tensor a, Tensor b, Tensor out);  // out = a + b (out may alias a or b)
void axpy(float alpha, Tensor x, Tensor y);  // y += alpha x
void scale(Tensor x, float alpha);          // x *= alpha
double sum_squares(Tensor x);               // sum of x^2, accumulated in double
void silu_forward(Tensor x, Tensor y);      // y = x sigmoid(x)
void silu_backward(Tensor x, Tensor dy, Tensor dx);
void gelu_forward(Tensor x, Tensor y);      // exact GELU (erf form)
void gelu_backward(Tensor x, Tensor dy, Tensor dx);
void swiglu_forward(Tensor g, Tensor u, Tensor h);  // h = silu(g) * u
void swiglu_backward(Tensor g, Tensor u, Tensor dh, Tensor dg, Tensor du);

// y[r] = x[r] + table[r % table.rows()]: a bias (table (1, C)) or a position table
// (T, C) over (N, C) rows; y may alias x.
void add_rows(Tensor x, Tensor table, Tensor y);
// dtable[r % dtable.rows()] += dy[r]: the table's gradient, rows summed in order.
void sum_rows(Tensor dy, Tensor dtable);

// adaLN-Zero (DiT). mod (B, M*C) holds per image M chunks of C floats; x, y, h, f, out
// are (B*T, C). Chunk indices pick shift, scale and gate:
//   modulate:  y = x * (1 + scale_b) + shift_b
//   gated add: out = h + gate_b * f
// Backward accumulates into the matching chunks of dmod (B, M*C).
void modulate_forward(Tensor x, Tensor mod, int shift_chunk, int scale_chunk, Tensor y);
void modulate_backward(Tensor x, Tensor mod, int shift_chunk, int scale_chunk, Tensor dy,
                       Tensor dx, Tensor dmod);
void gated_add_forward(Tensor h, Tensor mod, int gate_chunk, Tensor f, Tensor out);
void gated_add_backward(Tensor mod, int gate_chunk, Tensor f, Tensor dout, Tensor df,
                        Tensor dmod);

// ---- normalisation, softmax, attention ----

// Row softmax over the columns; backward dx = y * (dy - sum(dy * y)).
void softmax_forward(Tensor x, Tensor y);
void softmax_backward(Tensor y, Tensor dy, Tensor dx);
// RMSNorm over rows of x (N, C), weight w (C), rstd (N) kept; dw accumulates.
void rmsnorm_forward(Tensor x, Tensor w, Tensor y, Tensor rstd, float eps);
void rmsnorm_backward(Tensor x, Tensor w, Tensor rstd, Tensor dy, Tensor dx, Tensor dw);
// LayerNorm over rows; w, b empty for no affine (dw, db then empty); mean, rstd (N) kept.
void layernorm_forward(Tensor x, Tensor w, Tensor b, Tensor y, Tensor mean, Tensor rstd,
                       float eps);
void layernorm_backward(Tensor x, Tensor w, Tensor mean, Tensor rstd, Tensor dy, Tensor dx,
                        Tensor dw, Tensor db);
// Rotary embedding in place on the columns [column, column + H*D) of every row of x
// (B*T, cols): position t of row b*T + t, rotate-half pairs (i, i + D/2). inverse applies
// the transpose rotation (the backward pass).
void rope_apply(Tensor x, int64_t batch, int64_t heads, int64_t head_dim, int64_t column,
                float theta, bool inverse);
// Attention over qkv (B*T, 3*H*D) holding [q | k | v] per row (rope applied): att
// (B, H, T, T) probabilities kept, out (B*T, H*D). Backward: dqkv (B*T, 3*H*D)
// overwritten; scratch (B, H, T, T).
void attention_forward(Tensor qkv, Tensor att, Tensor out, int64_t batch, int64_t heads,
                       bool causal);
void attention_backward(Tensor qkv, Tensor att, Tensor dout, Tensor dqkv, Tensor scratch,
                        int64_t batch, int64_t heads, bool causal);
// The same in mixed precision: qkv bf16 (D even); the products take bf16 operands (the
// probabilities, dout and the score gradients rounded where they are operands); softmax,
// out and the gradients stay fp32. Instead of the probabilities, stats (B, H, T, 2) keeps
// per query row what backward needs to recompute them (no (T, T) matrix per head is kept
// or needs scratch): the CPU its softmax maximum and 1 / sum, the GPU (cuDNN's fused
// attention) its log-sum-exp. Backward takes the forward's out as well (the GPU's flash
// backward reads it; the CPU does not).
void attention_forward_mixed(Tensor qkv, Tensor stats, Tensor out, int64_t batch,
                             int64_t heads, bool causal);
void attention_backward_mixed(Tensor qkv, Tensor stats, Tensor out, Tensor dout, Tensor dqkv,
                              int64_t batch, int64_t heads, bool causal);
// Incremental (KV-cached) decoding. rope_apply_at: rope_apply's rotation of the columns
// [column, column + H*D) of row r of x at position pos[r]. attention_decode: row i of qkv
// holds a query in its first H*D columns (rope applied); it attends over the len[i]
// cached positions of its sequence, keys[i] and values[i] ((len[i], H*D) host rows);
// out (rows, H*D).
void rope_apply_at(Tensor x, std::span<const int32_t> pos, int64_t heads, int64_t head_dim,
                   int64_t column, float theta);
void attention_decode(Tensor qkv, std::span<const float* const> keys,
                      std::span<const float* const> values, std::span<const int64_t> len,
                      Tensor out, int64_t heads);
// Cross-entropy of logits (N, V) against targets [N] (target < 0: ignored): losses (N);
// dlogits = scale (softmax - onehot) unless empty (it may alias logits).
void cross_entropy(Tensor logits, std::span<const int32_t> targets, Tensor losses,
                   Tensor dlogits, float scale);
// Squared error of pred against target (same element count): returns sum (pred -
// target)^2, summed in double (on the CPU in index order; on the GPU over fixed chunks);
// dpred = scale (pred - target).
double squared_error(Tensor pred, Tensor target, Tensor dpred, float scale);
// The LM loss over a block of vocabulary columns: logits (N, V_r) are the columns [begin,
// begin + V_r) of the full logits, targets [N] (< 0: ignored). A row's softmax spans the
// tp ranks' blocks, so the loss is three ops with the tp all-reduces between them
// (framework/nn/vocab_parallel.h):
//   vocab_row_max:  max (N), each row's largest logit
//   vocab_row_sums: sums (2, N): sum exp(logits - max) per row (summed in double), and
//                   the target's logit where this block holds it, else 0
//   vocab_loss:     losses (N) = log(sum) + max - target logit (0 where ignored);
//                   dlogits (N, V_r) = scale (softmax - onehot), zeros where ignored
void vocab_row_max(Tensor logits, Tensor max);
void vocab_row_sums(Tensor logits, Tensor max, std::span<const int32_t> targets, int64_t begin,
                    Tensor sums);
void vocab_loss(Tensor logits, Tensor max, Tensor sums, std::span<const int32_t> targets,
                int64_t begin, float scale, Tensor losses, Tensor dlogits);

// ---- routing, dispatch, combine ----

// Top-k of each row of x (N, E), descending, ties to the lower index: values (N, k),
// indices [N*k].
void topk(Tensor x, Tensor values, std::span<int32_t> indices);
// Node-limited routing on scores (N, E) in place: experts outside each row's best `keep`
// nodes get -inf (a node scores the sum of its top-`per_node` experts; token_node gets
// own_node_bonus). expert_node [E].
void limit_to_nodes(Tensor scores, std::span<const int32_t> expert_node, int64_t nodes,
                    int64_t keep, int64_t per_node, int64_t token_node, float own_node_bonus);
// dst[i] = (scale ? scale[i] : 1) src[index[i]] (index < 0: a zero row); dst (n, C) with
// n = index.size(); scale empty or [n]. A bf16 dst (CPU) gets the rows rounded, in the
// same pass.
void permute_rows(Tensor src, std::span<const int32_t> index, std::span<const float> scale,
                  Tensor dst);
// out[t] = sum_k (weight ? weight[t*K+k] : 1) src[slot[t*K+k]] over slot >= 0; out (N, C),
// K = slot.size() / N; weight empty or [N*K].
void combine_rows(Tensor src, std::span<const int32_t> slot, std::span<const float> weight,
                  Tensor out);
// out[i] = <a[a_row[i]], b[b_row[i]]> for i < out.size() (empty index: row i; negative: 0).
void gather_dot(Tensor a, std::span<const int32_t> a_row, Tensor b,
                std::span<const int32_t> b_row, std::span<float> out);
// Rows that lie in two buffers, read as one: row r is head[r] for r < head.rows() and
// tail[r - head.rows()] after (the flat dispatcher's own expert rows where the experts
// wrote them, then the rows it received). head fp32, tail fp32 or bf16, both on the CPU.
struct SplitRows {
  Tensor head, tail;
};
// combine_rows and gather_dot over split rows: the same sums in the same order, so the
// bits equal those of the joined rows.
void combine_rows(SplitRows src, std::span<const int32_t> row, std::span<const float> weight,
                  Tensor out);
void gather_dot(Tensor a, std::span<const int32_t> a_row, SplitRows b,
                std::span<const int32_t> b_row, std::span<float> out);
// The a_count x b_count grid of variable-size blocks (counts[i*b_count + j] elements of
// element_bytes bytes), packed [a][b] in src, written packed [b][a] to dst (inverse: back).
// Raw bytes on `device`: the all-to-alls move rows of any type.
void transpose_blocks(Device device, const void* src, void* dst,
                      std::span<const int64_t> counts, int64_t a_count, int64_t b_count,
                      size_t element_bytes, bool inverse);

// dst = src: same dtype and element count, between any two devices (the host waits
// for a copy it reads, or whose source it may reuse).
void copy(Tensor src, Tensor dst);

// ---- embeddings and images ----

// out[i] = table[ids[i]] (n = ids.size() rows); backward dtable[ids[i]] += dout[i].
void embedding_forward(Tensor table, std::span<const int32_t> ids, Tensor out);
void embedding_backward(Tensor dout, std::span<const int32_t> ids, Tensor dtable);
// x (B, Cin, H, W) <-> patches (B*P, Cin*p*p) for a conv with kernel = stride = p.
void patchify(Tensor x, Tensor patches, int64_t patch);
void unpatchify(Tensor patches, Tensor x, int64_t patch);

// ---- optimizer ----

struct AdamWStep {
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;  // counts from 1
};
// p -= lr (mhat / (sqrt(vhat) + eps) + wd p), with m, v updated from g.
void adamw(Tensor p, Tensor g, Tensor m, Tensor v, const AdamWStep& s);

// ---- many tensors at once (the optimizer over every parameter) ----

// out[t] = sum_squares(x[t]) for every tensor (one launch and one download on the GPU).
void sum_squares_multi(std::span<const Tensor> x, std::span<double> out);
// One parameter's tensors for adamw_multi; decay: s.weight_decay applies (matrices).
struct AdamWTensors {
  Tensor p, g, m, v;
  bool decay;
};
// For every entry: g *= grad_scale unless it is 1 (the global-norm clip, left in g as
// scale() leaves it), then adamw with weight decay s.weight_decay or 0. One launch on the
// GPU; on the CPU the per-tensor kernels in order (their bits).
void adamw_multi(std::span<const AdamWTensors> tensors, const AdamWStep& s, float grad_scale);

}  // namespace moe::ops
