// Image pieces: patchify kernels, finite-difference gradient checks of the image layers
// (patch embedding, position embedding, CLS token + pooling, timestep and label
// embedding, adaLN modulation, the DiT final layer), the sin-cos table, IDX files, the
// image batch sampler and the PNG writer.

#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "framework/data/idx.h"
#include "framework/data/image_sampler.h"
#include "framework/data/png.h"
#include "framework/kernels/cpu/cpu_ops.h"
#include "framework/kernels/ops.h"

#include "framework/nn/embedding.h"
#include "framework/nn/layernorm.h"
#include "framework/nn/linear.h"
#include "framework/nn/patch_embed.h"
#include "framework/nn/pos_embed.h"
#include "framework/nn/timestep_embed.h"
#include "framework/nn/tokens.h"
#include "models/dit_moe/dit_moe.h"
#include "tests/unit/gradcheck.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using testing::check_gradient;
using testing::dot;
using testing::fill_uniform;
using testing::random_vector;

// ---- patchify ----

TEST(Patchify, FastEqualsRefAndUnpatchifyInverts) {
  const int64_t B = 2, ch = 3, size = 8, p = 4;
  std::vector<float> x = random_vector(B * ch * size * size, 1);
  std::vector<float> ref(x.size()), fast(x.size()), back(x.size());
  cpu::ref::patchify(x.data(), ref.data(), B, ch, size, size, p);
  cpu::patchify(x.data(), fast.data(), B, ch, size, size, p);
  EXPECT_EQ(ref, fast);
  cpu::unpatchify(fast.data(), back.data(), B, ch, size, size, p);
  EXPECT_EQ(back, x);
  cpu::ref::unpatchify(ref.data(), back.data(), B, ch, size, size, p);
  EXPECT_EQ(back, x);
  // Patch (row 1, col 0) of image 1, channel 2, pixel (i 3, j 1) is column (2*4+3)*4+1.
  const int64_t token = 1 * 4 + 1 * 2 + 0, col = (2 * p + 3) * p + 1;
  EXPECT_EQ(ref[token * ch * p * p + col], x[((1 * ch + 2) * size + 4 + 3) * size + 0 + 1]);
}

// ---- gradient checks ----

// A layer as closures over named inputs: forward() reads the inputs and parameters,
// backward(dy) returns the analytic gradient of every input (same order; an empty
// vector for inputs that get no gradient, such as integer-like timesteps).
struct GradCase {
  ParamStore store;
  std::vector<std::pair<std::string, std::vector<float>>> inputs;
  std::function<Tensor()> forward;
  std::function<std::vector<std::vector<float>>(Tensor)> backward;
};

// Parameters away from their init (zero-init adaLN and final layers included), so every
// term of a backward pass is exercised.
void randomize_params(ParamStore& store) {
  uint64_t seed = 100;
  for (Param& p : store.params()) {
    fill_uniform(p.value.data(), p.numel(), seed++, 0.5f);
    if (p.spec.init.kind == Init::kOnes)
      for (int64_t i = 0; i < p.numel(); ++i) p.value.data()[i] += 1.0f;
  }
}

using Grads = std::vector<std::vector<float>>;
std::vector<float> copy(Tensor t) { return {t.data, t.data + t.numel()}; }

// loss = sum(y * r): backward(r) must give d loss / d(inputs and parameters).
void expect_gradients_match(GradCase& c) {
  randomize_params(c.store);
  const Tensor y0 = c.forward();
  std::vector<float> r = random_vector(y0.numel(), 7);
  c.store.zero_grad();
  const std::vector<std::vector<float>> dinputs = c.backward(Tensor(r.data(), y0.shape));
  std::vector<std::vector<float>> grads;
  for (Param& p : c.store.params()) grads.emplace_back(p.grad.data(), p.grad.data() + p.numel());
  const auto loss = [&] {
    const Tensor y = c.forward();
    return dot(y.data, r.data(), y.numel());
  };
  testing::GradCheckOptions options;
  options.max_checks = 200;
  ASSERT_EQ(dinputs.size(), c.inputs.size());
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    if (dinputs[i].empty()) continue;
    auto& [name, x] = c.inputs[i];
    ASSERT_EQ(dinputs[i].size(), x.size()) << name;
    EXPECT_EQ(check_gradient(name, x.data(), dinputs[i].data(), static_cast<int64_t>(x.size()),
                             loss, options),
              "");
  }
  size_t i = 0;
  for (Param& p : c.store.params())
    EXPECT_EQ(check_gradient(p.spec.name, p.value.data(), grads[i++].data(), p.numel(), loss,
                             options),
              "");
}

