// moe::cpu::ref: the executable specification of every CPU kernel.
// Plain loops that read like the math; long sums accumulate in double so the
// reference is more accurate than anything it is compared against. Speed is not
// a goal here: the fast versions (moe::cpu::) are tested against these.

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <vector>

#include "framework/core/error.h"
#include "framework/kernels/cpu/cpu_ops.h"

namespace moe::cpu::ref {

void matmul(const float* a, const float* b, float* c, int64_t m, int64_t n,
            int64_t k, bool trans_a, bool trans_b, float alpha, float beta) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double sum = 0.0;
      for (int64_t p = 0; p < k; ++p) {
        const float a_ip = trans_a ? a[p * m + i] : a[i * k + p];  // op(A)(i,p)
        const float b_pj = trans_b ? b[j * k + p] : b[p * n + j];  // op(B)(p,j)
        sum += static_cast<double>(a_ip) * b_pj;
      }
      // beta == 0 overwrites: C may hold garbage (NaN) on entry, as in BLAS.
      const double prev = beta == 0.0f ? 0.0 : static_cast<double>(beta) * c[i * n + j];
      c[i * n + j] = static_cast<float>(alpha * sum + prev);
    }
  }
}

// ---- element-wise activations ----

static double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

void silu_forward(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(x[i] * sigmoid(x[i]));
}

void silu_backward(const float* x, const float* dy, float* dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    // d/dx [x s(x)] = s + x s (1 - s)
    const double s = sigmoid(x[i]);
    dx[i] = static_cast<float>(dy[i] * s * (1.0 + x[i] * (1.0 - s)));
  }
}

void gelu_forward(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double phi_cdf = 0.5 * (1.0 + std::erf(x[i] * std::numbers::sqrt2 / 2.0));
    y[i] = static_cast<float>(x[i] * phi_cdf);
  }
}

void gelu_backward(const float* x, const float* dy, float* dx, int64_t n) {
  const double inv_sqrt_2pi = 0.5 * std::numbers::inv_sqrtpi * std::numbers::sqrt2;
  for (int64_t i = 0; i < n; ++i) {
    // d/dx [x Phi(x)] = Phi(x) + x phi(x)
    const double xi = x[i];
    const double phi_cdf = 0.5 * (1.0 + std::erf(xi * std::numbers::sqrt2 / 2.0));
    const double phi_pdf = inv_sqrt_2pi * std::exp(-0.5 * xi * xi);
    dx[i] = static_cast<float>(dy[i] * (phi_cdf + xi * phi_pdf));
  }
}

void swiglu_forward(const float* g, const float* u, float* h, int64_t n) {
  for (int64_t i = 0; i < n; ++i) h[i] = static_cast<float>(g[i] * sigmoid(g[i]) * u[i]);
}

void swiglu_backward(const float* g, const float* u, const float* dh, float* dg,
                     float* du, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double s = sigmoid(g[i]);
    const double silu_g = g[i] * s;
    dg[i] = static_cast<float>(dh[i] * u[i] * s * (1.0 + g[i] * (1.0 - s)));
    du[i] = static_cast<float>(dh[i] * silu_g);
  }
}

// ---- softmax ----

void softmax_forward(const float* x, float* y, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;  // (cols)
    float* yr = y + r * cols;
    // Subtract the max so exp never overflows (logits of 1e4 are fine).
    const double mx = *std::max_element(xr, xr + cols);
    double sum = 0.0;
    for (int64_t c = 0; c < cols; ++c) sum += std::exp(xr[c] - mx);
    for (int64_t c = 0; c < cols; ++c) yr[c] = static_cast<float>(std::exp(xr[c] - mx) / sum);
  }
}

void softmax_backward(const float* y, const float* dy, float* dx, int64_t rows,
                      int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* yr = y + r * cols;
    const float* dyr = dy + r * cols;
    double dot = 0.0;
    for (int64_t c = 0; c < cols; ++c) dot += static_cast<double>(yr[c]) * dyr[c];
    for (int64_t c = 0; c < cols; ++c) dx[r * cols + c] = static_cast<float>(yr[c] * (dyr[c] - dot));
  }
}

// ---- normalisation ----

