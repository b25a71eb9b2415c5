#pragma once
// adaLN-Zero pieces of DiT (docs/image-models.md). Per image b, a conditioning vector
// c_b gives per-channel modulation rows (shift, scale, gate), each C floats of a row of
// `stride` floats (the chunks of Linear(SiLU(c)) (B, 6C) or (B, 2C)):
//
//   modulate:   y[b,t] = x[b,t] * (1 + scale[b]) + shift[b]
//   gated add:  out[b,t] = h[b,t] + gate[b] * f[b,t]
//
// x, y, h, f, out are (B*T, C) token rows, T tokens per image. Backward:
//   modulate:   dx = dy * (1 + scale);  dshift[b] += sum_t dy;  dscale[b] += sum_t dy * x
//   gated add:  dh = dout;  df = gate * dout;  dgate[b] += sum_t dout * f
// dshift, dscale, dgate accumulate into rows of the same stride.

#include <cstdint>

namespace moe {

void modulate_forward(const float* x, const float* shift, const float* scale,
                      int64_t stride, float* y, int64_t batch, int64_t tokens,
                      int64_t width);
void modulate_backward(const float* x, const float* scale, int64_t stride, const float* dy,
                       float* dx, float* dshift, float* dscale, int64_t batch,
                       int64_t tokens, int64_t width);
void gated_add_forward(const float* h, const float* gate, int64_t stride, const float* f,
                       float* out, int64_t batch, int64_t tokens, int64_t width);
void gated_add_backward(const float* gate, int64_t stride, const float* f,
                        const float* dout, float* df, float* dgate, int64_t batch,
                        int64_t tokens, int64_t width);

}  // namespace moe
