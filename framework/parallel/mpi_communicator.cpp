#include "framework/parallel/mpi_communicator.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <vector>

#include "framework/core/timer.h"
#include "framework/parallel/mpi_env.h"

namespace moe {
namespace {

MPI_Datatype mpi_type(CommType type) {
  switch (type) {
    case CommType::kFloat32: return MPI_FLOAT;
    case CommType::kFloat64: return MPI_DOUBLE;
    case CommType::kInt32: return MPI_INT32_T;
    case CommType::kInt64: return MPI_INT64_T;
    case CommType::kUint8: return MPI_UINT8_T;
    case CommType::kBFloat16: return MPI_UINT16_T;  // moved, never reduced
  }
  MOE_FAIL("unknown CommType ", static_cast<int>(type));
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return MPI_SUM;
    case ReduceOp::kMax: return MPI_MAX;
    case ReduceOp::kMin: return MPI_MIN;
  }
  MOE_FAIL("unknown ReduceOp ", static_cast<int>(op));
}

// MPI 3.1 counts are int: refuse what does not fit rather than wrap around.
int int_count(int64_t count, const char* call, const char* what) {
  MOE_CHECK(count >= 0 && count <= INT_MAX, call, ": ", what, " of ", count,
            " elements does not fit MPI's int count (max ", INT_MAX,
            "); split the call");
  return static_cast<int>(count);
}

// int counts and displacements (prefix sums) of one side of an all_to_all_v.
void int_counts(const int64_t* counts, int n, const char* what, std::vector<int>& out_counts,
                std::vector<int>& out_displs) {
  out_counts.resize(static_cast<size_t>(n));
  out_displs.resize(static_cast<size_t>(n));
  int64_t offset = 0;
  for (int r = 0; r < n; ++r) {
    out_displs[r] = int_count(offset, "all_to_all_v", what);
    out_counts[r] = int_count(counts[r], "all_to_all_v", what);
    offset += counts[r];
  }
}

// acc[i] = op(acc[i], part[i]) for n elements of `type`.
template <typename T>
void reduce_typed(T* acc, const T* part, int64_t n, ReduceOp op) {
  for (int64_t i = 0; i < n; ++i) {
    switch (op) {
      case ReduceOp::kSum: acc[i] += part[i]; break;
      case ReduceOp::kMax: acc[i] = std::max(acc[i], part[i]); break;
      case ReduceOp::kMin: acc[i] = std::min(acc[i], part[i]); break;
    }
  }
}

void reduce_local(void* acc, const void* part, int64_t n, CommType type, ReduceOp op) {
  switch (type) {
    case CommType::kFloat32:
      return reduce_typed(static_cast<float*>(acc), static_cast<const float*>(part), n, op);
    case CommType::kFloat64:
      return reduce_typed(static_cast<double*>(acc), static_cast<const double*>(part), n, op);
    case CommType::kInt32:
      return reduce_typed(static_cast<int32_t*>(acc), static_cast<const int32_t*>(part), n, op);
    case CommType::kInt64:
      return reduce_typed(static_cast<int64_t*>(acc), static_cast<const int64_t*>(part), n, op);
    case CommType::kUint8:
      return reduce_typed(static_cast<uint8_t*>(acc), static_cast<const uint8_t*>(part), n, op);
    case CommType::kBFloat16:
      MOE_FAIL("no reduction of bf16 values: reductions run in fp32");
  }
}

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm) {
  MPI_Comm owned = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_dup(comm, &owned));
  adopt(owned);
}

MpiCommunicator::MpiCommunicator(MPI_Comm owned, Adopt) { adopt(owned); }

