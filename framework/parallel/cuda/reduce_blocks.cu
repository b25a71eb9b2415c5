// The rank-ordered combination of reduce_scatter_v on the GPU: out = block 0, then
// op(out, block r) for r = 1, 2, ... (the MPI backend's order, so both backends round
// alike and the result does not depend on NCCL's reduction tree).

#include <cstdint>

#include "framework/kernels/cuda/check.h"
#include "framework/kernels/cuda/context.h"
#include "framework/kernels/cuda/launch.h"
#include "framework/parallel/cuda/nccl_communicator.h"

namespace moe {
namespace {

template <class T>
__global__ void reduce_blocks_kernel(const T* blocks, int ranks, int64_t count, T* out,
                                     ReduceOp op) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    T acc = blocks[i];
    for (int r = 1; r < ranks; ++r) {
      const T v = blocks[r * count + i];
      acc = op == ReduceOp::kSum ? acc + v : op == ReduceOp::kMax ? (v > acc ? v : acc)
                                                                  : (v < acc ? v : acc);
    }
    out[i] = acc;
  }
}

template <class T>
void launch(const void* blocks, int ranks, int64_t count, void* out, ReduceOp op) {
  reduce_blocks_kernel<<<cuda::blocks_for(count), cuda::kThreads, 0, cuda::current().stream()>>>(
      static_cast<const T*>(blocks), ranks, count, static_cast<T*>(out), op);
  MOE_CUDA_CHECK_LAUNCH();
}

}  // namespace

void reduce_blocks_in_order(const void* blocks, int ranks, int64_t count, void* out,
                            CommType type, ReduceOp op) {
  if (count == 0) return;
  switch (type) {
    case CommType::kFloat32: return launch<float>(blocks, ranks, count, out, op);
    case CommType::kFloat64: return launch<double>(blocks, ranks, count, out, op);
    case CommType::kInt32: return launch<int32_t>(blocks, ranks, count, out, op);
    case CommType::kInt64: return launch<int64_t>(blocks, ranks, count, out, op);
    case CommType::kUint8: return launch<uint8_t>(blocks, ranks, count, out, op);
  }
}

}  // namespace moe
