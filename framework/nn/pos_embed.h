#pragma once
// Position embeddings of a token sequence: y[b, t] = x[b, t] + pos[t], pos (T, C).
//   learned: pos is the parameter <name> (T, C), N(0, init_std)
//   fixed:   pos is a given table, e.g. sincos_2d_table (DiT, MAE); no parameters
// See framework/nn/linear.h for the layer conventions.

#include <string>
#include <vector>

#include "framework/tensor/param_store.h"

namespace moe {

// The fixed 2-D sin-cos table of a grid_h x grid_w patch grid, (grid_h*grid_w, C),
// rows in row-major patch order, as get_2d_sincos_pos_embed of MAE and DiT: the first
// C/2 columns encode the patch's column index w, the last C/2 its row index h, each
// half as [sin(pos w_k) for k < C/4, cos(pos w_k) for k < C/4], w_k = 10000^(-4k/C).
// C must be divisible by 4.
std::vector<float> sincos_2d_table(int64_t width, int64_t grid_h, int64_t grid_w);

class PositionEmbedding {
 public:
  // Learned table <name> (tokens, width).
  PositionEmbedding(ParamStore& store, const std::string& name, int64_t tokens,
                    int64_t width, float init_std);
  // Fixed table (tokens * width floats), kept on `device` (the model's).
  PositionEmbedding(const std::vector<float>& table, int64_t tokens, int64_t width,
                    Device device);

  Tensor forward(Tensor x);    // x (B*T, C) -> y (B*T, C)
  Tensor backward(Tensor dy);  // dx = dy (returned as given); dpos += sum_b dy[b]

  Param* weight() { return weight_; }  // null when fixed
  // (T, C) the learned or the fixed table
  Tensor table() const {
    return weight_ ? weight_->data() : fixed_.view_of({tokens_, width_});
  }

 private:
  Param* weight_ = nullptr;   // (T, C) when learned
  Buffer fixed_;              // (T, C) when fixed
  int64_t tokens_, width_;
  Buffer y_;
};

}  // namespace moe