std::unique_ptr<MpiCommunicator> MpiCommunicator::split(const MpiCommunicator& parent,
                                                        int color, int key) {
  MOE_CHECK(color >= 0, "MpiCommunicator::split: color ", color, " must be >= 0");
  MPI_Comm owned = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split(parent.comm_, color, key, &owned));
  return std::unique_ptr<MpiCommunicator>(new MpiCommunicator(owned, Adopt{}));
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key) const {
  std::unique_ptr<MpiCommunicator> child = split(*this, color, key);
  child->set_observer(observer());
  if (!peer_nodes().empty()) {
    // The child's ranks are ours in key order: gather their parent ranks.
    const int mine = rank();
    std::vector<int> parents(static_cast<size_t>(child->size()));
    MPI_CHECK(MPI_Allgather(&mine, 1, MPI_INT, parents.data(), 1, MPI_INT, child->comm_));
    std::vector<int> nodes(parents.size());
    for (size_t i = 0; i < parents.size(); ++i) nodes[i] = peer_nodes()[parents[i]];
    child->set_peer_nodes(std::move(nodes));
  }
  return child;
}

// The constructors' common part. Split and dup'ed communicators inherit the parent's
// error handler, but the parent may be a user's MPI_COMM_WORLD with the default
// (abort); set it explicitly. Frees `owned` if a query fails (no destructor runs then).
void MpiCommunicator::adopt(MPI_Comm owned) {
  comm_ = owned;
  try {
    MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    MPI_CHECK(MPI_Comm_size(comm_, &size_));
  } catch (...) {
    MPI_Comm_free(&comm_);
    throw;
  }
}

MpiCommunicator::~MpiCommunicator() {
  // After MPI_Finalize nothing may be called (and the handle is gone with MPI anyway).
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void MpiCommunicator::barrier() {
  const Observed call(*this, "barrier");
  ScopedTimer timer(stats_.seconds);
  ++stats_.calls;
  MPI_CHECK(MPI_Barrier(comm_));
}

void MpiCommunicator::all_reduce_raw(void* data, int64_t count, CommType type, ReduceOp op) {
  ScopedTimer timer(stats_.seconds);
  ++stats_.calls;
  const int n = int_count(count, "all_reduce", "data");
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data, n, mpi_type(type), mpi_op(op), comm_));
  const int64_t bytes = count * static_cast<int64_t>(comm_type_size(type));
  count_ring(2 * (size_ - 1) * bytes / size_, 2 * (size_ - 1));  // ring estimate
}

void MpiCommunicator::all_gather_raw(const void* send, int64_t count, void* recv,
                                     CommType type) {
  ScopedTimer timer(stats_.seconds);
  ++stats_.calls;
  const int n = int_count(count, "all_gather", "send");
  int_count(count * size_, "all_gather", "recv");  // MPI addresses recv with int too
  const MPI_Datatype t = mpi_type(type);
  MPI_CHECK(MPI_Allgather(send, n, t, recv, n, t, comm_));
  count_ring((size_ - 1) * count * static_cast<int64_t>(comm_type_size(type)), size_ - 1);
}

void MpiCommunicator::reduce_scatter_raw(const void* send, void* recv, int64_t recv_count,
                                         CommType type, ReduceOp op) {
  ScopedTimer timer(stats_.seconds);
  ++stats_.calls;
  const int n = int_count(recv_count, "reduce_scatter", "recv");
  int_count(recv_count * size_, "reduce_scatter", "send");
  MPI_CHECK(MPI_Reduce_scatter_block(send, recv, n, mpi_type(type), mpi_op(op), comm_));
  count_ring((size_ - 1) * recv_count * static_cast<int64_t>(comm_type_size(type)),
             size_ - 1);
}

