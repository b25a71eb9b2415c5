#include "framework/train/device_layout.h"

#include "framework/core/error.h"

namespace moe {

namespace {

constexpr const char* kOnGpu = " with run.device = cuda is not wired yet (docs/gpu.md)";

}  // namespace

void check_device_layout(const Config& c) {
  if (c.run.device != Device::kCuda) return;
  // bf16 rows on the wire are the all-to-all's, which runs on host buffers
  MOE_USER_CHECK(c.moe.a2a_dtype == Precision::kFp32, "moe.a2a_dtype: bf16", kOnGpu,
                 "; use moe.a2a_dtype = fp32");
  // The activations' collectives (tensor parallelism, the token all-to-all, fssdp's
  // sparse ones) still run on host buffers: data parallelism only.
  const ParallelConfig& p = c.parallel;
  MOE_USER_CHECK(p.tp == 1, "parallel.tp: ", p.tp, kOnGpu, "; use parallel.dp");
  MOE_USER_CHECK(p.ep == 1, "parallel.ep: ", p.ep, kOnGpu, "; use parallel.dp");
  MOE_USER_CHECK(p.etp == 1, "parallel.etp: ", p.etp, kOnGpu, "; use parallel.dp");
  MOE_USER_CHECK(p.expert_sharding == ExpertSharding::kNone, "parallel.expert_sharding: ",
                 enum_name(p.expert_sharding), kOnGpu);
  MOE_USER_CHECK(!p.shard_optimizer, "parallel.shard_optimizer: true", kOnGpu);
  MOE_USER_CHECK(c.moe.dispatcher == DispatcherKind::kAuto ||
                     c.moe.dispatcher == DispatcherKind::kLocal,
                 "moe.dispatcher: ", enum_name(c.moe.dispatcher), kOnGpu,
                 "; with parallel.ep = 1 the experts are local (auto or local)");
  // the bi-level router's statistics loop over its probabilities on the host
  MOE_USER_CHECK(c.moe.routing == RoutingKind::kTopK, "moe.routing: ",
                 enum_name(c.moe.routing), kOnGpu, "; use moe.routing = topk");
}

}  // namespace moe