constexpr int64_t kB = 2, kC = 8, kT = 5;

TEST(ImageLayerGrad, LinearWithBias) {
  GradCase c;
  auto layer = std::make_shared<Linear>(c.store, "lin.weight", kC, 6, Init::normal(0.1f),
                                        "lin.bias");
  c.inputs = {{"x", random_vector(kB * kT * kC, 1)}};
  c.forward = [&c, layer] { return layer->forward(Tensor(c.inputs[0].second.data(), {kB * kT, kC})); };
  c.backward = [layer](Tensor dy) { return Grads{copy(layer->backward(dy))}; };
  expect_gradients_match(c);
  EXPECT_FALSE(c.store.find("lin.bias")->spec.weight_decay);
}

TEST(ImageLayerGrad, PatchEmbed) {
  GradCase c;
  const int64_t ch = 2, size = 8, p = 4;
  auto layer = std::make_shared<PatchEmbed>(c.store, "patch_embed", ch, size, p, kC);
  c.inputs = {{"x", random_vector(kB * ch * size * size, 1)}};
  c.forward = [&c, layer] {
    return layer->forward(Tensor(c.inputs[0].second.data(), {kB, ch, size, size}));
  };
  c.backward = [layer](Tensor dy) { return Grads{copy(layer->backward(dy))}; };
  expect_gradients_match(c);
  EXPECT_EQ(c.store.find("patch_embed.weight")->spec.shape, (Shape{kC, ch * p * p}));
  EXPECT_EQ(layer->num_patches(), 4);
}

TEST(ImageLayerGrad, LearnedPositionEmbedding) {
  GradCase c;
  auto layer = std::make_shared<PositionEmbedding>(c.store, "pos_embed", kT, kC, 0.02f);
  c.inputs = {{"x", random_vector(kB * kT * kC, 1)}};
  c.forward = [&c, layer] { return layer->forward(Tensor(c.inputs[0].second.data(), {kB * kT, kC})); };
  c.backward = [layer](Tensor dy) { return Grads{copy(layer->backward(dy))}; };
  expect_gradients_match(c);
}

// The ViT head input: a CLS token prepended to the patch tokens, mixed with them by a
// (non-causal) linear map so that the pooled CLS row depends on every patch, then
// pooled: the gradient must reach the token and every patch.
void check_pooling(TokenPool::Mode mode) {
  GradCase c;
  auto cls = std::make_shared<ClsToken>(c.store, "cls_token", kC, 0.02f);
  auto mix = std::make_shared<Linear>(c.store, "mix.weight", kC, kC, Init::normal(0.1f));
  auto pool = std::make_shared<TokenPool>(mode, Device::kCpu);
  auto mean = std::make_shared<Buffer>(), dmean = std::make_shared<Buffer>();
  const int64_t patches = 4, t = patches + 1;
  c.inputs = {{"x", random_vector(kB * patches * kC, 1)}};
  // h = cls(x); h_row += mean over the image's rows of mix(h); y = pool(h)
  c.forward = [&c, cls, mix, pool, mean] {
    const Tensor h = cls->forward(Tensor(c.inputs[0].second.data(), {kB * patches, kC}), kB);
    const Tensor m = mix->forward(h);
    Tensor out = mean->view(h.shape);
    for (int64_t b = 0; b < kB; ++b)
      for (int64_t j = 0; j < kC; ++j) {
        double s = 0.0;
        for (int64_t r = 0; r < t; ++r) s += m.data[(b * t + r) * kC + j];
        for (int64_t r = 0; r < t; ++r)
          out.data[(b * t + r) * kC + j] = h.data[(b * t + r) * kC + j] + static_cast<float>(s / t);
      }
    return pool->forward(out, kB);
  };
  c.backward = [cls, mix, pool, dmean](Tensor dy) {
    const Tensor dout = pool->backward(dy);
    Tensor dm = dmean->view(dout.shape);
    for (int64_t b = 0; b < kB; ++b)
      for (int64_t j = 0; j < kC; ++j) {
        double s = 0.0;
        for (int64_t r = 0; r < t; ++r) s += dout.data[(b * t + r) * kC + j];
        for (int64_t r = 0; r < t; ++r) dm.data[(b * t + r) * kC + j] = static_cast<float>(s / t);
      }
    const Tensor dh_mix = mix->backward(dm);
    std::vector<float> dh(dout.data, dout.data + dout.numel());
    for (size_t i = 0; i < dh.size(); ++i) dh[i] += dh_mix.data[i];
    return Grads{copy(cls->backward(Tensor(dh.data(), dout.shape)))};
  };
  expect_gradients_match(c);
}

