#pragma once
// The MPI environment of one process: initialisation, world rank/size, node-local
// rank (MPI_COMM_TYPE_SHARED), and the abort path that ends every rank of the job.
// Created once in main() and passed explicitly.

#include <mpi.h>

#include <string>

#include "framework/core/error.h"

#define MPI_CHECK(call)                                                              \
  do {                                                                               \
    const int moe_mpi_rc = (call);                                                   \
    MOE_CHECK(moe_mpi_rc == MPI_SUCCESS, "MPI call failed: ", #call, ": ",           \
              ::moe::mpi_error_string(moe_mpi_rc));                                  \
  } while (0)

namespace moe {

std::string mpi_error_string(int code);

class MpiEnv {
 public:
  MpiEnv(int* argc, char*** argv);  // MPI_Init_thread(FUNNELED); sets the error rank
  ~MpiEnv();                        // MPI_Finalize
  MpiEnv(const MpiEnv&) = delete;
  MpiEnv& operator=(const MpiEnv&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }  // rank within the node
  int local_size() const { return local_size_; }  // ranks on this node
  // The lowest world rank on this node: a label the ranks of one node share.
  int node_leader() const { return node_leader_; }
  MPI_Comm world() const { return MPI_COMM_WORLD; }

  // Ends the whole job: every rank exits with `code` (MPI_Abort when size > 1).
  [[noreturn]] void abort(int code) const;

 private:
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1, node_leader_ = 0;
};

}  // namespace moe
