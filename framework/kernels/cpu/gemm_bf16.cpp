// The bf16 GEMM: bf16 operands, fp32 products and sums, fp32 output, through oneDNN's
// matmul primitive (Debian libdnnl-dev 2.6). OpenBLAS 0.3.21 has no sbgemm.
//
// Every dimension is a runtime value (DNNL_RUNTIME_DIM_VAL) and the layouts are format
// tags (ab, or ba for a transposed operand), so one primitive per (trans_a, trans_b,
// accumulate) serves every shape of a run: the experts' row counts change every step,
// and a primitive per shape would cost ~0.3 ms to create each time. oneDNN then runs its
// JIT GEMM (gemm:jit: AVX512_BF16 dot products), measured at 300-380 GFLOP/s on the
// model's shapes on 2 threads here against ~200 for OpenBLAS's SGEMM at its best.
//
// Threads: oneDNN is built on OpenMP (the same runtime as OpenBLAS-openmp and the
// kernels), so a call outside a parallel region uses every thread and a call inside one
// runs on the calling thread alone, as matmul does (GroupedExperts relies on it).
// Concurrent calls share the primitives: each call passes its own scratchpad
// (scratchpad_mode::user), the documented way to execute one primitive from several
// threads at once.
//
// Without bf16 instructions (oneDNN's effective ISA below avx512_core_bf16, e.g. on an
// AVX2 CPU or with ONEDNN_MAX_CPU_ISA lowered) the operands are converted to fp32 and
// the fp32 GEMM runs: the same exact products, summed in fp32, at the fp32 rate.
//
// The engine and the primitives live in one lazily built cache (like OpenBLAS's own
// state): the kernel signatures are plain pointers, and the cache never changes once
// its primitives exist.

#include <oneapi/dnnl/dnnl.hpp>

#include <array>
#include <cstring>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "framework/core/error.h"
#include "framework/kernels/cpu/cpu_ops.h"

namespace moe::cpu {
namespace {

using dnnl::memory;
using Dims = memory::dims;

constexpr int kVariants = 8;  // trans_a | trans_b << 1 | accumulate << 2

int variant(bool trans_a, bool trans_b, bool accumulate) {
  return (trans_a ? 1 : 0) | (trans_b ? 2 : 0) | (accumulate ? 4 : 0);
}

class Bf16GemmCache {
 public:
  static Bf16GemmCache& get() {
    static Bf16GemmCache cache;
    return cache;
  }

  // The primitive of one variant, made on first use.
  const dnnl::matmul& primitive(int v, size_t& scratch_bytes) {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (!prims_[v]) make(v);
    scratch_bytes = scratch_bytes_[v];
    return *prims_[v];
  }
  const dnnl::engine& engine() const { return engine_; }
  bool native() const { return native_; }
  const std::string& name() const { return name_; }

 private:
  Bf16GemmCache() : engine_(dnnl::engine::kind::cpu, 0) {
    const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    const bool bf16_isa = (isa & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16;
    size_t unused = 0;
    const std::string impl = bf16_isa ? impl_of(primitive(0, unused)) : "";
    // A reference implementation would be orders of magnitude slower than the fallback.
    native_ = bf16_isa && impl.rfind("ref", 0) != 0;
    const dnnl_version_t* version = dnnl_version();
    std::ostringstream name;
    name << "oneDNN " << version->major << "." << version->minor << "." << version->patch;
    if (native_)
      name << " " << impl << ", ISA " << isa_name(isa);
    else
      name << " without bf16 instructions (ISA " << isa_name(isa)
           << "): bf16 operands converted to fp32 for the fp32 GEMM";
    name_ = name.str();
  }

  void make(int v) {
    using tag = memory::format_tag;
    constexpr auto kAny = DNNL_RUNTIME_DIM_VAL;
    const bool trans_a = v & 1, trans_b = v & 2, accumulate = v & 4;
    const memory::desc a({kAny, kAny}, memory::data_type::bf16, trans_a ? tag::ba : tag::ab);
    const memory::desc b({kAny, kAny}, memory::data_type::bf16, trans_b ? tag::ba : tag::ab);
    const memory::desc c({kAny, kAny}, memory::data_type::f32, tag::ab);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (accumulate) {
      dnnl::post_ops sum;
      sum.append_sum(1.0f);  // c += a b
      attr.set_post_ops(sum);
    }
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), attr, engine_);
    scratch_bytes_[v] = pd.scratchpad_desc().get_size();
    prims_[v].emplace(pd);
  }

