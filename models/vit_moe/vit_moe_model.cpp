// The vit_moe family: VitMoe on IDX images (Fashion-MNIST) behind the trainer's Model
// interface (top-1 accuracy and loss on the test set), and its registration.

#include "models/image_family.h"
#include "models/registry.h"
#include "models/vit_moe/vit_moe.h"

namespace moe {
namespace {

class VitMoeModel final : public Model {
 public:
  VitMoeModel(const Config& c, ParamStore& store, const MoeRuntime& runtime)
      : eval_batches_(c.train.eval_batches),
        data_(c),
        net_(c.model, c.moe, store, runtime) {}

  void load_train_batch(int64_t step, int dp_rank, int dp_size) override {
    resize(dp_size);
    data_.train.batch(step, dp_rank, dp_size, images_, labels_);
  }
  LossParts forward() override {
    return net_.forward(images_.data(), labels_.data(), static_cast<int64_t>(labels_.size()));
  }
  void backward() override { net_.backward(); }

  // sums = {correct top-1, images, sum of CE}; batches of data.batch_size test images
  // in order: the whole set, or the first train.eval_batches batches.
  std::vector<double> evaluate(int dp_rank, int dp_size) override {
    resize(dp_size);
    std::vector<double> sums(3, 0.0);
    const int64_t all = data_.val.eval_batches_per_epoch();
    const int64_t rows = static_cast<int64_t>(labels_.size());
    for (int64_t i = 0; i < (eval_batches_ > 0 ? std::min<int64_t>(eval_batches_, all) : all);
         ++i) {
      // Every rank runs its B_local rows (the MoE layers' collectives); n of them count.
      const int64_t n = data_.val.eval_batch(i, dp_rank, dp_size, images_, labels_);
      const Tensor logits = net_.predict(images_.data(), rows);
      const int64_t classes = logits.cols();
      for (int64_t b = 0; b < n; ++b) {
        const float* row = logits.data + b * classes;
        int64_t best = 0;
        double lse = 0.0, max = row[0];
        for (int64_t k = 1; k < classes; ++k) {
          if (row[k] > row[best]) best = k;
          max = std::max(max, static_cast<double>(row[k]));
        }
        for (int64_t k = 0; k < classes; ++k) lse += std::exp(row[k] - max);
        sums[0] += best == labels_[b];
        sums[2] += max + std::log(lse) - row[labels_[b]];
      }
      sums[1] += static_cast<double>(n);
    }
    return sums;
  }
  nlohmann::json eval_metrics(std::span<const double> sums) const override {
    const double n = std::max(sums[1], 1.0);
    return {{"test_accuracy", sums[0] / n}, {"test_loss", sums[2] / n},
            {"test_images", sums[1]}};
  }

  Network& network() override { return net_; }

 private:
  void resize(int dp_size) {
    const int64_t rows = data_.train.local_batch(dp_size);
    images_.resize(static_cast<size_t>(rows * data_.train.image_floats()));
    labels_.resize(static_cast<size_t>(rows));
  }

  int eval_batches_;
  ImageSplits data_;
  VitMoe net_;
  std::vector<float> images_;    // (B_local, Cin, H, W)
  std::vector<int32_t> labels_;  // (B_local)
};

// Patches, plus the CLS token when the head reads it.
int64_t tokens_per_image(const ModelConfig& m) {
  const int64_t grid = m.image_size / m.patch_size;
  return grid * grid + (m.pool == PoolKind::kCls ? 1 : 0);
}

const FamilyRegistration kRegistration({
    .traits = {.name = "vit_moe",
               .summary = "ViT-MoE image classifier (V-MoE) on IDX images",
               .validate =
                   [](const Config& c) {
                     // auto: learned positions
                     validate_image_options(c.model, c.model.pos_embed == PosEmbedKind::kSincos);
                   },
               .tokens_per_sample = tokens_per_image,
               .samples = "images"},
    .make_network = [](const Config& c, ParamStore& store, const MoeRuntime& runtime)
        -> std::unique_ptr<Network> {
      return std::make_unique<VitMoe>(c.model, c.moe, store, runtime);
    },
    .make_model = [](const Config& c, ParamStore& store, const MoeRuntime& runtime)
        -> std::unique_ptr<Model> { return std::make_unique<VitMoeModel>(c, store, runtime); },
    .classifies_images = true,
});

}  // namespace
}  // namespace moe
