#include "framework/train/stop_signal.h"

#include <csignal>

namespace moe {
namespace {

volatile std::sig_atomic_t g_signal = 0;  // the first stop signal (see the header)
struct sigaction g_previous_term, g_previous_int;

extern "C" void on_stop_signal(int signal) {
  if (g_signal == 0) {
    g_signal = signal;
    return;
  }
  // The second one: the default action (terminate), now.
  std::signal(signal, SIG_DFL);
  std::raise(signal);
}

}  // namespace

StopSignals::StopSignals() {
  g_signal = 0;
  struct sigaction action = {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // system calls in flight (I/O, MPI) just continue
  sigaction(SIGTERM, &action, &g_previous_term);
  sigaction(SIGINT, &action, &g_previous_int);
}

StopSignals::~StopSignals() {
  sigaction(SIGTERM, &g_previous_term, nullptr);
  sigaction(SIGINT, &g_previous_int, nullptr);
}

int StopSignals::pending() { return g_signal; }

const char* StopSignals::name(int signal) {
  if (signal == SIGTERM) return "SIGTERM";
  if (signal == SIGINT) return "SIGINT";
  return "a signal";
}

}  // namespace moe
