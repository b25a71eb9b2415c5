#pragma once
// Logging to stderr. Only rank 0 prints info; warnings and errors come from any rank
// with the rank in front. The Logger is passed explicitly (no global logger).

#include <iostream>
#include <string>

#include "framework/core/error.h"

namespace moe {

class Logger {
 public:
  explicit Logger(int rank) : rank_(rank) {}
  template <class... Args>
  void info(const Args&... args) const {
    if (rank_ == 0) std::cerr << detail::concat(args...) << "\n";
  }
  template <class... Args>
  void warn(const Args&... args) const {
    std::cerr << "[rank " << rank_ << "] warning: " << detail::concat(args...) << "\n";
  }
  int rank() const { return rank_; }

 private:
  int rank_;
};

}  // namespace moe