void MpiCommunicator::all_to_all_v_raw(const void* send, const int64_t* send_counts,
                                       void* recv, const int64_t* recv_counts,
                                       CommType type) {
  ScopedTimer timer(stats_.seconds);
  ++stats_.calls;
  std::vector<int> sc, sd, rc, rd;  // (size) counts and displacements in elements
  int_counts(send_counts, size_, "send block (or its offset)", sc, sd);
  int_counts(recv_counts, size_, "recv block (or its offset)", rc, rd);
  const MPI_Datatype t = mpi_type(type);
  MPI_CHECK(MPI_Alltoallv(send, sc.data(), sd.data(), t, recv, rc.data(), rd.data(), t,
                          comm_));
  const int64_t element = static_cast<int64_t>(comm_type_size(type));
  for (int d = 0; d < size_; ++d)
    if (d != rank_ && send_counts[d] > 0) count_sent(d, send_counts[d] * element);
}

// One message per non-empty block, sent from and received into the blocks themselves:
// between ranks of one machine each is one single copy (CMA), so placing rows needs no
// staging buffer. Block j of a peer travels with tag j (MPI keeps the messages of one
// (source, tag) in order, and every block of a call is consumed before it returns).
// Receives are posted first; sends start at the next rank, so that ranks do not all
// send to rank 0 first. This rank's own blocks are copied.
void MpiCommunicator::all_to_all_blocks_raw(const void* send,
                                            const std::vector<CommBlock>* send_blocks,
                                            void* recv, const std::vector<CommBlock>* recv_blocks,
                                            CommType type) {
  ScopedTimer timer(stats_.seconds);
  ++stats_.calls;
  const MPI_Datatype t = mpi_type(type);
  const int64_t element = static_cast<int64_t>(comm_type_size(type));
  const auto* in = static_cast<const char*>(send);
  auto* out = static_cast<char*>(recv);
  auto tag = [](size_t j) {
    MOE_CHECK(j < 32768, "all_to_all_blocks: more than 32768 blocks to one peer");
    return static_cast<int>(j);
  };
  std::vector<MPI_Request> requests;
  for (int i = 1; i < size_; ++i) {
    const int s = (rank_ + size_ - i) % size_;
    const std::vector<CommBlock>& blocks = recv_blocks[s];
    for (size_t j = 0; j < blocks.size(); ++j) {
      if (blocks[j].count == 0) continue;
      MPI_Request& request = requests.emplace_back();
      MPI_CHECK(MPI_Irecv(out + blocks[j].offset * element,
                          int_count(blocks[j].count, "all_to_all_blocks", "recv block"), t, s,
                          tag(j), comm_, &request));
    }
  }
  for (int i = 1; i < size_; ++i) {
    const int d = (rank_ + i) % size_;
    const std::vector<CommBlock>& blocks = send_blocks[d];
    int64_t bytes = 0, messages = 0;
    for (size_t j = 0; j < blocks.size(); ++j) {
      if (blocks[j].count == 0) continue;
      MPI_Request& request = requests.emplace_back();
      MPI_CHECK(MPI_Isend(in + blocks[j].offset * element,
                          int_count(blocks[j].count, "all_to_all_blocks", "send block"), t, d,
                          tag(j), comm_, &request));
      bytes += blocks[j].count * element;
      ++messages;
    }
    if (messages > 0) count_sent(d, bytes, messages);
  }
  const std::vector<CommBlock>& own_out = send_blocks[rank_];
  const std::vector<CommBlock>& own_in = recv_blocks[rank_];
  for (size_t j = 0; j < own_out.size(); ++j)
    std::memcpy(out + own_in[j].offset * element, in + own_out[j].offset * element,
                static_cast<size_t>(own_out[j].count * element));
  MPI_CHECK(MPI_Waitall(static_cast<int>(requests.size()), requests.data(), MPI_STATUSES_IGNORE));
}

void MpiCommunicator::all_gather_v_raw(const void* send, void* recv, const int64_t* counts,
                                       CommType type) {
  ScopedTimer timer(stats_.seconds);
  ++stats_.calls;
  std::vector<int> rc, rd;  // (size) counts and displacements in elements
  int_counts(counts, size_, "all_gather_v block (or its offset)", rc, rd);
  const MPI_Datatype t = mpi_type(type);
  MPI_CHECK(MPI_Allgatherv(send, rc[rank_], t, recv, rc.data(), rd.data(), t, comm_));
  const int64_t bytes = counts[rank_] * static_cast<int64_t>(comm_type_size(type));
  for (int d = 0; d < size_; ++d)
    if (d != rank_ && bytes > 0) count_sent(d, bytes);
}

