// Attention in mixed precision on the GPU: cuDNN's fused scaled-dot-product attention
// (flash attention; cuDNN's C++ frontend builds the graphs). The twins of
// cpu::attention_forward_bf16 / attention_backward_bf16 (ops_list.inc):
//
//   forward   q, k, v: strided (B, H, T, D) views of the bf16 qkv rows (B*T, 3*H*D), no
//             copy; O (B, T, H, D) bf16 into scratch, widened exactly into out (B*T, H*D);
//             stats: cuDNN's per-row log-sum-exp of the scaled scores (B, H, T) in the
//             first half of the (B, H, T, 2) stats buffer (the CPU kernel keeps the
//             maximum and 1 / sum there instead: stats is read only by the backward of
//             the same device).
//   backward  O is out rounded back to bf16 (exact: out holds bf16 values), dO is dout
//             rounded to bf16 (where the CPU kernel rounds it too); dq, dk, dv come out
//             in bf16 in the qkv layout and are widened into dqkv. Deterministic: cuDNN's
//             deterministic algorithm (no atomic accumulation of dq), so a GPU run repeats
//             bit for bit.
//
// The products are bf16 with fp32 sums and the softmax fp32, as on the CPU; the result
// differs from the CPU twin by rounding (flash attention rounds P once per key block,
// and dq, dk, dv are bf16 before they are widened): tests/gpu/test_cuda_kernels.cpp.
// Graphs are built once per (B, T, H, D, causal) and kept for the process.

#include <cmath>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>

#include "framework/core/error.h"
#include "framework/kernels/cuda/context.h"
#include "framework/kernels/cuda/cuda_ops.h"
#include "framework/kernels/cuda/launch.h"

#ifdef MOE_WITH_CUDNN
#include <cudnn_frontend.h>
#endif

