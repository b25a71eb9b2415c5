// Fast matmul through OpenBLAS, and the process-level BLAS/thread settings.
//
// This OpenBLAS is the OpenMP build (see CMakeLists.txt): BLAS and the kernels share
// one thread pool. Called outside a parallel region, matmul uses every thread;
// called inside one, it runs single-threaded on the calling thread, which is how
// GroupedExperts runs several small expert GEMMs side by side.

#include <cblas.h>
#include <omp.h>
#include <strings.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <limits>

#include "framework/core/error.h"
#include "framework/kernels/cpu/cpu_ops.h"

namespace moe::cpu {

namespace {

// OpenBLAS cores whose sgemm is the AVX-512 (SkylakeX) kernel; Cooperlake and
// SapphireRapids add bf16 kernels on top, so they are kept when detected.
bool is_avx512_core(const char* name) {
  for (const char* core : {"SkylakeX", "Cooperlake", "SapphireRapids"})
    if (strcasecmp(name, core) == 0) return true;
  return false;
}

}  // namespace

void select_blas_kernels(char** argv) {
  // OPENBLAS_CORETYPE is read when libopenblas loads, long before main(), so the
  // only way to change the kernel is to run the program again with it set.
  // MOE_BLAS_REEXEC guards against an exec loop; a user's own OPENBLAS_CORETYPE wins.
  // OpenBLAS 0.3.21 detects some AVX-512 CPUs as Haswell/Zen (AVX2, about half
  // the sgemm rate); others (with bf16) already as Cooperlake: no exec needed.
  if (argv == nullptr || !__builtin_cpu_supports("avx512f")) return;
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;
  if (std::getenv("MOE_BLAS_REEXEC") != nullptr) return;
  if (is_avx512_core(openblas_get_corename())) return;
  setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
  setenv("MOE_BLAS_REEXEC", "1", 1);
  execv("/proc/self/exe", argv);
  // exec failed (no /proc, say): keep running with the kernel OpenBLAS chose.
}

const char* blas_core_name() { return openblas_get_corename(); }

int num_threads() { return omp_get_max_threads(); }

void matmul(const float* a, const float* b, float* c, int64_t m, int64_t n,
            int64_t k, bool trans_a, bool trans_b, float alpha, float beta) {
  if (m == 0 || n == 0) return;
  constexpr int64_t kMaxBlasInt = std::numeric_limits<blasint>::max();
  MOE_CHECK(m <= kMaxBlasInt && n <= kMaxBlasInt && k <= kMaxBlasInt,
            "matmul dims exceed the BLAS integer: m=", m, " n=", n, " k=", k);
  // Row-major leading dimensions: A is (m,k) or (k,m); B is (k,n) or (n,k); C (m,n).
  // BLAS requires ld >= 1 even for empty operands.
  const int64_t lda = std::max<int64_t>(1, trans_a ? m : k);
  const int64_t ldb = std::max<int64_t>(1, trans_b ? k : n);
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(n));
}

}  // namespace moe::cpu
