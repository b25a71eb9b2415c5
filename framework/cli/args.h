#pragma once
// The command-line reading the tools share (moe-ckpt, moe-sample, moe-generate): flags
// as `--flag value` or `--flag=value`, other words positional, and bounded numbers. A
// bad argument is a user error naming the flag (exit status 2).

#include <charconv>
#include <cmath>
#include <cstring>
#include <functional>
#include <iostream>
#include <limits>
#include <new>
#include <string>
#include <type_traits>

#include "framework/core/error.h"
#include "framework/core/printable.h"
#include "framework/parallel/mpi_env.h"

namespace moe::cli {

class ArgReader {
 public:
  ArgReader(int argc, char** argv) : argc_(argc), argv_(argv) {}

  // Moves to the next argument; false after the last.
  bool next() {
    if (++i_ >= argc_) return false;
    arg_ = argv_[i_];
    const size_t eq = arg_.find('=');
    inline_ = arg_.starts_with("--") && eq != std::string::npos;
    if (inline_) {
      value_ = arg_.substr(eq + 1);
      arg_ = arg_.substr(0, eq);
    }
    return true;
  }
  // The flag ("--out", without an inline value) or the positional word.
  const std::string& arg() const { return arg_; }
  bool is_flag() const { return arg_.starts_with("--"); }
  // The flag's value: its inline one, else the next argument.
  std::string value() {
    if (inline_) return value_;
    MOE_USER_CHECK(i_ + 1 < argc_, arg_, ": needs a value");
    return argv_[++i_];
  }

 private:
  int argc_;
  char** argv_;
  int i_ = 0;
  std::string arg_, value_;
  bool inline_ = false;
};

// `text` as a T in [lo, hi] (by default any T); anything else is a user error naming
// `flag`.
template <class T>
T parse_number(const std::string& flag, const std::string& text,
               T lo = std::numeric_limits<T>::lowest(), T hi = std::numeric_limits<T>::max()) {
  T value{};
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  const bool parsed = ec == std::errc() && ptr == end && !text.empty();
  if constexpr (std::is_floating_point_v<T>) {
    MOE_USER_CHECK(parsed, flag, ": '", text, "' is not a number");
    MOE_USER_CHECK(std::isfinite(value) && value >= lo && value <= hi, flag, ": '", text,
                   "' is not a number from ", lo, " to ", hi);
  } else {
    MOE_USER_CHECK(parsed && value >= lo && value <= hi, flag, ": '", text,
                   "' is not a whole number from ", lo, " to ", hi);
  }
  return value;
}

// Whether the arguments ask for the usage (--help or -h).
inline bool help_requested(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) return true;
  return false;
}

// The main() of a single-process tool: prints `usage` for --help or -h, else runs
// `body` and turns what it throws into one line "<tool>: <message>" on stderr and the
// exit status of the error contract: 2 for bad input (out of memory included, with
// `memory_hint` saying what to change), 1 for anything else.
inline int run_tool(const char* tool, const char* usage, int argc, char** argv,
                    const std::function<int()>& body, const char* memory_hint) {
  if (help_requested(argc, argv)) {
    std::cout << usage;
    return 0;
  }
  try {
    return body();
  } catch (const Error& e) {
    std::cerr << tool << ": " << printable(e.what()) << "\n";
    return e.user_error() ? 2 : 1;
  } catch (const std::bad_alloc&) {
    std::cerr << tool << ": out of memory (" << memory_hint << ")\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << tool << ": " << printable(e.what()) << "\n";
    return 1;
  }
}

// The main() of a tool run under mpirun: --help prints `usage`; every rank parses the
// same arguments with parse(argc, argv, ranks) -> options, so bad input fails on all
// ranks alike (rank 0 says it in one line, exit 2, no collective started); then
// run(mpi, options), whose failure on any rank ends the whole job (exit 1).
template <class Parse, class Run>
int run_mpi_tool(const char* tool, const char* usage, int argc, char** argv, Parse parse,
                 Run run) {
  if (help_requested(argc, argv)) {
    std::cout << usage;
    return 0;
  }
  MpiEnv mpi(&argc, &argv);
  decltype(parse(argc, argv, mpi.size())) options;
  try {
    options = parse(argc, argv, mpi.size());
  } catch (const Error& e) {
    if (mpi.rank() == 0) std::cerr << tool << ": " << printable(e.what()) << "\n";
    return 2;
  }
  try {
    return run(mpi, options);
  } catch (const std::exception& e) {
    std::cerr << "[rank " << mpi.rank() << "] " << tool << ": " << printable(e.what()) << "\n";
    mpi.abort(1);
  }
}

}  // namespace moe::cli
