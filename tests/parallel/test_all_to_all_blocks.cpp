// mpi-ranks: 1 2 3 4
// Communicator::all_to_all_blocks: every block lands where the receiver's list puts it,
// for float and bf16 rows, with empty blocks and blocks in another order than they were
// sent; the MPI backend (one message per non-empty block) and the base class's packing
// implementation (one all_to_all_v, what a backend without its own override runs) agree;
// stats count exactly the blocks for other ranks; bad block lists throw before anything
// is sent.
//
// Checks after a collective use EXPECT (not ASSERT): a rank leaving a test early would
// leave the others waiting in the next collective.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "framework/core/bf16.h"
#include "framework/core/error.h"
#include "framework/parallel/mpi_communicator.h"
#include "tests/parallel/mpi_test.h"

namespace moe {
namespace {

using Blocks = std::vector<std::vector<CommBlock>>;

// Forwards the all-to-all to an MPI communicator and nothing else, so that
// all_to_all_blocks runs the base class's implementation on top of it.
class PackingCommunicator final : public Communicator {
 public:
  explicit PackingCommunicator(MpiCommunicator& inner) : inner_(inner) {}
  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  MPI_Comm mpi_comm() const override { return inner_.mpi_comm(); }
  void barrier() override { inner_.barrier(); }
  std::unique_ptr<Communicator> split(int, int) const override { unused(); }

 protected:
  void all_to_all_v_raw(const void* send, const int64_t* send_counts, void* recv,
                        const int64_t* recv_counts, CommType type) override {
    MOE_CHECK(type == CommType::kFloat32, "PackingCommunicator: float rows only");
    const size_t n = static_cast<size_t>(size());
    int64_t sent = 0, received = 0;
    for (size_t r = 0; r < n; ++r) {
      sent += send_counts[r];
      received += recv_counts[r];
    }
    inner_.all_to_all_v<float>({static_cast<const float*>(send), static_cast<size_t>(sent)},
                               {send_counts, n},
                               {static_cast<float*>(recv), static_cast<size_t>(received)},
                               {recv_counts, n});
  }
  void all_reduce_raw(void*, int64_t, CommType, ReduceOp) override { unused(); }
  void all_gather_raw(const void*, int64_t, void*, CommType) override { unused(); }
  void reduce_scatter_raw(const void*, void*, int64_t, CommType, ReduceOp) override { unused(); }
  void all_to_all_raw(const void*, void*, int64_t, CommType) override { unused(); }
  void all_gather_v_raw(const void*, void*, const int64_t*, CommType) override { unused(); }
  void reduce_scatter_v_raw(const void*, const int64_t*, void*, CommType, ReduceOp) override {
    unused();
  }
  void broadcast_raw(void*, int64_t, CommType, int) override { unused(); }
  void send_raw(const void*, int64_t, CommType, int, int) override { unused(); }
  void recv_raw(void*, int64_t, CommType, int, int) override { unused(); }

