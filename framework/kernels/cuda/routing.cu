// Routing, permutation and layout CUDA kernels: top-k, node limits, permute / combine
// rows, gathered dot products, embeddings, block transposes, patches and rotary
// embeddings. The index arithmetic is framework/kernels/device_index.h (tested on the
// CPU); index arrays arrive as host spans and are uploaded here. Twins of
// framework/kernels/cpu/ref_ops.cpp.

#include <vector>

#include "framework/core/error.h"
#include "framework/kernels/cuda/cuda_ops.h"
#include "framework/kernels/cuda/reduce.cuh"
#include "framework/kernels/device_index.h"

namespace moe::cuda {
namespace {

#define MOE_GRID_STRIDE(i, n)                                                            \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

__global__ void topk_kernel(const float* x, float* values, int32_t* indices, int64_t rows,
                            int64_t cols, int64_t k) {
  MOE_GRID_STRIDE(r, rows)
  device_index::topk_row(x + r * cols, cols, k, values + r * k, indices + r * k);
}

__global__ void limit_to_nodes_kernel(float* scores, int64_t rows, int64_t experts,
                                      const int32_t* expert_node, int64_t nodes, int64_t keep,
                                      int64_t per_node, int64_t token_node, float bonus,
                                      float* node_score) {
  MOE_GRID_STRIDE(r, rows)
  device_index::limit_row_to_nodes(scores + r * experts, experts, expert_node, nodes, keep,
                                   per_node, token_node, bonus, node_score + r * nodes);
}

__global__ void permute_rows_kernel(const float* src, const int32_t* index, const float* scale,
                                    float* dst, int64_t n_dst, int64_t cols) {
  MOE_GRID_STRIDE(i, n_dst * cols) {
    const int64_t row = i / cols, c = i % cols;
    const int32_t from = index[row];
    dst[i] = from < 0 ? 0.0f : (scale ? scale[row] : 1.0f) * src[from * cols + c];
  }
}

// out[t] = sum_k w src[slot]: each element adds its K terms in k order
__global__ void combine_rows_kernel(const float* src, const int32_t* slot, const float* weight,
                                    float* out, int64_t n, int64_t k, int64_t cols) {
  MOE_GRID_STRIDE(i, n * cols) {
    const int64_t t = i / cols, c = i % cols;
    float acc = 0.0f;
    for (int64_t j = 0; j < k; ++j) {
      const int32_t s = slot[t * k + j];
      if (s < 0) continue;  // dropped assignment
      acc += (weight ? weight[t * k + j] : 1.0f) * src[s * cols + c];
    }
    out[i] = acc;
  }
}

// One block per output.
__global__ void gather_dot_kernel(const float* a, const int32_t* a_row, const float* b,
                                  const int32_t* b_row, float* out, int64_t cols) {
  __shared__ double shared[kThreads];
  const int64_t i = blockIdx.x;
  const int64_t ra = a_row ? a_row[i] : i, rb = b_row ? b_row[i] : i;
  double s = 0.0;
  if (ra >= 0 && rb >= 0)
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
      s += static_cast<double>(a[ra * cols + j]) * b[rb * cols + j];
  const double total = block_reduce_sum(s, shared);
  if (threadIdx.x == 0) out[i] = static_cast<float>(total);
}

__global__ void embedding_forward_kernel(const float* table, const int32_t* ids, float* out,
                                         int64_t n, int64_t cols) {
  MOE_GRID_STRIDE(i, n * cols) out[i] = table[ids[i / cols] * cols + i % cols];
}

// Block g adds the rows of id[g] into its table row, in row order (no atomics).
__global__ void embedding_backward_kernel(const float* dout, const int32_t* id,
                                          const int32_t* starts, const int32_t* rows,
                                          float* dtable, int64_t cols) {
  const int64_t g = blockIdx.x;
  float* row = dtable + static_cast<int64_t>(id[g]) * cols;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    float acc = row[c];
    for (int32_t q = starts[g]; q < starts[g + 1]; ++q) acc += dout[rows[q] * cols + c];
    row[c] = acc;
  }
}

// One block per move; words of 4 bytes when the element size allows.
template <class Word>
__global__ void block_moves_kernel(const Word* src, Word* dst,
                                   const device_index::BlockMove* moves, int64_t words) {
  const device_index::BlockMove m = moves[blockIdx.x];
  for (int64_t w = threadIdx.x; w < m.count * words; w += blockDim.x)
    dst[m.dst * words + w] = src[m.src * words + w];
}

__global__ void patch_kernel(const float* from, float* to, bool to_patches, int64_t pixels,
                             int64_t channels, int64_t height, int64_t width, int64_t patch) {
  MOE_GRID_STRIDE(p, pixels) {
    const int64_t e = device_index::patch_element(p, channels, height, width, patch);
    if (to_patches) to[e] = from[p];
    else to[p] = from[e];
  }
}

// One thread per rotated pair (row, head, i): row r at position pos(r).
__global__ void rope_kernel(float* x, const int32_t* pos, int64_t seq, int64_t rows,
                            int64_t heads, int64_t head_dim, int64_t stride, float theta,
                            bool inverse) {
  const int64_t half = head_dim / 2;
  MOE_GRID_STRIDE(q, rows * heads * half) {
    const int64_t i = q % half, h = (q / half) % heads, r = q / (half * heads);
    const double t = pos ? pos[r] : r % seq;
    const double angle = t * device_index::rope_frequency(i, head_dim, theta);
    double sn, cs;
    sincos(angle, &sn, &cs);
    if (inverse) sn = -sn;
    float* xh = x + r * stride + h * head_dim;
    const double x1 = xh[i], x2 = xh[i + half];
    xh[i] = static_cast<float>(x1 * cs - x2 * sn);
    xh[i + half] = static_cast<float>(x2 * cs + x1 * sn);
  }
}

}  // namespace

