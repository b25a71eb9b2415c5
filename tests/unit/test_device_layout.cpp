// run.device = cuda: the layouts not wired to the GPU yet are refused with one line
// naming the option (framework/train/device_layout.h), and the CPU is never refused.
// The config is set field by field, so this runs in builds without the CUDA backend.

#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "framework/config/config.h"
#include "framework/core/error.h"
#include "framework/train/device_layout.h"
#include "framework/train/preflight.h"

namespace moe {
namespace {

// The one-line user error of check_device_layout(c) ("" when it accepts c).
std::string refusal(const Config& c) {
  try {
    check_device_layout(c);
  } catch (const Error& e) {
    EXPECT_TRUE(e.user_error()) << e.what();
    const std::string message = e.what();
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    return message;
  }
  return "";
}

Config on_gpu(const std::function<void(Config&)>& change) {
  Config c = load_config_text("", {});
  c.run.device = Device::kCuda;
  change(c);
  return c;
}

TEST(DeviceLayout, DataParallelFp32IsAccepted) {
  EXPECT_EQ(refusal(on_gpu([](Config&) {})), "");
  EXPECT_EQ(refusal(on_gpu([](Config& c) { c.parallel.dp = 4; })), "");
  EXPECT_EQ(refusal(on_gpu([](Config& c) { c.moe.dispatcher = DispatcherKind::kLocal; })), "");
}

TEST(DeviceLayout, CpuIsNeverRefused) {
  Config c = load_config_text("", {});
  c.parallel.tp = 2;
  c.train.precision = Precision::kBf16;
  c.moe.routing = RoutingKind::kBilevel;
  EXPECT_EQ(refusal(c), "");
}

TEST(DeviceLayout, EachUnwiredOptionIsNamed) {
  const std::pair<std::function<void(Config&)>, std::string> cases[] = {
      {[](Config& c) { c.moe.a2a_dtype = Precision::kBf16; }, "moe.a2a_dtype: bf16"},
      {[](Config& c) { c.parallel.tp = 2; }, "parallel.tp: 2"},
      {[](Config& c) { c.parallel.ep = 2; }, "parallel.ep: 2"},
      {[](Config& c) { c.parallel.etp = 2; }, "parallel.etp: 2"},
      {[](Config& c) { c.parallel.expert_sharding = ExpertSharding::kFssdp; },
       "parallel.expert_sharding: fssdp"},
      {[](Config& c) { c.parallel.shard_optimizer = true; }, "parallel.shard_optimizer: true"},
      {[](Config& c) { c.moe.dispatcher = DispatcherKind::kFlat; }, "moe.dispatcher: flat"},
      {[](Config& c) { c.moe.routing = RoutingKind::kBilevel; }, "moe.routing: bilevel"},
  };
  for (const auto& [change, start] : cases) {
    const std::string message = refusal(on_gpu(change));
    EXPECT_EQ(message.rfind(start, 0), 0u) << message;
    EXPECT_NE(message.find("run.device = cuda"), std::string::npos) << message;
  }
}

// A GPU run is measured against the GPU's free memory, the parameters and gradients
// already counted in it: one line naming the need, the GPU's room and what to reduce.
TEST(DeviceLayout, GpuMemoryIsChecked) {
  MemoryEstimate est;
  est.state_bytes = 16.0 * (1 << 30);
  est.activation_bytes = 20.0 * (1 << 30);
  est.reserve_bytes = 1.0 * (1 << 30);
  EXPECT_NO_THROW(check_device_memory(est, 30.0 * (1 << 30)));  // 37 - 8 GiB still needed
  try {
    check_device_memory(est, 28.0 * (1 << 30));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(e.user_error());
    EXPECT_EQ(std::string(e.what()),
              "memory: this run needs about 37.0 GiB of GPU memory per rank (parameters, "
              "gradients and AdamW state 16.0 GiB, activations 20.0 GiB, runtime 1.0 GiB), "
              "but the GPU has 36.0 GiB for it; reduce data.batch_size, model.seq_len or the "
              "model, or use more ranks");
  }
}

// bf16 mixed precision trains on the GPU (cuBLAS, the grouped experts, cuDNN attention).
TEST(DeviceLayout, Bf16IsNotRefused) {
  EXPECT_EQ(refusal(on_gpu([](Config& c) { c.train.precision = Precision::kBf16; })), "");
}

}  // namespace
}  // namespace moe
