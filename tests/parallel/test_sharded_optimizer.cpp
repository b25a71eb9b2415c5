// mpi-ranks: 2 3 4
// The sharded optimizer's gradient sync (framework/parallel/grad_sync.h) against the
// plain one on the same gradients, on the world as the dp group: parameters larger and
// smaller than the group (a 2-element bias over 3 or 4 ranks leaves some ranks an empty
// slice), split over several buckets:
//   - reduce_scatter leaves every rank's slice equal to the all-reduced mean gradient,
//     and the global norm equals the plain one (to the rounding of the sums' order:
//     rank order here, MPI's there);
//   - AdamW over the slices plus all_gather_params gives every rank the weights the
//     whole-block AdamW gives (to 1e-6: the update is elementwise), for three steps;
//   - each rank keeps exactly its slice's moments, and gather_state / slice_state
//     round-trip them (the checkpoint path).
// Checks after a collective use EXPECT (not ASSERT): a rank leaving a test early would
// leave the others waiting in the next collective.

#include <gtest/gtest.h>

#include <vector>

#include "framework/optim/adamw.h"
#include "framework/parallel/grad_sync.h"
#include "framework/parallel/mpi_communicator.h"
#include "tests/parallel/mpi_test.h"

namespace moe {
namespace {

// Weights equal on every rank; gradients differ per rank (each rank's share of a batch).
void fill(ParamStore& store, int rank, int step) {
  int k = 0;
  for (Param& p : store.params())
    for (int64_t i = 0; i < p.numel(); ++i, ++k) {
      if (step == 0) p.value.data()[i] = 0.01f * static_cast<float>((k * 7) % 23 - 11);
      p.grad.data()[i] =
          1.0f / static_cast<float>(3 + k + 5 * rank + step) - 0.1f * static_cast<float>(rank);
    }
}

void add_params(ParamStore& store) {
  store.add({"w", Shape{5, 7}, Shard::kReplicated, Init::zeros(), true});
  store.add({"bias", Shape{2}, Shard::kReplicated, Init::zeros(), false});
  store.add({"v", Shape{11}, Shard::kReplicated, Init::zeros(), true});
}

TEST(ShardedOptimizer, MatchesThePlainSyncAndUpdate) {
  MpiCommunicator world(test::mpi_env().world());
  const auto self = world.split(world.rank(), 0);
  const int n = world.size(), me = world.rank();
  ParamStore plain_store, sharded_store;
  add_params(plain_store);
  add_params(sharded_store);
  OptimConfig c;
  AdamW plain_opt(plain_store, c), sharded_opt(sharded_store, c);
  // 64-byte buckets: each parameter (or two small ones) in a bucket of its own
  GradSync plain(plain_store, world, *self, n, 64);
  GradSync sharded(sharded_store, world, *self, n, 64, nullptr, /*shard_state=*/true);
  sharded.slice_state(sharded_opt);
  for (int step = 0; step < 3; ++step) {
    fill(plain_store, me, step);
    fill(sharded_store, me, step);
    plain.all_reduce();
    sharded.reduce_scatter();
    const double norm = plain.global_grad_norm(*self, *self, *self);
    EXPECT_NEAR(sharded.global_grad_norm(*self, *self, *self), norm, 1e-6 * norm);
    for (size_t i = 0; i < plain_store.params().size(); ++i) {
      const Param& a = plain_store.params()[i];
      const Param& b = sharded_store.params()[i];
      const StateRange r = sharded_opt.state_range(i);
      EXPECT_EQ(r.begin, a.numel() * me / n) << a.spec.name;
      EXPECT_EQ(r.end, a.numel() * (me + 1) / n) << a.spec.name;
      for (int64_t x = r.begin; x < r.end; ++x)
        EXPECT_NEAR(b.grad.data()[x], a.grad.data()[x], 1e-7f)
            << a.spec.name << "[" << x << "]";
    }
    plain_opt.step(1e-2f);
    sharded_opt.step(1e-2f);
    sharded.all_gather_params();
    for (size_t i = 0; i < plain_store.params().size(); ++i) {
      const Param& a = plain_store.params()[i];
      const Param& b = sharded_store.params()[i];
      for (int64_t x = 0; x < a.numel(); ++x)
        EXPECT_NEAR(b.value.data()[x], a.value.data()[x], 1e-6f)
            << a.spec.name << "[" << x << "]";
    }
  }
  int64_t whole = 0;
  for (const Param& p : plain_store.params()) whole += 8 * p.numel();
  int64_t mine = 0;
  for (const Param& p : sharded_store.params())
    mine += 8 * (p.numel() * (me + 1) / n - p.numel() * me / n);
  EXPECT_EQ(plain_opt.state_bytes(), whole);
  EXPECT_EQ(sharded_opt.state_bytes(), mine);
  // the checkpoint path: whole moments on every rank, equal to the plain optimizer's
  // within the rounding of the reduce order, then back to the slices unchanged
  std::vector<std::vector<float>> before;
  for (size_t i = 0; i < sharded_store.params().size(); ++i) {
    const Tensor m = sharded_opt.exp_avg(i);
    before.emplace_back(m.data, m.data + m.numel());
  }
  sharded.gather_state(sharded_opt);
  for (size_t i = 0; i < plain_store.params().size(); ++i) {
    const Tensor a = plain_opt.exp_avg_sq(i), b = sharded_opt.exp_avg_sq(i);
    EXPECT_EQ(b.shape, a.shape);
    for (int64_t x = 0; x < a.numel(); ++x) EXPECT_NEAR(b.data[x], a.data[x], 1e-9f);
  }
  sharded.slice_state(sharded_opt);
  for (size_t i = 0; i < sharded_store.params().size(); ++i) {
    const Tensor m = sharded_opt.exp_avg(i);
    EXPECT_EQ(std::vector<float>(m.data, m.data + m.numel()), before[i]);
  }
  EXPECT_EQ(sharded_opt.state_bytes(), mine);
}

}  // namespace
}  // namespace moe
