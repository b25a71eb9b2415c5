#pragma once
// The dit_moe preview for TensorBoard: a grid of class-conditional samples drawn with
// the run's sampler (diffusion.sampler, sample_steps, guidance), `rows` samples of each
// class, one column per class. The noise is a function of `seed` alone, so the grids of
// successive evaluations start from the same noise and show how the model changes.

#include <cstdint>

#include "framework/config/config.h"
#include "models/dit_moe/diffusion.h"
#include "models/dit_moe/dit_moe.h"
#include "models/model.h"

namespace moe {

PreviewImage sample_grid(DitMoe& net, const Diffusion& diffusion, const Config& config,
                         int rows, uint64_t seed);

}  // namespace moe
