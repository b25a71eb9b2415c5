// main() of every GoogleTest executable under tests/parallel/, run as N ranks by
// mpirun: it initialises MPI, runs the tests on every rank, and exits non-zero on
// every rank if a test failed on any (so mpirun and CTest see the failure).
//
// Output: rank 0 prints the usual GoogleTest report; the other ranks print only their
// failures, each line tagged with the rank, so N copies of the report do not
// interleave but no failure goes unseen.

#include <gtest/gtest.h>

#include <iostream>
#include <span>
#include <vector>

#include "framework/core/error.h"
#include "framework/parallel/mpi_communicator.h"
#include "tests/parallel/mpi_test.h"

namespace moe::test {
namespace {
const MpiEnv* g_env = nullptr;  // set once in main() before any test runs
}

const MpiEnv& mpi_env() {
  MOE_CHECK(g_env != nullptr, "mpi_env() called outside mpi_gtest_main's main()");
  return *g_env;
}

namespace {

// Replaces the default printer on ranks > 0: failures only, tagged with the rank.
class RankFailurePrinter : public testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::cerr << "[rank " << rank_ << "] "
              << (result.file_name() ? result.file_name() : "unknown file") << ":"
              << result.line_number() << ": Failure\n"
              << result.message() << std::endl;
  }
  void OnTestEnd(const testing::TestInfo& info) override {
    if (info.result()->Failed())
      std::cerr << "[rank " << rank_ << "] FAILED " << info.test_suite_name() << "."
                << info.name() << std::endl;
  }

 private:
  int rank_;
};

}  // namespace
}  // namespace moe::test

int main(int argc, char** argv) {
  moe::MpiEnv env(&argc, &argv);
  moe::test::g_env = &env;
  testing::InitGoogleTest(&argc, argv);
  if (env.rank() != 0) {
    testing::TestEventListeners& listeners = testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new moe::test::RankFailurePrinter(env.rank()));
  }
  const int32_t failed = RUN_ALL_TESTS() != 0 ? 1 : 0;

  // Every rank learns which ranks failed; rank 0 names them after its report.
  moe::MpiCommunicator world(env.world());
  std::vector<int32_t> failed_on(static_cast<size_t>(world.size()));  // [rank]
  world.all_gather(std::span<const int32_t>(&failed, 1), std::span<int32_t>(failed_on));
  bool any = false;
  for (size_t r = 0; r < failed_on.size(); ++r) {
    if (!failed_on[r]) continue;
    if (env.rank() == 0) std::cerr << "FAILED on rank " << r << std::endl;
    any = true;
  }
  return any ? 1 : 0;
}