void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd,
                     int64_t rows, int64_t cols, float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;  // (C)
    double ms = 0.0;
    for (int64_t c = 0; c < cols; ++c) ms += static_cast<double>(xr[c]) * xr[c];
    const double rs = 1.0 / std::sqrt(ms / cols + eps);
    rstd[r] = static_cast<float>(rs);
    for (int64_t c = 0; c < cols; ++c) y[r * cols + c] = static_cast<float>(xr[c] * rs * w[c]);
  }
}

void rmsnorm_backward(const float* x, const float* w, const float* rstd,
                      const float* dy, float* dx, float* dw, int64_t rows,
                      int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    const float* dyr = dy + r * cols;
    const double rs = rstd[r];
    // y_c = x_c rs w_c, rs = (mean x^2 + eps)^(-1/2), d rs / d x_c = -rs^3 x_c / C
    // => dx_c = rs w_c dy_c - x_c rs^3 / C * sum_j dy_j w_j x_j
    double dot = 0.0;
    for (int64_t c = 0; c < cols; ++c) dot += static_cast<double>(dyr[c]) * w[c] * xr[c];
    const double coef = rs * rs * rs * dot / cols;
    for (int64_t c = 0; c < cols; ++c) {
      dx[r * cols + c] = static_cast<float>(rs * w[c] * dyr[c] - xr[c] * coef);
      dw[c] += static_cast<float>(dyr[c] * xr[c] * rs);
    }
  }
}

void layernorm_forward(const float* x, const float* w, const float* b, float* y,
                       float* mean, float* rstd, int64_t rows, int64_t cols,
                       float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;  // (C)
    double mu = 0.0;
    for (int64_t c = 0; c < cols; ++c) mu += xr[c];
    mu /= cols;
    double var = 0.0;  // biased variance, as torch.nn.LayerNorm
    for (int64_t c = 0; c < cols; ++c) var += (xr[c] - mu) * (xr[c] - mu);
    var /= cols;
    const double rs = 1.0 / std::sqrt(var + eps);
    mean[r] = static_cast<float>(mu);
    rstd[r] = static_cast<float>(rs);
    for (int64_t c = 0; c < cols; ++c) {
      const double xhat = (xr[c] - mu) * rs;
      y[r * cols + c] = static_cast<float>(xhat * (w ? w[c] : 1.0f) + (b ? b[c] : 0.0f));
    }
  }
}

void layernorm_backward(const float* x, const float* w, const float* mean,
                        const float* rstd, const float* dy, float* dx, float* dw,
                        float* db, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    const float* dyr = dy + r * cols;
    const double mu = mean[r], rs = rstd[r];
    // g = dy * w (gradient w.r.t. xhat);
    // dx = rs * (g - mean(g) - xhat * mean(g * xhat))
    double mean_g = 0.0, mean_g_xhat = 0.0;
    for (int64_t c = 0; c < cols; ++c) {
      const double g = dyr[c] * (w ? w[c] : 1.0f);
      mean_g += g;
      mean_g_xhat += g * (xr[c] - mu) * rs;
    }
    mean_g /= cols;
    mean_g_xhat /= cols;
    for (int64_t c = 0; c < cols; ++c) {
      const double xhat = (xr[c] - mu) * rs;
      const double g = dyr[c] * (w ? w[c] : 1.0f);
      dx[r * cols + c] = static_cast<float>(rs * (g - mean_g - xhat * mean_g_xhat));
      if (dw) dw[c] += static_cast<float>(dyr[c] * xhat);
      if (db) db[c] += dyr[c];
    }
  }
}

// ---- rotary embedding ----

void rope_apply(float* x, int64_t B, int64_t T, int64_t H, int64_t D,
                int64_t stride, float theta, bool inverse) {
  MOE_CHECK(D % 2 == 0, "rope needs an even head dim, got D=", D);
  const int64_t half = D / 2;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      float* row = x + (b * T + t) * stride;  // (H, D)
      for (int64_t h = 0; h < H; ++h) {
        float* xh = row + h * D;
        for (int64_t i = 0; i < half; ++i) {
          const double angle = t * std::pow(static_cast<double>(theta), -2.0 * i / D);
          const double cs = std::cos(angle);
          const double sn = inverse ? -std::sin(angle) : std::sin(angle);
          const double x1 = xh[i], x2 = xh[i + half];
          xh[i] = static_cast<float>(x1 * cs - x2 * sn);
          xh[i + half] = static_cast<float>(x2 * cs + x1 * sn);
        }
      }
    }
  }
}

