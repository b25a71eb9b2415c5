#include "framework/parallel/cuda/nccl_communicator.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "framework/core/timer.h"
#include "framework/kernels/cuda/check.h"
#include "framework/kernels/cuda/context.h"
#include "framework/parallel/collective_plan.h"
#include "framework/parallel/mpi_env.h"

#define MOE_NCCL_CHECK(call)                                                            \
  do {                                                                                  \
    const ncclResult_t moe_nccl_status = (call);                                        \
    if (moe_nccl_status != ncclSuccess) [[unlikely]]                                    \
      ::moe::detail::throw_error(#call, __FILE__, __LINE__,                             \
                                 ncclGetErrorString(moe_nccl_status), false);           \
  } while (0)

namespace moe {
namespace {

ncclDataType_t nccl_type(CommType type) {
  switch (type) {
    case CommType::kFloat32: return ncclFloat32;
    case CommType::kFloat64: return ncclFloat64;
    case CommType::kInt32: return ncclInt32;
    case CommType::kInt64: return ncclInt64;
    case CommType::kUint8: return ncclUint8;
  }
  MOE_FAIL("unknown CommType ", static_cast<int>(type));
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
  }
  MOE_FAIL("unknown ReduceOp ", static_cast<int>(op));
}

cudaStream_t stream() { return cuda::current().stream(); }

const char* at(const void* base, int64_t elements, size_t bytes) {
  return static_cast<const char*>(base) + static_cast<size_t>(elements) * bytes;
}

}  // namespace

NcclCommunicator::NcclCommunicator(const MpiCommunicator& mpi)
    : NcclCommunicator(std::make_unique<MpiCommunicator>(mpi.mpi_comm())) {}

NcclCommunicator::NcclCommunicator(std::unique_ptr<MpiCommunicator> mpi) : mpi_(std::move(mpi)) {
  init();
}

void NcclCommunicator::init() {
  // Ranks on one node must hold distinct GPUs: refuse before NCCL does, naming them.
  int gpu = -1;
  MOE_CUDA_CHECK(cudaGetDevice(&gpu));
  char host[MPI_MAX_PROCESSOR_NAME] = {};
  int length = 0;
  MPI_CHECK(MPI_Get_processor_name(host, &length));
  const std::vector<int> mine_gpu{gpu};
  std::vector<int> gpus(static_cast<size_t>(size()));
  mpi_->all_gather<int32_t>(mine_gpu, gpus);
  std::vector<uint8_t> names(static_cast<size_t>(size()) * MPI_MAX_PROCESSOR_NAME);
  mpi_->all_gather<uint8_t>(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(host), MPI_MAX_PROCESSOR_NAME),
      names);
  std::vector<int> node(static_cast<size_t>(size()));
  for (int r = 0; r < size(); ++r)
    for (int q = 0; q <= r; ++q)
      if (std::equal(names.begin() + q * MPI_MAX_PROCESSOR_NAME,
                     names.begin() + (q + 1) * MPI_MAX_PROCESSOR_NAME,
                     names.begin() + r * MPI_MAX_PROCESSOR_NAME)) {
        node[r] = q;
        break;
      }
  if (const auto pair = ranks_sharing_a_gpu(node, gpus))
    MOE_USER_FAIL("run.device: cuda: ranks ", pair->first, " and ", pair->second,
                  " would share GPU ", gpus[pair->first],
                  " in one NCCL communicator, which NCCL refuses; give every rank of a node "
                  "its own GPU");
  ncclUniqueId id{};
  if (rank() == 0) MOE_NCCL_CHECK(ncclGetUniqueId(&id));
  std::span<uint8_t> id_bytes(reinterpret_cast<uint8_t*>(&id), sizeof(id));
  mpi_->broadcast<uint8_t>(id_bytes, 0);
  MOE_NCCL_CHECK(ncclCommInitRank(&comm_, size(), id, rank()));
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_ != nullptr) ncclCommDestroy(comm_);  // a destructor: nowhere to report
}

