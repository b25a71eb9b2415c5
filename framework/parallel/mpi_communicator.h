#pragma once
// MpiCommunicator: the MPI backend of Communicator for host memory. It owns one
// MPI_Comm (a duplicate or a split of another), frees it when destroyed, and is the
// only place of the project that makes raw (pointer, count, datatype) MPI calls
// (STYLE rule 4).
//
// Errors: the owned communicator gets MPI_ERRORS_RETURN, so a failed call throws
// moe::Error through MPI_CHECK (call, file:line, rank) instead of aborting inside MPI.
//
// Counts: MPI 3.1 (Open MPI 4.1 here) takes int counts and displacements. Every
// count, and for all_to_all_v every displacement (prefix sum of counts), is checked
// to fit in int; a larger call throws moe::Error instead of silently wrapping. Split
// such a call (it means > 2^31 elements in one collective).
//
// stats(): the byte convention of communicator.h; seconds and calls count every call.

#include <mpi.h>

#include <memory>

#include "framework/parallel/communicator.h"

namespace moe {

class MpiCommunicator final : public Communicator {
 public:
  // Duplicates `comm` (MPI_Comm_dup): the new communicator has its own message space,
  // so its traffic never matches messages of other users of `comm`. Collective over
  // `comm`.
  explicit MpiCommunicator(MPI_Comm comm);
  // The ranks of `parent` that pass the same `color` (>= 0), numbered by `key` in
  // ascending order (MPI_Comm_split). Collective over `parent`.
  static std::unique_ptr<MpiCommunicator> split(const MpiCommunicator& parent, int color,
                                                int key);
  ~MpiCommunicator() override;  // MPI_Comm_free, unless MPI is already finalized
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void barrier() override;
  std::unique_ptr<Communicator> split(int color, int key) const override;

  MPI_Comm mpi_comm() const override { return comm_; }

 protected:
  void all_reduce_raw(void* data, int64_t count, CommType type, ReduceOp op) override;
  void all_gather_raw(const void* send, int64_t count, void* recv, CommType type) override;
  void reduce_scatter_raw(const void* send, void* recv, int64_t recv_count, CommType type,
                          ReduceOp op) override;
  void all_to_all_v_raw(const void* send, const int64_t* send_counts, void* recv,
                        const int64_t* recv_counts, CommType type) override;
  void all_to_all_raw(const void* send, void* recv, int64_t block, CommType type) override;
  void all_to_all_blocks_raw(const void* send, const std::vector<CommBlock>* send_blocks,
                             void* recv, const std::vector<CommBlock>* recv_blocks,
                             CommType type) override;
  void all_gather_v_raw(const void* send, void* recv, const int64_t* counts,
                        CommType type) override;
  void reduce_scatter_v_raw(const void* send, const int64_t* counts, void* recv,
                            CommType type, ReduceOp op) override;
  void broadcast_raw(void* data, int64_t count, CommType type, int root) override;
  void send_raw(const void* data, int64_t count, CommType type, int peer, int tag) override;
  void recv_raw(void* data, int64_t count, CommType type, int peer, int tag) override;

 private:
  struct Adopt {};
  MpiCommunicator(MPI_Comm owned, Adopt);  // takes ownership of an already created comm
  void adopt(MPI_Comm owned);

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
};

}  // namespace moe
