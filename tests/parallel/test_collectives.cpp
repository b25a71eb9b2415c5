// mpi-ranks: 1 2 3 4 8
// Every Communicator operation of the MPI backend against values computed locally:
// on the world and on the groups of every rank grid the world size allows, for float,
// double, int32 and int64, with uneven all_to_all_v counts (zeros, a rank sending
// nothing), the stats byte convention, size-mismatch errors, and the cross-rank
// config check.
//
// Checks after a collective use EXPECT (not ASSERT): a rank leaving a test early
// would leave the others waiting in the next collective.

#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "framework/core/error.h"
#include "framework/parallel/mpi_communicator.h"
#include "framework/parallel/process_groups.h"
#include "tests/parallel/mpi_test.h"

namespace moe {
namespace {

MpiCommunicator make_world() { return MpiCommunicator(test::mpi_env().world()); }

// A small integer (exact in every element type) that depends on rank and index.
int value(int rank, int i) { return (rank * 7 + i * 3) % 11 - 5; }

// Element i of the block rank s sends to rank d in an all-to-all.
int code(int s, int d, int i) { return s * 10000 + d * 100 + i; }

// Uneven all_to_all_v counts: zeros included, and the last rank (of several) sends
// nothing at all while still receiving.
int64_t a2a_count(int s, int d, int n) {
  if (n > 1 && s == n - 1) return 0;
  return (s + 2 * d + 1) % 3;
}

template <class T>
class CollectivesOfType : public testing::Test {};
using ElementTypes = testing::Types<float, double, int32_t, int64_t>;
TYPED_TEST_SUITE(CollectivesOfType, ElementTypes);

TYPED_TEST(CollectivesOfType, AllReduceSumMaxMin) {
  using T = TypeParam;
  MpiCommunicator world(test::mpi_env().world());
  const int n = world.size(), me = world.rank(), len = 37;
  for (const ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kMin}) {
    std::vector<T> data(len);
    for (int i = 0; i < len; ++i) data[i] = static_cast<T>(value(me, i));
    world.all_reduce(std::span<T>(data), op);
    for (int i = 0; i < len; ++i) {
      T expected = static_cast<T>(value(0, i));
      for (int r = 1; r < n; ++r) {
        const T v = static_cast<T>(value(r, i));
        expected = op == ReduceOp::kSum ? expected + v
                   : op == ReduceOp::kMax ? std::max(expected, v)
                                          : std::min(expected, v);
      }
      EXPECT_EQ(data[i], expected) << "op " << static_cast<int>(op) << " i " << i;
    }
  }
  std::vector<T> empty;
  world.all_reduce(std::span<T>(empty));  // zero elements is a valid call
}

TYPED_TEST(CollectivesOfType, AllGather) {
  using T = TypeParam;
  MpiCommunicator world = make_world();
  const int n = world.size(), me = world.rank();
  for (const int block : {5, 0}) {
    std::vector<T> send(block), recv(static_cast<size_t>(n * block), T(-99));
    for (int i = 0; i < block; ++i) send[i] = static_cast<T>(value(me, i));
    world.all_gather(std::span<const T>(send), std::span<T>(recv));
    for (int s = 0; s < n; ++s)
      for (int i = 0; i < block; ++i)
        EXPECT_EQ(recv[s * block + i], static_cast<T>(value(s, i))) << "from " << s;
  }
}

TYPED_TEST(CollectivesOfType, ReduceScatter) {
  using T = TypeParam;
  MpiCommunicator world = make_world();
  const int n = world.size(), me = world.rank(), block = 4;
  for (const ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
    std::vector<T> send(static_cast<size_t>(n * block)), recv(block);
    for (int j = 0; j < n * block; ++j) send[j] = static_cast<T>(value(me, j));
    world.reduce_scatter(std::span<const T>(send), std::span<T>(recv), op);
    for (int i = 0; i < block; ++i) {
      const int j = me * block + i;  // my block of the reduced vector
      T expected = static_cast<T>(value(0, j));
      for (int r = 1; r < n; ++r)
        expected = op == ReduceOp::kSum ? expected + static_cast<T>(value(r, j))
                                        : std::max(expected, static_cast<T>(value(r, j)));
      EXPECT_EQ(recv[i], expected);
    }
  }
}

// all_to_all_v over `comm` with counts(s, d); checks every received element.
template <class T, class Counts>
void check_all_to_all_v(Communicator& comm, Counts counts) {
  const int n = comm.size(), me = comm.rank();
  std::vector<int64_t> send_counts(n), recv_counts(n);  // [rank]
  std::vector<T> send, recv;
  for (int d = 0; d < n; ++d) {
    send_counts[d] = counts(me, d);
    recv_counts[d] = counts(d, me);
    for (int i = 0; i < send_counts[d]; ++i) send.push_back(static_cast<T>(code(me, d, i)));
  }
  recv.assign(static_cast<size_t>(std::accumulate(recv_counts.begin(), recv_counts.end(),
                                                  int64_t{0})),
              T(-1));
  comm.all_to_all_v(std::span<const T>(send), std::span<const int64_t>(send_counts),
                    std::span<T>(recv), std::span<const int64_t>(recv_counts));
  size_t at = 0;  // blocks arrive packed in source-rank order
  for (int s = 0; s < n; ++s)
    for (int i = 0; i < recv_counts[s]; ++i, ++at)
      EXPECT_EQ(recv[at], static_cast<T>(code(s, me, i))) << "from " << s << " i " << i;
}

TYPED_TEST(CollectivesOfType, AllToAllVUnevenCounts) {
  MpiCommunicator world = make_world();
  const int n = world.size();
  check_all_to_all_v<TypeParam>(world, [n](int s, int d) { return a2a_count(s, d, n); });
  check_all_to_all_v<TypeParam>(world, [](int, int) { return int64_t{0}; });
  check_all_to_all_v<TypeParam>(world, [](int s, int d) { return int64_t{s == d ? 3 : 0}; });
}

TYPED_TEST(CollectivesOfType, AllToAllEqualBlocks) {
  using T = TypeParam;
  MpiCommunicator world = make_world();
  const int n = world.size(), me = world.rank(), block = 3;
  std::vector<T> send(static_cast<size_t>(n * block)), recv(send.size());
  for (int d = 0; d < n; ++d)
    for (int i = 0; i < block; ++i) send[d * block + i] = static_cast<T>(code(me, d, i));
  world.all_to_all(std::span<const T>(send), std::span<T>(recv));
  for (int s = 0; s < n; ++s)
    for (int i = 0; i < block; ++i)
      EXPECT_EQ(recv[s * block + i], static_cast<T>(code(s, me, i)));
}

TYPED_TEST(CollectivesOfType, BroadcastFromEveryRoot) {
  using T = TypeParam;
  MpiCommunicator world = make_world();
  const int me = world.rank();
  for (int root = world.size() - 1; root >= 0; --root) {  // the last rank first
    std::vector<T> data(11, T(-7));
    if (me == root)
      for (int i = 0; i < 11; ++i) data[i] = static_cast<T>(value(root, i));
    world.broadcast(std::span<T>(data), root);
    for (int i = 0; i < 11; ++i) EXPECT_EQ(data[i], static_cast<T>(value(root, i)));
  }
}

TYPED_TEST(CollectivesOfType, SendRecvRing) {
  using T = TypeParam;
  MpiCommunicator world = make_world();
  const int n = world.size(), me = world.rank();
  if (n == 1) GTEST_SKIP() << "a blocking send to oneself may deadlock";
  const int next = (me + 1) % n, prev = (me + n - 1) % n;
  std::vector<T> out(9), in(9, T(-1));
  for (int i = 0; i < 9; ++i) out[i] = static_cast<T>(code(me, next, i));
  // Even ranks send first, odd ranks receive first: no cycle of blocked sends.
  if (me % 2 == 0) {
    world.send(std::span<const T>(out), next, 5);
    world.recv(std::span<T>(in), prev, 5);
  } else {
    world.recv(std::span<T>(in), prev, 5);
    world.send(std::span<const T>(out), next, 5);
  }
  for (int i = 0; i < 9; ++i) EXPECT_EQ(in[i], static_cast<T>(code(prev, me, i)));
}

TEST(Collectives, StatsFollowTheByteConvention) {
  MpiCommunicator world = make_world();
  const int64_t n = world.size(), me = world.rank(), f = sizeof(float);
  EXPECT_EQ(world.stats().bytes_sent, 0);
  EXPECT_EQ(world.stats().calls, 0);
  int64_t expected = 0;

  std::vector<float> data(100, 1.0f);
  world.all_reduce(std::span<float>(data));
  expected += 2 * (n - 1) * 100 * f / n;
  EXPECT_EQ(world.stats().bytes_sent, expected) << "all_reduce";

  std::vector<float> block(10, 1.0f), gathered(static_cast<size_t>(10 * n));
  world.all_gather(std::span<const float>(block), std::span<float>(gathered));
  expected += (n - 1) * 10 * f;
  EXPECT_EQ(world.stats().bytes_sent, expected) << "all_gather";

  world.reduce_scatter(std::span<const float>(gathered), std::span<float>(block));
  expected += (n - 1) * 10 * f;
  EXPECT_EQ(world.stats().bytes_sent, expected) << "reduce_scatter";

  std::vector<float> exchanged(gathered.size());  // MPI forbids aliased send/recv
  world.all_to_all(std::span<const float>(gathered), std::span<float>(exchanged));
  expected += (n - 1) * 10 * f;
  EXPECT_EQ(world.stats().bytes_sent, expected) << "all_to_all";

  world.broadcast(std::span<float>(data), 0);
  expected += (n - 1) * 100 * f / n;
  EXPECT_EQ(world.stats().bytes_sent, expected) << "broadcast";

  world.barrier();
  EXPECT_EQ(world.stats().bytes_sent, expected) << "barrier";
  EXPECT_EQ(world.stats().calls, 6);
  EXPECT_GT(world.stats().seconds, 0.0);

  // all_to_all_v counts exactly the blocks for other ranks, in int64 elements.
  world.stats() = {};
  check_all_to_all_v<int64_t>(world, [n](int s, int d) { return a2a_count(s, d, n); });
  int64_t to_others = 0;
  for (int d = 0; d < n; ++d) to_others += d == me ? 0 : a2a_count(me, d, n) * 8;
  EXPECT_EQ(world.stats().bytes_sent, to_others);
  EXPECT_EQ(world.stats().calls, 1);
}

// `call` must throw moe::Error whose message names `name`.
template <class F>
void expect_error(F&& call, const std::string& name) {
  try {
    call();
    ADD_FAILURE() << "no error; expected one naming " << name;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
  }
}

// Blocks of different sizes (rank r holds 3 + 2r elements, rank 1 none on even worlds).
int64_t v_count(int r) { return r == 1 ? 0 : 3 + 2 * r; }

TEST(Collectives, AllGatherVConcatenatesEveryRanksBlock) {
  MpiCommunicator world = make_world();
  const int n = world.size(), me = world.rank();
  std::vector<int64_t> counts(static_cast<size_t>(n));
  int64_t total = 0;
  for (int r = 0; r < n; ++r) total += counts[r] = v_count(r);
  std::vector<float> mine(static_cast<size_t>(counts[me]));
  for (size_t i = 0; i < mine.size(); ++i) mine[i] = static_cast<float>(100 * me + i);
  std::vector<float> all(static_cast<size_t>(total), -1.0f);
  world.all_gather_v<float>(mine, all, counts);
  int64_t at = 0;
  for (int r = 0; r < n; ++r)
    for (int64_t i = 0; i < counts[r]; ++i) ASSERT_EQ(all[at++], static_cast<float>(100 * r + i));
  // my block to each of the n - 1 others, one message each when it is not empty
  EXPECT_EQ(world.stats().bytes_sent, (n - 1) * counts[me] * 4);
  expect_error([&] { world.all_gather_v<float>(mine, std::span<float>(all).first(1), counts); },
                  "all_gather_v");
}

TEST(Collectives, ReduceScatterVSumsInRankOrder) {
  MpiCommunicator world = make_world();
  const int n = world.size(), me = world.rank();
  std::vector<int64_t> counts(static_cast<size_t>(n));
  int64_t total = 0;
  for (int r = 0; r < n; ++r) total += counts[r] = v_count(r);
  // values whose float sum depends on the order: 1, then tiny terms that a sum starting
  // elsewhere would round differently
  std::vector<float> send(static_cast<size_t>(total));
  for (int64_t i = 0; i < total; ++i) send[i] = me == 0 ? 1.0f : 3e-8f * static_cast<float>(me + i % 3);
  std::vector<float> got(static_cast<size_t>(counts[me]));
  world.reduce_scatter_v<float>(send, counts, got);
  int64_t first = 0;
  for (int r = 0; r < me; ++r) first += counts[r];
  for (int64_t i = 0; i < counts[me]; ++i) {
    float want = 1.0f;  // rank 0's element, then ranks 1, 2, ... in order
    for (int r = 1; r < n; ++r) want += 3e-8f * static_cast<float>(r + (first + i) % 3);
    ASSERT_EQ(got[i], want) << "element " << i << ": not summed in rank order";
  }
  std::vector<double> maxes(static_cast<size_t>(total), static_cast<double>(me));
  std::vector<double> top(static_cast<size_t>(counts[me]));
  world.reduce_scatter_v<double>(maxes, counts, top, ReduceOp::kMax);
  for (double v : top) EXPECT_EQ(v, n - 1);
}

TEST(Collectives, SizeMismatchesThrowBeforeCommunicating) {
  MpiCommunicator world = make_world();
  const int n = world.size();
  // `wrong` has 3n+1 elements: never n, 3n, nor a multiple of n > 1.
  std::vector<float> three(3), wrong(static_cast<size_t>(3 * n + 1));
  const std::span<const float> c_three(three), c_wrong(wrong);
  expect_error([&] { world.all_gather(c_three, std::span<float>(wrong)); },
               "all_gather: recv has");
  expect_error([&] { world.reduce_scatter(c_wrong, std::span<float>(three)); },
               "reduce_scatter: send has");
  std::vector<int64_t> counts(static_cast<size_t>(n), 1), short_counts(n + 1, 0);
  std::vector<float> n_elems(static_cast<size_t>(n));
  auto a2av = [&](std::span<const float> send, std::span<const int64_t> sc,
                  std::span<float> recv, std::span<const int64_t> rc) {
    world.all_to_all_v(send, sc, recv, rc);
  };
  expect_error([&] { a2av(n_elems, short_counts, n_elems, counts); }, "send_counts has");
  expect_error([&] { a2av(n_elems, counts, n_elems, short_counts); }, "recv_counts has");
  expect_error([&] { a2av(wrong, counts, n_elems, counts); }, "all_to_all_v: send has");
  expect_error([&] { a2av(n_elems, counts, wrong, counts); }, "all_to_all_v: recv has");
  std::vector<int64_t> negative = counts;
  negative[0] = -1;
  expect_error([&] { a2av(n_elems, negative, n_elems, counts); }, "is negative");
  std::vector<float> wrong_out(wrong.size());
  if (n > 1)
    expect_error([&] { world.all_to_all(c_wrong, std::span<float>(wrong_out)); },
                 "not a multiple of size()");
  const std::span<const float> c_n_elems(n_elems);
  expect_error([&] { world.all_to_all(c_n_elems, std::span<float>(wrong)); },
               "all_to_all: recv has");
  expect_error([&] { world.broadcast(std::span<float>(three), n); }, "broadcast: root");
  expect_error([&] { world.broadcast(std::span<float>(three), -1); }, "broadcast: root");
  expect_error([&] { world.send(c_three, n); }, "send: peer");
  expect_error([&] { world.recv(std::span<float>(three), -1); }, "recv: peer");
  // Nothing was sent: the communicator still works.
  std::vector<int32_t> one{1};
  world.all_reduce(std::span<int32_t>(one));
  EXPECT_EQ(one[0], n);
}

// MPI 3.1 counts are int: a larger call must throw, not wrap around. The buffer is
// allocated but never written, so it costs address space, not memory.
TEST(Collectives, CountsBeyondIntThrow) {
  MpiCommunicator world = make_world();
  const size_t big = size_t{INT_MAX} + 1;
  const std::unique_ptr<uint8_t[]> buffer(new uint8_t[big]);
  expect_error([&] { world.all_reduce(std::span<uint8_t>(buffer.get(), big)); },
               "all_reduce: data of 2147483648 elements does not fit");
  std::vector<int64_t> send_counts(static_cast<size_t>(world.size()), 0), recv_counts;
  recv_counts = send_counts;
  send_counts[0] = static_cast<int64_t>(big);
  std::vector<uint8_t> none;
  expect_error([&] {
    world.all_to_all_v(std::span<const uint8_t>(buffer.get(), big),
                       std::span<const int64_t>(send_counts), std::span<uint8_t>(none),
                       std::span<const int64_t>(recv_counts));
  }, "all_to_all_v: send block");
  EXPECT_EQ(world.stats().calls, 2);  // counted, but nothing sent
  EXPECT_EQ(world.stats().bytes_sent, 0);
}

TEST(Collectives, MpiErrorsOnSplitGroupsBecomeMoeErrors) {
  MpiCommunicator world = make_world();
  const auto half = MpiCommunicator::split(world, world.rank() % 2, world.rank());
  std::vector<float> data(2);
  // A negative tag is rejected by MPI itself; MPI_ERRORS_RETURN turns it into moe::Error.
  expect_error([&] { half->send(std::span<const float>(data), half->rank(), -3); },
               "MPI call failed");
  half->barrier();
}

// Every (dp, tp, ep, etp, order) the world size allows: each group's communicator has
// the grid's rank and size and really spans grid.members (gathered world ranks), and
// moves data correctly inside the group.
TEST(Collectives, GroupsOfEveryGridMatchTheRankGrid) {
  const MpiEnv& env = test::mpi_env();
  const int n = env.size(), me = env.rank();
  int layouts = 0;
  for (int tp = 1; tp <= n; ++tp)
    for (int ep = 1; ep <= n; ++ep)
      for (int etp = 1; etp <= n; ++etp) {
        if (n % tp != 0 || n % (ep * etp) != 0) continue;
        for (const char* order : {"tp-ep-dp", "tp-dp-ep"}) {
          ParallelConfig p;
          p.dp = n / tp;
          p.tp = tp;
          p.ep = ep;
          p.etp = etp;
          const ProcessGroups groups = make_process_groups(env, p, order);
          ++layouts;
          for (const Group g : kAllGroups) {
            SCOPED_TRACE(std::string(group_name(g)) + " tp " + std::to_string(tp) + " ep " +
                         std::to_string(ep) + " etp " + std::to_string(etp) + " " + order);
            Communicator& comm = groups.get(g);
            EXPECT_EQ(comm.rank(), groups.grid.coord(g, me));
            EXPECT_EQ(comm.size(), groups.grid.size(g));
            const int32_t mine = me;
            std::vector<int32_t> ranks(static_cast<size_t>(comm.size()));
            comm.all_gather(std::span<const int32_t>(&mine, 1), std::span<int32_t>(ranks));
            EXPECT_EQ(std::vector<int>(ranks.begin(), ranks.end()),
                      groups.grid.members(g, me));
            const int m = comm.size();
            check_all_to_all_v<float>(comm, [m](int s, int d) { return a2a_count(s, d, m); });
          }
        }
      }
  EXPECT_GE(layouts, 2);
}

TEST(Collectives, CheckSameOnAllRanks) {
  MpiCommunicator world = make_world();
  const int n = world.size(), me = world.rank();
  EXPECT_NO_THROW(check_same_on_all_ranks(world, "[train]\nsteps = 20\n", "resolved config"));
  if (n == 1) return;
  const std::string text = me == n - 1 ? "[train]\nsteps = 21\n" : "[train]\nsteps = 20\n";
  try {
    check_same_on_all_ranks(world, text, "resolved config");
    ADD_FAILURE() << "a differing config went unnoticed";
  } catch (const Error& e) {
    EXPECT_TRUE(e.user_error());
    const std::string expected =
        "config differs between ranks: rank 0 vs rank " + std::to_string(n - 1) +
        " (resolved config";
    EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
  }
}

TEST(Collectives, MakeProcessGroupsRejectsBadOrMismatchedLayouts) {
  const MpiEnv& env = test::mpi_env();
  const int n = env.size();
  ParallelConfig p;
  p.dp = n + 1;
  expect_error([&] { make_process_groups(env, p); }, "parallel.dp * parallel.tp");
  p.dp = n;
  if (n == 1) return;
  // One rank with another rank order: every rank stops before splitting.
  const char* order = env.rank() == n - 1 ? "tp-dp-ep" : "tp-ep-dp";
  expect_error([&] { make_process_groups(env, p, order); }, "config differs between ranks");
}

TEST(CommType, SizesMatchTheElementTypes) {
  EXPECT_EQ(comm_type_size(comm_type_of<float>()), 4u);
  EXPECT_EQ(comm_type_size(comm_type_of<double>()), 8u);
  EXPECT_EQ(comm_type_size(comm_type_of<int32_t>()), 4u);
  EXPECT_EQ(comm_type_size(comm_type_of<int64_t>()), 8u);
  EXPECT_EQ(comm_type_size(comm_type_of<uint8_t>()), 1u);
}

}  // namespace
}  // namespace moe
