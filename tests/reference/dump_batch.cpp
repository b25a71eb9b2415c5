// dump_batch OUT.h5 STEP --config FILE [--section.key=value ...]
//
// Writes the global training batch of step STEP of a moe_gpt config (the batch the
// trainer feeds at that step, a function of (train.seed, STEP)) as /batch/inputs and
// /batch/targets, (B, T) int32: reference tests evaluate exported weights on it.

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "framework/checkpoint/h5_file.h"
#include "framework/config/config.h"
#include "framework/data/sampler.h"
#include "framework/data/token_shard.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: dump_batch OUT.h5 STEP --config FILE [overrides]\n";
    return 2;
  }
  try {
    const std::string out = argv[1];
    const int64_t step = std::atoll(argv[2]);
    const moe::Config c = moe::load_config(argc - 2, argv + 2);
    moe::TokenShard shard(c.data.train_path);
    moe::BatchSampler sampler(shard, c.model.seq_len, c.data.batch_size, c.train.seed);
    std::vector<int32_t> inputs(static_cast<size_t>(c.data.batch_size * c.model.seq_len));
    std::vector<int32_t> targets(inputs.size());
    sampler.batch(step, 0, 1, inputs, targets);
    moe::H5File file = moe::H5File::create(out);
    const moe::Shape shape{c.data.batch_size, c.model.seq_len};
    file.write("/batch/inputs", inputs.data(), shape);
    file.write("/batch/targets", targets.data(), shape);
    file.close();
  } catch (const moe::Error& e) {
    std::cerr << "dump_batch: " << e.what() << "\n";
    return e.user_error() ? 2 : 1;
  }
  return 0;
}
