#pragma once
// Bytes each rank holds of the training state, from the buffers as allocated (not an
// estimate): parameters (fp32 values), their gradients and the AdamW moments. With
// parallel.shard_optimizer a rank's optimizer state is its 1/n slices
// (framework/parallel/grad_sync.h).
//
//   {"parameter_bytes": [rank 0, rank 1, ...], "gradient_bytes": [...],
//    "optimizer_state_bytes": [...]}

#include "framework/optim/adamw.h"
#include "framework/parallel/communicator.h"
#include "framework/tensor/param_store.h"
#include <nlohmann/json.hpp>

namespace moe {

// Collective over `world`: every rank's figures, in world-rank order.
nlohmann::json memory_record(const ParamStore& store, const AdamW& optimizer,
                             Communicator& world);

}  // namespace moe