// ---- attention ----
// qkv (B,T,3,H,D): element (b,t,part,h,d) at ((b*T + t)*3 + part)*H*D + h*D + d.

void attention_forward(const float* qkv, float* att, float* out, int64_t B,
                       int64_t T, int64_t H, int64_t D, bool causal) {
  const int64_t row = 3 * H * D;  // floats per (b,t) of qkv
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        const float* q = qkv + (b * T + t) * row + h * D;
        float* a = att + ((b * H + h) * T + t) * T;  // (T) probabilities of query t
        const int64_t visible = causal ? t + 1 : T;
        std::vector<double> score(visible);
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t s = 0; s < visible; ++s) {
          const float* k = qkv + (b * T + s) * row + H * D + h * D;
          double dot = 0.0;
          for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(q[d]) * k[d];
          score[s] = dot * scale;
          mx = std::max(mx, score[s]);
        }
        double sum = 0.0;
        for (int64_t s = 0; s < visible; ++s) sum += std::exp(score[s] - mx);
        for (int64_t s = 0; s < T; ++s)
          a[s] = s < visible ? static_cast<float>(std::exp(score[s] - mx) / sum) : 0.0f;
        float* o = out + (b * T + t) * H * D + h * D;  // (D)
        for (int64_t d = 0; d < D; ++d) {
          double acc = 0.0;
          for (int64_t s = 0; s < visible; ++s)
            acc += a[s] * static_cast<double>(qkv[(b * T + s) * row + 2 * H * D + h * D + d]);
          o[d] = static_cast<float>(acc);
        }
      }
    }
  }
}

void attention_backward(const float* qkv, const float* att, const float* dout,
                        float* dqkv, float* scratch, int64_t B, int64_t T,
                        int64_t H, int64_t D, bool causal) {
  const int64_t row = 3 * H * D;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  std::fill(dqkv, dqkv + B * T * row, 0.0f);
  auto at = [&](auto* base, int64_t b, int64_t t, int64_t part, int64_t h) {
    return base + (b * T + t) * row + part * H * D + h * D;
  };
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const float* a = att + (b * H + h) * T * T;  // (T,T)
      float* dscore = scratch + (b * H + h) * T * T;  // (T,T) gradient of the scores
      for (int64_t t = 0; t < T; ++t) {
        const float* dout_t = dout + (b * T + t) * H * D + h * D;  // (D)
        const int64_t visible = causal ? t + 1 : T;
        // datt[t,s] = dout_t . v_s ; dv_s += att[t,s] dout_t
        double row_dot = 0.0;  // sum_s att[t,s] datt[t,s]
        for (int64_t s = 0; s < T; ++s) dscore[t * T + s] = 0.0f;
        for (int64_t s = 0; s < visible; ++s) {
          const float* v = at(qkv, b, s, 2, h);
          float* dv = at(dqkv, b, s, 2, h);
          double datt = 0.0;
          for (int64_t d = 0; d < D; ++d) {
            datt += static_cast<double>(dout_t[d]) * v[d];
            dv[d] += a[t * T + s] * dout_t[d];
          }
          dscore[t * T + s] = static_cast<float>(datt);
          row_dot += a[t * T + s] * datt;
        }
        // softmax backward, then the 1/sqrt(D) scale of the scores
        for (int64_t s = 0; s < visible; ++s)
          dscore[t * T + s] = static_cast<float>(a[t * T + s] * (dscore[t * T + s] - row_dot) * scale);
        // score[t,s] = q_t . k_s: dq_t += ds k_s, dk_s += ds q_t
        const float* q = at(qkv, b, t, 0, h);
        float* dq = at(dqkv, b, t, 0, h);
        for (int64_t s = 0; s < visible; ++s) {
          const float* k = at(qkv, b, s, 1, h);
          float* dk = at(dqkv, b, s, 1, h);
          const float ds = dscore[t * T + s];
          for (int64_t d = 0; d < D; ++d) {
            dq[d] += ds * k[d];
            dk[d] += ds * q[d];
          }
        }
      }
    }
  }
}

