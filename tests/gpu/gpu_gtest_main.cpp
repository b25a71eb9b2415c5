// main() of the GPU tests (CTest label gpu). It initialises MPI (a test with a
// "// mpi-ranks:" line runs under mpirun; the others are a single rank), and reports the
// test skipped (exit 77, CTest's SKIP_RETURN_CODE) when no CUDA device is visible or the
// node has fewer GPUs than ranks, unless MOE_GPU_REQUIRED=1 (tests/gpu/run.sh) makes a
// missing GPU a failure. Otherwise each rank computes on its own GPU (a ComputeDevice for
// the tests' CUDA tensors) and exits non-zero if a test failed on any rank.

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <iostream>

#include "framework/kernels/device.h"
#include "framework/parallel/mpi_env.h"

int main(int argc, char** argv) {
  moe::MpiEnv env(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  const int visible = moe::visible_cuda_devices();
  if (visible == 0) {
    const char* required = std::getenv("MOE_GPU_REQUIRED");
    if (required != nullptr && std::strcmp(required, "1") == 0) {
      std::cout << "FAILED: MOE_GPU_REQUIRED=1 but no CUDA device is visible\n";
      return 1;
    }
    if (env.rank() == 0)
      std::cout << "SKIPPED: no CUDA device is visible (tests/gpu need an NVIDIA GPU)\n";
    return 77;
  }
  if (env.local_size() > visible) {
    if (env.rank() == 0)
      std::cout << "SKIPPED: " << env.local_size() << " ranks on a node with " << visible
                << " GPU(s)\n";
    return 77;
  }
  const moe::ComputeDevice device(moe::Device::kCuda, env.local_rank(), env.local_size(),
                                  /*share_gpus=*/false);
  if (env.rank() == 0) std::cout << "GPU tests on " << device.description() << "\n";
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, env.world());
  return failed;
}
