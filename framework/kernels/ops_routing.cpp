// The op API, continued from ops.cpp: routing, dispatch and combine, copies, embeddings
// and images, and the optimizer.

#include <vector>

#include "framework/kernels/ops.h"
#include "framework/kernels/ops_dispatch.h"

namespace moe::ops {

using namespace detail;

// ---- routing, dispatch, combine ----

void topk(Tensor x, Tensor values, std::span<int32_t> indices) {
  const Device device = kernel_device("topk", {x, values});
  const int64_t k = values.cols();
  check_matrix("topk", "values", values, x.rows(), k);
  MOE_CHECK(static_cast<int64_t>(indices.size()) == x.rows() * k, "topk: ", indices.size(),
            " indices for ", x.rows(), " rows of top-", k);
  MOE_KERNEL(device, topk)(x.data, values.data, indices.data(), x.rows(), x.cols(), k);
}

void limit_to_nodes(Tensor scores, std::span<const int32_t> expert_node, int64_t nodes,
                    int64_t keep, int64_t per_node, int64_t token_node, float own_node_bonus) {
  const Device device = kernel_device("limit_to_nodes", {scores});
  MOE_CHECK(static_cast<int64_t>(expert_node.size()) == scores.cols(), "limit_to_nodes: node of ",
            expert_node.size(), " experts for ", scores.cols(), " columns");
  MOE_CHECK(token_node >= 0 && token_node < nodes && keep >= 1 && per_node >= 1,
            "limit_to_nodes: token node ", token_node, ", keep ", keep, ", per node ", per_node,
            " of ", nodes, " nodes");
  for (int32_t node : expert_node)
    MOE_CHECK(node >= 0 && node < nodes, "limit_to_nodes: an expert on node ", node, " of ",
              nodes);
  MOE_KERNEL(device, limit_to_nodes)(scores.data, scores.rows(), scores.cols(), expert_node.data(),
                                     nodes, keep, per_node, token_node, own_node_bonus);
}

namespace {

// permute_rows into bf16 rows (CPU).
void permute_rows_to_bf16(Tensor src, std::span<const int32_t> index,
                          std::span<const float> scale, Tensor dst) {
  require_cpu_f32("permute_rows", {src});
  require_cpu("permute_rows", DType::kBF16, {dst});
  const int64_t n = static_cast<int64_t>(index.size());
  check_matrix("permute_rows", "dst", dst, n, src.cols());
  MOE_CHECK(scale.empty() || static_cast<int64_t>(scale.size()) == n, "permute_rows: ",
            scale.size(), " scales for ", n, " rows");
  cpu::permute_rows_bf16(src.data, index.data(), or_null(scale), dst.ptr<bf16>(), n,
                         src.cols());
}

// Split rows on the CPU (head fp32, tail fp32 or bf16, one width) and every row index
// inside them; out (if present) fp32 on the CPU.
void check_split_rows(const char* op, const SplitRows& rows, std::span<const int32_t> row,
                      Tensor out) {
  require_cpu_f32(op, {rows.head, out});
  MOE_CHECK(rows.tail.device == Device::kCpu &&
                (rows.tail.dtype == DType::kF32 || rows.tail.dtype == DType::kBF16),
            op, ": no kernel for split rows of ", dtype_name(rows.tail.dtype), " on ",
            device_name(rows.tail.device));
  MOE_CHECK(rows.tail.cols() == rows.head.cols(), op, ": split rows of ", rows.head.cols(),
            " and ", rows.tail.cols(), " columns");
  const int64_t total = rows.head.rows() + rows.tail.rows();
  for (const int32_t r : row)
    MOE_CHECK(r < total, op, ": row ", r, " of ", total, " split rows");
}

}  // namespace

void permute_rows(Tensor src, std::span<const int32_t> index, std::span<const float> scale,
                  Tensor dst) {
  if (dst.dtype == DType::kBF16) return permute_rows_to_bf16(src, index, scale, dst);
  const Device device = kernel_device("permute_rows", {src, dst});
  const int64_t n = static_cast<int64_t>(index.size());
  check_matrix("permute_rows", "dst", dst, n, src.cols());
  MOE_CHECK(scale.empty() || static_cast<int64_t>(scale.size()) == n, "permute_rows: ",
            scale.size(), " scales for ", n, " rows");
  MOE_KERNEL(device, permute_rows)(src.data, index.data(), or_null(scale), dst.data, n, src.cols());
}

void combine_rows(Tensor src, std::span<const int32_t> slot, std::span<const float> weight,
                  Tensor out) {
  const Device device = kernel_device("combine_rows", {src, out});
  const int64_t n = out.rows();
  MOE_CHECK(out.cols() == src.cols(), "combine_rows: rows of ", src.cols(), " into ",
            out.cols());
  MOE_CHECK(n == 0 ? slot.empty() : static_cast<int64_t>(slot.size()) % n == 0,
            "combine_rows: ", slot.size(), " slots for ", n, " rows");
  const int64_t k = n == 0 ? 0 : static_cast<int64_t>(slot.size()) / n;
  MOE_CHECK(weight.empty() || weight.size() == slot.size(), "combine_rows: ", weight.size(),
            " weights for ", slot.size(), " slots");
  MOE_KERNEL(device, combine_rows)(src.data, slot.data(), or_null(weight), out.data, n, k,
                                   src.cols());
}

void gather_dot(Tensor a, std::span<const int32_t> a_row, Tensor b,
                std::span<const int32_t> b_row, std::span<float> out) {
  const Device device = kernel_device("gather_dot", {a, b});
  const int64_t n = static_cast<int64_t>(out.size());
  MOE_CHECK(a.cols() == b.cols(), "gather_dot: rows of ", a.cols(), " and ", b.cols());
  MOE_CHECK((a_row.empty() || static_cast<int64_t>(a_row.size()) == n) &&
                (b_row.empty() || static_cast<int64_t>(b_row.size()) == n),
            "gather_dot: index arrays of ", a_row.size(), " and ", b_row.size(), " for ", n,
            " outputs");
  MOE_KERNEL(device, gather_dot)(a.data, or_null(a_row), b.data, or_null(b_row), out.data(), n,
                                 a.cols());
}

void combine_rows(SplitRows src, std::span<const int32_t> row, std::span<const float> weight,
                  Tensor out) {
  const int64_t n = out.rows(), cols = src.head.cols(), head_rows = src.head.rows();
  check_split_rows("combine_rows", src, row, out);
  MOE_CHECK(out.cols() == cols, "combine_rows: rows of ", cols, " into ", out.cols());
  MOE_CHECK(n == 0 ? row.empty() : static_cast<int64_t>(row.size()) % n == 0,
            "combine_rows: ", row.size(), " rows for ", n, " outputs");
  const int64_t k = n == 0 ? 0 : static_cast<int64_t>(row.size()) / n;
  MOE_CHECK(weight.empty() || weight.size() == row.size(), "combine_rows: ", weight.size(),
            " weights for ", row.size(), " rows");
  const bool bf16_tail = src.tail.dtype == DType::kBF16;
  cpu::combine_rows_split(src.head.data, head_rows, bf16_tail ? nullptr : src.tail.data,
                          bf16_tail ? src.tail.ptr<bf16>() : nullptr, row.data(),
                          or_null(weight), out.data, n, k, cols);
}

void gather_dot(Tensor a, std::span<const int32_t> a_row, SplitRows b,
                std::span<const int32_t> b_row, std::span<float> out) {
  const int64_t n = static_cast<int64_t>(out.size());
  require_cpu_f32("gather_dot", {a});
  check_split_rows("gather_dot", b, b_row, Tensor());
  MOE_CHECK(a.cols() == b.head.cols(), "gather_dot: rows of ", a.cols(), " and ",
            b.head.cols());
  MOE_CHECK((a_row.empty() || static_cast<int64_t>(a_row.size()) == n) &&
                static_cast<int64_t>(b_row.size()) == n,
            "gather_dot: index arrays of ", a_row.size(), " and ", b_row.size(), " for ", n,
            " outputs");
  const bool bf16_tail = b.tail.dtype == DType::kBF16;
  cpu::gather_dot_split(a.data, or_null(a_row), b.head.data, b.head.rows(),
                        bf16_tail ? nullptr : b.tail.data, bf16_tail ? b.tail.ptr<bf16>() : nullptr,
                        b_row.data(), out.data(), n, a.cols());
}

void transpose_blocks(Device device, const void* src, void* dst,
                      std::span<const int64_t> counts, int64_t a_count, int64_t b_count,
                      size_t element_bytes, bool inverse) {
  MOE_CHECK(device == Device::kCpu || cuda_backend_built(), "transpose_blocks: no kernel on ",
            device_name(device));
  MOE_CHECK(static_cast<int64_t>(counts.size()) == a_count * b_count, "transpose_blocks: ",
            counts.size(), " counts for a ", a_count, " x ", b_count, " grid");
  MOE_KERNEL(device, transpose_blocks)(src, dst, counts.data(), a_count, b_count,
                                       static_cast<int64_t>(element_bytes), inverse);
}

void copy(Tensor src, Tensor dst) {
  MOE_CHECK(src.dtype == dst.dtype && src.numel() == dst.numel(), "copy: ", dtype_name(src.dtype),
            " ", src.shape.str(), " into ", dtype_name(dst.dtype), " ", dst.shape.str());
  if (src.device == Device::kCpu && dst.device == Device::kCpu) {
    if (src.bytes() > 0) std::memcpy(dst.raw(), src.raw(), src.bytes());
    return;
  }
#ifdef MOE_WITH_CUDA
  cuda::copy_bytes(src.raw(), src.device, dst.raw(), dst.device, src.bytes());
#else
  MOE_FAIL("copy: no kernel on cuda: this build has no CUDA backend");
#endif
}

// ---- embeddings and images ----

void embedding_forward(Tensor table, std::span<const int32_t> ids, Tensor out) {
  const Device device = kernel_device("embedding_forward", {table, out});
  const int64_t n = static_cast<int64_t>(ids.size());
  check_matrix("embedding_forward", "out", out, n, table.cols());
  MOE_KERNEL(device, embedding_forward)(table.data, ids.data(), out.data, n, table.cols());
}

void embedding_backward(Tensor dout, std::span<const int32_t> ids, Tensor dtable) {
  const Device device = kernel_device("embedding_backward", {dout, dtable});
  const int64_t n = static_cast<int64_t>(ids.size());
  check_matrix("embedding_backward", "dout", dout, n, dtable.cols());
  MOE_KERNEL(device, embedding_backward)(dout.data, ids.data(), dtable.data, n, dtable.cols());
}

void patchify(Tensor x, Tensor patches, int64_t patch) {
  const Device device = kernel_device("patchify", {x, patches});
  MOE_CHECK(x.rank() == 4, "patchify: image batch of shape ", x.shape.str());
  check_numel("patchify", "patches", patches, x.numel());
  MOE_KERNEL(device, patchify)(x.data, patches.data, x.dim(0), x.dim(1), x.dim(2), x.dim(3), patch);
}

void unpatchify(Tensor patches, Tensor x, int64_t patch) {
  const Device device = kernel_device("unpatchify", {patches, x});
  MOE_CHECK(x.rank() == 4, "unpatchify: image batch of shape ", x.shape.str());
  check_numel("unpatchify", "patches", patches, x.numel());
  MOE_KERNEL(device, unpatchify)(patches.data, x.data, x.dim(0), x.dim(1), x.dim(2), x.dim(3),
                                 patch);
}

// ---- optimizer ----

void adamw(Tensor p, Tensor g, Tensor m, Tensor v, const AdamWStep& s) {
  const Device device = kernel_device("adamw", {p, g, m, v});
  for (const Tensor& t : {g, m, v}) check_numel("adamw", "state", t, p.numel());
  MOE_KERNEL(device, adamw)(p.data, g.data, m.data, v.data, p.numel(), s.lr, s.beta1, s.beta2,
                            s.eps, s.weight_decay, s.step);
}

void sum_squares_multi(std::span<const Tensor> x, std::span<double> out) {
  MOE_CHECK(out.size() == x.size(), "sum_squares_multi: ", out.size(), " sums for ", x.size(),
            " tensors");
  if (x.empty()) return;
  const Device device = kernel_device("sum_squares_multi", {x.front()});
  std::vector<const float*> data;
  std::vector<int64_t> n;
  for (const Tensor& t : x) {
    kernel_device("sum_squares_multi", {x.front(), t});  // fp32, all on one device
    data.push_back(t.data);
    n.push_back(t.numel());
  }
  MOE_KERNEL(device, sum_squares_multi)(data.data(), n.data(), static_cast<int64_t>(x.size()),
                                        out.data());
}

void adamw_multi(std::span<const AdamWTensors> tensors, const AdamWStep& s, float grad_scale) {
  if (tensors.empty()) return;
  std::vector<float*> p, g, m, v;
  std::vector<int64_t> n;
  std::vector<float> decay;
  const Device device = kernel_device("adamw_multi", {tensors.front().p});
  for (const AdamWTensors& t : tensors) {
    kernel_device("adamw_multi", {tensors.front().p, t.p, t.g, t.m, t.v});  // fp32, one device
    for (const Tensor& x : {t.g, t.m, t.v}) check_numel("adamw_multi", "state", x, t.p.numel());
    p.push_back(t.p.data);
    g.push_back(t.g.data);
    m.push_back(t.m.data);
    v.push_back(t.v.data);
    n.push_back(t.p.numel());
    decay.push_back(t.decay ? s.weight_decay : 0.0f);
  }
  MOE_KERNEL(device, adamw_multi)(p.data(), g.data(), m.data(), v.data(), n.data(), decay.data(),
                                  static_cast<int64_t>(tensors.size()), s.lr, s.beta1, s.beta2,
                                  s.eps, s.step, grad_scale);
}

}  // namespace moe::ops
