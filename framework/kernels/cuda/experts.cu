// The routed experts of an MoE layer on the GPU: each projection of every local expert
// is one grouped GEMM (cublasGemmGroupedBatchedEx, one group per expert with rows, the
// row counts known on the host), not a loop of small GEMMs; the activations run once
// over all S rows. Twin of cpu::ref::expert_ffn_forward / expert_ffn_backward.

#include <vector>

#include "framework/kernels/cuda/blas.h"
#include "framework/kernels/cuda/context.h"
#include "framework/kernels/cuda/cuda_ops.h"
#include "framework/kernels/cuda/launch.h"

namespace moe::cuda {
namespace {

// The (rows, first row) of each local expert: rows [offsets[i], offsets[i+1]).
struct ExpertRows {
  int64_t first, count;
};

std::vector<ExpertRows> expert_rows(const int64_t* offsets, int64_t num_experts) {
  std::vector<ExpertRows> rows;
  for (int64_t i = 0; i < num_experts; ++i)
    rows.push_back({offsets[i], offsets[i + 1] - offsets[i]});
  return rows;
}

// Per expert i: fn(i, rows) -> RowMajorGemm; experts without rows are left out.
template <class Fn>
std::vector<RowMajorGemm> per_expert(const std::vector<ExpertRows>& rows, Fn fn) {
  std::vector<RowMajorGemm> gemms;
  for (size_t i = 0; i < rows.size(); ++i)
    if (rows[i].count > 0) gemms.push_back(fn(static_cast<int64_t>(i), rows[i]));
  return gemms;
}

// The operands are T (fp32, or bf16 in mixed precision); the products fp32.
// y_i (n_i, out) = x_i (n_i, in) W_i^T with W (E, out, in)
template <class T>
RowMajorGemm input_times_weight_t(const T* x, const T* w, float* y, ExpertRows r,
                                  int64_t i, int64_t in, int64_t out) {
  return {false, true, r.count, out, in, x + r.first * in, in, w + i * out * in, in,
          y + r.first * out, out};
}

// dx_i (n_i, in) = dy_i (n_i, out) W_i with W (E, out, in)
template <class T>
RowMajorGemm grad_times_weight(const T* dy, const T* w, float* dx, ExpertRows r,
                               int64_t i, int64_t in, int64_t out) {
  return {false, false, r.count, in, out, dy + r.first * out, out, w + i * out * in, in,
          dx + r.first * in, in};
}

// dW_i (out, in) += dy_i^T (out, n_i) x_i (n_i, in)
template <class T>
RowMajorGemm weight_grad(const T* dy, const T* x, float* dw, ExpertRows r, int64_t i,
                         int64_t in, int64_t out) {
  return {true, false, out, in, r.count, dy + r.first * out, out, x + r.first * in, in,
          dw + i * out * in, in};
}

}  // namespace

void expert_ffn_forward(const float* x, const int64_t* offsets, int64_t num_experts,
                        const float* w_gate, const float* w_up, const float* w_down,
                        float* gate, float* up, float* h, float* y, int64_t width,
                        int64_t hidden) {
  Context& ctx = current();
  ctx.begin_op();
  const std::vector<ExpertRows> rows = expert_rows(offsets, num_experts);
  const int64_t s = offsets[num_experts];
  if (s == 0) return;
  // up (and gate) (n_i, F) = x_i W_i^T: one call for both projections
  std::vector<RowMajorGemm> first = per_expert(rows, [&](int64_t i, ExpertRows r) {
    return input_times_weight_t(x, w_up, up, r, i, width, hidden);
  });
  if (w_gate)
    for (const RowMajorGemm& g : per_expert(rows, [&](int64_t i, ExpertRows r) {
           return input_times_weight_t(x, w_gate, gate, r, i, width, hidden);
         }))
      first.push_back(g);
  grouped_gemm(ctx, first, 1.0f, 0.0f, GemmTypes::kF32);
  if (w_gate) launch_swiglu_forward(ctx.stream(), gate, up, h, s * hidden);
  else launch_gelu_forward(ctx.stream(), up, h, s * hidden);
  // y (n_i, C) = h_i W_down_i^T
  grouped_gemm(ctx, per_expert(rows, [&](int64_t i, ExpertRows r) {
                 return input_times_weight_t(h, w_down, y, r, i, hidden, width);
               }),
               1.0f, 0.0f, GemmTypes::kF32);
}

void expert_ffn_backward(const float* x, const int64_t* offsets, int64_t num_experts,
                         const float* w_gate, const float* w_up, const float* w_down,
                         const float* gate, const float* up, const float* h, const float* dy,
                         float* dw_gate, float* dw_up, float* dw_down, float* dh, float* dgate,
                         float* dup, float* dx, int64_t width, int64_t hidden) {
  Context& ctx = current();
  ctx.begin_op();
  const std::vector<ExpertRows> rows = expert_rows(offsets, num_experts);
  const int64_t s = offsets[num_experts];
  if (s == 0) return;
  // dW_down += dy^T h;  dh = dy W_down
  grouped_gemm(ctx, per_expert(rows, [&](int64_t i, ExpertRows r) {
                 return weight_grad(dy, h, dw_down, r, i, hidden, width);
               }),
               1.0f, 1.0f, GemmTypes::kF32);
  grouped_gemm(ctx, per_expert(rows, [&](int64_t i, ExpertRows r) {
                 return grad_times_weight(dy, w_down, dh, r, i, hidden, width);
               }),
               1.0f, 0.0f, GemmTypes::kF32);
  if (w_gate) launch_swiglu_backward(ctx.stream(), gate, up, dh, dgate, dup, s * hidden);
  else launch_gelu_backward(ctx.stream(), up, dh, dup, s * hidden);
  // dW_up (and dW_gate) += d^T x: one call
  std::vector<RowMajorGemm> wgrads = per_expert(rows, [&](int64_t i, ExpertRows r) {
    return weight_grad(dup, x, dw_up, r, i, width, hidden);
  });
  if (w_gate)
    for (const RowMajorGemm& g : per_expert(rows, [&](int64_t i, ExpertRows r) {
           return weight_grad(dgate, x, dw_gate, r, i, width, hidden);
         }))
      wgrads.push_back(g);
  grouped_gemm(ctx, wgrads, 1.0f, 1.0f, GemmTypes::kF32);
  // dx = dup W_up (+ dgate W_gate)
  grouped_gemm(ctx, per_expert(rows, [&](int64_t i, ExpertRows r) {
                 return grad_times_weight(dup, w_up, dx, r, i, width, hidden);
               }),
               1.0f, 0.0f, GemmTypes::kF32);
  if (w_gate)
    grouped_gemm(ctx, per_expert(rows, [&](int64_t i, ExpertRows r) {
                   return grad_times_weight(dgate, w_gate, dx, r, i, width, hidden);
                 }),
                 1.0f, 1.0f, GemmTypes::kF32);
}

// Mixed precision: the same products on bf16 operands (fp32 sums), the activations in
// fp32 on gate, up, dh, and their results rounded to the bf16 operands h, dgate, dup, as
// cpu::ref::expert_ffn_forward_bf16 / expert_ffn_backward_bf16 define them.
void expert_ffn_forward_bf16(const bf16* x, const int64_t* offsets, int64_t num_experts,
                             const bf16* w_gate, const bf16* w_up, const bf16* w_down,
                             float* gate, float* up, bf16* h, float* y, int64_t width,
                             int64_t hidden) {
  Context& ctx = current();
  ctx.begin_op();
  const std::vector<ExpertRows> rows = expert_rows(offsets, num_experts);
  const int64_t s = offsets[num_experts];
  if (s == 0) return;
  std::vector<RowMajorGemm> first = per_expert(rows, [&](int64_t i, ExpertRows r) {
    return input_times_weight_t(x, w_up, up, r, i, width, hidden);
  });
  if (w_gate)
    for (const RowMajorGemm& g : per_expert(rows, [&](int64_t i, ExpertRows r) {
           return input_times_weight_t(x, w_gate, gate, r, i, width, hidden);
         }))
      first.push_back(g);
  grouped_gemm(ctx, first, 1.0f, 0.0f, GemmTypes::kBF16);
  float* h32 = ctx.scratch<float>(static_cast<size_t>(s * hidden));  // (S, F)
  if (w_gate) launch_swiglu_forward(ctx.stream(), gate, up, h32, s * hidden);
  else launch_gelu_forward(ctx.stream(), up, h32, s * hidden);
  launch_to_bf16(ctx.stream(), h32, h, s * hidden);
  grouped_gemm(ctx, per_expert(rows, [&](int64_t i, ExpertRows r) {
                 return input_times_weight_t(static_cast<const bf16*>(h), w_down, y, r, i,
                                             hidden, width);
               }),
               1.0f, 0.0f, GemmTypes::kBF16);
}

void expert_ffn_backward_bf16(const bf16* x, const int64_t* offsets, int64_t num_experts,
                              const bf16* w_gate, const bf16* w_up, const bf16* w_down,
                              const float* gate, const float* up, const bf16* h,
                              const bf16* dy, float* dw_gate, float* dw_up, float* dw_down,
                              float* dh, bf16* dgate, bf16* dup, float* dx, int64_t width,
                              int64_t hidden) {
  Context& ctx = current();
  ctx.begin_op();
  const std::vector<ExpertRows> rows = expert_rows(offsets, num_experts);
  const int64_t s = offsets[num_experts];
  if (s == 0) return;
  // dW_down += dy^T h;  dh = dy W_down
  grouped_gemm(ctx, per_expert(rows, [&](int64_t i, ExpertRows r) {
                 return weight_grad(dy, h, dw_down, r, i, hidden, width);
               }),
               1.0f, 1.0f, GemmTypes::kBF16);
  grouped_gemm(ctx, per_expert(rows, [&](int64_t i, ExpertRows r) {
                 return grad_times_weight(dy, w_down, dh, r, i, hidden, width);
               }),
               1.0f, 0.0f, GemmTypes::kBF16);
  const int64_t n = s * hidden;
  float* dup32 = ctx.scratch<float>(static_cast<size_t>(n));  // (S, F)
  if (w_gate) {
    float* dgate32 = ctx.scratch<float>(static_cast<size_t>(n));
    launch_swiglu_backward(ctx.stream(), gate, up, dh, dgate32, dup32, n);
    launch_to_bf16(ctx.stream(), dgate32, dgate, n);
  } else {
    launch_gelu_backward(ctx.stream(), up, dh, dup32, n);
  }
  launch_to_bf16(ctx.stream(), dup32, dup, n);
  const bf16* dup16 = dup;
  const bf16* dgate16 = dgate;
  // dW_up (and dW_gate) += d^T x: one call
  std::vector<RowMajorGemm> wgrads = per_expert(rows, [&](int64_t i, ExpertRows r) {
    return weight_grad(dup16, x, dw_up, r, i, width, hidden);
  });
  if (w_gate)
    for (const RowMajorGemm& g : per_expert(rows, [&](int64_t i, ExpertRows r) {
           return weight_grad(dgate16, x, dw_gate, r, i, width, hidden);
         }))
      wgrads.push_back(g);
  grouped_gemm(ctx, wgrads, 1.0f, 1.0f, GemmTypes::kBF16);
  // dx = dup W_up (+ dgate W_gate)
  grouped_gemm(ctx, per_expert(rows, [&](int64_t i, ExpertRows r) {
                 return grad_times_weight(dup16, w_up, dx, r, i, width, hidden);
               }),
               1.0f, 0.0f, GemmTypes::kBF16);
  if (w_gate)
    grouped_gemm(ctx, per_expert(rows, [&](int64_t i, ExpertRows r) {
                   return grad_times_weight(dgate16, w_gate, dx, r, i, width, hidden);
                 }),
                 1.0f, 1.0f, GemmTypes::kBF16);
}

}  // namespace moe::cuda
