// moe-train --config FILE [--section.key=value ...]
// Trains the model a config describes; see docs/configuration.md and README.md.
// Exit status (framework/core/exit_status.h, docs/failure-behaviour.md): 0 done, 2 bad
// input or environment (one line naming the option, file, value or directory), 3 the
// training diverged, 4 a collective timed out, 143 / 130 stopped by SIGTERM / SIGINT
// after a checkpoint, 1 any other failure. The whole MPI job ends with the status.

#include <cstring>
#include <iostream>
#include <new>

#include "framework/config/config.h"
#include "framework/core/exit_status.h"
#include "framework/core/printable.h"
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
  const std::string rank = mpi.size() > 1 ? "[rank " + std::to_string(mpi.rank()) + "] " : "";
  try {
    const moe::Config config = moe::load_config(argc, argv);
    moe::Trainer trainer(config, mpi);
    trainer.run();
  } catch (const moe::RunStop& stop) {
    // Every rank stops together (the ranks agreed on it): one line, then a clean exit.
    if (mpi.rank() == 0) std::cerr << "moe-train: " << moe::printable(stop.what()) << std::endl;
    return stop.status();
  } catch (const moe::Error& e) {
    std::cerr << rank << "moe-train: " << moe::printable(e.what()) << "\n";
    mpi.abort(e.user_error() ? moe::kExitUser : moe::kExitInternal);
  } catch (const std::bad_alloc&) {
    std::cerr << rank << "moe-train: out of memory: the model, batch or threads need more "
              << "memory than this machine or its limits allow (docs/failure-behaviour.md)\n";
    mpi.abort(moe::kExitUser);
  } catch (const std::exception& e) {
    std::cerr << "[rank " << mpi.rank() << "] moe-train: " << moe::printable(e.what()) << "\n";
    mpi.abort(moe::kExitInternal);
  }
  return 0;
}
