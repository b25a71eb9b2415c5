#include "framework/moe/experts.h"

#include <algorithm>
#include <numeric>

#include "framework/kernels/ops.h"

namespace moe {

namespace {

// Run order of the experts: those with more rows than an even share of S over the
// threads first, alone and with every thread inside BLAS (`wide`); the rest after,
// one expert per thread at a time, largest first (`narrow`).
//
// Why: an expert's GEMMs are only (~S/E, C) x (C, F) (about 512 x 256 x 256 in the
// main config), too small for OpenBLAS to split well over the threads, so running
// whole experts side by side, each on single-threaded BLAS (OpenBLAS's OpenMP build
// runs one thread inside a parallel region), keeps the cores busier. Routing is
// skewed, though: an expert holding more than its share would leave the other
// threads idle at the end, so those still run with threaded BLAS. Largest-first
// makes the dynamic schedule finish evenly (LPT).
struct ExpertOrder {
  std::vector<int64_t> wide, narrow;
};

ExpertOrder expert_order(std::span<const int64_t> offsets, int threads) {
  const int64_t num = static_cast<int64_t>(offsets.size()) - 1;
  const int64_t share = offsets.back() / std::max(threads, 1);
  auto rows = [&](int64_t i) { return offsets[i + 1] - offsets[i]; };
  std::vector<int64_t> order(static_cast<size_t>(num));
  std::iota(order.begin(), order.end(), int64_t{0});
  // stable: equal sizes keep expert order, so a run is reproducible
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return rows(a) > rows(b); });
  ExpertOrder out;
  for (int64_t i : order) {
    if (rows(i) == 0) continue;
    (threads > 1 && rows(i) <= share ? out.narrow : out.wide).push_back(i);
  }
  return out;
}

// Calls fn(i) for every expert of `order`; the narrow ones concurrently.
template <typename Fn>
void for_each_expert(const ExpertOrder& order, Fn fn) {
  for (int64_t i : order.wide) fn(i);
  const int64_t count = static_cast<int64_t>(order.narrow.size());
#pragma omp parallel for schedule(dynamic, 1) if (count > 1)
  for (int64_t j = 0; j < count; ++j) fn(order.narrow[j]);
}

}  // namespace

namespace {

// This rank's block of an expert weight: the experts `placement` puts here, and hidden
// block split.rank of split.size along `hidden_dim` (1: (E, F, C), 2: (E, C, F)).
Param& add_expert_param(ParamStore& store, std::string name, int64_t rows, int64_t cols,
                        const ExpertPlacement& placement, ExpertTensorSplit split,
                        int hidden_dim, float std) {
  const Shard shard = hidden_dim == 1 ? Shard::kExpertColumn : Shard::kExpertRow;
  ParamSpec spec{std::move(name), Shape{placement.num_experts, rows, cols}, shard,
                 Init::normal(std)};
  const int64_t hidden = hidden_dim == 1 ? rows : cols;
  MOE_CHECK(split.size > 0 && split.rank >= 0 && split.rank < split.size &&
                hidden % split.size == 0,
            "experts ", spec.name, ": hidden width ", hidden, " cannot be split over etp = ",
            split.size);
  const int64_t block = hidden / split.size;
  if (hidden_dim == 1)
    return store.add_shard(std::move(spec), Shape{placement.num_local(), block, cols},
                           {placement.first_local(), split.rank * block, 0});
  return store.add_shard(std::move(spec), Shape{placement.num_local(), rows, block},
                         {placement.first_local(), 0, split.rank * block});
}

}  // namespace

GroupedExperts::GroupedExperts(ParamStore& store, const std::string& prefix, int64_t width,
                               int64_t hidden, const ExpertPlacement& placement,
                               float init_std, float out_std, ExpertActivation activation,
                               ExpertTensorSplit split)
    : w_gate_(activation == ExpertActivation::kSwiGLU
                  ? &add_expert_param(store, prefix + ".experts.w_gate", hidden, width,
                                      placement, split, 1, init_std)
                  : nullptr),
      w_up_(add_expert_param(store, prefix + (w_gate_ ? ".experts.w_up" : ".experts.w_fc1"),
                             hidden, width, placement, split, 1, init_std)),
      w_down_(add_expert_param(store,
                               prefix + (w_gate_ ? ".experts.w_down" : ".experts.w_fc2"),
                               width, hidden, placement, split, 2, out_std)),
      width_(width),
      hidden_(hidden / split.size),
      first_expert_(placement.first_local()),
      num_local_(placement.num_local()) {}

