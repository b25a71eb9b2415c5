// Fast kernels of the flat all-to-all dispatcher (framework/moe/all_to_all_dispatcher.h):
// the weighted sums and dot products over expert rows that lie in two buffers (this
// rank's own expert rows where the experts wrote them, the other ranks' rows where they
// arrived), and the permute that packs bf16 rows for the wire. Reading the rows where
// they lie saves the copy that would first gather them into one buffer.
//
// combine_rows_split and gather_dot_split must give the bits of combine_rows and
// gather_dot on the joined rows (the results may not depend on where a row lies, nor on
// the wire: bf16 -> fp32 is exact), so combine_rows and gather_dot are the same loops
// with every row in the head; tests/unit/test_split_rows.cpp checks equality bit for bit.

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "framework/kernels/cpu/cpu_ops.h"
#include "framework/kernels/cpu/kernel_util.h"

namespace moe::cpu {

using detail::kMinParallelWork;

namespace {

// Row r of the joined rows, from a head of fp32 rows and a tail of T rows.
template <class T>
struct Joined {
  const float* head;
  int64_t head_rows;
  const T* tail;
  int64_t cols;
  bool in_head(int64_t r) const { return r < head_rows; }
  const float* head_row(int64_t r) const { return head + r * cols; }
  const T* tail_row(int64_t r) const { return tail + (r - head_rows) * cols; }
};

inline float widen(float x) { return x; }
inline float widen(bf16 x) { return std::bit_cast<float>(static_cast<uint32_t>(x.bits) << 16); }

// o (cols) += w * in (cols): the statement of combine_rows, for fp32 and bf16 rows.
template <class T>
inline void add_scaled(float* o, float w, const T* in, int64_t cols) {
#pragma omp simd
  for (int64_t c = 0; c < cols; ++c) o[c] += w * widen(in[c]);
}

template <class T>
void combine_joined(const Joined<T>& src, const int32_t* row, const float* weight, float* out,
                    int64_t n, int64_t k) {
  const int64_t cols = src.cols;
#pragma omp parallel for if (n * k * cols > kMinParallelWork)
  for (int64_t t = 0; t < n; ++t) {
    float* o = out + t * cols;  // (cols)
    std::fill(o, o + cols, 0.0f);
    for (int64_t j = 0; j < k; ++j) {
      const int32_t r = row[t * k + j];
      if (r < 0) continue;  // dropped assignment contributes nothing
      const float w = weight ? weight[t * k + j] : 1.0f;
      if (src.in_head(r))
        add_scaled(o, w, src.head_row(r), cols);
      else
        add_scaled(o, w, src.tail_row(r), cols);
    }
  }
}

// <x, y> (cols) as gather_dot sums it.
inline float dot(const float* x, const float* y, int64_t cols) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < cols; ++j) acc += x[j] * y[j];
  return acc;
}

// A bf16 row is widened into `wide` (cols) first: a loop that widens while it sums
// vectorises differently and would change the rounding of the sum.
inline const float* as_floats(const float* row, int64_t, float*) { return row; }
inline const float* as_floats(const bf16* row, int64_t cols, float* wide) {
  for (int64_t j = 0; j < cols; ++j) wide[j] = widen(row[j]);
  return wide;
}

template <class T>
void gather_dot_joined(const float* a, const int32_t* a_row, const Joined<T>& b,
                       const int32_t* b_row, float* out, int64_t n) {
  const int64_t cols = b.cols;
#pragma omp parallel if (n * cols > kMinParallelWork)
  {
    std::vector<float> wide(static_cast<size_t>(std::is_same_v<T, bf16> ? cols : 0));
#pragma omp for
    for (int64_t i = 0; i < n; ++i) {
      const int64_t ra = a_row ? a_row[i] : i, rb = b_row ? b_row[i] : i;
      if (ra < 0 || rb < 0) {
        out[i] = 0.0f;
        continue;
      }
      const float* x = a + ra * cols;
      const float* y = b.in_head(rb) ? b.head_row(rb) : as_floats(b.tail_row(rb), cols, wide.data());
      out[i] = dot(x, y, cols);
    }
  }
}

}  // namespace

void combine_rows(const float* src, const int32_t* slot, const float* weight, float* out,
                  int64_t n, int64_t k, int64_t cols) {
  constexpr int64_t kAll = std::numeric_limits<int64_t>::max();
  combine_joined(Joined<float>{src, kAll, nullptr, cols}, slot, weight, out, n, k);
}

void gather_dot(const float* a, const int32_t* a_row, const float* b, const int32_t* b_row,
                float* out, int64_t n, int64_t cols) {
  constexpr int64_t kAll = std::numeric_limits<int64_t>::max();
  gather_dot_joined(a, a_row, Joined<float>{b, kAll, nullptr, cols}, b_row, out, n);
}

void combine_rows_split(const float* head, int64_t head_rows, const float* tail,
                        const bf16* tail_bf16, const int32_t* row, const float* weight,
                        float* out, int64_t n, int64_t k, int64_t cols) {
  if (tail_bf16 != nullptr)
    combine_joined(Joined<bf16>{head, head_rows, tail_bf16, cols}, row, weight, out, n, k);
  else
    combine_joined(Joined<float>{head, head_rows, tail, cols}, row, weight, out, n, k);
}

void gather_dot_split(const float* a, const int32_t* a_row, const float* head,
                      int64_t head_rows, const float* tail, const bf16* tail_bf16,
                      const int32_t* b_row, float* out, int64_t n, int64_t cols) {
  if (tail_bf16 != nullptr)
    gather_dot_joined(a, a_row, Joined<bf16>{head, head_rows, tail_bf16, cols}, b_row, out, n);
  else
    gather_dot_joined(a, a_row, Joined<float>{head, head_rows, tail, cols}, b_row, out, n);
}

void permute_rows_bf16(const float* src, const int32_t* index, const float* scale,
                       bf16* dst, int64_t n_dst, int64_t cols) {
  static_assert(sizeof(bf16) == sizeof(uint16_t));
  auto* bits = reinterpret_cast<uint16_t*>(dst);
#pragma omp parallel for if (n_dst * cols > kMinParallelWork)
  for (int64_t i = 0; i < n_dst; ++i) {
    uint16_t* out = bits + i * cols;  // (cols)
    if (index[i] < 0) {
      std::fill(out, out + cols, uint16_t{0});
      continue;
    }
    const float* in = src + static_cast<int64_t>(index[i]) * cols;
    const float s = scale ? scale[i] : 1.0f;
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) out[c] = detail::bf16_bits(scale ? s * in[c] : in[c]);
  }
}

}  // namespace moe::cpu