// ---- loss ----

void cross_entropy(const float* logits, const int32_t* targets, float* losses,
                   float* dlogits, float scale, int64_t rows, int64_t vocab) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = logits + r * vocab;  // (V)
    float* dx = dlogits ? dlogits + r * vocab : nullptr;
    const int32_t target = targets[r];
    if (target < 0) {
      losses[r] = 0.0f;
      if (dx) std::fill(dx, dx + vocab, 0.0f);
      continue;
    }
    MOE_CHECK(target < vocab, "cross_entropy target ", target, " >= vocab ", vocab);
    const double mx = *std::max_element(x, x + vocab);
    double sum = 0.0;
    for (int64_t c = 0; c < vocab; ++c) sum += std::exp(x[c] - mx);
    const double log_sum = mx + std::log(sum);
    losses[r] = static_cast<float>(log_sum - x[target]);  // -log softmax(x)[target]
    if (!dx) continue;
    // x and dx may alias: read x[c] before writing dx[c].
    for (int64_t c = 0; c < vocab; ++c) {
      const double p = std::exp(x[c] - log_sum);
      dx[c] = static_cast<float>(scale * (p - (c == target ? 1.0 : 0.0)));
    }
  }
}

// ---- routing ----

void topk(const float* x, float* values, int32_t* indices, int64_t rows,
          int64_t cols, int64_t k) {
  MOE_CHECK(k >= 0 && k <= cols, "topk k=", k, " out of range for cols=", cols);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    std::vector<int32_t> order(cols);
    for (int64_t c = 0; c < cols; ++c) order[c] = static_cast<int32_t>(c);
    // Stable sort keeps equal values in index order: ties go to the lower index.
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t i, int32_t j) { return xr[i] > xr[j]; });
    for (int64_t j = 0; j < k; ++j) {
      indices[r * k + j] = order[j];
      values[r * k + j] = xr[order[j]];
    }
  }
}

void permute_rows(const float* src, const int32_t* index, const float* scale,
                  float* dst, int64_t n_dst, int64_t cols) {
  for (int64_t i = 0; i < n_dst; ++i) {
    for (int64_t c = 0; c < cols; ++c) {
      const float s = scale ? scale[i] : 1.0f;
      dst[i * cols + c] = index[i] < 0 ? 0.0f : s * src[index[i] * cols + c];
    }
  }
}

void combine_rows(const float* src, const int32_t* slot, const float* weight,
                  float* out, int64_t n, int64_t k, int64_t cols) {
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t c = 0; c < cols; ++c) {
      double acc = 0.0;
      for (int64_t j = 0; j < k; ++j) {
        const int32_t s = slot[t * k + j];
        if (s < 0) continue;  // dropped assignment contributes nothing
        acc += (weight ? weight[t * k + j] : 1.0f) * static_cast<double>(src[s * cols + c]);
      }
      out[t * cols + c] = static_cast<float>(acc);
    }
  }
}

void embedding_forward(const float* table, const int32_t* ids, float* out,
                       int64_t n, int64_t cols) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < cols; ++c) out[i * cols + c] = table[ids[i] * cols + c];
}

void embedding_backward(const float* dout, const int32_t* ids, float* dtable,
                        int64_t n, int64_t cols) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < cols; ++c) dtable[ids[i] * cols + c] += dout[i * cols + c];
}

// ---- images ----

// Calls fn(pixel, element) for every pixel of the image batch (its index in x) and its
// place in the patch rows (its index in cols).
template <class Fn>
static void for_each_patch_pixel(int64_t B, int64_t channels, int64_t height, int64_t width,
                                 int64_t patch, Fn fn) {
  const int64_t gw = width / patch, num_patches = (height / patch) * gw;
  const int64_t patch_cols = channels * patch * patch;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t y = 0; y < height; ++y)
        for (int64_t xx = 0; xx < width; ++xx) {
          const int64_t token = (y / patch) * gw + xx / patch;
          const int64_t col = (c * patch + y % patch) * patch + xx % patch;
          fn(((b * channels + c) * height + y) * width + xx,
             (b * num_patches + token) * patch_cols + col);
        }
}

