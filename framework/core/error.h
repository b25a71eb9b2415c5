#pragma once
// One error policy for the whole framework: every failed check throws moe::Error
// carrying the expression, file:line and rank; only main() turns it into an exit.
//
//   MOE_CHECK(cond, "message ", value)  internal invariant or runtime failure
//   MOE_USER_CHECK(cond, ...)           bad input from the user (exit status 2)
//   MOE_FAIL(...), MOE_USER_FAIL(...)   the same without a condition

#include <sstream>
#include <stdexcept>
#include <string>

namespace moe {

// Rank shown in error messages; set once at start-up by the MPI environment.
void set_error_rank(int rank);
int error_rank();

class Error : public std::runtime_error {
 public:
  Error(const std::string& what, bool user_error)
      : std::runtime_error(what), user_error_(user_error) {}
  // True for bad options, values or files: main() exits with status 2.
  bool user_error() const { return user_error_; }

 private:
  bool user_error_;
};

namespace detail {
template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
[[noreturn]] void throw_error(const char* expr, const char* file, int line,
                              const std::string& message, bool user_error);
}  // namespace detail

}  // namespace moe

#define MOE_CHECK(cond, ...)                                                           \
  do {                                                                                 \
    if (!(cond)) [[unlikely]]                                                          \
      ::moe::detail::throw_error(#cond, __FILE__, __LINE__,                            \
                                 ::moe::detail::concat(__VA_ARGS__), false);           \
  } while (0)

#define MOE_FAIL(...)                                                                  \
  ::moe::detail::throw_error(nullptr, __FILE__, __LINE__,                              \
                             ::moe::detail::concat(__VA_ARGS__), false)

// User errors carry only the message: it must name the option, file or value.
#define MOE_USER_CHECK(cond, ...)                                                      \
  do {                                                                                 \
    if (!(cond)) [[unlikely]]                                                          \
      ::moe::detail::throw_error(nullptr, nullptr, 0,                                  \
                                 ::moe::detail::concat(__VA_ARGS__), true);            \
  } while (0)

#define MOE_USER_FAIL(...)                                                             \
  ::moe::detail::throw_error(nullptr, nullptr, 0, ::moe::detail::concat(__VA_ARGS__), true)