void topk(const float* x, float* values, int32_t* indices, int64_t rows, int64_t cols,
          int64_t k) {
  MOE_CHECK(k >= 0 && k <= cols, "topk k=", k, " out of range for cols=", cols);
  Context& ctx = current();
  ctx.begin_op();
  if (rows * k == 0) return;
  int32_t* d_indices = ctx.scratch<int32_t>(static_cast<size_t>(rows * k));
  topk_kernel<<<blocks_for(rows), kThreads, 0, ctx.stream()>>>(x, values, d_indices, rows, cols,
                                                              k);
  MOE_CUDA_CHECK_LAUNCH();
  // the host plans the routing from the choices
  ctx.download(d_indices, indices, static_cast<size_t>(rows * k) * sizeof(int32_t));
}

void limit_to_nodes(float* scores, int64_t rows, int64_t experts, const int32_t* expert_node,
                    int64_t nodes, int64_t keep, int64_t per_node, int64_t token_node,
                    float own_node_bonus) {
  Context& ctx = current();
  ctx.begin_op();
  if (rows == 0) return;
  const int32_t* d_node = ctx.upload<int32_t>({expert_node, static_cast<size_t>(experts)});
  float* node_score = ctx.scratch<float>(static_cast<size_t>(rows * nodes));
  limit_to_nodes_kernel<<<blocks_for(rows), kThreads, 0, ctx.stream()>>>(
      scores, rows, experts, d_node, nodes, keep, per_node, token_node, own_node_bonus,
      node_score);
  MOE_CUDA_CHECK_LAUNCH();
}

void permute_rows(const float* src, const int32_t* index, const float* scale, float* dst,
                  int64_t n_dst, int64_t cols) {
  Context& ctx = current();
  ctx.begin_op();
  if (n_dst * cols == 0) return;
  const int32_t* d_index = ctx.upload<int32_t>({index, static_cast<size_t>(n_dst)});
  const float* d_scale = scale ? ctx.upload<float>({scale, static_cast<size_t>(n_dst)}) : nullptr;
  permute_rows_kernel<<<blocks_for(n_dst * cols), kThreads, 0, ctx.stream()>>>(
      src, d_index, d_scale, dst, n_dst, cols);
  MOE_CUDA_CHECK_LAUNCH();
}

void combine_rows(const float* src, const int32_t* slot, const float* weight, float* out,
                  int64_t n, int64_t k, int64_t cols) {
  Context& ctx = current();
  ctx.begin_op();
  if (n * cols == 0) return;
  const size_t assignments = static_cast<size_t>(n * k);
  const int32_t* d_slot = ctx.upload<int32_t>({slot, assignments});
  const float* d_weight = weight ? ctx.upload<float>({weight, assignments}) : nullptr;
  combine_rows_kernel<<<blocks_for(n * cols), kThreads, 0, ctx.stream()>>>(
      src, d_slot, d_weight, out, n, k, cols);
  MOE_CUDA_CHECK_LAUNCH();
}

void gather_dot(const float* a, const int32_t* a_row, const float* b, const int32_t* b_row,
                float* out, int64_t n, int64_t cols) {
  Context& ctx = current();
  ctx.begin_op();
  if (n == 0) return;
  const int32_t* d_a_row = a_row ? ctx.upload<int32_t>({a_row, static_cast<size_t>(n)}) : nullptr;
  const int32_t* d_b_row = b_row ? ctx.upload<int32_t>({b_row, static_cast<size_t>(n)}) : nullptr;
  float* d_out = ctx.scratch<float>(static_cast<size_t>(n));
  gather_dot_kernel<<<static_cast<unsigned>(n), kThreads, 0, ctx.stream()>>>(
      a, d_a_row, b, d_b_row, d_out, cols);
  MOE_CUDA_CHECK_LAUNCH();
  ctx.download(d_out, out, static_cast<size_t>(n) * sizeof(float));  // host weights' grads
}

