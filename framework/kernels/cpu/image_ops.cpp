// Fast patchify / unpatchify: the same permutation as ref_ops.cpp, moved as rows of p
// contiguous pixels (one patch row of one channel) with images split over the threads.

#include <cstring>

#include "framework/kernels/cpu/kernel_util.h"
#include "framework/kernels/cpu/cpu_ops.h"

namespace moe::cpu {

namespace {

// Calls move(image_offset, cols_offset) for every run of p pixels: image_offset into
// x (B, Cin, H, W), cols_offset into cols (B, P, Cin*p*p).
template <class Move>
void for_each_patch_row(int64_t B, int64_t channels, int64_t height, int64_t width,
                        int64_t patch, Move move) {
  const int64_t gh = height / patch, gw = width / patch;
  const int64_t patch_cols = channels * patch * patch;
#pragma omp parallel for if (B * channels * height * width > detail::kMinParallelWork)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t py = 0; py < gh; ++py)
      for (int64_t px = 0; px < gw; ++px) {
        const int64_t token = b * gh * gw + py * gw + px;
        for (int64_t c = 0; c < channels; ++c)
          for (int64_t i = 0; i < patch; ++i) {
            const int64_t pixel = ((b * channels + c) * height + py * patch + i) * width +
                                  px * patch;
            move(pixel, token * patch_cols + (c * patch + i) * patch);
          }
      }
}

}  // namespace

void patchify(const float* x, float* cols, int64_t B, int64_t channels, int64_t height,
              int64_t width, int64_t patch) {
  const size_t bytes = static_cast<size_t>(patch) * sizeof(float);
  for_each_patch_row(B, channels, height, width, patch, [&](int64_t pixel, int64_t col) {
    std::memcpy(cols + col, x + pixel, bytes);
  });
}

void unpatchify(const float* cols, float* x, int64_t B, int64_t channels, int64_t height,
                int64_t width, int64_t patch) {
  const size_t bytes = static_cast<size_t>(patch) * sizeof(float);
  for_each_patch_row(B, channels, height, width, patch, [&](int64_t pixel, int64_t col) {
    std::memcpy(x + pixel, cols + col, bytes);
  });
}

}  // namespace moe::cpu
