// The routed experts of an MoE layer on the GPU: each projection of every local expert
// is one grouped GEMM (cublasGemmGroupedBatchedEx, one group per expert with rows, the
// row counts known on the host), not a loop of small GEMMs; the activations run once
// over all S rows. One template serves fp32 and mixed precision (bf16 operands, fp32
// sums). Twin of cpu::ref::expert_ffn_forward / expert_ffn_backward and their _bf16
// forms.

#include <type_traits>
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

// T's products (fp32, or bf16 operands with fp32 sums).
template <class T>
constexpr GemmTypes kTypes = std::is_same_v<T, float> ? GemmTypes::kF32 : GemmTypes::kBF16;

// An (S, F) activation in fp32: `out` itself for fp32 operands; for bf16 a scratch buffer
// whose values then round into `out` (round_into), as the CPU's bf16 kernels round h,
// dgate and dup.
template <class T>
float* fp32_view(Context& ctx, T* out, int64_t n) {
  if constexpr (std::is_same_v<T, float>) return out;
  else return ctx.scratch<float>(static_cast<size_t>(n));
}
template <class T>
void round_into(Context& ctx, const float* values, T* out, int64_t n) {
  if constexpr (!std::is_same_v<T, float>) launch_to_bf16(ctx.stream(), values, out, n);
}

template <class T>
void ffn_forward(const T* x, const int64_t* offsets, int64_t num_experts, const T* w_gate,
                 const T* w_up, const T* w_down, float* gate, float* up, T* h, float* y,
                 int64_t width, int64_t hidden) {
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
  grouped_gemm(ctx, first, 1.0f, 0.0f, kTypes<T>);
  float* h32 = fp32_view(ctx, h, s * hidden);
  if (w_gate) launch_swiglu_forward(ctx.stream(), gate, up, h32, s * hidden);
  else launch_gelu_forward(ctx.stream(), up, h32, s * hidden);
  round_into(ctx, h32, h, s * hidden);
  // y (n_i, C) = h_i W_down_i^T
  grouped_gemm(ctx, per_expert(rows, [&](int64_t i, ExpertRows r) {
                 return input_times_weight_t(static_cast<const T*>(h), w_down, y, r, i, hidden,
                                             width);
               }),
               1.0f, 0.0f, kTypes<T>);
}

template <class T>
void ffn_backward(const T* x, const int64_t* offsets, int64_t num_experts, const T* w_gate,
                  const T* w_up, const T* w_down, const float* gate, const float* up,
                  const T* h, const T* dy, float* dw_gate, float* dw_up, float* dw_down,
                  float* dh, T* dgate, T* dup, float* dx, int64_t width, int64_t hidden) {
  Context& ctx = current();
  ctx.begin_op();
  const std::vector<ExpertRows> rows = expert_rows(offsets, num_experts);
  const int64_t s = offsets[num_experts], n = s * hidden;
  if (s == 0) return;
  // dW_down += dy^T h;  dh = dy W_down
  grouped_gemm(ctx, per_expert(rows, [&](int64_t i, ExpertRows r) {
                 return weight_grad(dy, h, dw_down, r, i, hidden, width);
               }),
               1.0f, 1.0f, kTypes<T>);
  grouped_gemm(ctx, per_expert(rows, [&](int64_t i, ExpertRows r) {
                 return grad_times_weight(dy, w_down, dh, r, i, hidden, width);
               }),
               1.0f, 0.0f, kTypes<T>);
  float* dup32 = fp32_view(ctx, dup, n);
  if (w_gate) {
    float* dgate32 = fp32_view(ctx, dgate, n);
    launch_swiglu_backward(ctx.stream(), gate, up, dh, dgate32, dup32, n);
    round_into(ctx, dgate32, dgate, n);
  } else {
    launch_gelu_backward(ctx.stream(), up, dh, dup32, n);
  }
  round_into(ctx, dup32, dup, n);
  const T* d_up = dup;
  const T* d_gate = dgate;
  // dW_up (and dW_gate) += d^T x: one call
  std::vector<RowMajorGemm> wgrads = per_expert(rows, [&](int64_t i, ExpertRows r) {
    return weight_grad(d_up, x, dw_up, r, i, width, hidden);
  });
  if (w_gate)
    for (const RowMajorGemm& g : per_expert(rows, [&](int64_t i, ExpertRows r) {
           return weight_grad(d_gate, x, dw_gate, r, i, width, hidden);
         }))
      wgrads.push_back(g);
  grouped_gemm(ctx, wgrads, 1.0f, 1.0f, kTypes<T>);
  // dx = dup W_up (+ dgate W_gate)
  grouped_gemm(ctx, per_expert(rows, [&](int64_t i, ExpertRows r) {
                 return grad_times_weight(d_up, w_up, dx, r, i, width, hidden);
               }),
               1.0f, 0.0f, kTypes<T>);
  if (w_gate)
    grouped_gemm(ctx, per_expert(rows, [&](int64_t i, ExpertRows r) {
                   return grad_times_weight(d_gate, w_gate, dx, r, i, width, hidden);
                 }),
                 1.0f, 1.0f, kTypes<T>);
}

}  // namespace

void expert_ffn_forward(const float* x, const int64_t* offsets, int64_t num_experts,
                        const float* w_gate, const float* w_up, const float* w_down,
                        float* gate, float* up, float* h, float* y, int64_t width,
                        int64_t hidden) {
  ffn_forward(x, offsets, num_experts, w_gate, w_up, w_down, gate, up, h, y, width, hidden);
}

void expert_ffn_backward(const float* x, const int64_t* offsets, int64_t num_experts,
                         const float* w_gate, const float* w_up, const float* w_down,
                         const float* gate, const float* up, const float* h, const float* dy,
                         float* dw_gate, float* dw_up, float* dw_down, float* dh, float* dgate,
                         float* dup, float* dx, int64_t width, int64_t hidden) {
  ffn_backward(x, offsets, num_experts, w_gate, w_up, w_down, gate, up, h, dy, dw_gate, dw_up,
               dw_down, dh, dgate, dup, dx, width, hidden);
}

// Mixed precision: the same products on bf16 operands (fp32 sums), the activations in
// fp32 on gate, up, dh, and their results rounded to the bf16 operands h, dgate, dup, as
// cpu::ref::expert_ffn_forward_bf16 / expert_ffn_backward_bf16 define them.
void expert_ffn_forward_bf16(const bf16* x, const int64_t* offsets, int64_t num_experts,
                             const bf16* w_gate, const bf16* w_up, const bf16* w_down,
                             float* gate, float* up, bf16* h, float* y, int64_t width,
                             int64_t hidden) {
  ffn_forward(x, offsets, num_experts, w_gate, w_up, w_down, gate, up, h, y, width, hidden);
}

void expert_ffn_backward_bf16(const bf16* x, const int64_t* offsets, int64_t num_experts,
                              const bf16* w_gate, const bf16* w_up, const bf16* w_down,
                              const float* gate, const float* up, const bf16* h,
                              const bf16* dy, float* dw_gate, float* dw_up, float* dw_down,
                              float* dh, bf16* dgate, bf16* dup, float* dx, int64_t width,
                              int64_t hidden) {
  ffn_backward(x, offsets, num_experts, w_gate, w_up, w_down, gate, up, h, dy, dw_gate, dw_up,
               dw_down, dh, dgate, dup, dx, width, hidden);
}

}  // namespace moe::cuda
