// The pieces a device model adds to the CPU path, checked on the CPU: the squared-error
// op (DiT's loss) is its reference loop bit for bit, and the named host/device crossings
// hand CPU tensors back untouched (the CPU path copies nothing).

#include <gtest/gtest.h>

#include <vector>

#include "framework/kernels/cpu/cpu_ops.h"
#include "framework/kernels/host_copy.h"
#include "framework/kernels/ops.h"
#include "framework/tensor/param_store.h"
#include "tests/unit/gradcheck.h"

namespace moe {
namespace {

using moe::testing::random_vector;

TEST(SquaredError, IsTheSerialDoubleSumBitForBit) {
  for (const int64_t n : {int64_t{0}, int64_t{1}, int64_t{1001}}) {
    std::vector<float> pred = random_vector(n, 1, 2.0f), target = random_vector(n, 2);
    std::vector<float> dpred(static_cast<size_t>(n)), dref(static_cast<size_t>(n));
    double expected = 0.0;  // the loop DiT's loss ran before it became an op
    for (int64_t i = 0; i < n; ++i) {
      const float diff = pred[i] - target[i];
      expected += static_cast<double>(diff) * diff;
      dref[i] = 0.5f * diff;
    }
    const double sum = ops::squared_error(Tensor(pred.data(), {n}), Tensor(target.data(), {n}),
                                          Tensor(dpred.data(), {n}), 0.5f);
    EXPECT_EQ(sum, expected) << n;
    EXPECT_EQ(dpred, dref) << n;
    std::vector<float> dfast(static_cast<size_t>(n));
    EXPECT_EQ(cpu::squared_error(pred.data(), target.data(), dfast.data(), 0.5f, n),
              cpu::ref::squared_error(pred.data(), target.data(), dref.data(), 0.5f, n));
    EXPECT_EQ(dfast, dref);
  }
}

TEST(SquaredError, ChecksItsOperands) {
  std::vector<float> a(4), b(3), d(4);
  EXPECT_THROW(ops::squared_error(Tensor(a.data(), {4}), Tensor(b.data(), {3}),
                                  Tensor(d.data(), {4}), 1.0f),
               Error);
}

TEST(HostCopy, CpuTensorsCrossUntouched) {
  std::vector<float> x = random_vector(6, 3);
  const Tensor t(x.data(), {2, 3});
  Buffer host, device;
  EXPECT_EQ(ops::to_host(t, host).data, x.data());
  EXPECT_EQ(ops::to_device(t, Device::kCpu, device).data, x.data());
  EXPECT_EQ(host.size(), 0);  // no staging was touched
  EXPECT_EQ(device.size(), 0);
}

TEST(ParamStore, ParametersLiveOnTheStoresDevice) {
  ParamStore store;
  EXPECT_EQ(store.device(), Device::kCpu);
  Param& p = store.add({"w", Shape{3, 4}, Shard::kReplicated, Init::normal(0.02f)});
  EXPECT_EQ(p.value.device(), Device::kCpu);
  EXPECT_EQ(p.grad.device(), Device::kCpu);
  EXPECT_EQ(p.data().device, Device::kCpu);
}

}  // namespace
}  // namespace moe
