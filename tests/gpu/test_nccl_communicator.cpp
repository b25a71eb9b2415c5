// mpi-ranks: 1 2
// NcclCommunicator on device buffers against MpiCommunicator on the same values in host
// memory: every collective of the Communicator interface, with uneven and empty blocks.
// The MPI backend is the reference (both combine in rank order where it matters, so
// reduce_scatter_v is compared bit for bit; the NCCL all-reduce is to rounding).
// Two ranks need two GPUs: with fewer the np2 run is skipped.

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "framework/kernels/ops.h"
#include "framework/parallel/cuda/nccl_communicator.h"
#include "framework/parallel/mpi_communicator.h"

namespace moe {
namespace {

using Vec = std::vector<float>;

// A device copy of `host` and the way back.
struct DeviceVec {
  Buffer buffer{Device::kCuda};
  Tensor t;
  explicit DeviceVec(const Vec& host) {
    const Shape shape{static_cast<int64_t>(host.size())};
    t = buffer.view(shape);
    if (!host.empty()) ops::copy(Tensor(const_cast<float*>(host.data()), shape), t);
  }
  std::span<float> span() { return {t.data, static_cast<size_t>(t.numel())}; }
  Vec host() const {
    Vec out(static_cast<size_t>(t.numel()));
    if (!out.empty()) ops::copy(t, Tensor(out.data(), t.shape));
    return out;
  }
};

// Values that differ per rank and position.
Vec values(int rank, int64_t n, float base = 1.0f) {
  Vec v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = base + 0.25f * rank + 0.001f * static_cast<float>(i);
  return v;
}

struct Pair {
  MpiCommunicator mpi{MPI_COMM_WORLD};
  NcclCommunicator nccl{mpi};
};

TEST(NcclCommunicator, AllReduceAllGatherBroadcast) {
  Pair c;
  const int r = c.mpi.rank(), n = c.mpi.size();
  Vec host = values(r, 1001);
  DeviceVec dev(host);
  c.mpi.all_reduce<float>(host);
  c.nccl.all_reduce<float>(dev.span());
  const Vec got = dev.host();
  for (size_t i = 0; i < host.size(); ++i) EXPECT_NEAR(got[i], host[i], 1e-5 * std::fabs(host[i]));

  const Vec mine = values(r, 7);
  Vec gathered(static_cast<size_t>(7 * n));
  c.mpi.all_gather<float>(mine, gathered);
  DeviceVec dmine(mine), dgathered(Vec(gathered.size()));
  c.nccl.all_gather<float>(dmine.span(), dgathered.span());
  EXPECT_EQ(dgathered.host(), gathered);

  Vec b = values(r, 5, 3.0f);
  DeviceVec db(b);
  c.mpi.broadcast<float>(b, n - 1);
  c.nccl.broadcast<float>(db.span(), n - 1);
  EXPECT_EQ(db.host(), b);
}

TEST(NcclCommunicator, VariableBlocks) {
  Pair c;
  const int r = c.mpi.rank(), n = c.mpi.size();
  // rank s sends (s + d) % 3 elements to rank d: some blocks are empty
  std::vector<int64_t> send_counts(n), recv_counts(n);
  for (int d = 0; d < n; ++d) send_counts[d] = (r + d) % 3, recv_counts[d] = (d + r) % 3;
  int64_t send_total = 0, recv_total = 0;
  for (int d = 0; d < n; ++d) send_total += send_counts[d], recv_total += recv_counts[d];
  const Vec send = values(r, send_total);
  Vec recv(static_cast<size_t>(recv_total));
  c.mpi.all_to_all_v<float>(send, send_counts, recv, recv_counts);
  DeviceVec dsend(send), drecv(Vec(recv.size()));
  c.nccl.all_to_all_v<float>(dsend.span(), send_counts, drecv.span(), recv_counts);
  EXPECT_EQ(drecv.host(), recv);

  // rank d's block of counts[d] elements: all_gather_v and reduce_scatter_v
  std::vector<int64_t> counts(n);
  int64_t total = 0;
  for (int d = 0; d < n; ++d) counts[d] = d == 0 ? 0 : 3 * d + 1, total += counts[d];
  const Vec block = values(r, counts[r]);
  Vec all(static_cast<size_t>(total));
  c.mpi.all_gather_v<float>(block, all, counts);
  DeviceVec dblock(block), dall(Vec(all.size()));
  c.nccl.all_gather_v<float>(dblock.span(), dall.span(), counts);
  EXPECT_EQ(dall.host(), all);

  const Vec contributions = values(r, total, 0.5f);
  Vec reduced(static_cast<size_t>(counts[r]));
  c.mpi.reduce_scatter_v<float>(contributions, counts, reduced);
  DeviceVec dcontrib(contributions), dreduced(Vec(reduced.size()));
  c.nccl.reduce_scatter_v<float>(dcontrib.span(), counts, dreduced.span());
  EXPECT_EQ(dreduced.host(), reduced);  // both in rank order: the same bits
}

}  // namespace
}  // namespace moe
