#include "framework/parallel/mpi_env.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>

namespace moe {

std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "unknown MPI error";
  return std::string(text, static_cast<size_t>(length));
}

MpiEnv::MpiEnv(int* argc, char*** argv) {
  int provided = 0;
  MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
  // Return codes instead of the default abort, so failures become moe::Error.
  MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size_));
  set_error_rank(rank_);
  MPI_Comm node;
  MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL,
                                &node));
  MPI_CHECK(MPI_Comm_rank(node, &local_rank_));
  MPI_CHECK(MPI_Comm_size(node, &local_size_));
  // key = world rank, so local rank 0 is the node's lowest world rank
  node_leader_ = rank_;
  MPI_CHECK(MPI_Bcast(&node_leader_, 1, MPI_INT, 0, node));
  MPI_CHECK(MPI_Comm_free(&node));
}

MpiEnv::~MpiEnv() { MPI_Finalize(); }

void MpiEnv::abort(int code) const {
  std::cerr.flush();
  if (size_ > 1) MPI_Abort(MPI_COMM_WORLD, code);
  // The error is reported. What libraries print while shutting down after it (HDF5
  // cannot terminate cleanly after it gave up on a damaged file) would only bury it.
  if (const int devnull = ::open("/dev/null", O_WRONLY); devnull >= 0) ::dup2(devnull, 2);
  MPI_Finalize();
  std::exit(code);
}

}  // namespace moe
