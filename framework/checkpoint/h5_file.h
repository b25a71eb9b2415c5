#pragma once
// H5File: a small wrapper over the HDF5 C API for state-dict files.
//
// A file holds float32 / int32 / int64 datasets of up to four dimensions (rank 0 is a
// scalar) under slash-separated paths ("/model/layers.0.attn.w_qkv": dots are plain
// characters in HDF5 names), and string / integer / floating attributes on the file
// ("/") or on a group. state_dict.h stores ParamStores in it.
//
// Writing is all-or-nothing: create() writes to "<path>.tmp" and close() flushes it to
// the disk (fsync), renames it to <path> and syncs the directory. A file destroyed
// without close() (an exception unwound past it) is removed, so a failed write never
// leaves a half-written file under the final name.
//
// Parallel files (create/open with an MPI communicator) use HDF5's MPI-IO driver: every
// rank of the communicator opens the one file, and every call that creates or changes
// metadata (create, create_dataset, write, attributes, close) is collective: all ranks
// make the same calls with the same arguments in the same order. Dataset data moves in
// collective transfers (write_block, read_block): each rank names its own block of the
// dataset (a hyperslab) or none. set_collective_transfers(false) makes the transfers
// independent (each rank's I/O on its own; every rank still makes the calls). The
// metadata reads (exists, list, dataset_shape, attribute reads) are independent.
//
// Every HDF5 call goes through H5_CHECK or H5_USER_CHECK. Problems with the file itself
// (missing, not HDF5, a dataset absent or of the wrong shape, cannot create or rename)
// are user errors: one line naming the file and what is wrong. Anything else is an
// internal error naming the call, the file and the source line.
//
// Files use the HDF5 1.8 file format (H5Pset_libver_bounds V18): its object headers
// carry checksums, so corrupted metadata is detected by HDF5 itself. Strings are
// fixed-length attributes (in those headers), and close() adds `attrs_checksum` on "/",
// a checksum over every attribute of the file (attr_checksum.h) that check_attributes()
// verifies.

#include <hdf5.h>
#include <mpi.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "framework/checkpoint/attr_checksum.h"
#include "framework/core/error.h"
#include "framework/tensor/tensor.h"

namespace moe {

namespace h5 {
// The innermost entry of this thread's HDF5 error stack ("" when empty). Called right
// after a failed HDF5 call, before anything clears the stack.
std::string last_error();
// Throws the moe::Error for a failed HDF5 call. User errors read
// "<file>: <what> (<function>: <HDF5 reason>)"; internal ones name the whole call.
[[noreturn]] void fail(const char* call, const std::string& file, const char* src_file,
                       int src_line, bool user_error, const std::string& what,
                       const std::string& reason);
}  // namespace h5

}  // namespace moe

// Evaluates an HDF5 call (returning herr_t, hid_t, htri_t, ...) with HDF5's automatic
// error printing off and yields its result; a negative result throws moe::Error naming
// the call and `file`. H5_USER_CHECK does the same with a user error whose message is
// `file: what...`. The macros do not nest (H5E_BEGIN_TRY cannot sit in a decltype):
// evaluate an inner call into a variable first.
#define MOE_H5_CALL(call, file, user_error, ...)                                       \
  [&]() {                                                                              \
    decltype(call) moe_h5_result_{};                                                   \
    std::string moe_h5_reason_;                                                        \
    H5E_BEGIN_TRY {                                                                    \
      moe_h5_result_ = (call);                                                         \
      if (moe_h5_result_ < 0) moe_h5_reason_ = ::moe::h5::last_error();               \
    }                                                                                  \
    H5E_END_TRY;                                                                       \
    if (moe_h5_result_ < 0) [[unlikely]]                                               \
      ::moe::h5::fail(#call, (file), __FILE__, __LINE__, (user_error),                 \
                      ::moe::detail::concat(__VA_ARGS__), moe_h5_reason_);             \
    return moe_h5_result_;                                                             \
  }()

#define H5_CHECK(call, file) MOE_H5_CALL(call, file, false, "")
#define H5_USER_CHECK(call, file, ...) MOE_H5_CALL(call, file, true, __VA_ARGS__)

namespace moe {

// Start of a block inside a dataset, per dimension.
using H5Offset = std::array<int64_t, Shape::kMaxDims>;

class H5File {
 public:
  // Starts a new file: written as "<path>.tmp", renamed to `path` by close(). With a
  // communicator (not MPI_COMM_NULL) the file is parallel and this is collective; the
  // directory must exist.
  static H5File create(const std::string& path, MPI_Comm comm = MPI_COMM_NULL);
  // Opens an existing file read-only (parallel and collective with a communicator).
  static H5File open(const std::string& path, MPI_Comm comm = MPI_COMM_NULL);

  H5File(H5File&& other) noexcept;
  H5File& operator=(H5File&&) = delete;
  H5File(const H5File&) = delete;
  H5File& operator=(const H5File&) = delete;
  // Closes the file; a created file that was never close()d is deleted. A parallel file
  // of several ranks destroyed while an exception unwinds is left open (closing is
  // collective, and the other ranks may not be here: the job is about to be aborted);
  // its temporary file is removed.
  ~H5File();