namespace moe::cuda {

#ifdef MOE_WITH_CUDNN
namespace {

namespace fe = cudnn_frontend;
using TensorPtr = std::shared_ptr<fe::graph::Tensor_attributes>;

// Tensor ids of the variant packs.
enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV };

struct Problem {
  int64_t b, t, h, d;
  bool causal, backward;
  auto operator<=>(const Problem&) const = default;
};

// A graph step's outcome; the first failure is kept.
struct Outcome {
  std::string failed;  // "step: cuDNN's message"; empty when every step succeeded
  void note(fe::error_t status, const char* step) {
    if (failed.empty() && !status.is_good()) failed = std::string(step) + ": " + status.get_message();
  }
};

struct Built {
  std::unique_ptr<fe::graph::Graph> graph;
  int64_t workspace = 0;
};

// The process's cuDNN handle and built graphs (one CUDA context per rank). Never
// destroyed: the handle must not outlive the CUDA runtime at exit.
struct SdpaState {
  cudnnHandle_t handle = nullptr;
  std::map<Problem, Built> graphs;
};

SdpaState& state() {
  static SdpaState* s = [] {
    auto* fresh = new SdpaState;
    MOE_CHECK(cudnnCreate(&fresh->handle) == CUDNN_STATUS_SUCCESS,
              "attention on the GPU: cudnnCreate failed (is libcudnn 9 installed?)");
    return fresh;
  }();
  return *s;
}

std::string describe(const Problem& p) {
  return "B " + std::to_string(p.b) + ", T " + std::to_string(p.t) + ", H " +
         std::to_string(p.h) + ", D " + std::to_string(p.d) + (p.causal ? ", causal" : "");
}

void check(const Outcome& outcome, const Problem& p) {
  MOE_CHECK(outcome.failed.empty(), "attention on the GPU (cuDNN SDPA ",
            p.backward ? "backward" : "forward", ", ", describe(p), "): ", outcome.failed);
}

// (B, H, T, D) views: q, k or v in the qkv rows (B*T, 3*H*D) (each starts at its own
// column: the pointers of the variant pack), or a tensor in rows (B*T, H*D) like out.
TensorPtr qkv_view(fe::graph::Graph& g, const char* name, Uid uid, const Problem& p) {
  return g.tensor(fe::graph::Tensor_attributes()
                      .set_name(name)
                      .set_uid(uid)
                      .set_dim({p.b, p.h, p.t, p.d})
                      .set_stride({p.t * 3 * p.h * p.d, p.d, 3 * p.h * p.d, 1}));
}
void as_rows(const TensorPtr& t, const Problem& p) {
  t->set_dim({p.b, p.h, p.t, p.d}).set_stride({p.t * p.h * p.d, p.d, p.h * p.d, 1});
}
void as_qkv(const TensorPtr& t, const Problem& p) {
  t->set_dim({p.b, p.h, p.t, p.d}).set_stride({p.t * 3 * p.h * p.d, p.d, 3 * p.h * p.d, 1});
}
// The per-row log-sum-exp (B, H, T), packed.
void as_stats(const TensorPtr& t, const Problem& p) {
  t->set_data_type(fe::DataType_t::FLOAT)
      .set_dim({p.b, p.h, p.t, 1})
      .set_stride({p.h * p.t, p.t, 1, 1});
}

// The graph of p (backward: with cuDNN's deterministic algorithm or without); built.graph
// is null and outcome says why when cuDNN cannot run it.
Built build(const Problem& p, cudnnHandle_t handle, bool deterministic, Outcome& outcome) {
  auto g = std::make_unique<fe::graph::Graph>();
  g->set_io_data_type(fe::DataType_t::BFLOAT16)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(p.d)));
  TensorPtr q = qkv_view(*g, "q", kQ, p), k = qkv_view(*g, "k", kK, p);
  TensorPtr v = qkv_view(*g, "v", kV, p);
  if (!p.backward) {
    auto options = fe::graph::SDPA_attributes()
                       .set_name("attention")
                       .set_generate_stats(true)
                       .set_causal_mask(p.causal)
                       .set_attn_scale(scale);
    auto [o, stats] = g->sdpa(q, k, v, options);
    o->set_output(true).set_uid(kO);
    as_rows(o, p);
    stats->set_output(true).set_uid(kStats);
    as_stats(stats, p);
  } else {
    TensorPtr o = g->tensor(fe::graph::Tensor_attributes().set_name("o").set_uid(kO));
    as_rows(o, p);
    TensorPtr d_o = g->tensor(fe::graph::Tensor_attributes().set_name("dO").set_uid(kDO));
    as_rows(d_o, p);
    TensorPtr stats = g->tensor(fe::graph::Tensor_attributes().set_name("stats").set_uid(kStats));
    as_stats(stats, p);
    auto options = fe::graph::SDPA_backward_attributes()
                       .set_name("attention_backward")
                       .set_causal_mask(p.causal)
                       .set_attn_scale(scale)
                       .set_deterministic_algorithm(deterministic);
    auto [dq, dk, dv] = g->sdpa_backward(q, k, v, o, d_o, stats, options);
    for (auto [t, uid] : {std::pair{dq, kDQ}, {dk, kDK}, {dv, kDV}}) {
      t->set_output(true).set_uid(uid);
      as_qkv(t, p);
    }
  }
  outcome.note(g->validate(), "validate");
  if (outcome.failed.empty()) outcome.note(g->build_operation_graph(handle), "build_operation_graph");
  if (outcome.failed.empty())
    outcome.note(g->create_execution_plans({fe::HeurMode_t::A}), "create_execution_plans");
  if (outcome.failed.empty()) outcome.note(g->check_support(handle), "check_support");
  if (outcome.failed.empty()) outcome.note(g->build_plans(handle), "build_plans");
  Built built;
  if (outcome.failed.empty()) outcome.note(g->get_workspace_size(built.workspace), "workspace");
  if (outcome.failed.empty()) built.graph = std::move(g);
  return built;
}

