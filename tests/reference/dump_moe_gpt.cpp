// dump_moe_gpt OUT.h5 PRETRAIN_STEPS --config FILE [--section.key=value ...]
//
// Writes what tests/reference/compare_moe_gpt.py checks against its independent
// PyTorch model: the resolved config (/config ini), the weights after PRETRAIN_STEPS
// AdamW steps (so routing is far from the near-ties of a fresh router), one batch,
// and this implementation's loss parts, expert counts and gradients of that batch.

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "framework/checkpoint/h5_file.h"
#include "framework/checkpoint/state_dict.h"
#include "framework/config/config.h"
#include "framework/data/sampler.h"
#include "framework/data/token_shard.h"
#include "framework/optim/adamw.h"
#include "framework/optim/lr_schedule.h"
#include "models/moe_gpt/moe_gpt.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: dump_moe_gpt OUT.h5 PRETRAIN_STEPS --config FILE [overrides]\n";
    return 2;
  }
  try {
    const std::string out = argv[1];
    const int64_t pretrain_steps = std::atoll(argv[2]);
    const moe::Config c = moe::load_config(argc - 2, argv + 2);
    moe::TokenShard shard(c.data.train_path);
    moe::BatchSampler sampler(shard, c.model.seq_len, c.data.batch_size, c.train.seed);
    moe::ParamStore store;
    moe::LocalDispatcher dispatcher;
    moe::MoeGpt model(c.model, c.moe, store,
                      moe::MoeRuntime::local(dispatcher, c.moe.num_experts));
    store.initialize(c.train.seed);
    moe::AdamW optimizer(store, c.optim);
    moe::LrSchedule schedule(c.optim, pretrain_steps + 1);
    std::vector<int32_t> inputs(static_cast<size_t>(c.data.batch_size * c.model.seq_len));
    std::vector<int32_t> targets(inputs.size());
    for (int64_t step = 0; step < pretrain_steps; ++step) {
      sampler.batch(step, 0, 1, inputs, targets);
      store.zero_grad();
      model.forward(inputs.data(), targets.data(), c.data.batch_size);
      model.backward();
      optimizer.step(schedule.lr(step));
      if (c.moe.bias_balance)
        for (moe::MoELayer* layer : model.moe_layers())
          layer->update_bias(layer->load_stats().assigned.data());
    }

    sampler.batch(pretrain_steps, 0, 1, inputs, targets);
    store.zero_grad();
    const moe::LossParts loss = model.forward(inputs.data(), targets.data(), c.data.batch_size);
    model.backward();

    moe::H5File file = moe::H5File::create(out);
    file.set_string_attr("/config", "ini", c.resolved_ini);
    moe::save_params(file, "/model", store, /*grads=*/false);
    moe::save_params(file, "/grads", store, /*grads=*/true);
    const moe::Shape batch_shape{c.data.batch_size, c.model.seq_len};
    file.write("/batch/inputs", inputs.data(), batch_shape);
    file.write("/batch/targets", targets.data(), batch_shape);
    std::vector<int64_t> counts;
    int index = 0;
    for (moe::MoELayer* layer : model.moe_layers()) {
      const std::vector<int64_t>& assigned = layer->load_stats().assigned;
      counts.insert(counts.end(), assigned.begin(), assigned.end());
      const std::string name = "/buffers/layers." +
                               std::to_string(c.model.dense_layers + index++) +
                               ".moe.router.bias";
      const auto bias = layer->bias();
      file.write(name, bias.data(), moe::Shape{static_cast<int64_t>(bias.size())});
    }
    file.write("/result/expert_counts", counts.data(),
               moe::Shape{static_cast<int64_t>(model.moe_layers().size()), c.moe.num_experts});
    const double scalars[4] = {loss.total, loss.ce, loss.aux, loss.z};
    const char* names[4] = {"/result/loss", "/result/ce_loss", "/result/aux_loss",
                            "/result/z_loss"};
    for (int i = 0; i < 4; ++i) {
      const float value = static_cast<float>(scalars[i]);
      file.write(names[i], &value, moe::Shape{});
    }
    file.close();
    std::cout << "wrote " << out << ": loss " << loss.total << " (ce " << loss.ce << ")\n";
  } catch (const moe::Error& e) {
    std::cerr << "dump_moe_gpt: " << e.what() << "\n";
    return e.user_error() ? 2 : 1;
  }
  return 0;
}
