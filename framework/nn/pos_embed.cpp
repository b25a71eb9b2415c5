#include "framework/nn/pos_embed.h"

#include <cmath>

#include "framework/kernels/ops.h"

namespace moe {

std::vector<float> sincos_2d_table(int64_t width, int64_t grid_h, int64_t grid_w) {
  MOE_CHECK(width % 4 == 0, "sin-cos position table: width ", width,
            " is not divisible by 4");
  const int64_t quarter = width / 4;
  std::vector<float> table(static_cast<size_t>(grid_h * grid_w * width));
  for (int64_t h = 0; h < grid_h; ++h)
    for (int64_t w = 0; w < grid_w; ++w) {
      float* row = table.data() + (h * grid_w + w) * width;
      for (int64_t k = 0; k < quarter; ++k) {
        // w_k = 1 / 10000^(k / (C/4))
        const double omega = std::pow(10000.0, -static_cast<double>(k) / quarter);
        row[k] = static_cast<float>(std::sin(w * omega));
        row[quarter + k] = static_cast<float>(std::cos(w * omega));
        row[2 * quarter + k] = static_cast<float>(std::sin(h * omega));
        row[3 * quarter + k] = static_cast<float>(std::cos(h * omega));
      }
    }
  return table;
}

PositionEmbedding::PositionEmbedding(ParamStore& store, const std::string& name,
                                     int64_t tokens, int64_t width, float init_std)
    : weight_(&store.add({name, Shape{tokens, width}, Shard::kReplicated,
                          Init::normal(init_std), /*weight_decay=*/false})),
      tokens_(tokens),
      width_(width),
      y_(store.device()) {}

PositionEmbedding::PositionEmbedding(const std::vector<float>& table, int64_t tokens,
                                     int64_t width, Device device)
    : fixed_(device), tokens_(tokens), width_(width), y_(device) {
  MOE_CHECK(static_cast<int64_t>(table.size()) == tokens * width,
            "position table of ", table.size(), " floats for (", tokens, ", ", width, ")");
  ops::copy(Tensor(const_cast<float*>(table.data()), Shape{tokens, width}),
            fixed_.view({tokens, width}));
}

Tensor PositionEmbedding::forward(Tensor x) {
  MOE_CHECK(x.cols() == width_ && x.rows() % tokens_ == 0, "PositionEmbedding: input ",
            x.shape.str(), " is not (B*", tokens_, ", ", width_, ")");
  Tensor y = y_.view({x.rows(), width_});
  ops::add_rows(x, table(), y);  // y[r] = x[r] + pos[r % T]
  return y;
}

Tensor PositionEmbedding::backward(Tensor dy) {
  if (weight_) ops::sum_rows(dy, weight_->dgrad());  // dpos[t] += sum over images
  return dy;
}

}  // namespace moe
