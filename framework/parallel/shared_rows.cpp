#include "framework/parallel/shared_rows.h"

#include <sys/statvfs.h>

#include <algorithm>

#include "framework/core/error.h"
#include "framework/parallel/mpi_env.h"

namespace moe {

bool shares_memory(MPI_Comm comm) {
  MPI_Comm node = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
  int size = 0, node_size = 0;
  MPI_CHECK(MPI_Comm_size(comm, &size));
  MPI_CHECK(MPI_Comm_size(node, &node_size));
  MPI_CHECK(MPI_Comm_free(&node));
  // every rank of the group answers alike: one node splits into one piece everywhere
  int all = node_size == size ? 1 : 0;
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &all, 1, MPI_INT, MPI_MIN, comm));
  return all == 1;
}

double shared_memory_free(MPI_Comm comm) {
  struct statvfs fs {};
  double free_bytes = -1.0;
  if (statvfs("/dev/shm", &fs) == 0)
    free_bytes = static_cast<double>(fs.f_bavail) * static_cast<double>(fs.f_frsize);
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &free_bytes, 1, MPI_DOUBLE, MPI_MIN, comm));
  return free_bytes;
}

namespace {

// A tmpfs that cannot hold a window kills the process with SIGBUS at the first touch:
// check the room first, alike on every rank, and say what to change.
void check_room(MPI_Comm comm, int64_t window_bytes) {
  const double free_bytes = shared_memory_free(comm);  // < 0: unknown, no check
  const double need = static_cast<double>(window_bytes);
  MOE_USER_CHECK(free_bytes < 0.0 || free_bytes >= need, "moe.dispatcher: shm needs ",
                 static_cast<int64_t>(need / (1 << 20)), " MiB in /dev/shm for a window of its "
                 "rows, ", static_cast<int64_t>(free_bytes / (1 << 20)), " MiB are free; give "
                 "the node (container: --shm-size) more, or use moe.dispatcher = flat");
}

}  // namespace

SharedRows::SharedRows(MPI_Comm comm, int64_t segment_rows, int64_t cols)
    : segment_rows_(segment_rows), cols_(cols) {
  MOE_CHECK(segment_rows >= 0 && cols >= 1, "shared rows: ", segment_rows, " x ", cols);
  MPI_CHECK(MPI_Comm_size(comm, &ranks_));
  const MPI_Aint bytes = static_cast<MPI_Aint>(segment_rows * cols) * MPI_Aint{sizeof(float)};
  check_room(comm, static_cast<int64_t>(bytes) * ranks_);
  void* mine = nullptr;
  MPI_CHECK(MPI_Win_allocate_shared(bytes, sizeof(float), MPI_INFO_NULL, comm, &mine, &window_));
  MPI_Aint size = 0;
  int unit = 0;
  void* first = nullptr;
  MPI_CHECK(MPI_Win_shared_query(window_, 0, &size, &unit, &first));
  base_ = static_cast<float*>(first);
  int rank = 0;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  // all() relies on the default, contiguous layout
  MOE_CHECK(static_cast<float*>(mine) == base_ + rank * segment_rows * cols,
            "shared rows: the window's segments are not contiguous in rank order");
  std::fill_n(static_cast<float*>(mine), segment_rows * cols, 0.0f);
  MPI_CHECK(MPI_Win_lock_all(MPI_MODE_NOCHECK, window_));
  sync();
  MPI_CHECK(MPI_Barrier(comm));
  sync();
}

SharedRows::~SharedRows() {
  if (window_ == MPI_WIN_NULL) return;
  MPI_Win_unlock_all(window_);
  MPI_Win_free(&window_);
}

Tensor SharedRows::rows(int d, int64_t first, int64_t count) const {
  MOE_CHECK(d >= 0 && d < ranks_ && first >= 0 && count >= 0 && first + count <= segment_rows_,
            "shared rows: rows [", first, ", ", first + count, ") of rank ", d, " in segments of ",
            segment_rows_);
  return Tensor(base_ + (d * segment_rows_ + first) * cols_, Shape{count, cols_});
}

void SharedRows::sync() const { MPI_CHECK(MPI_Win_sync(window_)); }

}  // namespace moe
