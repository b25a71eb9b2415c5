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

// y_i (n_i, out) = x_i (n_i, in) W_i^T with W (E, out, in)
RowMajorGemm input_times_weight_t(const float* x, const float* w, float* y, ExpertRows r,
                                  int64_t i, int64_t in, int64_t out) {
  return {false, true, r.count, out, in, x + r.first * in, in, w + i * out * in, in,
          y + r.first * out, out};
}

// dx_i (n_i, in) = dy_i (n_i, out) W_i with W (E, out, in)
RowMajorGemm grad_times_weight(const float* dy, const float* w, float* dx, ExpertRows r,
                               int64_t i, int64_t in, int64_t out) {
  return {false, false, r.count, in, out, dy + r.first * out, out, w + i * out * in, in,
          dx + r.first * in, in};
}

// dW_i (out, in) += dy_i^T (out, n_i) x_i (n_i, in)
RowMajorGemm weight_grad(const float* dy, const float* x, float* dw, ExpertRows r, int64_t i,
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

}  // namespace moe::cuda