void NcclCommunicator::finish() { MOE_CUDA_CHECK(cudaStreamSynchronize(stream())); }

void NcclCommunicator::barrier() {
  const Observed call(*this, "barrier");
  ScopedTimer timer(stats_.seconds);
  ++stats_.calls;
  finish();
  mpi_->barrier();
}

std::unique_ptr<Communicator> NcclCommunicator::split(int color, int key) const {
  std::unique_ptr<MpiCommunicator> child_mpi = MpiCommunicator::split(*mpi_, color, key);
  std::vector<int> parents(static_cast<size_t>(child_mpi->size()));
  const std::vector<int> mine{rank()};
  child_mpi->all_gather<int32_t>(mine, parents);
  std::unique_ptr<NcclCommunicator> child(new NcclCommunicator(std::move(child_mpi)));
  child->set_observer(observer());
  if (!peer_nodes().empty()) {
    std::vector<int> nodes(parents.size());
    for (size_t i = 0; i < parents.size(); ++i) nodes[i] = peer_nodes()[parents[i]];
    child->set_peer_nodes(std::move(nodes));
  }
  return child;
}

void NcclCommunicator::all_reduce_raw(void* data, int64_t count, CommType type, ReduceOp op) {
  ScopedTimer timer(stats_.seconds);
  ++stats_.calls;
  MOE_NCCL_CHECK(ncclAllReduce(data, data, static_cast<size_t>(count), nccl_type(type),
                               nccl_op(op), comm_, stream()));
  finish();
  const int64_t bytes = count * static_cast<int64_t>(comm_type_size(type));
  const int n = size();
  count_ring(2 * (n - 1) * bytes / n, 2 * (n - 1));
}

void NcclCommunicator::all_gather_raw(const void* send, int64_t count, void* recv,
                                      CommType type) {
  ScopedTimer timer(stats_.seconds);
  ++stats_.calls;
  MOE_NCCL_CHECK(ncclAllGather(send, recv, static_cast<size_t>(count), nccl_type(type), comm_,
                               stream()));
  finish();
  count_ring((size() - 1) * count * static_cast<int64_t>(comm_type_size(type)), size() - 1);
}

void NcclCommunicator::reduce_scatter_raw(const void* send, void* recv, int64_t recv_count,
                                          CommType type, ReduceOp op) {
  ScopedTimer timer(stats_.seconds);
  ++stats_.calls;
  MOE_NCCL_CHECK(ncclReduceScatter(send, recv, static_cast<size_t>(recv_count), nccl_type(type),
                                   nccl_op(op), comm_, stream()));
  finish();
  count_ring((size() - 1) * recv_count * static_cast<int64_t>(comm_type_size(type)),
             size() - 1);
}

void NcclCommunicator::exchange(const void* send, const int64_t* send_counts, void* recv,
                                const int64_t* recv_counts, size_t bytes) {
  const int n = size();
  const std::vector<int64_t> send_at = block_offsets({send_counts, static_cast<size_t>(n)});
  const std::vector<int64_t> recv_at = block_offsets({recv_counts, static_cast<size_t>(n)});
  // Bytes as ncclUint8, so every element type goes through one path.
  MOE_NCCL_CHECK(ncclGroupStart());
  for (int peer = 0; peer < n; ++peer) {
    if (send_counts[peer] > 0)
      MOE_NCCL_CHECK(ncclSend(at(send, send_at[peer], bytes),
                              static_cast<size_t>(send_counts[peer]) * bytes, ncclUint8, peer,
                              comm_, stream()));
    if (recv_counts[peer] > 0)
      MOE_NCCL_CHECK(ncclRecv(const_cast<char*>(at(recv, recv_at[peer], bytes)),
                              static_cast<size_t>(recv_counts[peer]) * bytes, ncclUint8, peer,
                              comm_, stream()));
  }
  MOE_NCCL_CHECK(ncclGroupEnd());
  finish();
}

