// mpi-ranks: 1 2 3
// The collective parts of the failure handling (docs/failure-behaviour.md): every rank
// takes the same StepGuard decision at the same step whichever rank saw the problem,
// and the watchdog observes collectives without disturbing them.

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "framework/parallel/mpi_communicator.h"
#include "framework/parallel/watchdog.h"
#include "framework/train/step_guard.h"
#include "tests/parallel/mpi_test.h"

namespace moe {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

TEST(StepGuard, OneRanksNonFiniteLossStopsEveryRank) {
  MpiCommunicator world(MPI_COMM_WORLD);
  TrainConfig train;  // on_nonfinite = stop
  StepGuard guard(train, world);
  EXPECT_EQ(guard.judge(1, 2.5, 1.0).action, StepVerdict::kUpdate);
  const bool mine = world.rank() == world.size() - 1;
  const StepVerdict v = guard.judge(2, mine ? kNaN : 2.5, 1.0);
  EXPECT_EQ(v.action, StepVerdict::kStop);
  EXPECT_EQ(v.reason, "step 2: the loss is not finite");
  const StepVerdict g = guard.judge(3, 2.5, std::numeric_limits<double>::infinity());
  EXPECT_EQ(g.reason, "step 3: the gradient norm is not finite");
}

TEST(StepGuard, SkipCountsAndStopsAfterTooManyInARow) {
  MpiCommunicator world(MPI_COMM_WORLD);
  TrainConfig train;
  train.on_nonfinite = NonfiniteAction::kSkip;
  train.max_skipped_steps = 2;
  StepGuard guard(train, world);
  const bool mine = world.rank() == 0;
  EXPECT_EQ(guard.judge(1, mine ? kNaN : 1.0, 1.0).action, StepVerdict::kSkip);
  EXPECT_EQ(guard.judge(2, 1.0, 1.0).action, StepVerdict::kUpdate);  // the streak ends
  EXPECT_EQ(guard.judge(3, 1.0, mine ? kNaN : 1.0).action, StepVerdict::kSkip);
  const StepVerdict v = guard.judge(4, mine ? kNaN : 1.0, 1.0);
  EXPECT_EQ(v.action, StepVerdict::kStop);
  EXPECT_NE(v.reason.find("train.max_skipped_steps = 2"), std::string::npos) << v.reason;
  EXPECT_EQ(guard.skipped(), 3);
}

TEST(StepGuard, WeightsAreFiniteOnlyWhenEveryRanksAre) {
  MpiCommunicator world(MPI_COMM_WORLD);
  StepGuard guard(TrainConfig{}, world);
  ParamStore store;
  Param& p = store.add({"w", Shape{4}, Shard::kReplicated, Init::ones()});
  store.initialize(1);
  EXPECT_TRUE(guard.weights_finite(store));
  if (world.rank() == world.size() - 1) p.value.data()[2] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(guard.weights_finite(store));
}

TEST(Watchdog, ObservesCollectivesWithoutChangingThem) {
  Watchdog watchdog(600, test::mpi_env().rank());
  MpiCommunicator world(MPI_COMM_WORLD);
  watchdog.watch(world, "world");
  std::unique_ptr<Communicator> half = world.split(world.rank() % 2, world.rank());
  EXPECT_EQ(half->observer(), &watchdog);  // split passes the observer on
  watchdog.set_step(1);
  {
    const WatchedLayer layer(&world, 3);
    int64_t x = 1;
    world.all_reduce<int64_t>({&x, 1});
    EXPECT_EQ(x, world.size());
  }
  world.barrier();
  int64_t y = 1;
  half->all_reduce<int64_t>({&y, 1});
  EXPECT_EQ(y, half->size());
}

}  // namespace
}  // namespace moe
