#pragma once
// Exit statuses of the command-line programs (docs/failure-behaviour.md), and RunStop:
// a run ending on purpose before its last step, on every rank at once.
//
//   0    done
//   1    internal error (a failed check inside the framework: a bug to report)
//   2    bad input or environment: an option, value or file, a directory another run
//        owns, no room or no permission to write, not enough memory
//   3    the training diverged: a non-finite loss or gradient norm (train.on_nonfinite)
//   4    a collective waited longer than parallel.timeout_s (a stuck or lost rank)
//   128 + N  stopped by signal N after a checkpoint: 143 SIGTERM, 130 SIGINT

#include <stdexcept>
#include <string>

namespace moe {

inline constexpr int kExitInternal = 1;
inline constexpr int kExitUser = 2;
inline constexpr int kExitNonFinite = 3;
inline constexpr int kExitTimeout = 4;

// Thrown on every rank together (the ranks agreed on it through a collective), so that
// main() can finalize MPI and exit with `status` after printing the message once.
class RunStop : public std::runtime_error {
 public:
  RunStop(int status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

}  // namespace moe