TEST(ImageLayerGrad, ClsTokenAndClsPooling) { check_pooling(TokenPool::Mode::kCls); }
TEST(ImageLayerGrad, ClsTokenAndMeanPooling) { check_pooling(TokenPool::Mode::kMean); }

// DiT conditioning: c = TimestepEmbedder(t) + y_embed[y] with a null class row; the
// timesteps are data (no gradient), the gradient reaches both embedders' parameters.
TEST(ImageLayerGrad, TimestepAndLabelEmbedding) {
  GradCase c;
  auto t_embed = std::make_shared<TimestepEmbedder>(c.store, "t_embed", kC, 0.02f);
  auto y_embed = std::make_shared<Embedding>(c.store, "y_embed.weight", 4, kC, Init::normal(0.02f));
  auto out = std::make_shared<Buffer>();
  const std::vector<int32_t> labels = {2, 3, 0, 3};  // 3 = the null class of 3 classes
  c.inputs = {{"t", {0.0f, 999.0f, 17.0f, 500.0f}}};
  c.forward = [&c, t_embed, y_embed, out, labels] {
    const Tensor te = t_embed->forward(c.inputs[0].second.data(), 4);
    const Tensor ye = y_embed->forward(labels.data(), 4);
    Tensor y = out->view(te.shape);
    for (int64_t i = 0; i < y.numel(); ++i) y.data[i] = te.data[i] + ye.data[i];
    return y;
  };
  c.backward = [t_embed, y_embed](Tensor dy) {
    t_embed->backward(dy);
    y_embed->backward(dy);
    return Grads{{}};
  };
  expect_gradients_match(c);
  EXPECT_EQ(c.store.find("t_embed.fc1.weight")->spec.shape, (Shape{kC, 256}));
}

// The timestep features are [cos(t f_k), sin(t f_k)], f_k = exp(-ln(1e4) k / 128): with
// the first linear layer the identity on feature j, the output shows feature j.
TEST(TimestepEmbedder, FrequencyFeatures) {
  ParamStore store;
  TimestepEmbedder embed(store, "t_embed", 256, 0.02f);
  store.initialize(1);
  Param& w1 = *store.find("t_embed.fc1.weight");
  Param& w2 = *store.find("t_embed.fc2.weight");
  std::fill(w1.value.data(), w1.value.data() + w1.numel(), 0.0f);
  std::fill(w2.value.data(), w2.value.data() + w2.numel(), 0.0f);
  for (int64_t i = 0; i < 256; ++i) {
    w1.value.data()[i * 256 + i] = 1.0f;
    w2.value.data()[i * 256 + i] = 1.0f;
  }
  const float t = 37.0f;
  const Tensor y = embed.forward(&t, 1);
  auto silu = [](double v) { return v / (1.0 + std::exp(-v)); };
  for (int k : {0, 5, 127}) {
    const double f = std::exp(-std::log(10000.0) * k / 128.0);
    EXPECT_NEAR(y[k], silu(std::cos(t * f)), 1e-5) << k;
    EXPECT_NEAR(y[128 + k], silu(std::sin(t * f)), 1e-5) << k;
  }
}

