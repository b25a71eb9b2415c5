#pragma once
// The FLOP ceiling MFU is measured against.
//
// On a CPU the practical peak of fp32 training is the dense SGEMM rate of the BLAS in
// use (of bf16 training the bf16 GEMM's rate), on the threads the rank uses: that is the rate the framework's GEMMs could run
// at if nothing else took time. measure_sgemm_gflops() times a large square SGEMM
// at start-up (the best of all repetitions in min_seconds, after a warm-up); train.peak_gflops
// overrides it with a per-core figure (e.g. a theoretical peak) for reproducible MFU.

#include "framework/core/dtype.h"

namespace moe {

// GFLOP/s of ops::matmul on an n x n x n problem with the current thread settings.
double measure_sgemm_gflops(int n = 1024, int min_repeats = 5, double min_seconds = 0.5);
// The same with bf16 operands (the GEMM of train.precision = bf16, whose peak MFU is
// then measured against).
double measure_bf16_gemm_gflops(int n = 1024, int min_repeats = 5, double min_seconds = 0.5);
// The rate of ops::matmul on `device` (run.device = cuda: the GPU's) with fp32 operands
// (no TF32) or, for train.precision = bf16, bf16 ones with fp32 sums; each repetition
// timed to its completion (the host waits for one element of c).
double measure_device_gemm_gflops(Device device, DType operands, int n = 4096,
                                  int min_repeats = 5, double min_seconds = 0.5);

}  // namespace moe
