// moe-train --config FILE [--section.key=value ...]
// Trains the model a config describes; see docs/configuration.md and README.md.
// Exit status: 0 done, 2 bad input (one line naming the option, file or value),
// 1 any other failure (the whole MPI job ends).

#include <cstring>
#include <iostream>

#include "framework/config/config.h"
#include "framework/kernels/ops.h"
#include "framework/parallel/mpi_env.h"
#include "framework/train/trainer.h"

int main(int argc, char** argv) {
  moe::ops::select_cpu_kernels(argv);  // may re-execute: before anything else
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::cout << "usage: moe-train --config FILE [--section.key=value ...]\n\n"
                << moe::config_help();
      return 0;
    }
  }
  moe::MpiEnv mpi(&argc, &argv);
  try {
    const moe::Config config = moe::load_config(argc, argv);
    moe::Trainer trainer(config, mpi);
    trainer.run();
  } catch (const moe::Error& e) {
    std::cerr << (mpi.size() > 1 ? "[rank " + std::to_string(mpi.rank()) + "] " : "")
              << "moe-train: " << e.what() << "\n";
    mpi.abort(e.user_error() ? 2 : 1);
  } catch (const std::exception& e) {
    std::cerr << "[rank " << mpi.rank() << "] moe-train: " << e.what() << "\n";
    mpi.abort(1);
  }
  return 0;
}
