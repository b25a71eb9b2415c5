#!/usr/bin/env bash
# tests/gpu/run.sh [BUILD_DIR]: the GPU checks on a machine with one NVIDIA GPU
# (compute capability 9.0) and the CUDA toolkit. Builds BUILD_DIR (default build-gpu)
# with the CUDA backend unless it already holds a build, then runs every CTest test
# labelled gpu with MOE_GPU_REQUIRED=1 (a missing GPU fails instead of skipping), the
# GPU kernel benchmark and the model against PyTorch on the same GPU, and prints the
# figures. Inside a bundle (launch/gpu-bundle.sh; source its env.sh first) it runs the
# bundle's prepared binaries instead and builds nothing. Exit status: 0 when every test
# and both benchmarks ran through, else 1.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-${MOE_BUILD_DIR:-$root/build-gpu}}
start=$(date +%s)
jobs=$(nproc)

echo "== GPU"
nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version \
  --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not available"

# The model against PyTorch eager and torch.compile on this GPU (configs/moe_gpt_gpu.ini;
# needs the python that holds PyTorch with CUDA). $1: the folder holding moe-train.
model_benchmark() {
  echo "== moe_gpt_gpu against PyTorch (tests/gpu/moe_gpt_gpu_vs_torch.py)"
  if ! python3 -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    echo "moe_gpt_gpu_vs_torch.py: no python3 with CUDA PyTorch here: not run"
    return 1
  fi
  # bf16 (the goals' precision) where the trainer takes it on the GPU, else fp32
  python3 "$root/tests/gpu/moe_gpt_gpu_vs_torch.py" --build "$1" ||
    python3 "$root/tests/gpu/moe_gpt_gpu_vs_torch.py" --build "$1" --precision fp32
}

if [[ -x $root/bin/gpu_test_cuda_kernels ]]; then
  echo "== bundle $root: prepared binaries"
  status=0
  for t in "$root"/bin/gpu_test_*; do
    name=$(basename "$t")
    echo "== $name"
    if [[ $name == gpu_test_nccl_communicator ]]; then
      MOE_GPU_REQUIRED=1 mpirun --oversubscribe --bind-to none -np 1 "$t" || status=1
    else
      MOE_GPU_REQUIRED=1 "$t" || status=1
    fi
  done
  echo "== gpu_train (run.device = cuda against the CPU: tests/gpu/train_gpu.sh)"
  MOE_GPU_REQUIRED=1 bash "$root/tests/gpu/train_gpu.sh" "$root/bin" "$root" || status=1
  echo "== GPU kernel benchmark"
  "$root/bin/gpu_bench_kernels" || status=1
  model_benchmark "$root/bin" || status=1
  echo "== total: $(($(date +%s) - start)) s, tests exit status $status"
  exit $status
fi

if [[ ! -f $build/CMakeCache.txt ]]; then
  echo "== configure $build"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DMOE_WITH_CUDA=ON \
    ${MOE_CMAKE_ARGS:-} >/dev/null || exit 1
fi
grep -q '^MOE_WITH_CUDA:BOOL=ON' "$build/CMakeCache.txt" ||
  { echo "run.sh: $build is not configured with -DMOE_WITH_CUDA=ON"; exit 2; }
echo "== build ($jobs jobs)"
build_start=$(date +%s)
cmake --build "$build" -j "$jobs" >"$build/gpu-build.log" 2>&1 ||
  { tail -40 "$build/gpu-build.log"; exit 1; }
echo "build: $(($(date +%s) - build_start)) s"

echo "== gpu tests (the kernels, NCCL, and training: tests/gpu/train_gpu.sh)"
(cd "$build" && MOE_GPU_REQUIRED=1 ctest -L gpu --output-on-failure --timeout 300)
status=$?

echo "== GPU kernel benchmark"
if [[ -x $build/gpu_bench_kernels ]]; then
  "$build/gpu_bench_kernels" || status=1
else
  echo "gpu_bench_kernels: not built"
fi

model_benchmark "$build" || status=1

echo "== total: $(($(date +%s) - start)) s, tests exit status $status"
exit $status