void patchify(const float* x, float* cols, int64_t B, int64_t channels, int64_t height,
              int64_t width, int64_t patch) {
  for_each_patch_pixel(B, channels, height, width, patch,
                       [&](int64_t pixel, int64_t element) { cols[element] = x[pixel]; });
}

void unpatchify(const float* cols, float* x, int64_t B, int64_t channels, int64_t height,
                int64_t width, int64_t patch) {
  for_each_patch_pixel(B, channels, height, width, patch,
                       [&](int64_t pixel, int64_t element) { x[pixel] = cols[element]; });
}

// ---- optimizer ----

void adamw(float* p, const float* g, float* m, float* v, int64_t n, float lr,
           float beta1, float beta2, float eps, float weight_decay, int64_t step) {
  MOE_CHECK(step >= 1, "adamw step counts from 1, got ", step);
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  for (int64_t i = 0; i < n; ++i) {
    m[i] = beta1 * m[i] + (1.0f - beta1) * g[i];
    v[i] = beta2 * v[i] + (1.0f - beta2) * g[i] * g[i];
    const double mhat = m[i] / bc1, vhat = v[i] / bc2;
    p[i] = static_cast<float>(p[i] - lr * (mhat / (std::sqrt(vhat) + eps) + weight_decay * p[i]));
  }
}

void axpy(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

double sum_squares(const float* x, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return s;
}

// ---- layer element-wise steps ----

void add(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void scale(float* x, float alpha, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] *= alpha;
}

void add_rows(const float* x, const float* table, float* y, int64_t rows, int64_t cols,
              int64_t period) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j)
      y[r * cols + j] = x[r * cols + j] + table[(r % period) * cols + j];
}

void sum_rows(const float* dy, float* dtable, int64_t rows, int64_t cols, int64_t period) {
  for (int64_t p = 0; p < period; ++p)
    for (int64_t j = 0; j < cols; ++j) {
      double sum = 0.0;
      for (int64_t r = p; r < rows; r += period) sum += dy[r * cols + j];
      dtable[p * cols + j] = static_cast<float>(dtable[p * cols + j] + sum);
    }
}

void modulate_forward(const float* x, const float* shift, const float* scale, int64_t stride,
                      float* y, int64_t batch, int64_t tokens, int64_t width) {
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t j = 0; j < width; ++j) {
        const int64_t i = (b * tokens + t) * width + j;
        y[i] = static_cast<float>(x[i] * (1.0 + scale[b * stride + j]) + shift[b * stride + j]);
      }
}

void modulate_backward(const float* x, const float* scale, int64_t stride, const float* dy,
                       float* dx, float* dshift, float* dscale, int64_t batch, int64_t tokens,
                       int64_t width) {
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t j = 0; j < width; ++j) {
      double sum_dy = 0.0, sum_dy_x = 0.0;
      for (int64_t t = 0; t < tokens; ++t) {
        const int64_t i = (b * tokens + t) * width + j;
        dx[i] = static_cast<float>(dy[i] * (1.0 + scale[b * stride + j]));
        sum_dy += dy[i];
        sum_dy_x += static_cast<double>(dy[i]) * x[i];
      }
      dshift[b * stride + j] = static_cast<float>(dshift[b * stride + j] + sum_dy);
      dscale[b * stride + j] = static_cast<float>(dscale[b * stride + j] + sum_dy_x);
    }
}

void gated_add_forward(const float* h, const float* gate, int64_t stride, const float* f,
                       float* out, int64_t batch, int64_t tokens, int64_t width) {
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t j = 0; j < width; ++j) {
        const int64_t i = (b * tokens + t) * width + j;
        out[i] = static_cast<float>(h[i] + static_cast<double>(gate[b * stride + j]) * f[i]);
      }
}

void gated_add_backward(const float* gate, int64_t stride, const float* f, const float* dout,
                        float* df, float* dgate, int64_t batch, int64_t tokens,
                        int64_t width) {
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t j = 0; j < width; ++j) {
      double sum = 0.0;
      for (int64_t t = 0; t < tokens; ++t) {
        const int64_t i = (b * tokens + t) * width + j;
        df[i] = gate[b * stride + j] * dout[i];
        sum += static_cast<double>(dout[i]) * f[i];
      }
      dgate[b * stride + j] = static_cast<float>(dgate[b * stride + j] + sum);
    }
}