  static std::string impl_of(const dnnl::matmul& prim) {
    const char* info = nullptr;
    MOE_CHECK(dnnl_primitive_desc_query(prim.get_primitive_desc(), dnnl_query_impl_info_str, 0,
                                        &info) == dnnl_success && info != nullptr,
              "oneDNN: no implementation name of the bf16 matmul");
    return info;
  }

  static const char* isa_name(dnnl_cpu_isa_t isa) {
    switch (isa) {
      case dnnl_cpu_isa_sse41: return "sse41";
      case dnnl_cpu_isa_avx: return "avx";
      case dnnl_cpu_isa_avx2: return "avx2";
      case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
      case dnnl_cpu_isa_avx512_core: return "avx512_core";
      case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
      case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
      case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
      default: return "other";
    }
  }

  dnnl::engine engine_;
  std::mutex mutex_;
  std::array<std::optional<dnnl::matmul>, kVariants> prims_;
  std::array<size_t, kVariants> scratch_bytes_{};
  bool native_ = false;
  std::string name_;
};

// The fallback: fp32 copies of the operands, then the fp32 GEMM. The copies are this
// thread's (GroupedExperts calls from several threads at once).
void matmul_bf16_as_fp32(const bf16* a, const bf16* b, float* c, int64_t m, int64_t n,
                         int64_t k, bool trans_a, bool trans_b, bool accumulate) {
  thread_local std::vector<float> a32, b32;
  a32.resize(static_cast<size_t>(m * k));
  b32.resize(static_cast<size_t>(k * n));
  convert_from_bf16(a, a32.data(), m * k);
  convert_from_bf16(b, b32.data(), k * n);
  matmul(a32.data(), b32.data(), c, m, n, k, trans_a, trans_b, 1.0f, accumulate ? 1.0f : 0.0f);
}

}  // namespace

bool bf16_gemm_native() { return Bf16GemmCache::get().native(); }

const char* bf16_gemm_name() { return Bf16GemmCache::get().name().c_str(); }

void matmul_bf16(const bf16* a, const bf16* b, float* c, int64_t m, int64_t n, int64_t k,
                 bool trans_a, bool trans_b, bool accumulate) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // an empty sum: c = 0, or c unchanged
    if (!accumulate) std::memset(c, 0, static_cast<size_t>(m * n) * sizeof(float));
    return;
  }
  Bf16GemmCache& cache = Bf16GemmCache::get();
  if (!cache.native()) {
    matmul_bf16_as_fp32(a, b, c, m, n, k, trans_a, trans_b, accumulate);
    return;
  }
  size_t scratch_bytes = 0;
  const dnnl::matmul& prim = cache.primitive(variant(trans_a, trans_b, accumulate), scratch_bytes);
  // Row-major (m, k) or, transposed, (k, m) stored: strides of the logical (m, k) view.
  const memory::desc a_md({m, k}, memory::data_type::bf16, trans_a ? Dims{1, m} : Dims{k, 1});
  const memory::desc b_md({k, n}, memory::data_type::bf16, trans_b ? Dims{1, k} : Dims{n, 1});
  const memory::desc c_md({m, n}, memory::data_type::f32, Dims{n, 1});
  const dnnl::engine& engine = cache.engine();
  // oneDNN takes non-const handles; it does not write the sources.
  memory a_mem(a_md, engine, const_cast<bf16*>(a));
  memory b_mem(b_md, engine, const_cast<bf16*>(b));
  memory c_mem(c_md, engine, c);
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem}};
  thread_local std::vector<char> scratch;
  if (scratch_bytes > 0) {
    scratch.resize(scratch_bytes);
    const memory::desc scratch_md({static_cast<memory::dim>(scratch_bytes)},
                                  memory::data_type::u8, memory::format_tag::a);
    args.emplace(DNNL_ARG_SCRATCHPAD, memory(scratch_md, engine, scratch.data()));
  }
  dnnl::stream stream(engine);
  prim.execute(stream, args);
  stream.wait();
}

}  // namespace moe::cpu
