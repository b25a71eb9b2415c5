#include "framework/core/error.h"

namespace moe {
namespace {
int g_error_rank = 0;  // written once by the MPI environment before any thread starts
}

void set_error_rank(int rank) { g_error_rank = rank; }
int error_rank() { return g_error_rank; }

namespace detail {
void throw_error(const char* expr, const char* file, int line, const std::string& message,
                 bool user_error) {
  std::ostringstream os;
  if (user_error) {
    os << message;
  } else {
    os << "[rank " << g_error_rank << "] " << message;
    if (expr) os << " (check failed: " << expr << ")";
    os << " at " << file << ":" << line;
  }
  throw Error(os.str(), user_error);
}
}  // namespace detail
}  // namespace moe