void gather_dot(const float* a, const int32_t* a_row, const float* b, const int32_t* b_row,
                float* out, int64_t n, int64_t cols) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t ra = a_row ? a_row[i] : i, rb = b_row ? b_row[i] : i;
    double sum = 0.0;
    if (ra >= 0 && rb >= 0)
      for (int64_t j = 0; j < cols; ++j)
        sum += static_cast<double>(a[ra * cols + j]) * b[rb * cols + j];
    out[i] = static_cast<float>(sum);
  }
}

// ---- layout changes and routing masks ----

void transpose_blocks(const void* src, void* dst, const int64_t* counts, int64_t a_count,
                      int64_t b_count, int64_t element_bytes, bool inverse) {
  // start of block (i, j) in the [a][b] packing and in the [b][a] packing, in elements
  auto start_ab = [&](int64_t i, int64_t j) {
    int64_t s = 0;
    for (int64_t q = 0; q < i * b_count + j; ++q) s += counts[q];
    return s;
  };
  auto start_ba = [&](int64_t i, int64_t j) {
    int64_t s = 0;
    for (int64_t jj = 0; jj < b_count; ++jj)
      for (int64_t ii = 0; ii < a_count; ++ii) {
        if (jj == j && ii == i) return s;
        s += counts[ii * b_count + jj];
      }
    return s;
  };
  const auto* from = static_cast<const unsigned char*>(src);
  auto* to = static_cast<unsigned char*>(dst);
  for (int64_t i = 0; i < a_count; ++i)
    for (int64_t j = 0; j < b_count; ++j) {
      const int64_t in = inverse ? start_ba(i, j) : start_ab(i, j);
      const int64_t out = inverse ? start_ab(i, j) : start_ba(i, j);
      for (int64_t e = 0; e < counts[i * b_count + j] * element_bytes; ++e)
        to[out * element_bytes + e] = from[in * element_bytes + e];
    }
}

void limit_to_nodes(float* scores, int64_t rows, int64_t experts, const int32_t* expert_node,
                    int64_t nodes, int64_t keep, int64_t per_node, int64_t token_node,
                    float own_node_bonus) {
  for (int64_t t = 0; t < rows; ++t) {
    float* s = scores + t * experts;
    std::vector<float> node_score(static_cast<size_t>(nodes), 0.0f);
    for (int64_t node = 0; node < nodes; ++node) {
      std::vector<float> mine;  // this node's scores, experts in index order
      for (int64_t e = 0; e < experts; ++e)
        if (expert_node[e] == node) mine.push_back(s[e]);
      std::stable_sort(mine.begin(), mine.end(), [](float a, float b) { return a > b; });
      for (int64_t i = 0; i < std::min<int64_t>(per_node, static_cast<int64_t>(mine.size())); ++i)
        node_score[node] += mine[i];
    }
    node_score[token_node] += own_node_bonus;
    // a node is kept when fewer than `keep` nodes beat it (ties: the lower node wins)
    for (int64_t node = 0; node < nodes; ++node) {
      int64_t better = 0;
      for (int64_t other = 0; other < nodes; ++other)
        if (node_score[other] > node_score[node] ||
            (node_score[other] == node_score[node] && other < node))
          ++better;
      if (better < keep) continue;
      for (int64_t e = 0; e < experts; ++e)
        if (expert_node[e] == node) s[e] = -std::numeric_limits<float>::infinity();
    }
  }
}

// ---- experts ----

void expert_ffn_forward(const float* x, const int64_t* offsets, int64_t num_experts,
                        const float* w_gate, const float* w_up, const float* w_down,
                        float* gate, float* up, float* h, float* y, int64_t width,
                        int64_t hidden) {
  const int64_t fc = hidden * width;
  for (int64_t i = 0; i < num_experts; ++i) {
    const int64_t r0 = offsets[i], n = offsets[i + 1] - r0;
    matmul(x + r0 * width, w_up + i * fc, up + r0 * hidden, n, hidden, width, false, true,
           1.0f, 0.0f);
    if (w_gate) {
      matmul(x + r0 * width, w_gate + i * fc, gate + r0 * hidden, n, hidden, width, false,
             true, 1.0f, 0.0f);
      swiglu_forward(gate + r0 * hidden, up + r0 * hidden, h + r0 * hidden, n * hidden);
    } else {
      gelu_forward(up + r0 * hidden, h + r0 * hidden, n * hidden);
    }
    matmul(h + r0 * hidden, w_down + i * fc, y + r0 * width, n, width, hidden, false, true,
           1.0f, 0.0f);
  }
}