Tensor GroupedExperts::forward(Tensor x, std::span<const int64_t> offsets) {
  const int64_t s = x.rows();
  MOE_CHECK(x.cols() == width_, "experts ", w_up_.spec.name, ": input width ", x.cols(),
            " != ", width_);
  MOE_CHECK(static_cast<int64_t>(offsets.size()) == num_local_ + 1 && offsets.front() == 0 &&
                offsets.back() == s,
            "experts ", w_up_.spec.name, ": offsets do not split ", s, " rows over ",
            num_local_, " local experts");
  x_ = x;
  offsets_.assign(offsets.begin(), offsets.end());
  gate_.view({s, hidden_});
  up_.view({s, hidden_});
  h_.view({s, hidden_});
  Tensor y = y_.view({s, width_});
  // Each expert writes only its own rows of gate_, up_, h_, y_: no races.
  for_each_expert(expert_order(offsets_, cpu::num_threads()), [&](int64_t i) {
    expert_forward(i, offsets_[i], offsets_[i + 1] - offsets_[i]);
  });
  return y;
}

void GroupedExperts::expert_forward(int64_t i, int64_t begin, int64_t rows) {
  const int64_t fc = hidden_ * width_;
  const float* x = x_.data + begin * width_;    // (n, C)
  float* g = gate_.data() + begin * hidden_;    // (n, F)
  float* u = up_.data() + begin * hidden_;      // (n, F)
  float* h = h_.data() + begin * hidden_;       // (n, F)
  float* y = y_.data() + begin * width_;        // (n, C)
  // SwiGLU: g = x W_gate[i]^T, u = x W_up[i]^T, h = silu(g) * u; GELU: h = gelu(u)
  // then y = h W_down[i]^T
  cpu::matmul(x, w_up_.value.data() + i * fc, u, rows, hidden_, width_, false, true, 1.0f,
              0.0f);
  if (w_gate_) {
    cpu::matmul(x, w_gate_->value.data() + i * fc, g, rows, hidden_, width_, false, true,
                1.0f, 0.0f);
    cpu::swiglu_forward(g, u, h, rows * hidden_);
  } else {
    cpu::gelu_forward(u, h, rows * hidden_);
  }
  cpu::matmul(h, w_down_.value.data() + i * fc, y, rows, width_, hidden_, false, true, 1.0f,
              0.0f);
}

Tensor GroupedExperts::backward(Tensor dy) {
  const int64_t s = x_.rows();
  MOE_CHECK(dy.rows() == s && dy.cols() == width_, "experts ", w_up_.spec.name,
            ": gradient shape ", dy.shape.str());
  dh_.view({s, hidden_});
  dgate_.view({s, hidden_});
  dup_.view({s, hidden_});
  Tensor dx = dx_.view({s, width_});
  // Each expert writes only its own rows of dh_, dgate_, dup_, dx_ and its own slice
  // of the weight gradients: no races.
  for_each_expert(expert_order(offsets_, cpu::num_threads()), [&](int64_t i) {
    expert_backward(i, offsets_[i], offsets_[i + 1] - offsets_[i],
                    dy.data + offsets_[i] * width_);
  });
  return dx;
}

void GroupedExperts::expert_backward(int64_t i, int64_t begin, int64_t rows,
                                     const float* dy) {
  const int64_t fc = hidden_ * width_;
  const float* x = x_.data + begin * width_;
  const float* g = gate_.data() + begin * hidden_;
  const float* u = up_.data() + begin * hidden_;
  const float* h = h_.data() + begin * hidden_;
  float* dh = dh_.data() + begin * hidden_;
  float* dg = dgate_.data() + begin * hidden_;
  float* du = dup_.data() + begin * hidden_;
  float* dx = dx_.data() + begin * width_;
  // dW_down[i] (C, F) += dy^T h;  dh (n, F) = dy W_down[i]
  cpu::matmul(dy, h, w_down_.grad.data() + i * fc, width_, hidden_, rows, true, false, 1.0f,
              1.0f);
  cpu::matmul(dy, w_down_.value.data() + i * fc, dh, rows, hidden_, width_, false, false,
              1.0f, 0.0f);
  if (!w_gate_) {
    // GELU: du = gelu'(u) dh;  dW_up[i] (F, C) += du^T x;  dx (n, C) = du W_up[i]
    cpu::gelu_backward(u, dh, du, rows * hidden_);
    cpu::matmul(du, x, w_up_.grad.data() + i * fc, hidden_, width_, rows, true, false, 1.0f,
                1.0f);
    cpu::matmul(du, w_up_.value.data() + i * fc, dx, rows, width_, hidden_, false, false,
                1.0f, 0.0f);
    return;
  }
  cpu::swiglu_backward(g, u, dh, dg, du, rows * hidden_);
  // dW_gate[i] (F, C) += dg^T x;  dW_up[i] += du^T x
  cpu::matmul(dg, x, w_gate_->grad.data() + i * fc, hidden_, width_, rows, true, false, 1.0f,
              1.0f);
  cpu::matmul(du, x, w_up_.grad.data() + i * fc, hidden_, width_, rows, true, false, 1.0f,
              1.0f);
  // dx (n, C) = dg W_gate[i] + du W_up[i]
  cpu::matmul(dg, w_gate_->value.data() + i * fc, dx, rows, width_, hidden_, false, false,
              1.0f, 0.0f);
  cpu::matmul(du, w_up_.value.data() + i * fc, dx, rows, width_, hidden_, false, false,
              1.0f, 1.0f);
}

}  // namespace moe