// adaLN: mod = Linear(SiLU(c)) (B, 6C); out = x + gate * LN(x)(1 + scale) + shift
// with one (shift, scale, gate) triple: the gradient reaches x, c and the linear.
TEST(ImageLayerGrad, AdaLNModulation) {
  GradCase c;
  auto ada = std::make_shared<Linear>(c.store, "adaln.weight", kC, 3 * kC, Init::zeros(),
                                      "adaln.bias");
  auto norm = std::make_shared<LayerNorm>(c.store, "norm", kC, 1e-6f, false);
  auto bufs = std::make_shared<std::vector<Buffer>>(6);
  c.inputs = {{"x", random_vector(kB * kT * kC, 1)}, {"c", random_vector(kB * kC, 2)}};
  c.forward = [&c, ada, norm, bufs] {
    auto& b = *bufs;
    Tensor s = b[0].view({kB, kC});
    cpu::silu_forward(c.inputs[1].second.data(), s.data, s.numel());
    const Tensor mod = ada->forward(s);  // [shift | scale | gate]
    const Tensor x(c.inputs[0].second.data(), {kB * kT, kC});
    const Tensor n = norm->forward(x);
    Tensor m = b[1].view(x.shape);
    ops::modulate_forward(n, mod, 0, 1, m);
    Tensor out = b[2].view(x.shape);
    ops::gated_add_forward(x, mod, 2, m, out);
    return out;
  };
  c.backward = [&c, ada, bufs, norm](Tensor dy) {
    auto& b = *bufs;
    // recompute what forward kept: the modulated tensor and mod
    const Tensor m(b[1].data(), dy.shape);
    Tensor dmod = b[3].view({kB, 3 * kC});
    b[3].zero();
    Tensor dm = b[4].view(dy.shape);
    const Tensor s(b[0].data(), {kB, kC});
    const Tensor mod = ada->forward(s);
    ops::gated_add_backward(mod, 2, m, dy, dm, dmod);
    const Tensor n = norm->forward(Tensor(c.inputs[0].second.data(), dy.shape));
    Tensor dn = b[5].view(dy.shape);
    ops::modulate_backward(n, mod, 0, 1, dm, dn, dmod);
    std::vector<float> dx = copy(norm->backward(dn));
    for (int64_t i = 0; i < dy.numel(); ++i) dx[i] += dy.data[i];  // the residual path
    const Tensor ds = ada->backward(dmod);
    std::vector<float> dc(static_cast<size_t>(kB * kC));
    cpu::silu_backward(c.inputs[1].second.data(), ds.data, dc.data(), kB * kC);
    return Grads{dx, dc};
  };
  expect_gradients_match(c);
}

TEST(ImageLayerGrad, DitFinalLayer) {
  GradCase c;
  auto layer = std::make_shared<DitFinalLayer>(c.store, "final", kC, 12, 1e-6f);
  auto ds = std::make_shared<std::vector<float>>();
  c.inputs = {{"h", random_vector(kB * kT * kC, 1)}, {"s", random_vector(kB * kC, 2)}};
  c.forward = [&c, layer] {
    return layer->forward(Tensor(c.inputs[0].second.data(), {kB * kT, kC}),
                          Tensor(c.inputs[1].second.data(), {kB, kC}), kB);
  };
  c.backward = [layer, ds](Tensor dy) {
    ds->assign(kB * kC, 0.0f);
    std::vector<float> dh = copy(layer->backward(dy, Tensor(ds->data(), {kB, kC})));
    return Grads{dh, *ds};
  };
  expect_gradients_match(c);
  // zero-initialised: a fresh final layer outputs zeros
  ParamStore store;
  DitFinalLayer fresh(store, "final", kC, 12, 1e-6f);
  store.initialize(3);
  std::vector<float> h = random_vector(kB * kT * kC, 1), s = random_vector(kB * kC, 2);
  const Tensor y = fresh.forward(Tensor(h.data(), {kB * kT, kC}), Tensor(s.data(), {kB, kC}), kB);
  for (int64_t i = 0; i < y.numel(); ++i) ASSERT_EQ(y[i], 0.0f);
}

// ---- sin-cos positions ----

TEST(SinCosTable, FollowsTheMaeLayout) {
  const int64_t c = 16, gh = 3, gw = 4;
  const std::vector<float> t = sincos_2d_table(c, gh, gw);
  ASSERT_EQ(t.size(), static_cast<size_t>(gh * gw * c));
  const int64_t h = 2, w = 3, q = c / 4;
  const float* row = t.data() + (h * gw + w) * c;
  for (int64_t k = 0; k < q; ++k) {
    const double omega = std::pow(10000.0, -static_cast<double>(k) / q);
    EXPECT_NEAR(row[k], std::sin(w * omega), 1e-6);
    EXPECT_NEAR(row[q + k], std::cos(w * omega), 1e-6);
    EXPECT_NEAR(row[2 * q + k], std::sin(h * omega), 1e-6);
    EXPECT_NEAR(row[3 * q + k], std::cos(h * omega), 1e-6);
  }
  EXPECT_THROW(sincos_2d_table(6, 2, 2), Error);
}

// ---- IDX files ----

class IdxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("moe_idx_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
            "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // 5 images of 2x3 pixels with labels 0..4.
  void write_pair(const std::string& images, const std::string& labels, int64_t n_labels = 5) {
    std::vector<uint8_t> pixels(5 * 6);
    for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 8);
    write_idx(path(images), {5, 2, 3}, pixels);
    std::vector<uint8_t> y(static_cast<size_t>(n_labels));
    for (int64_t i = 0; i < n_labels; ++i) y[i] = static_cast<uint8_t>(i % 5);
    write_idx(path(labels), {n_labels}, y);
  }

  // The user error message of `fn`, or "" when it does not throw one.
  static std::string user_error(const std::function<void()>& fn) {
    try {
      fn();
    } catch (const Error& e) {
      return e.user_error() ? e.what() : std::string("internal: ") + e.what();
    }
    return "";
  }

  fs::path dir_;
};

TEST_F(IdxTest, RoundTripPlainAndGzip) {
  for (const std::string name : {"a.idx", "a.idx.gz"}) {
    write_idx(path(name), {2, 3}, {1, 2, 3, 4, 5, 255});
    const IdxArray a = read_idx(path(name));
    EXPECT_EQ(a.dims, (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(a.data, (std::vector<uint8_t>{1, 2, 3, 4, 5, 255}));
  }
  // gzip really compresses: the magic bytes of the file are 1f 8b
  std::ifstream in(path("a.idx.gz"), std::ios::binary);
  EXPECT_EQ(in.get(), 0x1f);
  EXPECT_EQ(in.get(), 0x8b);
}

TEST_F(IdxTest, RejectsTruncatedFiles) {
  write_pair("img", "lab");
  const auto size = fs::file_size(path("img"));
  fs::resize_file(path("img"), size - 4);  // plain: data cut short
  std::string err = user_error([&] { read_idx(path("img")); });
  EXPECT_NE(err.find("img"), std::string::npos) << err;
  EXPECT_NE(err.find("truncated"), std::string::npos) << err;
  fs::resize_file(path("img"), 6);  // inside the header
  err = user_error([&] { read_idx(path("img")); });
  EXPECT_NE(err.find("truncated"), std::string::npos) << err;

  std::vector<uint8_t> big(20000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>((i * 7919) % 251);
  write_idx(path("big.gz"), {20, 1000}, big);
  fs::resize_file(path("big.gz"), fs::file_size(path("big.gz")) / 2);  // gzip cut in half
  err = user_error([&] { read_idx(path("big.gz")); });
  EXPECT_NE(err.find("big.gz"), std::string::npos) << err;
  EXPECT_NE(err.find("truncated"), std::string::npos) << err;
}

TEST_F(IdxTest, RejectsForeignAndUnsupportedFiles) {
  std::ofstream(path("text")) << "hello, this is not an IDX file";
  EXPECT_NE(user_error([&] { read_idx(path("text")); }).find("not an IDX file"),
            std::string::npos);
  std::ofstream(path("int32"), std::ios::binary)
      << std::string("\0\0\x0c\x01\0\0\0\x01\0\0\0\x05", 12);
  EXPECT_NE(user_error([&] { read_idx(path("int32")); }).find("not supported"),
            std::string::npos);
  write_idx(path("extra"), {2}, {1, 2});
  std::ofstream(path("extra"), std::ios::app | std::ios::binary) << "x";
  EXPECT_NE(user_error([&] { read_idx(path("extra")); }).find("after"), std::string::npos);
  EXPECT_NE(user_error([&] { read_idx(path("missing")); }).find("missing"), std::string::npos);
}

TEST_F(IdxTest, RejectsMislabelledPairs) {
  write_pair("img", "lab4", 4);  // 4 labels for 5 images
  std::string err = user_error([&] { ImageDataset(path("img"), path("lab4"), 10); });
  EXPECT_NE(err.find("lab4"), std::string::npos) << err;
  EXPECT_NE(err.find("4 labels for the 5 images"), std::string::npos) << err;
  write_pair("img", "lab");
  err = user_error([&] { ImageDataset(path("img"), path("lab"), 3); });  // label 4 >= 3
  EXPECT_NE(err.find("label 3"), std::string::npos) << err;
  err = user_error([&] { ImageDataset(path("img"), path("img"), 10); });  // images as labels
  EXPECT_NE(err.find("images given as labels"), std::string::npos) << err;
  err = user_error([&] { ImageDataset(path("lab"), path("lab"), 10); });
  EXPECT_NE(err.find("expected images"), std::string::npos) << err;
  const ImageDataset ok(path("img"), path("lab"), 5);
  EXPECT_EQ(ok.size(), 5);
  EXPECT_EQ(ok.label(4), 4);
  EXPECT_EQ(ok.image(1)[0], 48);
  err = user_error([&] { ok.require_shape(1, 28, "data.train_path"); });
  EXPECT_NE(err.find("data.train_path"), std::string::npos) << err;
}

TEST_F(IdxTest, SamplerIsPureDpSlicedAndNormalises) {
  std::vector<uint8_t> pixels(6 * 4);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 10);
  write_idx(path("img"), {6, 2, 2}, pixels);
  write_idx(path("lab"), {6}, {0, 1, 2, 3, 4, 5});
  const ImageDataset data(path("img"), path("lab"), 6);
  const ImageTransform flip{true, 0.5f, 0.25f};
  const ImageBatchSampler a(data, 4, 11, flip), b(data, 4, 11, flip);
  std::vector<float> xa(16), xb(16), half(8);
  std::vector<int32_t> ya(4), yb(4), yh(2);
  a.batch(3, 0, 1, xa, ya);
  b.batch(3, 0, 1, xb, yb);
  EXPECT_EQ(xa, xb);
  EXPECT_EQ(ya, yb);
  for (int rank = 0; rank < 2; ++rank) {  // dp slices concatenate to the global batch
    a.batch(3, rank, 2, half, yh);
    for (int i = 0; i < 8; ++i) EXPECT_EQ(half[i], xa[rank * 8 + i]);
    for (int i = 0; i < 2; ++i) EXPECT_EQ(yh[i], ya[rank * 2 + i]);
  }
  int flips = 0;
  for (int64_t step = 0; step < 20; ++step)
    for (int64_t s = 0; s < 4; ++s) {
      const int64_t item = a.sample_index(step, s);
      const bool flipped = a.sample_flipped(step, s);
      flips += flipped;
      std::vector<float> x(16);
      std::vector<int32_t> y(4);
      a.batch(step, 0, 1, x, y);
      EXPECT_EQ(y[s], item);
      // pixel (0, 0) of the sample: (p / 255 - 0.5) / 0.25, from column 1 when flipped
      const float p = pixels[item * 4 + (flipped ? 1 : 0)];
      EXPECT_NEAR(x[s * 4], (p / 255.0f - 0.5f) / 0.25f, 1e-5);
    }
  EXPECT_GT(flips, 20);
  EXPECT_LT(flips, 60);
  // evaluation: items in order, the last batch short, then empty
  std::vector<float> ex(16);
  std::vector<int32_t> ey(4);
  EXPECT_EQ(a.eval_batches_per_epoch(), 2);
  EXPECT_EQ(a.eval_batch(1, 0, 1, ex, ey), 2);
  EXPECT_EQ(ey[0], 4);
  EXPECT_EQ(ey[1], 5);
  EXPECT_EQ(a.eval_batch(2, 0, 1, ex, ey), 0);
}

// ---- PNG ----

TEST_F(IdxTest, PngGridIsWrittenAndReadsBackWithItsSize) {
  std::vector<std::vector<uint8_t>> tiles(6, std::vector<uint8_t>(4 * 3, 128));
  int64_t w = 0, h = 0;
  const std::vector<uint8_t> grid = tile_images(tiles, 2, 3, 4, 3, 2, 255, &w, &h);
  EXPECT_EQ(w, 3 * 3 + 4 * 2);
  EXPECT_EQ(h, 2 * 4 + 3 * 2);
  EXPECT_EQ(grid[0], 255);
  EXPECT_EQ(grid[2 * w + 2], 128);
  write_png_gray(path("grid.png"), w, h, grid);
  const auto [rw, rh] = read_png_size(path("grid.png"));
  EXPECT_EQ(rw, w);
  EXPECT_EQ(rh, h);
  std::ifstream in(path("grid.png"), std::ios::binary);
  char magic[8];
  in.read(magic, 8);
  EXPECT_EQ(std::string(magic + 1, 3), "PNG");
  const std::string err = user_error([&] { write_png_gray(path("no/such/dir.png"), w, h, grid); });
  EXPECT_NE(err.find("dir.png"), std::string::npos) << err;
}

}  // namespace
}  // namespace moe
