// dump_image_model OUT.h5 PRETRAIN_STEPS --config FILE [--section.key=value ...]
//
// Writes what tests/reference/compare_image_model.py checks against its independent
// PyTorch models, for model.family vit_moe or dit_moe: the resolved config (/config ini),
// the weights after PRETRAIN_STEPS AdamW steps on the config's training images (so
// routing is away from the near-ties of a fresh router and the zero-initialised layers
// are not zero any more), one batch, and this implementation's loss parts, expert
// counts and gradients of that batch.
//   vit_moe batch: /batch/images (B, Cin, H, W), /batch/labels (B)
//   dit_moe batch: /batch/x_t (B, Cin, H, W), /batch/t (B) as the embedder sees it,
//                  /batch/labels (B) with the null class for sample 0, /batch/target

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "framework/checkpoint/h5_file.h"
#include "framework/checkpoint/state_dict.h"
#include "framework/config/config.h"
#include "framework/data/image_sampler.h"
#include "framework/optim/adamw.h"
#include "framework/optim/lr_schedule.h"
#include "models/dit_moe/diffusion.h"
#include "models/dit_moe/dit_moe.h"
#include "models/vit_moe/vit_moe.h"

namespace {

// One batch of either family.
struct Batch {
  std::vector<float> images, x_t, target, t;
  std::vector<int32_t> labels;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: dump_image_model OUT.h5 PRETRAIN_STEPS --config FILE [overrides]\n";
    return 2;
  }
  try {
    const std::string out = argv[1];
    const int64_t pretrain_steps = std::atoll(argv[2]);
    const moe::Config c = moe::load_config(argc - 2, argv + 2);
    const bool vit = c.model.family == "vit_moe";
    MOE_USER_CHECK(vit || c.model.family == "dit_moe", "model.family: ", c.model.family,
                   " is not an image family");
    moe::ImageDataset data(c.data.train_path, c.data.train_labels, c.model.num_classes);
    const moe::ImageBatchSampler sampler(data, c.data.batch_size, c.train.seed,
                                         {c.data.hflip, c.data.image_mean, c.data.image_std});
    const moe::Diffusion diffusion(c.diffusion);
    moe::ParamStore store;
    moe::LocalDispatcher dispatcher;
    const moe::MoeRuntime runtime = moe::MoeRuntime::local(dispatcher, c.moe.num_experts);
    std::unique_ptr<moe::VitMoe> vit_net;
    std::unique_ptr<moe::DitMoe> dit_net;
    if (vit)
      vit_net = std::make_unique<moe::VitMoe>(c.model, c.moe, store, runtime);
    else
      dit_net = std::make_unique<moe::DitMoe>(c.model, c.moe, store, runtime);
    store.initialize(c.train.seed);
    moe::AdamW optimizer(store, c.optim);
    moe::LrSchedule schedule(c.optim, pretrain_steps + 1);

    const int64_t b = c.data.batch_size, d = sampler.image_floats();
    Batch batch;
    batch.images.resize(static_cast<size_t>(b * d));
    batch.x_t.resize(batch.images.size());
    batch.target.resize(batch.images.size());
    batch.t.resize(static_cast<size_t>(b));
    batch.labels.resize(static_cast<size_t>(b));
    auto forward = [&](int64_t step) {
      sampler.batch(step, 0, 1, batch.images, batch.labels);
      store.zero_grad();
      if (vit) return vit_net->forward(batch.images.data(), batch.labels.data(), b);
      for (int64_t i = 0; i < b; ++i)
        diffusion.make_example(batch.images.data() + i * d, d, "train", c.train.seed,
                               static_cast<uint64_t>(step), static_cast<uint64_t>(i),
                               batch.x_t.data() + i * d, batch.target.data() + i * d,
                               batch.t.data() + i);
      batch.labels[0] = static_cast<int32_t>(dit_net->null_class());
      dit_net->forward(batch.x_t.data(), batch.t.data(), batch.labels.data(), b);
      return dit_net->loss(batch.target.data());
    };
    auto backward = [&] { vit ? vit_net->backward() : dit_net->backward(); };
    for (int64_t step = 0; step < pretrain_steps; ++step) {
      forward(step);
      backward();
      optimizer.step(schedule.lr(step));
    }
    const moe::LossParts loss = forward(pretrain_steps);
    backward();

    moe::H5File file = moe::H5File::create(out);
    file.set_string_attr("/config", "ini", c.resolved_ini);
    moe::save_params(file, "/model", store, /*grads=*/false);
    moe::save_params(file, "/grads", store, /*grads=*/true);
    const int64_t s = c.model.image_size;
    const moe::Shape image_shape{b, c.model.image_channels, s, s};
    file.write("/batch/labels", batch.labels.data(), moe::Shape{b});
    if (vit) {
      file.write("/batch/images", batch.images.data(), image_shape);
    } else {
      file.write("/batch/x_t", batch.x_t.data(), image_shape);
      file.write("/batch/target", batch.target.data(), image_shape);
      file.write("/batch/t", batch.t.data(), moe::Shape{b});
    }
    const std::vector<moe::MoELayer*> layers =
        vit ? vit_net->moe_layers() : dit_net->moe_layers();
    std::vector<int64_t> counts;
    for (moe::MoELayer* layer : layers) {
      const std::vector<int64_t>& assigned = layer->load_stats().assigned;
      counts.insert(counts.end(), assigned.begin(), assigned.end());
    }
    file.write("/result/expert_counts", counts.data(),
               moe::Shape{static_cast<int64_t>(layers.size()), c.moe.num_experts});
    const double scalars[4] = {loss.total, loss.ce, loss.aux, loss.z};
    const char* names[4] = {"/result/loss", "/result/ce_loss", "/result/aux_loss",
                            "/result/z_loss"};
    for (int i = 0; i < 4; ++i) {
      const float value = static_cast<float>(scalars[i]);
      file.write(names[i], &value, moe::Shape{});
    }
    file.close();
    std::cout << "wrote " << out << ": loss " << loss.total << " (main " << loss.ce << ")\n";
  } catch (const moe::Error& e) {
    std::cerr << "dump_image_model: " << e.what() << "\n";
    return e.user_error() ? 2 : 1;
  }
  return 0;
}
