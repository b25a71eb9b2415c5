// mpi-ranks: 2 3 4
// The sparse collectives (framework/parallel/sparse_collectives.h) on the world, with
// items of several sizes, ranks owning none, items held by their owner alone and by
// every rank:
//   - sparse_all_gather delivers exactly the owner's values to every other holder;
//   - sparse_reduce_scatter leaves the owner exactly its own gradient plus the other
//     holders', added in ascending rank order (checked bit for bit against that float
//     sum, and repeated to the same bits);
//   - sparse_move hands every item to its new owner unchanged;
//   - buffers of the wrong size are refused before any message moves.
// Checks after a collective use EXPECT (not ASSERT): a rank leaving a test early would
// leave the others waiting in the next collective.

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "framework/core/error.h"
#include "framework/parallel/mpi_communicator.h"
#include "framework/parallel/sparse_collectives.h"
#include "tests/parallel/mpi_test.h"

namespace moe {
namespace {

// I items over n ranks: the owners a nondecreasing split that leaves the last rank
// without items (when n > 1); holders: the owner plus a pattern of other ranks, with
// item 0 held by its owner alone and the last item held by every rank.
SparseItems make_items(int n, int64_t item) {
  const int num = 2 * n + 1;
  SparseItems items;
  items.item = item;
  const int owners = n > 1 ? n - 1 : 1;
  for (int i = 0; i < num; ++i) {
    const int owner = i * owners / num;
    items.owner.push_back(owner);
    std::vector<int> holders;
    for (int r = 0; r < n; ++r) {
      const bool pattern = (i * 7 + r * 3) % 4 == 0;
      if (r == owner || (i > 0 && pattern) || i == num - 1) holders.push_back(r);
    }
    items.holders.push_back(holders);
  }
  return items;
}

// Element x of item i as its owner holds it; exact in float.
float weight(int64_t i, int64_t x) { return static_cast<float>(i * 1000 + x) + 0.25f; }

// A gradient element that holder r computed: not exactly representable sums, so that
// the order of the additions shows in the bits.
float gradient(int64_t i, int r, int64_t x) {
  return 1.0f / static_cast<float>(3 + i + 5 * r + 7 * x) + 1e-3f * static_cast<float>(r);
}

TEST(SparseCollectives, AllGatherDeliversTheOwnersValues) {
  MpiCommunicator world(test::mpi_env().world());
  const int me = world.rank();
  for (const int64_t size : {1, 6}) {
    const SparseItems items = make_items(world.size(), size);
    const std::vector<int64_t> owned = items.owned(me), replicas = items.replicas(me);
    std::vector<float> mine, got(replicas.size() * static_cast<size_t>(size), -1.0f);
    for (int64_t i : owned)
      for (int64_t x = 0; x < size; ++x) mine.push_back(weight(i, x));
    sparse_all_gather(world, items, mine, got);
    for (size_t j = 0; j < replicas.size(); ++j)
      for (int64_t x = 0; x < size; ++x)
        EXPECT_EQ(got[j * size + x], weight(replicas[j], x)) << "item " << replicas[j];
  }
}

TEST(SparseCollectives, ReduceScatterSumsInRankOrder) {
  MpiCommunicator world(test::mpi_env().world());
  const int me = world.rank();
  const int64_t size = 5;
  const SparseItems items = make_items(world.size(), size);
  const std::vector<int64_t> owned = items.owned(me), replicas = items.replicas(me);
  std::vector<float> first;
  for (int repeat = 0; repeat < 2; ++repeat) {
    std::vector<float> own, theirs;
    for (int64_t i : owned)
      for (int64_t x = 0; x < size; ++x) own.push_back(gradient(i, me, x));
    for (int64_t i : replicas)
      for (int64_t x = 0; x < size; ++x) theirs.push_back(gradient(i, me, x));
    sparse_reduce_scatter(world, items, theirs, own);
    for (size_t j = 0; j < owned.size(); ++j) {
      const int64_t i = owned[j];
      for (int64_t x = 0; x < size; ++x) {
        float want = gradient(i, me, x);  // the owner's own, then the others ascending
        for (int r : items.holders[i])
          if (r != me) want += gradient(i, r, x);
        EXPECT_EQ(own[j * size + x], want) << "item " << i << " element " << x;
      }
    }
    if (repeat == 0) first = own;
    else EXPECT_EQ(own, first) << "a second call rounds differently";
  }
}

TEST(SparseCollectives, MoveHandsItemsToTheirNewOwners) {
  MpiCommunicator world(test::mpi_env().world());
  const int n = world.size(), me = world.rank();
  const int64_t size = 3, num = 3 * n;
  std::vector<int> from, to;
  for (int64_t i = 0; i < num; ++i) {
    from.push_back(static_cast<int>(i * n / num));      // even blocks
    to.push_back(i < num - 2 ? 0 : static_cast<int>(n - 1));  // rank 0 takes nearly all
  }
  std::vector<float> src;
  for (int64_t i = 0; i < num; ++i)
    if (from[i] == me)
      for (int64_t x = 0; x < size; ++x) src.push_back(weight(i, x));
  const std::vector<float> out = sparse_move(world, from, to, size, src);
  std::vector<float> want;
  for (int64_t i = 0; i < num; ++i)
    if (to[i] == me)
      for (int64_t x = 0; x < size; ++x) want.push_back(weight(i, x));
  EXPECT_EQ(out, want);
}

TEST(SparseCollectives, WrongBufferSizesAreRefused) {
  MpiCommunicator world(test::mpi_env().world());
  const SparseItems items = make_items(world.size(), 4);
  std::vector<float> owned(items.owned(world.rank()).size() * 4 + 1);
  std::vector<float> replicas(items.replicas(world.rank()).size() * 4);
  EXPECT_THROW(sparse_all_gather(world, items, owned, replicas), Error);
  EXPECT_THROW(sparse_reduce_scatter(world, items, replicas, owned), Error);
}

}  // namespace
}  // namespace moe