void expert_ffn_backward(const float* x, const int64_t* offsets, int64_t num_experts,
                         const float* w_gate, const float* w_up, const float* w_down,
                         const float* gate, const float* up, const float* h, const float* dy,
                         float* dw_gate, float* dw_up, float* dw_down, float* dh, float* dgate,
                         float* dup, float* dx, int64_t width, int64_t hidden) {
  const int64_t fc = hidden * width;
  for (int64_t i = 0; i < num_experts; ++i) {
    const int64_t r0 = offsets[i], n = offsets[i + 1] - r0;
    const float* xi = x + r0 * width;
    const float* dyi = dy + r0 * width;
    float* dhi = dh + r0 * hidden;
    float* du = dup + r0 * hidden;
    matmul(dyi, h + r0 * hidden, dw_down + i * fc, width, hidden, n, true, false, 1.0f, 1.0f);
    matmul(dyi, w_down + i * fc, dhi, n, hidden, width, false, false, 1.0f, 0.0f);
    if (w_gate) {
      float* dg = dgate + r0 * hidden;
      swiglu_backward(gate + r0 * hidden, up + r0 * hidden, dhi, dg, du, n * hidden);
      matmul(dg, xi, dw_gate + i * fc, hidden, width, n, true, false, 1.0f, 1.0f);
      matmul(dg, w_gate + i * fc, dx + r0 * width, n, width, hidden, false, false, 1.0f, 0.0f);
    } else {
      gelu_backward(up + r0 * hidden, dhi, du, n * hidden);
    }
    matmul(du, xi, dw_up + i * fc, hidden, width, n, true, false, 1.0f, 1.0f);
    matmul(du, w_up + i * fc, dx + r0 * width, n, width, hidden, false, false, 1.0f,
           w_gate ? 1.0f : 0.0f);
  }
}

// ---- incremental decoding ----

void rope_apply_at(float* x, const int32_t* pos, int64_t rows, int64_t H, int64_t D,
                   int64_t stride, float theta) {
  MOE_CHECK(D % 2 == 0, "rope needs an even head dim, got D=", D);
  const int64_t half = D / 2;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t h = 0; h < H; ++h) {
      float* xh = x + r * stride + h * D;
      for (int64_t i = 0; i < half; ++i) {
        const double angle = pos[r] * std::pow(static_cast<double>(theta), -2.0 * i / D);
        const double x1 = xh[i], x2 = xh[i + half];
        xh[i] = static_cast<float>(x1 * std::cos(angle) - x2 * std::sin(angle));
        xh[i + half] = static_cast<float>(x2 * std::cos(angle) + x1 * std::sin(angle));
      }
    }
}

void attention_decode(const float* q, int64_t q_stride, const float* const* k,
                      const float* const* v, const int64_t* len, float* out, int64_t rows,
                      int64_t H, int64_t D) {
  const int64_t width = H * D;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t h = 0; h < H; ++h) {
      std::vector<double> score(static_cast<size_t>(len[i]));
      double max = -std::numeric_limits<double>::infinity(), sum = 0.0;
      for (int64_t t = 0; t < len[i]; ++t) {
        double s = 0.0;
        for (int64_t d = 0; d < D; ++d)
          s += static_cast<double>(q[i * q_stride + h * D + d]) * k[i][t * width + h * D + d];
        score[t] = s / std::sqrt(static_cast<double>(D));
        max = std::max(max, score[t]);
      }
      for (double& s : score) sum += (s = std::exp(s - max));
      for (int64_t d = 0; d < D; ++d) {
        double o = 0.0;
        for (int64_t t = 0; t < len[i]; ++t) o += score[t] / sum * v[i][t * width + h * D + d];
        out[i * width + h * D + d] = static_cast<float>(o);
      }
    }
}

}  // namespace moe::cpu::ref
