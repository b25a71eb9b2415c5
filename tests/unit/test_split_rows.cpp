// The flat dispatcher's kernels over rows in two buffers (framework/kernels/cpu/
// split_rows.cpp) and the bf16 pack: the fast versions equal combine_rows / gather_dot /
// permute_rows + convert on the joined rows bit for bit (the dispatcher's results may
// not depend on where a row lies), and their reference twins within the float error of
// a K-term sum or a dot product of `cols` terms.

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "framework/core/bf16.h"
#include "framework/kernels/cpu/cpu_ops.h"
#include "framework/kernels/ops.h"
#include "tests/unit/gradcheck.h"

namespace moe {
namespace {

using moe::testing::random_vector;
using Vec = std::vector<float>;

// Row widths: odd (the vector loops' remainders) and the width of the benchmarks.
constexpr int64_t kWidths[] = {37, 256};

struct SplitCase {
  int64_t cols;
  int64_t n = 23, k = 3, head_rows = 30, tail_rows = 25;
  Vec head = random_vector(head_rows * cols, 1), tail = random_vector(tail_rows * cols, 2);
  std::vector<bf16> tail16;
  Vec tail_rounded;  // tail16 widened
  std::vector<int32_t> row;  // [N*K] into the joined rows, some dropped (-1)
  Vec weight = random_vector(n * k, 3);

  explicit SplitCase(int64_t width) : cols(width) {
    for (float x : tail) {
      tail16.push_back(to_bf16(x));
      tail_rounded.push_back(round_to_bf16(x));
    }
    for (int64_t a = 0; a < n * k; ++a)
      row.push_back(a % 7 == 3 ? -1 : static_cast<int32_t>((a * 13) % (head_rows + tail_rows)));
  }
  // head then `rows` as one buffer
  Vec joined(const Vec& rows) const {
    Vec out = head;
    out.insert(out.end(), rows.begin(), rows.end());
    return out;
  }
};

void expect_close(const Vec& actual, const Vec& expected, double tol) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i)
    EXPECT_NEAR(actual[i], expected[i], tol * (1.0 + std::fabs(expected[i]))) << "element " << i;
}

TEST(SplitRows, CombineEqualsCombineOfJoinedRowsBitForBit) {
  for (const int64_t cols : kWidths) {
    const SplitCase t(cols);
    for (const bool weighted : {false, true}) {
      const float* w = weighted ? t.weight.data() : nullptr;
      for (const bool bf16_tail : {false, true}) {
        const Vec joined = t.joined(bf16_tail ? t.tail_rounded : t.tail);
        Vec want(t.n * cols), got(t.n * cols, 1.0f), ref(t.n * cols);
        cpu::combine_rows(joined.data(), t.row.data(), w, want.data(), t.n, t.k, cols);
        cpu::combine_rows_split(t.head.data(), t.head_rows, bf16_tail ? nullptr : t.tail.data(),
                                bf16_tail ? t.tail16.data() : nullptr, t.row.data(), w,
                                got.data(), t.n, t.k, cols);
        EXPECT_EQ(got, want) << "weighted " << weighted << ", bf16 tail " << bf16_tail;
        cpu::ref::combine_rows_split(t.head.data(), t.head_rows,
                                     bf16_tail ? nullptr : t.tail.data(),
                                     bf16_tail ? t.tail16.data() : nullptr, t.row.data(), w,
                                     ref.data(), t.n, t.k, cols);
        expect_close(got, ref, 1e-6);  // a sum of K = 3 products
      }
    }
  }
}

TEST(SplitRows, GatherDotEqualsGatherDotOfJoinedRowsBitForBit) {
  for (const int64_t cols : kWidths) {
    const SplitCase t(cols);
    const int64_t outputs = t.n * t.k;
    const Vec a = random_vector(t.n * cols, 4);
    std::vector<int32_t> a_row;
    for (int64_t i = 0; i < outputs; ++i) a_row.push_back(static_cast<int32_t>(i / t.k));
    for (const bool bf16_tail : {false, true}) {
      const Vec joined = t.joined(bf16_tail ? t.tail_rounded : t.tail);
      Vec want(outputs), got(outputs, 1.0f), ref(outputs);
      cpu::gather_dot(a.data(), a_row.data(), joined.data(), t.row.data(), want.data(), outputs,
                      cols);
      cpu::gather_dot_split(a.data(), a_row.data(), t.head.data(), t.head_rows,
                            bf16_tail ? nullptr : t.tail.data(),
                            bf16_tail ? t.tail16.data() : nullptr, t.row.data(), got.data(),
                            outputs, cols);
      EXPECT_EQ(got, want) << "bf16 tail " << bf16_tail;
      cpu::ref::gather_dot_split(a.data(), a_row.data(), t.head.data(), t.head_rows,
                                 bf16_tail ? nullptr : t.tail.data(),
                                 bf16_tail ? t.tail16.data() : nullptr, t.row.data(), ref.data(),
                                 outputs, cols);
      expect_close(got, ref, 1e-5 * cols / 37);  // a dot product of cols terms
    }
  }
}

TEST(SplitRows, PermuteIntoBf16EqualsPermuteThenConvert) {
  const int64_t src_rows = 19, n = 40, cols = kWidths[0];
  const Vec src = random_vector(src_rows * cols, 5);
  const Vec scale = random_vector(n, 6);
  std::vector<int32_t> index;
  for (int64_t i = 0; i < n; ++i) index.push_back(i % 9 == 4 ? -1 : static_cast<int32_t>((i * 5) % src_rows));
  for (const bool scaled : {false, true}) {
    const float* s = scaled ? scale.data() : nullptr;
    Vec permuted(n * cols);
    cpu::permute_rows(src.data(), index.data(), s, permuted.data(), n, cols);
    std::vector<bf16> want(permuted.size()), got(permuted.size()), ref(permuted.size());
    cpu::convert_to_bf16(permuted.data(), want.data(), static_cast<int64_t>(permuted.size()));
    cpu::permute_rows_bf16(src.data(), index.data(), s, got.data(), n, cols);
    cpu::ref::permute_rows_bf16(src.data(), index.data(), s, ref.data(), n, cols);
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(got[i].bits, want[i].bits) << "element " << i << ", scaled " << scaled;
      EXPECT_EQ(ref[i].bits, want[i].bits) << "element " << i << ", scaled " << scaled;
    }
  }
}

// The op API: split rows through ops:: (shapes checked), and a row index past the joined
// rows is refused.
TEST(SplitRows, OpsCheckTheRowIndices) {
  const int64_t cols = kWidths[0];
  SplitCase t(cols);
  const Tensor head(t.head.data(), {t.head_rows, cols}), tail(t.tail.data(), {t.tail_rows, cols});
  Vec out(t.n * cols);
  const Vec joined = t.joined(t.tail);
  Vec want(t.n * cols);
  cpu::combine_rows(joined.data(), t.row.data(), t.weight.data(), want.data(), t.n, t.k, cols);
  ops::combine_rows(ops::SplitRows{head, tail}, t.row, t.weight, Tensor(out.data(), {t.n, cols}));
  EXPECT_EQ(out, want);
  t.row[5] = static_cast<int32_t>(t.head_rows + t.tail_rows);
  EXPECT_THROW(ops::combine_rows(ops::SplitRows{head, tail}, t.row, t.weight,
                                 Tensor(out.data(), {t.n, cols})),
               Error);
}

}  // namespace
}  // namespace moe
