#pragma once
// Graceful stop on SIGTERM and SIGINT (what Slurm sends before a time limit with
// --signal, and what Ctrl-C sends): the first signal only records itself; the trainer
// reads it at every step through StepGuard's all-reduced flags, so every rank finishes
// the same step, writes a checkpoint (checkpoint.on_signal) and exits 128 + signal
// (143, 130). A second signal ends the process at once with the signal's default action.
//
// A signal handler can reach the program only through a static flag: that flag lives
// in stop_signal.cpp and nowhere else. StopSignals installs the handlers for its life.

namespace moe {

class StopSignals {
 public:
  StopSignals();   // installs the handlers of SIGTERM and SIGINT
  ~StopSignals();  // restores the previous handlers
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // The first signal received since installation (SIGTERM or SIGINT), or 0.
  static int pending();
  static const char* name(int signal);  // "SIGTERM", "SIGINT"
};

}  // namespace moe
