#pragma once
// The index arithmetic of the CUDA kernels, as plain functions that compile for the host
// and the device (MOE_HOST_DEVICE), so the CPU tests check them against the reference
// kernels (tests/unit/test_device_index.cpp) on machines without a GPU:
//   topk_row             top-k of a row, ties to the lower index (a thread per row)
//   limit_row_to_nodes   node-limited routing of a row (a thread per row)
//   patch_element        where a pixel goes in the patch rows (a thread per pixel)
//   rope_frequency       the rotary angle per position of pair i
// and, host-only, the tables the host builds for a kernel from its index arrays:
//   block_moves          the copies of transpose_blocks
//   group_rows_by_id     the rows of each id, in order (deterministic embedding grads)

#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#if defined(__CUDACC__)
#define MOE_HOST_DEVICE __host__ __device__
#else
#define MOE_HOST_DEVICE
#endif

namespace moe::device_index {

// (value, index) a comes after b in descending order with ties to the lower index.
MOE_HOST_DEVICE inline bool ranks_below(float a, int64_t ia, float b, int64_t ib) {
  return a < b || (a == b && ia > ib);
}

// The k largest of x [cols], descending, ties to the lower index (= a stable sort):
// each pick is the best entry ranked below the previous pick, so nothing is stored.
MOE_HOST_DEVICE inline void topk_row(const float* x, int64_t cols, int64_t k, float* values,
                                     int32_t* indices) {
  float prev = 0.0f;
  int64_t prev_index = -1;
  for (int64_t j = 0; j < k; ++j) {
    int64_t best = -1;
    for (int64_t c = 0; c < cols; ++c) {
      if (prev_index >= 0 && !ranks_below(x[c], c, prev, prev_index)) continue;
      if (best < 0 || ranks_below(x[best], best, x[c], c)) best = c;
    }
    indices[j] = static_cast<int32_t>(best);
    values[j] = x[best];
    prev = x[best];
    prev_index = best;
  }
}

// Node-limited routing of one row of scores [experts] in place (cpu::ref::limit_to_nodes):
// a node scores the sum of its top-`per_node` expert scores, summed in descending order;
// the token's node gets own_node_bonus; experts outside the `keep` best nodes (ties to
// the lower node) get -inf. node_score: scratch of `nodes` floats.
MOE_HOST_DEVICE inline void limit_row_to_nodes(float* s, int64_t experts,
                                               const int32_t* expert_node, int64_t nodes,
                                               int64_t keep, int64_t per_node,
                                               int64_t token_node, float own_node_bonus,
                                               float* node_score) {
  for (int64_t node = 0; node < nodes; ++node) {
    float sum = 0.0f, prev = 0.0f;
    int64_t prev_index = -1;
    for (int64_t i = 0; i < per_node; ++i) {
      int64_t best = -1;
      for (int64_t e = 0; e < experts; ++e) {
        if (expert_node[e] != node) continue;
        if (prev_index >= 0 && !ranks_below(s[e], e, prev, prev_index)) continue;
        if (best < 0 || ranks_below(s[best], best, s[e], e)) best = e;
      }
      if (best < 0) break;  // the node has fewer than per_node experts
      sum += s[best];
      prev = s[best];
      prev_index = best;
    }
    node_score[node] = sum;
  }
  node_score[token_node] += own_node_bonus;
  for (int64_t node = 0; node < nodes; ++node) {
    int64_t better = 0;
    for (int64_t other = 0; other < nodes; ++other)
      if (node_score[other] > node_score[node] ||
          (node_score[other] == node_score[node] && other < node))
        ++better;
    if (better < keep) continue;
    for (int64_t e = 0; e < experts; ++e)
      if (expert_node[e] == node) s[e] = -std::numeric_limits<float>::infinity();
  }
}

// Pixel `pixel` of an image batch x (B, Cin, H, W) sits at this index of the patch rows
// (B, P, Cin*p*p): patch (y/p, x/p) in row-major order, column (c, y%p, x%p).
MOE_HOST_DEVICE inline int64_t patch_element(int64_t pixel, int64_t channels, int64_t height,
                                             int64_t width, int64_t patch) {
  const int64_t xx = pixel % width, y = (pixel / width) % height;
  const int64_t c = (pixel / (width * height)) % channels;
  const int64_t b = pixel / (width * height * channels);
  const int64_t gw = width / patch, num_patches = (height / patch) * gw;
  const int64_t token = (y / patch) * gw + xx / patch;
  const int64_t col = (c * patch + y % patch) * patch + xx % patch;
  return (b * num_patches + token) * (channels * patch * patch) + col;
}

// The rotary angle of position t for pair i of a head of D is t * rope_frequency(i).
MOE_HOST_DEVICE inline double rope_frequency(int64_t i, int64_t head_dim, float theta) {
  return pow(static_cast<double>(theta), -2.0 * static_cast<double>(i) / head_dim);
}

// ---- host-built tables ----

// One contiguous copy of transpose_blocks, in elements.
struct BlockMove {
  int64_t src, dst, count;
};

// The copies that move the a_count x b_count blocks (counts[i*b_count + j] elements)
// from packing [a][b] to [b][a] (inverse: back); empty blocks are left out.
inline std::vector<BlockMove> block_moves(std::span<const int64_t> counts, int64_t a_count,
                                          int64_t b_count, bool inverse) {
  std::vector<int64_t> start_ab(counts.size()), start_ba(counts.size());
  int64_t s = 0;
  for (int64_t q = 0; q < a_count * b_count; ++q) {
    start_ab[q] = s;
    s += counts[q];
  }
  s = 0;
  for (int64_t j = 0; j < b_count; ++j)
    for (int64_t i = 0; i < a_count; ++i) {
      start_ba[i * b_count + j] = s;
      s += counts[i * b_count + j];
    }
  std::vector<BlockMove> moves;
  for (int64_t q = 0; q < a_count * b_count; ++q) {
    if (counts[q] == 0) continue;
    moves.push_back(inverse ? BlockMove{start_ba[q], start_ab[q], counts[q]}
                            : BlockMove{start_ab[q], start_ba[q], counts[q]});
  }
  return moves;
}

// The rows i of ids [n] grouped by id, ids in increasing order and each id's rows in
// increasing i: rows[starts[g] .. starts[g+1]) hold id[g]'s rows. A gradient kernel that
// gives each id one thread per column and adds its rows in this order does the CPU's
// additions in the CPU's order, with no atomics.
struct RowGroups {
  std::vector<int32_t> id;      // [G] distinct ids
  std::vector<int32_t> starts;  // [G + 1]
  std::vector<int32_t> rows;    // [n]
};

inline RowGroups group_rows_by_id(std::span<const int32_t> ids, int64_t num_ids) {
  std::vector<int32_t> count(static_cast<size_t>(num_ids) + 1, 0);
  for (int32_t id : ids) ++count[static_cast<size_t>(id) + 1];
  for (int64_t v = 0; v < num_ids; ++v) count[v + 1] += count[v];  // exclusive starts
  RowGroups g;
  g.rows.resize(ids.size());
  std::vector<int32_t> next(count.begin(), count.end() - 1);
  for (size_t i = 0; i < ids.size(); ++i) g.rows[next[ids[i]]++] = static_cast<int32_t>(i);
  for (int64_t v = 0; v < num_ids; ++v) {
    if (count[v + 1] == count[v]) continue;
    g.id.push_back(static_cast<int32_t>(v));
    g.starts.push_back(count[v]);
  }
  g.starts.push_back(static_cast<int32_t>(ids.size()));
  return g;
}

}  // namespace moe::device_index
