#include "framework/moe/experts.h"

#include "framework/kernels/ops.h"

namespace moe {

GroupedExperts::GroupedExperts(ParamStore& store, const std::string& prefix, int64_t width,
                               int64_t hidden, int64_t num_experts, float init_std,
                               float out_std)
    : w_gate_(store.add({prefix + ".experts.w_gate", Shape{num_experts, hidden, width},
                         Shard::kExpert, Init::normal(init_std)})),
      w_up_(store.add({prefix + ".experts.w_up", Shape{num_experts, hidden, width},
                       Shard::kExpert, Init::normal(init_std)})),
      w_down_(store.add({prefix + ".experts.w_down", Shape{num_experts, width, hidden},
                         Shard::kExpert, Init::normal(out_std)})),
      width_(width),
      hidden_(hidden),
      first_expert_(0),
      num_local_(num_experts) {}

Tensor GroupedExperts::forward(Tensor x, std::span<const int64_t> offsets) {
  const int64_t s = x.rows();
  MOE_CHECK(x.cols() == width_, "experts ", w_gate_.spec.name, ": input width ", x.cols(),
            " != ", width_);
  MOE_CHECK(static_cast<int64_t>(offsets.size()) == num_local_ + 1 && offsets.front() == 0 &&
                offsets.back() == s,
            "experts ", w_gate_.spec.name, ": offsets do not split ", s, " rows over ",
            num_local_, " local experts");
  x_ = x;
  offsets_.assign(offsets.begin(), offsets.end());
  gate_.view({s, hidden_});
  up_.view({s, hidden_});
  h_.view({s, hidden_});
  Tensor y = y_.view({s, width_});
  for (int64_t i = 0; i < num_local_; ++i) {
    const int64_t rows = offsets_[i + 1] - offsets_[i];
    if (rows > 0) expert_forward(i, offsets_[i], rows);
  }
  return y;
}

void GroupedExperts::expert_forward(int64_t i, int64_t begin, int64_t rows) {
  const int64_t fc = hidden_ * width_;
  const float* x = x_.data + begin * width_;    // (n, C)
  float* g = gate_.data() + begin * hidden_;    // (n, F)
  float* u = up_.data() + begin * hidden_;      // (n, F)
  float* h = h_.data() + begin * hidden_;       // (n, F)
  float* y = y_.data() + begin * width_;        // (n, C)
  // g = x W_gate[i]^T, u = x W_up[i]^T, h = silu(g) * u, y = h W_down[i]^T
  cpu::matmul(x, w_gate_.value.data() + i * fc, g, rows, hidden_, width_, false, true, 1.0f,
              0.0f);
  cpu::matmul(x, w_up_.value.data() + i * fc, u, rows, hidden_, width_, false, true, 1.0f,
              0.0f);
  cpu::swiglu_forward(g, u, h, rows * hidden_);
  cpu::matmul(h, w_down_.value.data() + i * fc, y, rows, width_, hidden_, false, true, 1.0f,
              0.0f);
}

Tensor GroupedExperts::backward(Tensor dy) {
  const int64_t s = x_.rows();
  MOE_CHECK(dy.rows() == s && dy.cols() == width_, "experts ", w_gate_.spec.name,
            ": gradient shape ", dy.shape.str());
  dh_.view({s, hidden_});
  dgate_.view({s, hidden_});
  dup_.view({s, hidden_});
  Tensor dx = dx_.view({s, width_});
  for (int64_t i = 0; i < num_local_; ++i) {
    const int64_t rows = offsets_[i + 1] - offsets_[i];
    if (rows > 0) expert_backward(i, offsets_[i], rows, dy.data + offsets_[i] * width_);
  }
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
  cpu::swiglu_backward(g, u, dh, dg, du, rows * hidden_);
  // dW_gate[i] (F, C) += dg^T x;  dW_up[i] += du^T x
  cpu::matmul(dg, x, w_gate_.grad.data() + i * fc, hidden_, width_, rows, true, false, 1.0f,
              1.0f);
  cpu::matmul(du, x, w_up_.grad.data() + i * fc, hidden_, width_, rows, true, false, 1.0f,
              1.0f);
  // dx (n, C) = dg W_gate[i] + du W_up[i]
  cpu::matmul(dg, w_gate_.value.data() + i * fc, dx, rows, width_, hidden_, false, false,
              1.0f, 0.0f);
  cpu::matmul(du, w_up_.value.data() + i * fc, dx, rows, width_, hidden_, false, false,
              1.0f, 1.0f);
}

}  // namespace moe
