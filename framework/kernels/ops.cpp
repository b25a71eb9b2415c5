// The op API's checks and its dispatch to the kernels of each (device, dtype): the
// matrix products, element-wise, normalisation, attention and loss ops (routing,
// dispatch, embeddings and the optimizer: ops_routing.cpp).

#include "framework/kernels/ops.h"

#include <vector>

#include "framework/kernels/ops_dispatch.h"

namespace moe::ops {

using namespace detail;

void select_cpu_kernels(char** argv) { cpu::select_blas_kernels(argv); }

std::string cpu_gemm_name() { return std::string("OpenBLAS ") + cpu::blas_core_name(); }

int num_threads() { return cpu::num_threads(); }

std::string cpu_bf16_gemm_name() { return cpu::bf16_gemm_name(); }

bool cpu_bf16_gemm_native() { return cpu::bf16_gemm_native(); }

void matmul(Tensor a, Tensor b, Tensor c, bool trans_a, bool trans_b, float alpha, float beta) {
  // bf16 a, b: mixed precision, fp32 sums into c (ops.h)
  const bool mixed = a.dtype == DType::kBF16;
  Device device = Device::kCpu;
  if (mixed) {
    device = mixed_device("matmul", {a, b}, {c});
    MOE_CHECK(alpha == 1.0f && (beta == 0.0f || beta == 1.0f),
              "matmul: bf16 operands take alpha 1 and beta 0 or 1, not alpha ", alpha,
              ", beta ", beta);
  } else {
    device = kernel_device("matmul", {a, b, c});
  }
  const int64_t m = trans_a ? a.cols() : a.rows(), k = trans_a ? a.rows() : a.cols();
  const int64_t n = trans_b ? b.rows() : b.cols();
  MOE_CHECK((trans_b ? b.cols() : b.rows()) == k, "matmul: op(a) ", a.shape.str(),
            trans_a ? "^T" : "", " and op(b) ", b.shape.str(), trans_b ? "^T" : "",
            " do not chain");
  check_matrix("matmul", "c", c, m, n);
  if (mixed)
    MOE_KERNEL(device, matmul_bf16)(a.ptr<bf16>(), b.ptr<bf16>(), c.data, m, n, k, trans_a,
                                    trans_b, beta == 1.0f);
  else
    MOE_KERNEL(device, matmul)(a.data, b.data, c.data, m, n, k, trans_a, trans_b, alpha, beta);
}

void convert(Tensor src, Tensor dst) {
  MOE_CHECK(src.device == dst.device && (src.device == Device::kCpu || cuda_backend_built()),
            "convert: no kernel on ", device_name(src.device), " -> ", device_name(dst.device));
  check_numel("convert", "dst", dst, src.numel());
  const Device device = src.device;
  if (src.dtype == DType::kF32 && dst.dtype == DType::kBF16)
    MOE_KERNEL(device, convert_to_bf16)(src.data, dst.ptr<bf16>(), src.numel());
  else if (src.dtype == DType::kBF16 && dst.dtype == DType::kF32)
    MOE_KERNEL(device, convert_from_bf16)(src.ptr<bf16>(), dst.data, src.numel());
  else
    MOE_CHECK(false, "convert: no kernel from ", dtype_name(src.dtype), " to ",
              dtype_name(dst.dtype));
}

namespace {

void check_experts(const char* op, Tensor x, std::span<const int64_t> offsets,
                   const ExpertWeights& w) {
  const int64_t experts = w.up.dim(0), hidden = w.up.dim(1), width = w.up.dim(2);
  MOE_CHECK(static_cast<int64_t>(offsets.size()) == experts + 1 && offsets.front() == 0 &&
                offsets.back() == x.rows(),
            op, ": offsets do not split ", x.rows(), " rows over ", experts, " experts");
  MOE_CHECK(x.cols() == width, op, ": input width ", x.cols(), " != ", width);
  MOE_CHECK(!present(w.gate) || w.gate.shape == w.up.shape, op, ": gate ",
            w.gate.shape.str(), " != up ", w.up.shape.str());
  MOE_CHECK(w.down.shape == Shape({experts, width, hidden}), op, ": down ",
            w.down.shape.str(), " for up ", w.up.shape.str());
}

}  // namespace

void expert_ffn_forward(Tensor x, std::span<const int64_t> offsets, const ExpertWeights& w,
                        const ExpertActivations& acts, Tensor y) {
  // Mixed precision: the GEMM operands bf16, the rest fp32 (ops.h).
  const bool mixed = x.dtype == DType::kBF16;
  Device device = Device::kCpu;
  if (mixed) {
    device = mixed_device("expert_ffn_forward (bf16)", {x, w.gate, w.up, w.down, acts.h},
                          {acts.gate, acts.up, y});
  } else {
    device = kernel_device("expert_ffn_forward",
                           {x, w.gate, w.up, w.down, acts.gate, acts.up, acts.h, y});
  }
  check_experts("expert_ffn_forward", x, offsets, w);
  const int64_t s = x.rows(), hidden = w.up.dim(1), width = x.cols();
  const bool gated = present(w.gate);
  for (const Tensor& t : {acts.up, acts.h})
    check_matrix("expert_ffn_forward", "activation", t, s, hidden);
  if (gated) check_matrix("expert_ffn_forward", "gate activation", acts.gate, s, hidden);
  check_matrix("expert_ffn_forward", "y", y, s, width);
  if (mixed) {
    MOE_KERNEL(device, expert_ffn_forward_bf16)(
        x.ptr<bf16>(), offsets.data(), w.up.dim(0), gated ? w.gate.ptr<bf16>() : nullptr,
        w.up.ptr<bf16>(), w.down.ptr<bf16>(), gated ? acts.gate.data : nullptr, acts.up.data,
        acts.h.ptr<bf16>(), y.data, width, hidden);
    return;
  }
  MOE_KERNEL(device, expert_ffn_forward)(x.data, offsets.data(), w.up.dim(0),
                                         gated ? w.gate.data : nullptr, w.up.data, w.down.data,
                                         gated ? acts.gate.data : nullptr, acts.up.data,
                                         acts.h.data, y.data, width, hidden);
}

void expert_ffn_backward(Tensor x, std::span<const int64_t> offsets, const ExpertWeights& w,
                         const ExpertActivations& acts, Tensor dy, const ExpertWeights& dw,
                         const ExpertActivations& d_acts, Tensor dx) {
  const bool mixed = x.dtype == DType::kBF16;
  Device device = Device::kCpu;
  if (mixed) {
    device = mixed_device("expert_ffn_backward (bf16)",
                          {x, w.gate, w.up, w.down, acts.h, dy, d_acts.gate, d_acts.up},
                          {acts.gate, acts.up, dw.gate, dw.up, dw.down, d_acts.h, dx});
  } else {
    device = kernel_device(
        "expert_ffn_backward", {x, w.gate, w.up, w.down, acts.gate, acts.up, acts.h, dy, dw.gate,
                                dw.up, dw.down, d_acts.gate, d_acts.up, d_acts.h, dx});
  }
  check_experts("expert_ffn_backward", x, offsets, w);
  const int64_t s = x.rows(), hidden = w.up.dim(1), width = x.cols();
  const bool gated = present(w.gate);
  MOE_CHECK(dw.up.shape == w.up.shape && dw.down.shape == w.down.shape &&
                (!gated || dw.gate.shape == w.gate.shape),
            "expert_ffn_backward: weight gradients do not match the weights");
  for (const Tensor& t : {acts.up, acts.h, d_acts.h, d_acts.up})
    check_matrix("expert_ffn_backward", "activation", t, s, hidden);
  if (gated) {
    check_matrix("expert_ffn_backward", "gate activation", acts.gate, s, hidden);
    check_matrix("expert_ffn_backward", "gate gradient", d_acts.gate, s, hidden);
  }
  check_matrix("expert_ffn_backward", "dy", dy, s, width);
  check_matrix("expert_ffn_backward", "dx", dx, s, width);
  if (mixed) {
    MOE_KERNEL(device, expert_ffn_backward_bf16)(
        x.ptr<bf16>(), offsets.data(), w.up.dim(0), gated ? w.gate.ptr<bf16>() : nullptr,
        w.up.ptr<bf16>(), w.down.ptr<bf16>(), gated ? acts.gate.data : nullptr, acts.up.data,
        acts.h.ptr<bf16>(), dy.ptr<bf16>(), gated ? dw.gate.data : nullptr, dw.up.data,
        dw.down.data, d_acts.h.data, gated ? d_acts.gate.ptr<bf16>() : nullptr,
        d_acts.up.ptr<bf16>(), dx.data, width, hidden);
    return;
  }
  MOE_KERNEL(device, expert_ffn_backward)(x.data, offsets.data(), w.up.dim(0),
                                          gated ? w.gate.data : nullptr, w.up.data, w.down.data,
                                          gated ? acts.gate.data : nullptr, acts.up.data,
                                          acts.h.data, dy.data, gated ? dw.gate.data : nullptr,
                                          dw.up.data, dw.down.data, d_acts.h.data,
                                          gated ? d_acts.gate.data : nullptr, d_acts.up.data,
                                          dx.data, width, hidden);
}

// ---- element-wise ----

void add(Tensor a, Tensor b, Tensor out) {
  const Device device = kernel_device("add", {a, b, out});
  check_numel("add", "b", b, a.numel());
  check_numel("add", "out", out, a.numel());
  MOE_KERNEL(device, add)(a.data, b.data, out.data, a.numel());
}

void axpy(float alpha, Tensor x, Tensor y) {
  const Device device = kernel_device("axpy", {x, y});
  check_numel("axpy", "y", y, x.numel());
  MOE_KERNEL(device, axpy)(alpha, x.data, y.data, x.numel());
}

void scale(Tensor x, float alpha) {
  const Device device = kernel_device("scale", {x});
  MOE_KERNEL(device, scale)(x.data, alpha, x.numel());
}

double sum_squares(Tensor x) {
  const Device device = kernel_device("sum_squares", {x});
  return MOE_KERNEL(device, sum_squares)(x.data, x.numel());
}

namespace {

using UnaryKernel = void (*)(const float* x, float* y, int64_t n);
using UnaryBackwardKernel = void (*)(const float* x, const float* dy, float* dx, int64_t n);

// cuda_kernel is that of the CUDA backend (null without it).
void unary(const char* op, UnaryKernel cpu_kernel, UnaryKernel cuda_kernel, Tensor x, Tensor y) {
  const Device device = kernel_device(op, {x, y});
  check_numel(op, "y", y, x.numel());
  (device == Device::kCuda ? cuda_kernel : cpu_kernel)(x.data, y.data, x.numel());
}

void unary_backward(const char* op, UnaryBackwardKernel cpu_kernel, UnaryBackwardKernel cuda_kernel,
                    Tensor x, Tensor dy, Tensor dx) {
  const Device device = kernel_device(op, {x, dy, dx});
  check_numel(op, "dy", dy, x.numel());
  check_numel(op, "dx", dx, x.numel());
  (device == Device::kCuda ? cuda_kernel : cpu_kernel)(x.data, dy.data, dx.data, x.numel());
}

#ifdef MOE_WITH_CUDA
#define MOE_KERNELS(op) cpu::op, cuda::op
#else
#define MOE_KERNELS(op) cpu::op, nullptr
#endif

}  // namespace

void silu_forward(Tensor x, Tensor y) { unary("silu_forward", MOE_KERNELS(silu_forward), x, y); }
void silu_backward(Tensor x, Tensor dy, Tensor dx) {
  unary_backward("silu_backward", MOE_KERNELS(silu_backward), x, dy, dx);
}
void gelu_forward(Tensor x, Tensor y) { unary("gelu_forward", MOE_KERNELS(gelu_forward), x, y); }
void gelu_backward(Tensor x, Tensor dy, Tensor dx) {
  unary_backward("gelu_backward", MOE_KERNELS(gelu_backward), x, dy, dx);
}

void swiglu_forward(Tensor g, Tensor u, Tensor h) {
  const Device device = kernel_device("swiglu_forward", {g, u, h});
  check_numel("swiglu_forward", "u", u, g.numel());
  check_numel("swiglu_forward", "h", h, g.numel());
  MOE_KERNEL(device, swiglu_forward)(g.data, u.data, h.data, g.numel());
}

void swiglu_backward(Tensor g, Tensor u, Tensor dh, Tensor dg, Tensor du) {
  const Device device = kernel_device("swiglu_backward", {g, u, dh, dg, du});
  for (const Tensor& t : {u, dh, dg, du}) check_numel("swiglu_backward", "operand", t, g.numel());
  MOE_KERNEL(device, swiglu_backward)(g.data, u.data, dh.data, dg.data, du.data, g.numel());
}

void add_rows(Tensor x, Tensor table, Tensor y) {
  const Device device = kernel_device("add_rows", {x, table, y});
  const int64_t cols = x.cols();
  MOE_CHECK(table.numel() % cols == 0 && table.numel() > 0, "add_rows: table ",
            table.shape.str(), " for rows of ", cols);
  const int64_t period = table.numel() / cols;
  check_matrix("add_rows", "y", y, x.rows(), cols);
  MOE_KERNEL(device, add_rows)(x.data, table.data, y.data, x.rows(), cols, period);
}

void sum_rows(Tensor dy, Tensor dtable) {
  const Device device = kernel_device("sum_rows", {dy, dtable});
  const int64_t cols = dy.cols();
  MOE_CHECK(dtable.numel() % cols == 0 && dtable.numel() > 0, "sum_rows: table ",
            dtable.shape.str(), " for rows of ", cols);
  MOE_KERNEL(device, sum_rows)(dy.data, dtable.data, dy.rows(), cols, dtable.numel() / cols);
}

namespace {

// (batch, tokens per image, width, stride) of an adaLN op, checked.
struct Modulation {
  int64_t batch, tokens, width, stride;
};
Modulation modulation(const char* op, Tensor x, Tensor mod, std::initializer_list<int> chunks) {
  const int64_t width = x.cols(), batch = mod.rows(), stride = mod.cols();
  MOE_CHECK(batch > 0 && x.rows() % batch == 0, op, ": ", x.rows(), " rows for ", batch,
            " images");
  for (int chunk : chunks)
    MOE_CHECK(chunk >= 0 && (chunk + 1) * width <= stride, op, ": chunk ", chunk, " of width ",
              width, " outside modulation rows of ", stride);
  return {batch, x.rows() / batch, width, stride};
}

}  // namespace

void modulate_forward(Tensor x, Tensor mod, int shift_chunk, int scale_chunk, Tensor y) {
  const Device device = kernel_device("modulate_forward", {x, mod, y});
  const Modulation m = modulation("modulate_forward", x, mod, {shift_chunk, scale_chunk});
  check_matrix("modulate_forward", "y", y, x.rows(), m.width);
  MOE_KERNEL(device, modulate_forward)(x.data, mod.data + shift_chunk * m.width,
                                       mod.data + scale_chunk * m.width, m.stride, y.data, m.batch,
                                       m.tokens, m.width);
}

void modulate_backward(Tensor x, Tensor mod, int shift_chunk, int scale_chunk, Tensor dy,
                       Tensor dx, Tensor dmod) {
  const Device device = kernel_device("modulate_backward", {x, mod, dy, dx, dmod});
  const Modulation m = modulation("modulate_backward", x, mod, {shift_chunk, scale_chunk});
  check_matrix("modulate_backward", "dy", dy, x.rows(), m.width);
  check_matrix("modulate_backward", "dx", dx, x.rows(), m.width);
  check_matrix("modulate_backward", "dmod", dmod, m.batch, m.stride);
  MOE_KERNEL(device, modulate_backward)(x.data, mod.data + scale_chunk * m.width, m.stride, dy.data,
                                        dx.data, dmod.data + shift_chunk * m.width,
                                        dmod.data + scale_chunk * m.width, m.batch, m.tokens,
                                        m.width);
}

void gated_add_forward(Tensor h, Tensor mod, int gate_chunk, Tensor f, Tensor out) {
  const Device device = kernel_device("gated_add_forward", {h, mod, f, out});
  const Modulation m = modulation("gated_add_forward", h, mod, {gate_chunk});
  check_matrix("gated_add_forward", "f", f, h.rows(), m.width);
  check_matrix("gated_add_forward", "out", out, h.rows(), m.width);
  MOE_KERNEL(device, gated_add_forward)(h.data, mod.data + gate_chunk * m.width, m.stride, f.data,
                                        out.data, m.batch, m.tokens, m.width);
}

void gated_add_backward(Tensor mod, int gate_chunk, Tensor f, Tensor dout, Tensor df,
                        Tensor dmod) {
  const Device device = kernel_device("gated_add_backward", {mod, f, dout, df, dmod});
  const Modulation m = modulation("gated_add_backward", f, mod, {gate_chunk});
  check_matrix("gated_add_backward", "dout", dout, f.rows(), m.width);
  check_matrix("gated_add_backward", "df", df, f.rows(), m.width);
  check_matrix("gated_add_backward", "dmod", dmod, m.batch, m.stride);
  MOE_KERNEL(device, gated_add_backward)(mod.data + gate_chunk * m.width, m.stride, f.data,
                                         dout.data, df.data, dmod.data + gate_chunk * m.width,
                                         m.batch, m.tokens, m.width);
}

// ---- normalisation, softmax, attention ----

void softmax_forward(Tensor x, Tensor y) {
  const Device device = kernel_device("softmax_forward", {x, y});
  check_matrix("softmax_forward", "y", y, x.rows(), x.cols());
  MOE_KERNEL(device, softmax_forward)(x.data, y.data, x.rows(), x.cols());
}

void softmax_backward(Tensor y, Tensor dy, Tensor dx) {
  const Device device = kernel_device("softmax_backward", {y, dy, dx});
  check_matrix("softmax_backward", "dy", dy, y.rows(), y.cols());
  check_matrix("softmax_backward", "dx", dx, y.rows(), y.cols());
  MOE_KERNEL(device, softmax_backward)(y.data, dy.data, dx.data, y.rows(), y.cols());
}

void rmsnorm_forward(Tensor x, Tensor w, Tensor y, Tensor rstd, float eps) {
  const Device device = kernel_device("rmsnorm_forward", {x, w, y, rstd});
  check_numel("rmsnorm_forward", "w", w, x.cols());
  check_matrix("rmsnorm_forward", "y", y, x.rows(), x.cols());
  check_numel("rmsnorm_forward", "rstd", rstd, x.rows());
  MOE_KERNEL(device, rmsnorm_forward)(x.data, w.data, y.data, rstd.data, x.rows(), x.cols(), eps);
}

void rmsnorm_backward(Tensor x, Tensor w, Tensor rstd, Tensor dy, Tensor dx, Tensor dw) {
  const Device device = kernel_device("rmsnorm_backward", {x, w, rstd, dy, dx, dw});
  check_numel("rmsnorm_backward", "w", w, x.cols());
  check_numel("rmsnorm_backward", "dw", dw, x.cols());
  check_numel("rmsnorm_backward", "rstd", rstd, x.rows());
  check_matrix("rmsnorm_backward", "dy", dy, x.rows(), x.cols());
  check_matrix("rmsnorm_backward", "dx", dx, x.rows(), x.cols());
  MOE_KERNEL(device, rmsnorm_backward)(x.data, w.data, rstd.data, dy.data, dx.data, dw.data,
                                       x.rows(), x.cols());
}

void layernorm_forward(Tensor x, Tensor w, Tensor b, Tensor y, Tensor mean, Tensor rstd,
                       float eps) {
  const Device device = kernel_device("layernorm_forward", {x, w, b, y, mean, rstd});
  if (present(w)) check_numel("layernorm_forward", "w", w, x.cols());
  if (present(b)) check_numel("layernorm_forward", "b", b, x.cols());
  check_matrix("layernorm_forward", "y", y, x.rows(), x.cols());
  check_numel("layernorm_forward", "mean", mean, x.rows());
  check_numel("layernorm_forward", "rstd", rstd, x.rows());
  MOE_KERNEL(device, layernorm_forward)(x.data, present(w) ? w.data : nullptr,
                                        present(b) ? b.data : nullptr, y.data, mean.data, rstd.data,
                                        x.rows(), x.cols(), eps);
}

void layernorm_backward(Tensor x, Tensor w, Tensor mean, Tensor rstd, Tensor dy, Tensor dx,
                        Tensor dw, Tensor db) {
  const Device device = kernel_device("layernorm_backward", {x, w, mean, rstd, dy, dx, dw, db});
  check_matrix("layernorm_backward", "dy", dy, x.rows(), x.cols());
  check_matrix("layernorm_backward", "dx", dx, x.rows(), x.cols());
  MOE_KERNEL(device, layernorm_backward)(x.data, present(w) ? w.data : nullptr, mean.data,
                                         rstd.data, dy.data, dx.data,
                                         present(dw) ? dw.data : nullptr,
                                         present(db) ? db.data : nullptr, x.rows(), x.cols());
}

void rope_apply(Tensor x, int64_t batch, int64_t heads, int64_t head_dim, int64_t column,
                float theta, bool inverse) {
  const Device device = kernel_device("rope_apply", {x});
  MOE_CHECK(batch > 0 && x.rows() % batch == 0, "rope_apply: ", x.rows(), " rows for ", batch,
            " sequences");
  MOE_CHECK(column >= 0 && column + heads * head_dim <= x.cols(), "rope_apply: columns [",
            column, ", ", column + heads * head_dim, ") outside rows of ", x.cols());
  MOE_KERNEL(device, rope_apply)(x.data + column, batch, x.rows() / batch, heads, head_dim,
                                 x.cols(), theta, inverse);
}

void attention_forward(Tensor qkv, Tensor att, Tensor out, int64_t batch, int64_t heads,
                       bool causal) {
  const Device device = kernel_device("attention_forward", {qkv, att, out});
  const int64_t seq = qkv.rows() / batch, head_dim = out.cols() / heads;
  check_matrix("attention_forward", "qkv", qkv, batch * seq, 3 * heads * head_dim);
  check_matrix("attention_forward", "out", out, batch * seq, heads * head_dim);
  check_numel("attention_forward", "att", att, batch * heads * seq * seq);
  MOE_KERNEL(device, attention_forward)(qkv.data, att.data, out.data, batch, seq, heads,
                                        head_dim, causal);
}

void attention_backward(Tensor qkv, Tensor att, Tensor dout, Tensor dqkv, Tensor scratch,
                        int64_t batch, int64_t heads, bool causal) {
  const Device device = kernel_device("attention_backward", {qkv, att, dout, dqkv, scratch});
  const int64_t seq = qkv.rows() / batch, head_dim = dout.cols() / heads;
  check_matrix("attention_backward", "qkv", qkv, batch * seq, 3 * heads * head_dim);
  check_matrix("attention_backward", "dqkv", dqkv, batch * seq, 3 * heads * head_dim);
  check_matrix("attention_backward", "dout", dout, batch * seq, heads * head_dim);
  check_numel("attention_backward", "att", att, batch * heads * seq * seq);
  check_numel("attention_backward", "scratch", scratch, batch * heads * seq * seq);
  MOE_KERNEL(device, attention_backward)(qkv.data, att.data, dout.data, dqkv.data,
                                         scratch.data, batch, seq, heads, head_dim, causal);
}

void attention_forward_mixed(Tensor qkv, Tensor stats, Tensor out, int64_t batch,
                             int64_t heads, bool causal) {
  const Device device = mixed_device("attention_forward_mixed", {qkv}, {stats, out});
  const int64_t seq = qkv.rows() / batch, head_dim = out.cols() / heads;
  check_matrix("attention_forward_mixed", "qkv", qkv, batch * seq, 3 * heads * head_dim);
  check_matrix("attention_forward_mixed", "out", out, batch * seq, heads * head_dim);
  check_numel("attention_forward_mixed", "stats", stats, batch * heads * seq * 2);
  MOE_KERNEL(device, attention_forward_bf16)(qkv.ptr<bf16>(), stats.data, out.data, batch,
                                             seq, heads, head_dim, causal);
}

void attention_backward_mixed(Tensor qkv, Tensor stats, Tensor out, Tensor dout, Tensor dqkv,
                              int64_t batch, int64_t heads, bool causal) {
  const Device device =
      mixed_device("attention_backward_mixed", {qkv}, {stats, out, dout, dqkv});
  const int64_t seq = qkv.rows() / batch, head_dim = dout.cols() / heads;
  check_matrix("attention_backward_mixed", "qkv", qkv, batch * seq, 3 * heads * head_dim);
  check_matrix("attention_backward_mixed", "dqkv", dqkv, batch * seq, 3 * heads * head_dim);
  check_matrix("attention_backward_mixed", "out", out, batch * seq, heads * head_dim);
  check_matrix("attention_backward_mixed", "dout", dout, batch * seq, heads * head_dim);
  check_numel("attention_backward_mixed", "stats", stats, batch * heads * seq * 2);
  MOE_KERNEL(device, attention_backward_bf16)(qkv.ptr<bf16>(), stats.data, out.data,
                                              dout.data, dqkv.data, batch, seq, heads,
                                              head_dim, causal);
}

void rope_apply_at(Tensor x, std::span<const int32_t> pos, int64_t heads, int64_t head_dim,
                   int64_t column, float theta) {
  const Device device = kernel_device("rope_apply_at", {x});
  MOE_CHECK(static_cast<int64_t>(pos.size()) == x.rows(), "rope_apply_at: ", pos.size(),
            " positions for ", x.rows(), " rows");
  MOE_CHECK(column >= 0 && column + heads * head_dim <= x.cols(), "rope_apply_at: columns [",
            column, ", ", column + heads * head_dim, ") outside rows of ", x.cols());
  MOE_KERNEL(device, rope_apply_at)(x.data + column, pos.data(), x.rows(), heads, head_dim,
                                    x.cols(), theta);
}

void attention_decode(Tensor qkv, std::span<const float* const> keys,
                      std::span<const float* const> values, std::span<const int64_t> len,
                      Tensor out, int64_t heads) {
  require_cpu_f32("attention_decode", {qkv, out});
  const int64_t rows = qkv.rows(), width = out.cols();
  MOE_CHECK(keys.size() == static_cast<size_t>(rows) && values.size() == keys.size() &&
                len.size() == keys.size(),
            "attention_decode: caches of ", keys.size(), " rows for ", rows, " queries");
  check_matrix("attention_decode", "out", out, rows, width);
  MOE_CHECK(heads > 0 && width % heads == 0 && width <= qkv.cols(), "attention_decode: ",
            heads, " heads of a width ", width, " query in rows of ", qkv.cols());
  cpu::attention_decode(qkv.data, qkv.cols(), keys.data(), values.data(), len.data(), out.data,
                        rows, heads, width / heads);
}

void cross_entropy(Tensor logits, std::span<const int32_t> targets, Tensor losses,
                   Tensor dlogits, float scale) {
  const Device device = kernel_device("cross_entropy", {logits, losses, dlogits});
  const int64_t rows = logits.rows();
  MOE_CHECK(static_cast<int64_t>(targets.size()) == rows, "cross_entropy: ", targets.size(),
            " targets for ", rows, " rows");
  check_numel("cross_entropy", "losses", losses, rows);
  if (present(dlogits)) check_matrix("cross_entropy", "dlogits", dlogits, rows, logits.cols());
  MOE_KERNEL(device, cross_entropy)(logits.data, targets.data(), losses.data,
                                    present(dlogits) ? dlogits.data : nullptr, scale, rows,
                                    logits.cols());
}

double squared_error(Tensor pred, Tensor target, Tensor dpred, float scale) {
  const Device device = kernel_device("squared_error", {pred, target, dpred});
  check_numel("squared_error", "target", target, pred.numel());
  check_numel("squared_error", "dpred", dpred, pred.numel());
  return MOE_KERNEL(device, squared_error)(pred.data, target.data, dpred.data, scale,
                                           pred.numel());
}

void vocab_row_max(Tensor logits, Tensor max) {
  const Device device = kernel_device("vocab_row_max", {logits, max});
  check_numel("vocab_row_max", "max", max, logits.rows());
  MOE_KERNEL(device, vocab_row_max)(logits.data, max.data, logits.rows(), logits.cols());
}

void vocab_row_sums(Tensor logits, Tensor max, std::span<const int32_t> targets, int64_t begin,
                    Tensor sums) {
  const Device device = kernel_device("vocab_row_sums", {logits, max, sums});
  const int64_t rows = logits.rows();
  MOE_CHECK(static_cast<int64_t>(targets.size()) == rows, "vocab_row_sums: ", targets.size(),
            " targets for ", rows, " rows");
  check_numel("vocab_row_sums", "max", max, rows);
  check_numel("vocab_row_sums", "sums", sums, 2 * rows);
  MOE_KERNEL(device, vocab_row_sums)(logits.data, max.data, targets.data(), begin, sums.data,
                                     rows, logits.cols());
}

void vocab_loss(Tensor logits, Tensor max, Tensor sums, std::span<const int32_t> targets,
                int64_t begin, float scale, Tensor losses, Tensor dlogits) {
  const Device device = kernel_device("vocab_loss", {logits, max, sums, losses, dlogits});
  const int64_t rows = logits.rows();
  MOE_CHECK(static_cast<int64_t>(targets.size()) == rows, "vocab_loss: ", targets.size(),
            " targets for ", rows, " rows");
  check_numel("vocab_loss", "max", max, rows);
  check_numel("vocab_loss", "sums", sums, 2 * rows);
  check_numel("vocab_loss", "losses", losses, rows);
  check_matrix("vocab_loss", "dlogits", dlogits, rows, logits.cols());
  MOE_KERNEL(device, vocab_loss)(logits.data, max.data, sums.data, targets.data(), begin, scale,
                                 losses.data, dlogits.data, rows, logits.cols());
}

}  // namespace moe::ops