  // Closes the file; for a created file, commits it: fsync "<path>.tmp", rename it to
  // path, fsync the directory (parallel: rank 0 commits, then all ranks meet). Every
  // step is agreed over the ranks: a close or commit that fails on one rank (a full
  // disk) throws a user error on all of them, with the temporary file removed.
  void close();
  // Abandons a created file: collective in parallel files; rank 0 truncates the
  // temporary file (so that a full disk has room for the close), every rank closes,
  // rank 0 removes it. The final name is never touched.
  void discard();

  const std::string& path() const { return path_; }
  bool writable() const { return writable_; }
  bool parallel() const { return comm_ != MPI_COMM_NULL; }
  // Collective (default) or independent MPI-IO transfers of dataset data.
  void set_collective_transfers(bool on) { collective_ = on; }

  // True when a group or dataset exists at `object` (all its parent groups included).
  bool exists(const std::string& object) const;
  // Names of the members of a group, in HDF5's (alphabetical) order.
  std::vector<std::string> list(const std::string& group) const;
  // Shape of a dataset; a user error naming the dataset when it is absent.
  Shape dataset_shape(const std::string& dataset) const;

  // Writes a new dataset of `shape` (rank 0: scalar), creating missing parent groups.
  // Parallel files: collective, rank 0's data is written.
  void write(const std::string& dataset, const float* data, const Shape& shape);
  void write(const std::string& dataset, const int32_t* data, const Shape& shape);
  void write(const std::string& dataset, const int64_t* data, const Shape& shape);
  void write(const std::string& dataset, Tensor t) { write(dataset, t.data, t.shape); }

  // Creates a float32 dataset of `shape` whose data write_block fills (collective in
  // parallel files). No fill values are written: unwritten elements are undefined.
  void create_float_dataset(const std::string& dataset, const Shape& shape);
  // Writes `data` (row-major, of shape `block`) to the elements [offset, offset + block)
  // of a float dataset. Collective in parallel files: every rank calls it for the same
  // dataset; a rank with participate = false writes nothing.
  void write_block(const std::string& dataset, const float* data, const Shape& block,
                   const H5Offset& offset, bool participate = true);
  // Reads the elements [offset, offset + block) of a float dataset into `out` (row-major,
  // of shape `block`); a user error naming the dataset when it is not floating point or
  // the block lies outside it. Collective in parallel files.
  void read_block(const std::string& dataset, float* out, const Shape& block,
                  const H5Offset& offset) const;

  // Reads a whole dataset into `out` after checking that it exists, has exactly
  // `expected` shape and a compatible element type (float into float; integers no
  // wider than the destination). Floating datasets of another precision convert.
  void read(const std::string& dataset, float* out, const Shape& expected) const;
  void read(const std::string& dataset, int32_t* out, const Shape& expected) const;
  void read(const std::string& dataset, int64_t* out, const Shape& expected) const;
  void read(const std::string& dataset, Tensor out) const { read(dataset, out.data, out.shape); }

  // Attributes on the file ("/") or a group; setting one creates the group if needed
  // and replaces an attribute of the same name.
  void set_string_attr(const std::string& object, const std::string& name,
                       const std::string& value);
  void set_int_attr(const std::string& object, const std::string& name, int64_t value);
  void set_uint_attr(const std::string& object, const std::string& name, uint64_t value);
  void set_float_attr(const std::string& object, const std::string& name, double value);
  bool has_attr(const std::string& object, const std::string& name) const;
  // Recomputes the attributes checksum (attr_checksum.h) that close() writes on "/" and
  // compares; a user error when it is missing or differs.
  void check_attributes() const;
  // Reading an attribute that is absent or of another kind is a user error.
  std::string string_attr(const std::string& object, const std::string& name) const;
  int64_t int_attr(const std::string& object, const std::string& name) const;
  uint64_t uint_attr(const std::string& object, const std::string& name) const;
  double float_attr(const std::string& object, const std::string& name) const;

 private:
  H5File(hid_t file, std::string path, std::string write_path, bool writable, MPI_Comm comm);

  hid_t require_open() const;
  hid_t create_dataset(const std::string& dataset, hid_t file_type, const Shape& shape);
  void write_dataset(const std::string& dataset, hid_t mem_type, const void* data,
                     const Shape& shape);
  void read_dataset(const std::string& dataset, hid_t mem_type, void* out,
                    const Shape& expected) const;
  // Opens `dataset`, checks that its element class can be read as `mem_type`, and
  // returns the dataset (caller closes) and its shape.
  hid_t open_for_read(const std::string& dataset, hid_t mem_type, Shape* shape) const;
  void commit();  // fsync + rename + fsync the directory
  // H5Fclose; false (and the HDF5 reason in *error) when it failed.
  bool close_handle(std::string* error);
  int comm_size() const;
  // Collective in parallel files: true when `ok` on every rank.
  bool all_ranks(bool ok) const;
  hid_t open_or_create_group(const std::string& group);  // caller closes the id
  void write_attr(const std::string& object, const std::string& name, hid_t mem_type,
                  hid_t file_type, const void* value);
  void read_attr(const std::string& object, const std::string& name, H5T_class_t cls,
                 hid_t mem_type, void* out) const;

  hid_t file_ = -1;
  std::string path_;        // the final name
  std::string write_path_;  // where HDF5 writes: path_ + ".tmp" for created files
  bool writable_ = false;
  MPI_Comm comm_ = MPI_COMM_NULL;  // parallel files: the ranks sharing the file
  int rank_ = 0;                   // in comm_
  bool collective_ = true;         // MPI-IO transfers of parallel files
  AttributeLedger attributes_;     // created files: every attribute set, for the checksum
};

}  // namespace moe
