#pragma once
// What training with run.device = cuda covers today (docs/gpu.md, "Training on the GPU").
// The model, its gradients and optimizer state live on the GPU; the gradient buckets go
// over NCCL. Layouts whose communication or kernels are still host-only are refused
// before anything is written, with one line naming the option, rather than trained
// wrong.

#include "framework/config/config.h"

namespace moe {

// A user error (exit status 2) naming the first option of `config` that run.device =
// cuda does not train yet; nothing for run.device = cpu.
void check_device_layout(const Config& config);

}  // namespace moe