void MpiCommunicator::reduce_scatter_v_raw(const void* send, const int64_t* counts, void* recv,
                                           CommType type, ReduceOp op) {
  // Every rank's block for this rank arrives by one all-to-all-v, then they are
  // combined here in rank order: the result does not depend on MPI's reduction tree.
  const int64_t block = counts[rank_];
  const size_t element = comm_type_size(type);
  std::vector<unsigned char> parts(static_cast<size_t>(size_ * block) * element);
  const std::vector<int64_t> from_each(static_cast<size_t>(size_), block);
  all_to_all_v_raw(send, counts, parts.data(), from_each.data(), type);
  std::memcpy(recv, parts.data(), static_cast<size_t>(block) * element);
  for (int r = 1; r < size_; ++r)
    reduce_local(recv, parts.data() + static_cast<size_t>(r * block) * element, block, type, op);
}

void MpiCommunicator::all_to_all_raw(const void* send, void* recv, int64_t block,
                                     CommType type) {
  ScopedTimer timer(stats_.seconds);
  ++stats_.calls;
  const int n = int_count(block, "all_to_all", "block");
  int_count(block * size_, "all_to_all", "send");
  const MPI_Datatype t = mpi_type(type);
  MPI_CHECK(MPI_Alltoall(send, n, t, recv, n, t, comm_));
  const int64_t bytes = block * static_cast<int64_t>(comm_type_size(type));
  for (int d = 0; d < size_; ++d)
    if (d != rank_ && bytes > 0) count_sent(d, bytes);
}

void MpiCommunicator::broadcast_raw(void* data, int64_t count, CommType type, int root) {
  ScopedTimer timer(stats_.seconds);
  ++stats_.calls;
  MOE_CHECK(root >= 0 && root < size_, "broadcast: root ", root, " is not a rank of this ",
            size_, "-rank communicator");
  const int n = int_count(count, "broadcast", "data");
  MPI_CHECK(MPI_Bcast(data, n, mpi_type(type), root, comm_));
  const int64_t bytes = count * static_cast<int64_t>(comm_type_size(type));
  count_ring((size_ - 1) * bytes / size_, 1);  // the job's n-1 copies, shared
}

void MpiCommunicator::send_raw(const void* data, int64_t count, CommType type, int peer,
                               int tag) {
  ScopedTimer timer(stats_.seconds);
  ++stats_.calls;
  MOE_CHECK(peer >= 0 && peer < size_, "send: peer ", peer, " is not a rank of this ",
            size_, "-rank communicator");
  const int n = int_count(count, "send", "data");
  MPI_CHECK(MPI_Send(data, n, mpi_type(type), peer, tag, comm_));
  if (peer != rank_) count_sent(peer, count * static_cast<int64_t>(comm_type_size(type)));
}

void MpiCommunicator::recv_raw(void* data, int64_t count, CommType type, int peer, int tag) {
  ScopedTimer timer(stats_.seconds);
  ++stats_.calls;
  MOE_CHECK(peer >= 0 && peer < size_, "recv: peer ", peer, " is not a rank of this ",
            size_, "-rank communicator");
  const int n = int_count(count, "recv", "data");
  const MPI_Datatype t = mpi_type(type);
  MPI_Status status;
  MPI_CHECK(MPI_Recv(data, n, t, peer, tag, comm_, &status));
  int received = 0;
  MPI_CHECK(MPI_Get_count(&status, t, &received));
  MOE_CHECK(received == n, "recv: got ", received, " elements from rank ", peer,
            ", expected ", n);
}

}  // namespace moe
