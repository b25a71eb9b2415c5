#pragma once
// SharedRows: rows that every rank of a shared-memory group can read and write, one MPI
// shared-memory window (MPI_Win_allocate_shared) holding one equal segment per rank,
// contiguous in rank order (the MPI default), so the window is one array:
//
//   all()  (ranks * segment_rows, cols) fp32; rank d's segment is rows
//          [d * segment_rows, (d + 1) * segment_rows)
//
// Loads and stores are plain memory accesses. A rank that wrote rows another rank will
// read calls sync() on both sides of a synchronisation (MPI_Win_sync, a memory fence in
// the window's passive-target epoch, which stays open from construction to destruction).
//
// Construction and destruction are collective over the group, whose ranks must share
// memory (MPI_COMM_TYPE_SHARED; shares_memory() tells).

#include <cstdint>

#include <mpi.h>

#include "framework/tensor/tensor.h"

namespace moe {

// Whether every rank of comm can map the others' memory (one MPI shared-memory node).
// Collective.
bool shares_memory(MPI_Comm comm);
// Bytes free in /dev/shm, where Open MPI backs shared-memory windows
// (osc_sm_backing_directory), the least over the ranks of comm; -1 when unknown.
// Collective. A window that does not fit is refused with one line (a tmpfs that cannot
// hold it would end the process with SIGBUS instead).
double shared_memory_free(MPI_Comm comm);

class SharedRows {
 public:
  // Collective over comm: segment_rows rows of cols floats per rank, zeroed.
  SharedRows(MPI_Comm comm, int64_t segment_rows, int64_t cols);
  ~SharedRows();  // collective
  SharedRows(const SharedRows&) = delete;
  SharedRows& operator=(const SharedRows&) = delete;

  int64_t segment_rows() const { return segment_rows_; }
  int64_t cols() const { return cols_; }
  // (ranks * segment_rows, cols): every rank's segment.
  Tensor all() const { return Tensor(base_, Shape{ranks_ * segment_rows_, cols_}); }
  // rows [first, first + count) of rank d's segment
  Tensor rows(int d, int64_t first, int64_t count) const;
  // This rank's stores visible to, and the others' loads seen by, the ranks it
  // synchronises with next (the fence on either side of a barrier).
  void sync() const;

 private:
  MPI_Win window_ = MPI_WIN_NULL;
  float* base_ = nullptr;  // rank 0's segment; the others follow it
  int ranks_ = 0;
  int64_t segment_rows_ = 0, cols_ = 0;
};

}  // namespace moe