void embedding_forward(const float* table, const int32_t* ids, float* out, int64_t n,
                       int64_t cols) {
  Context& ctx = current();
  ctx.begin_op();
  if (n * cols == 0) return;
  const int32_t* d_ids = ctx.upload<int32_t>({ids, static_cast<size_t>(n)});
  embedding_forward_kernel<<<blocks_for(n * cols), kThreads, 0, ctx.stream()>>>(table, d_ids,
                                                                               out, n, cols);
  MOE_CUDA_CHECK_LAUNCH();
}

void embedding_backward(const float* dout, const int32_t* ids, float* dtable, int64_t n,
                        int64_t cols) {
  Context& ctx = current();
  ctx.begin_op();
  if (n * cols == 0) return;
  int32_t num_ids = 0;
  for (int64_t i = 0; i < n; ++i) {
    MOE_CHECK(ids[i] >= 0, "embedding_backward: id ", ids[i]);
    num_ids = std::max(num_ids, ids[i] + 1);
  }
  const device_index::RowGroups g =
      device_index::group_rows_by_id({ids, static_cast<size_t>(n)}, num_ids);
  embedding_backward_kernel<<<static_cast<unsigned>(g.id.size()), kThreads, 0, ctx.stream()>>>(
      dout, ctx.upload<int32_t>(g.id), ctx.upload<int32_t>(g.starts),
      ctx.upload<int32_t>(g.rows), dtable, cols);
  MOE_CUDA_CHECK_LAUNCH();
}

void transpose_blocks(const void* src, void* dst, const int64_t* counts, int64_t a_count,
                      int64_t b_count, int64_t element_bytes, bool inverse) {
  Context& ctx = current();
  ctx.begin_op();
  const std::vector<device_index::BlockMove> moves = device_index::block_moves(
      {counts, static_cast<size_t>(a_count * b_count)}, a_count, b_count, inverse);
  if (moves.empty() || element_bytes == 0) return;
  const device_index::BlockMove* d_moves = ctx.upload<device_index::BlockMove>(moves);
  const unsigned blocks = static_cast<unsigned>(moves.size());
  const bool words = element_bytes % 4 == 0 && reinterpret_cast<uintptr_t>(src) % 4 == 0 &&
                     reinterpret_cast<uintptr_t>(dst) % 4 == 0;
  if (words)
    block_moves_kernel<<<blocks, kThreads, 0, ctx.stream()>>>(
        static_cast<const uint32_t*>(src), static_cast<uint32_t*>(dst), d_moves, element_bytes / 4);
  else
    block_moves_kernel<<<blocks, kThreads, 0, ctx.stream()>>>(
        static_cast<const uint8_t*>(src), static_cast<uint8_t*>(dst), d_moves, element_bytes);
  MOE_CUDA_CHECK_LAUNCH();
}

void patchify(const float* x, float* cols, int64_t B, int64_t channels, int64_t height,
              int64_t width, int64_t patch) {
  Context& ctx = current();
  ctx.begin_op();
  const int64_t pixels = B * channels * height * width;
  if (pixels == 0) return;
  patch_kernel<<<blocks_for(pixels), kThreads, 0, ctx.stream()>>>(x, cols, true, pixels, channels,
                                                                  height, width, patch);
  MOE_CUDA_CHECK_LAUNCH();
}

void unpatchify(const float* cols, float* x, int64_t B, int64_t channels, int64_t height,
                int64_t width, int64_t patch) {
  Context& ctx = current();
  ctx.begin_op();
  const int64_t pixels = B * channels * height * width;
  if (pixels == 0) return;
  patch_kernel<<<blocks_for(pixels), kThreads, 0, ctx.stream()>>>(cols, x, false, pixels,
                                                                  channels, height, width, patch);
  MOE_CUDA_CHECK_LAUNCH();
}

void rope_apply(float* x, int64_t B, int64_t T, int64_t H, int64_t D, int64_t stride,
                float theta, bool inverse) {
  MOE_CHECK(D % 2 == 0, "rope needs an even head dim, got D=", D);
  Context& ctx = current();
  ctx.begin_op();
  const int64_t pairs = B * T * H * (D / 2);
  if (pairs == 0) return;
  rope_kernel<<<blocks_for(pairs), kThreads, 0, ctx.stream()>>>(x, nullptr, T, B * T, H, D, stride,
                                                               theta, inverse);
  MOE_CUDA_CHECK_LAUNCH();
}

void rope_apply_at(float* x, const int32_t* pos, int64_t rows, int64_t H, int64_t D,
                   int64_t stride, float theta) {
  MOE_CHECK(D % 2 == 0, "rope needs an even head dim, got D=", D);
  Context& ctx = current();
  ctx.begin_op();
  const int64_t pairs = rows * H * (D / 2);
  if (pairs == 0) return;
  const int32_t* d_pos = ctx.upload<int32_t>({pos, static_cast<size_t>(rows)});
  rope_kernel<<<blocks_for(pairs), kThreads, 0, ctx.stream()>>>(x, d_pos, 1, rows, H, D, stride,
                                                               theta, false);
  MOE_CUDA_CHECK_LAUNCH();
}

}  // namespace moe::cuda
