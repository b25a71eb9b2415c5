#include "framework/nn/patch_embed.h"

#include <cmath>

#include "framework/kernels/ops.h"

namespace moe {

PatchEmbed::PatchEmbed(ParamStore& store, const std::string& prefix, int64_t channels,
                       int64_t image_size, int64_t patch, int64_t width)
    : channels_(channels),
      image_size_(image_size),
      patch_(patch),
      grid_(patch > 0 ? image_size / patch : 0),
      proj_(store, prefix + ".weight", channels * patch * patch, width,
            Init::normal(1.0f / std::sqrt(static_cast<float>(channels * patch * patch))),
            prefix + ".bias"),
      cols_(store.device()),
      dx_(store.device()) {
  MOE_CHECK(patch > 0 && image_size % patch == 0, "PatchEmbed ", prefix, ": image size ",
            image_size, " is not a multiple of the patch size ", patch);
}

Tensor PatchEmbed::forward(Tensor x) {
  MOE_CHECK(x.rank() == 4 && x.dim(1) == channels_ && x.dim(2) == image_size_ &&
                x.dim(3) == image_size_,
            "PatchEmbed: input ", x.shape.str(), " is not (B, ", channels_, ", ", image_size_,
            ", ", image_size_, ")");
  batch_ = x.dim(0);
  Tensor cols = cols_.view({batch_ * num_patches(), channels_ * patch_ * patch_});
  ops::patchify(x, cols, patch_);
  return proj_.forward(cols);  // (B*P, C)
}

Tensor PatchEmbed::backward(Tensor dy) {
  const Tensor dcols = proj_.backward(dy);  // (B*P, Cin*p*p)
  Tensor dx = dx_.view({batch_, channels_, image_size_, image_size_});
  // patchify is a permutation: its backward is its inverse
  ops::unpatchify(dcols, dx, patch_);
  return dx;
}

}  // namespace moe
