#pragma once
// NcclCommunicator: the Communicator interface over NCCL for device buffers (spans of
// CUDA memory on the rank's GPU). MPI stays for start-up and control: the NCCL
// communicator is made from an MPI one (rank 0's ncclUniqueId broadcast over it), keeps
// that MPI communicator for barrier() and mpi_comm(), and split() splits both.
//
//   all_reduce, all_gather, reduce_scatter, broadcast   the NCCL collectives
//   all_to_all(_v), all_gather_v                          grouped ncclSend / ncclRecv
//                                                          with host-known counts
//   reduce_scatter_v                                      every block for this rank
//                                                          arrives (all_to_all_v), then
//                                                          they are combined in rank
//                                                          order (deterministic, as the
//                                                          MPI backend)
//   send / recv                                           ncclSend / ncclRecv
//
// Calls are queued on the current CUDA context's stream (framework/kernels/cuda/
// context.h) and return when they have completed, like the MPI backend's. Ranks that
// would share a GPU are refused at construction (NCCL cannot put two ranks on one
// device). Statistics follow communicator.h's byte convention.

#include <mpi.h>
#include <nccl.h>

#include <memory>

#include "framework/parallel/communicator.h"
#include "framework/parallel/mpi_communicator.h"

namespace moe {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `mpi`: one NCCL rank per MPI rank, on this process's current GPU.
  explicit NcclCommunicator(const MpiCommunicator& mpi);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return mpi_->rank(); }
  int size() const override { return mpi_->size(); }
  void barrier() override;
  std::unique_ptr<Communicator> split(int color, int key) const override;
  MPI_Comm mpi_comm() const override { return mpi_->mpi_comm(); }

 protected:
  void all_reduce_raw(void* data, int64_t count, CommType type, ReduceOp op) override;
  void all_gather_raw(const void* send, int64_t count, void* recv, CommType type) override;
  void reduce_scatter_raw(const void* send, void* recv, int64_t recv_count, CommType type,
                          ReduceOp op) override;
  void all_to_all_v_raw(const void* send, const int64_t* send_counts, void* recv,
                        const int64_t* recv_counts, CommType type) override;
  void all_to_all_raw(const void* send, void* recv, int64_t block, CommType type) override;
  void all_gather_v_raw(const void* send, void* recv, const int64_t* counts,
                        CommType type) override;
  void reduce_scatter_v_raw(const void* send, const int64_t* counts, void* recv,
                            CommType type, ReduceOp op) override;
  void broadcast_raw(void* data, int64_t count, CommType type, int root) override;
  void send_raw(const void* data, int64_t count, CommType type, int peer, int tag) override;
  void recv_raw(void* data, int64_t count, CommType type, int peer, int tag) override;

 private:
  NcclCommunicator(std::unique_ptr<MpiCommunicator> mpi);
  void init();  // the NCCL communicator over mpi_ (collective)
  // Grouped point-to-point exchange: block d of send (send_counts) to rank d, block s of
  // recv (recv_counts) from rank s; `bytes` per element.
  void exchange(const void* send, const int64_t* send_counts, void* recv,
                const int64_t* recv_counts, size_t bytes);
  void finish();  // waits for the queued calls (the stream)

  std::unique_ptr<MpiCommunicator> mpi_;
  ncclComm_t comm_ = nullptr;
};

// Combines `ranks` packed blocks of `count` elements into out in rank order 0, 1, ...
// with `op` on the GPU (the last step of reduce_scatter_v).
void reduce_blocks_in_order(const void* blocks, int ranks, int64_t count, void* out,
                            CommType type, ReduceOp op);

}  // namespace moe