void NcclCommunicator::all_to_all_v_raw(const void* send, const int64_t* send_counts,
                                        void* recv, const int64_t* recv_counts, CommType type) {
  ScopedTimer timer(stats_.seconds);
  ++stats_.calls;
  const size_t bytes = comm_type_size(type);
  exchange(send, send_counts, recv, recv_counts, bytes);
  for (int d = 0; d < size(); ++d)
    if (d != rank() && send_counts[d] > 0)
      count_sent(d, send_counts[d] * static_cast<int64_t>(bytes));
}

void NcclCommunicator::all_to_all_raw(const void* send, void* recv, int64_t block,
                                      CommType type) {
  const std::vector<int64_t> counts(static_cast<size_t>(size()), block);
  all_to_all_v_raw(send, counts.data(), recv, counts.data(), type);
}

void NcclCommunicator::all_gather_v_raw(const void* send, void* recv, const int64_t* counts,
                                        CommType type) {
  ScopedTimer timer(stats_.seconds);
  ++stats_.calls;
  const int n = size();
  const size_t bytes = comm_type_size(type);
  // my block to every rank (myself included), every rank's block from it
  MOE_NCCL_CHECK(ncclGroupStart());
  const std::vector<int64_t> recv_at = block_offsets({counts, static_cast<size_t>(n)});
  for (int peer = 0; peer < n; ++peer) {
    if (counts[rank()] > 0)
      MOE_NCCL_CHECK(ncclSend(send, static_cast<size_t>(counts[rank()]) * bytes, ncclUint8, peer,
                              comm_, stream()));
    if (counts[peer] > 0)
      MOE_NCCL_CHECK(ncclRecv(const_cast<char*>(at(recv, recv_at[peer], bytes)),
                              static_cast<size_t>(counts[peer]) * bytes, ncclUint8, peer, comm_,
                              stream()));
  }
  MOE_NCCL_CHECK(ncclGroupEnd());
  finish();
  const int64_t sent = counts[rank()] * static_cast<int64_t>(bytes);
  for (int d = 0; d < n; ++d)
    if (d != rank() && sent > 0) count_sent(d, sent);
}

void NcclCommunicator::reduce_scatter_v_raw(const void* send, const int64_t* counts, void* recv,
                                            CommType type, ReduceOp op) {
  const int n = size();
  const int64_t block = counts[rank()];
  const size_t bytes = comm_type_size(type);
  void* parts = cuda::current().scratch<unsigned char>(static_cast<size_t>(n * block) * bytes);
  const std::vector<int64_t> from_each(static_cast<size_t>(n), block);
  all_to_all_v_raw(send, counts, parts, from_each.data(), type);
  reduce_blocks_in_order(parts, n, block, recv, type, op);
  finish();
}

void NcclCommunicator::broadcast_raw(void* data, int64_t count, CommType type, int root) {
  ScopedTimer timer(stats_.seconds);
  ++stats_.calls;
  MOE_NCCL_CHECK(ncclBroadcast(data, data, static_cast<size_t>(count), nccl_type(type), root,
                               comm_, stream()));
  finish();
  const int n = size();
  count_ring((n - 1) * count * static_cast<int64_t>(comm_type_size(type)) / n, 1);
}

void NcclCommunicator::send_raw(const void* data, int64_t count, CommType type, int peer,
                                int /*tag: NCCL orders point-to-point by call order*/) {
  ScopedTimer timer(stats_.seconds);
  ++stats_.calls;
  MOE_NCCL_CHECK(ncclSend(data, static_cast<size_t>(count), nccl_type(type), peer, comm_,
                          stream()));
  finish();
  count_sent(peer, count * static_cast<int64_t>(comm_type_size(type)));
}

void NcclCommunicator::recv_raw(void* data, int64_t count, CommType type, int peer,
                                int /*tag*/) {
  ScopedTimer timer(stats_.seconds);
  ++stats_.calls;
  MOE_NCCL_CHECK(ncclRecv(data, static_cast<size_t>(count), nccl_type(type), peer, comm_,
                          stream()));
  finish();
}

}  // namespace moe