 private:
  [[noreturn]] static void unused() { MOE_FAIL("PackingCommunicator: not forwarded"); }
  MpiCommunicator& inner_;
};

// Block j from rank s to rank d: count(s, d, j) elements (zeros included), element i
// carrying the code s*1000 + d*100 + j*10 + i.
constexpr int kBlocks = 3;
int64_t count(int s, int d, int j) { return (s + 2 * d + 3 * j) % 4; }
float code(int s, int d, int j, int64_t i) {
  return static_cast<float>(s * 1000 + d * 100 + j * 10 + i);
}

// The send side: blocks for rank d in rank order, block j placed after a gap of one
// element; the receive side: the blocks of source s in reverse order, gaps of two.
struct Layout {
  Blocks send, recv;
  int64_t send_size = 0, recv_size = 0;
};

Layout layout(int me, int n) {
  Layout l;
  l.send.resize(static_cast<size_t>(n));
  l.recv.resize(static_cast<size_t>(n));
  for (int d = 0; d < n; ++d)
    for (int j = 0; j < kBlocks; ++j) {
      l.send_size += 1;
      l.send[d].push_back({l.send_size, count(me, d, j)});
      l.send_size += count(me, d, j);
    }
  for (int s = 0; s < n; ++s) {
    l.recv[s].resize(kBlocks);
    for (int j = kBlocks - 1; j >= 0; --j) {
      l.recv_size += 2;
      l.recv[s][j] = {l.recv_size, count(s, me, j)};
      l.recv_size += count(s, me, j);
    }
  }
  return l;
}

// Runs the exchange of `layout` through `comm` and checks every received element.
void expect_blocks_placed(Communicator& comm) {
  const int n = comm.size(), me = comm.rank();
  const Layout l = layout(me, n);
  std::vector<float> send(static_cast<size_t>(l.send_size), -1.0f);
  for (int d = 0; d < n; ++d)
    for (int j = 0; j < kBlocks; ++j)
      for (int64_t i = 0; i < l.send[d][j].count; ++i)
        send[l.send[d][j].offset + i] = code(me, d, j, i);
  std::vector<float> recv(static_cast<size_t>(l.recv_size), -1.0f);
  comm.all_to_all_blocks<float>(send, l.send, recv, l.recv);
  std::vector<float> expected(recv.size(), -1.0f);  // gaps untouched
  for (int s = 0; s < n; ++s)
    for (int j = 0; j < kBlocks; ++j)
      for (int64_t i = 0; i < l.recv[s][j].count; ++i)
        expected[l.recv[s][j].offset + i] = code(s, me, j, i);
  EXPECT_EQ(recv, expected);
}

TEST(AllToAllBlocks, MpiBackendPlacesEveryBlock) {
  MpiCommunicator world(test::mpi_env().world());
  expect_blocks_placed(world);
}

TEST(AllToAllBlocks, PackingDefaultPlacesEveryBlock) {
  MpiCommunicator world(test::mpi_env().world());
  PackingCommunicator packing(world);
  expect_blocks_placed(packing);
}

TEST(AllToAllBlocks, Bf16RowsTravelAsTwoBytes) {
  MpiCommunicator world(test::mpi_env().world());
  const int n = world.size(), me = world.rank();
  const Layout l = layout(me, n);
  std::vector<bf16> send(static_cast<size_t>(l.send_size), to_bf16(-1.0f));
  for (int d = 0; d < n; ++d)
    for (int j = 0; j < kBlocks; ++j)
      for (int64_t i = 0; i < l.send[d][j].count; ++i)
        send[l.send[d][j].offset + i] = to_bf16(static_cast<float>(me * 16 + d * 4 + j));
  std::vector<bf16> recv(static_cast<size_t>(l.recv_size), to_bf16(-1.0f));
  world.stats() = {};
  world.all_to_all_blocks<bf16>(send, l.send, recv, l.recv);
  for (int s = 0; s < n; ++s)
    for (int j = 0; j < kBlocks; ++j)
      for (int64_t i = 0; i < l.recv[s][j].count; ++i)
        EXPECT_EQ(to_float(recv[l.recv[s][j].offset + i]), static_cast<float>(s * 16 + me * 4 + j))
            << "from " << s << " block " << j;
  // exactly the elements for other ranks, 2 bytes each, one message per non-empty block
  int64_t bytes = 0, messages = 0;
  for (int d = 0; d < n; ++d)
    for (int j = 0; j < kBlocks; ++j)
      if (d != me && count(me, d, j) > 0) {
        bytes += 2 * count(me, d, j);
        ++messages;
      }
  EXPECT_EQ(world.stats().bytes_sent, bytes);
  EXPECT_EQ(world.stats().intra_node_messages, messages);
  EXPECT_EQ(world.stats().calls, 1);
}

TEST(AllToAllBlocks, BadListsThrowBeforeCommunicating) {
  MpiCommunicator world(test::mpi_env().world());
  const int n = world.size(), me = world.rank();
  std::vector<float> buffer(8);
  Blocks empty(static_cast<size_t>(n));
  Blocks short_list(static_cast<size_t>(n) + 1);
  EXPECT_THROW(world.all_to_all_blocks<float>(buffer, short_list, buffer, empty), Error);
  Blocks outside = empty;
  outside[0].push_back({6, 3});  // past the 8 elements
  EXPECT_THROW(world.all_to_all_blocks<float>(buffer, outside, buffer, empty), Error);
  Blocks mine = empty;  // a block to itself that does not fit the one it receives
  mine[me].push_back({0, 2});
  Blocks theirs = empty;
  theirs[me].push_back({0, 3});
  EXPECT_THROW(world.all_to_all_blocks<float>(buffer, mine, buffer, theirs), Error);
  world.barrier();
}

}  // namespace
}  // namespace moe
