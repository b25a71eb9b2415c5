// The dit_moe family: DitMoe trained with the diffusion objective on IDX images
// (Fashion-MNIST) behind the trainer's Model interface (evaluation: the same objective on
// fixed noise and timesteps over the test images), the sampler that makes it an
// ImageGenerator, and its registration.

#include "framework/core/rng.h"
#include "models/dit_moe/diffusion.h"
#include "models/dit_moe/dit_moe.h"
#include "models/dit_moe/preview.h"
#include "models/image_family.h"
#include "models/registry.h"

namespace moe {
namespace {

class DitMoeModel final : public Model {
 public:
  DitMoeModel(const Config& c, ParamStore& store, const MoeRuntime& runtime)
      : config_(c),
        seed_(c.train.seed),
        eval_batches_(c.train.eval_batches),
        class_dropout_(c.model.class_dropout),
        data_(c),
        diffusion_(c.diffusion),
        net_(c.model, c.moe, store, runtime) {}

  void load_train_batch(int64_t step, int dp_rank, int dp_size) override {
    const int64_t rows = resize(dp_size);
    data_.train.batch(step, dp_rank, dp_size, x0_, labels_);
    const PhiloxKey drop_key = philox_key(seed_, hash_name("diffusion.label_drop"));
    for (int64_t r = 0; r < rows; ++r) {
      const uint64_t b = static_cast<uint64_t>(dp_rank * rows + r);  // global sample
      make_example(r, "train", static_cast<uint64_t>(step), b);
      // classifier-free guidance: the null class with probability class_dropout
      const uint64_t bits = random_u64(drop_key, static_cast<uint64_t>(step), b);
      if (uniform_from_bits(static_cast<uint32_t>(bits)) < class_dropout_)
        labels_[r] = static_cast<int32_t>(net_.null_class());
    }
    batch_ = rows;
  }
  LossParts forward() override {
    net_.forward(x_t_.data(), t_.data(), labels_.data(), batch_);
    return net_.loss(target_.data());
  }
  void backward() override { net_.backward(); }

  // sums = {sum over images of the per-image mean squared error, images}; batches of
  // data.batch_size test images in order: the whole set, or the first
  // train.eval_batches batches.
  std::vector<double> evaluate(int dp_rank, int dp_size) override {
    const int64_t rows = resize(dp_size);
    const int64_t all = data_.val.eval_batches_per_epoch();
    double loss = 0.0, images = 0.0;
    for (int64_t i = 0; i < (eval_batches_ > 0 ? std::min<int64_t>(eval_batches_, all) : all);
         ++i) {
      // Every rank runs its B_local rows (the MoE layers' collectives); n of them count.
      const int64_t n = data_.val.eval_batch(i, dp_rank, dp_size, x0_, labels_);
      for (int64_t r = 0; r < rows; ++r)
        make_example(r, "eval", static_cast<uint64_t>(i), static_cast<uint64_t>(dp_rank * rows + r));
      net_.forward(x_t_.data(), t_.data(), labels_.data(), rows);
      loss += net_.loss(target_.data(), n).ce * static_cast<double>(n);
      images += static_cast<double>(n);
    }
    return {loss, images};
  }
  nlohmann::json eval_metrics(std::span<const double> sums) const override {
    return {{"val_loss", sums[1] > 0 ? sums[0] / sums[1] : 0.0}};
  }

  Network& network() override { return net_; }
  // Two samples of each class from the same noise at every evaluation.
  std::optional<PreviewImage> preview_image() override {
    return sample_grid(net_, diffusion_, config_, /*rows=*/2, seed_);
  }

 private:
  int64_t resize(int dp_size) {
    const int64_t rows = data_.train.local_batch(dp_size);
    const size_t n = static_cast<size_t>(rows * data_.train.image_floats());
    x0_.resize(n);
    x_t_.resize(n);
    target_.resize(n);
    t_.resize(static_cast<size_t>(rows));
    labels_.resize(static_cast<size_t>(rows));
    return rows;
  }
  void make_example(int64_t r, const std::string& stream, uint64_t counter, uint64_t b) {
    const int64_t d = data_.train.image_floats();
    diffusion_.make_example(x0_.data() + r * d, d, stream, seed_, counter, b,
                            x_t_.data() + r * d, target_.data() + r * d, t_.data() + r);
  }

  Config config_;  // the preview samples with its model, data and diffusion options
  uint64_t seed_;
  int eval_batches_;
  float class_dropout_;
  ImageSplits data_;
  Diffusion diffusion_;
  DitMoe net_;
  int64_t batch_ = 0;
  std::vector<float> x0_, x_t_, target_;  // (B_local, Cin, H, W)
  std::vector<float> t_;                  // (B_local) timesteps as the embedder sees them
  std::vector<int32_t> labels_;           // (B_local), null class = num_classes
};

// DitMoe with the sampler of its config (diffusion.sampler, auto: DDIM for ddpm, Euler
// for rectified flow; diffusion.sample_steps, diffusion.guidance).
class DitGenerator final : public DitMoe, public ImageGenerator {
 public:
  DitGenerator(const Config& c, ParamStore& store, const MoeRuntime& runtime)
      : DitMoe(c.model, c.moe, store, runtime),
        model_(c.model),
        diffusion_(c.diffusion),
        options_(sample_options(c)) {}
  std::vector<float> generate(std::span<const int32_t> labels, uint64_t seed,
                              const std::function<void(int, double)>& on_step) override {
    SampleOptions options = options_;
    options.seed = seed;
    return sample_images(*this, diffusion_, model_, labels, options, on_step);
  }
  std::string sampler_name() const override { return enum_name(options_.sampler); }

 private:
  ModelConfig model_;
  Diffusion diffusion_;
  SampleOptions options_;
};

const FamilyRegistration kRegistration({
    .traits = {.name = "dit_moe",
               .summary = "DiT-MoE class-conditional diffusion transformer on IDX images",
               .validate =
                   [](const Config& c) {
                     // auto: fixed sin-cos positions
                     validate_image_options(c.model,
                                            c.model.pos_embed != PosEmbedKind::kLearned);
                   },
               .tokens_per_sample = [](const ModelConfig& m) -> int64_t {
                 const int64_t grid = m.image_size / m.patch_size;
                 return grid * grid;
               },
               .samples = "images",
               .whole_samples_per_tp_rank = true},
    .make_network = [](const Config& c, ParamStore& store, const MoeRuntime& runtime)
        -> std::unique_ptr<Network> {
      return std::make_unique<DitGenerator>(c, store, runtime);
    },
    .make_model = [](const Config& c, ParamStore& store, const MoeRuntime& runtime)
        -> std::unique_ptr<Model> { return std::make_unique<DitMoeModel>(c, store, runtime); },
    .generates_images = true,
});

}  // namespace
}  // namespace moe
