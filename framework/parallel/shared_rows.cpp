#include "framework/parallel/shared_rows.h"

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

SharedRows::SharedRows(MPI_Comm comm, int64_t segment_rows, int64_t cols)
    : segment_rows_(segment_rows), cols_(cols) {
  MOE_CHECK(segment_rows >= 0 && cols >= 1, "shared rows: ", segment_rows, " x ", cols);
  MPI_CHECK(MPI_Comm_size(comm, &ranks_));
  const MPI_Aint bytes = static_cast<MPI_Aint>(segment_rows * cols) * MPI_Aint{sizeof(float)};
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