// The graph of p, built on first use. Backward asks for cuDNN's deterministic algorithm;
// where this cuDNN or GPU has none, it warns once and runs the atomic one (results then
// may differ in the last bits run to run).
Built& graph_of(const Problem& p, SdpaState& s) {
  auto it = s.graphs.find(p);
  if (it != s.graphs.end()) return it->second;
  Outcome first;
  Built built = build(p, s.handle, /*deterministic=*/true, first);
  if (!built.graph && p.backward) {
    Outcome second;
    built = build(p, s.handle, /*deterministic=*/false, second);
    check(second, p);
    std::cerr << "warning: attention backward on the GPU (" << describe(p)
              << "): cuDNN has no deterministic algorithm here (" << first.failed
              << "); using the non-deterministic one\n";
  }
  if (!built.graph) check(first, p);  // forward: cuDNN cannot run this shape
  return s.graphs.emplace(p, std::move(built)).first->second;
}

// Runs the graph of p with the given tensors on the context's stream.
void run(Context& ctx, const Problem& p, std::unordered_map<int64_t, void*> pack) {
  SdpaState& s = state();
  Built& built = graph_of(p, s);
  MOE_CHECK(cudnnSetStream(s.handle, ctx.stream()) == CUDNN_STATUS_SUCCESS,
            "attention on the GPU: cudnnSetStream failed");
  void* workspace =
      built.workspace > 0 ? ctx.scratch<char>(static_cast<size_t>(built.workspace)) : nullptr;
  Outcome outcome;
  outcome.note(built.graph->execute(s.handle, pack, workspace), "execute");
  check(outcome, p);
}

}  // namespace

void attention_forward_bf16(const bf16* qkv, float* stats, float* out, int64_t B, int64_t T,
                            int64_t H, int64_t D, bool causal) {
  Context& ctx = current();
  ctx.begin_op();
  if (B * T * H * D == 0) return;
  const Problem p{B, T, H, D, causal, /*backward=*/false};
  const int64_t n = B * T * H * D;
  bf16* o16 = ctx.scratch<bf16>(static_cast<size_t>(n));
  const int64_t part = H * D;  // q, k, v start at columns 0, H*D, 2*H*D of a row
  auto* base = const_cast<bf16*>(qkv);
  run(ctx, p, {{kQ, base}, {kK, base + part}, {kV, base + 2 * part}, {kO, o16},
               {kStats, stats}});
  launch_from_bf16(ctx.stream(), o16, out, n);
}

void attention_backward_bf16(const bf16* qkv, const float* stats, const float* out,
                             const float* dout, float* dqkv, int64_t B, int64_t T, int64_t H,
                             int64_t D, bool causal) {
  Context& ctx = current();
  ctx.begin_op();
  if (B * T * H * D == 0) return;
  const Problem p{B, T, H, D, causal, /*backward=*/true};
  const int64_t n = B * T * H * D;
  bf16* o16 = ctx.scratch<bf16>(static_cast<size_t>(n));
  bf16* dout16 = ctx.scratch<bf16>(static_cast<size_t>(n));
  bf16* dqkv16 = ctx.scratch<bf16>(static_cast<size_t>(3 * n));
  launch_to_bf16(ctx.stream(), out, o16, n);
  launch_to_bf16(ctx.stream(), dout, dout16, n);
  const int64_t part = H * D;
  auto* base = const_cast<bf16*>(qkv);
  run(ctx, p, {{kQ, base}, {kK, base + part}, {kV, base + 2 * part}, {kO, o16},
               {kDO, dout16}, {kStats, const_cast<float*>(stats)}, {kDQ, dqkv16},
               {kDK, dqkv16 + part}, {kDV, dqkv16 + 2 * part}});
  launch_from_bf16(ctx.stream(), dqkv16, dqkv, 3 * n);
}

#else  // built without cuDNN

void attention_forward_bf16(const bf16*, float*, float*, int64_t, int64_t, int64_t, int64_t,
                            bool) {
  MOE_USER_CHECK(false, "train.precision: bf16 attention on the GPU needs cuDNN's fused "
                 "attention, and this build has none (docs/gpu.md: cuDNN and its frontend)");
}
void attention_backward_bf16(const bf16*, const float*, const float*, const float*, float*,
                             int64_t, int64_t, int64_t, int64_t, bool) {
  MOE_USER_CHECK(false, "train.precision: bf16 attention on the GPU needs cuDNN's fused "
                 "attention, and this build has none (docs/gpu.md: cuDNN and its frontend)");
}

#endif

}  // namespace moe::cuda
