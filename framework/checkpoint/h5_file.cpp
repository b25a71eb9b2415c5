#include "framework/checkpoint/h5_file.h"

#include "framework/parallel/mpi_env.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <utility>

namespace moe {

namespace h5 {
namespace {
herr_t keep_innermost(unsigned /*n*/, const H5E_error2_t* err, void* client) {
  auto* out = static_cast<std::string*>(client);
  if (err->desc != nullptr && err->desc[0] != '\0') {
    *out = err->desc;
  } else {
    char minor[256] = {};
    if (H5Eget_msg(err->min_num, nullptr, minor, sizeof(minor)) > 0) *out = minor;
  }
  return 0;
}
}  // namespace

std::string last_error() {
  std::string innermost;
  // Walking downward visits the API function first and the innermost cause last.
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, keep_innermost, &innermost);
  return innermost;
}

void fail(const char* call, const std::string& file, const char* src_file, int src_line,
          bool user_error, const std::string& what, const std::string& reason) {
  if (user_error) {
    const std::string expr(call);
    const std::string function = expr.substr(0, expr.find('('));
    std::string message = file + ": " + what + " (" + function;
    message += reason.empty() ? std::string(" failed)") : ": " + reason + ")";
    detail::throw_error(nullptr, nullptr, 0, message, true);
  }
  std::string message = "HDF5 call failed on " + file;
  if (!reason.empty()) message += ": " + reason;
  detail::throw_error(call, src_file, src_line, message, false);
}
}  // namespace h5

namespace {

// Owns one HDF5 identifier and closes it with the matching H5?close.
class Id {
 public:
  Id(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~Id() {
    if (id_ >= 0) close_(id_);
  }
  Id(Id&& other) noexcept : id_(std::exchange(other.id_, -1)), close_(other.close_) {}
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
  hid_t get() const { return id_; }
  hid_t release() { return std::exchange(id_, -1); }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

// The one place that decides how files are accessed: POSIX I/O for serial files, the
// MPI-IO driver for parallel ones (metadata written collectively: one rank writes each
// metadata block instead of all of them). CLOSE_SEMI makes H5Fclose fail loudly if an
// object were left open (and is what MPI-IO requires); a serial file opened for reading
// closes STRONG instead, so that what HDF5 itself leaves open when it gives up on a
// damaged file goes with it. The 1.8 file format has checksummed object headers and
// superblock.
Id file_access_plist(const std::string& path, MPI_Comm comm, bool read_only) {
  Id fapl(H5_CHECK(H5Pcreate(H5P_FILE_ACCESS), path), H5Pclose);
  const bool strong = read_only && comm == MPI_COMM_NULL;
  H5_CHECK(H5Pset_fclose_degree(fapl.get(), strong ? H5F_CLOSE_STRONG : H5F_CLOSE_SEMI), path);
  H5_CHECK(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_V18), path);
  if (comm != MPI_COMM_NULL) {
    H5_CHECK(H5Pset_fapl_mpio(fapl.get(), comm, MPI_INFO_NULL), path);
    H5_CHECK(H5Pset_coll_metadata_write(fapl.get(), true), path);
  }
  return fapl;
}

// The one place for the dataset transfer properties: in parallel files collective
// MPI-IO transfers (the MPI-IO layer may aggregate the ranks' blocks into large
// contiguous requests) or independent ones; the default in serial files.
Id transfer_plist(bool parallel, bool collective, const std::string& path) {
  Id dxpl(H5_CHECK(H5Pcreate(H5P_DATASET_XFER), path), H5Pclose);
  if (parallel)
    H5_CHECK(H5Pset_dxpl_mpio(dxpl.get(), collective ? H5FD_MPIO_COLLECTIVE : H5FD_MPIO_INDEPENDENT),
             path);
  return dxpl;
}

// Selects [offset, offset + block) of `space` (block.numel() == 0: nothing).
void select_block(hid_t space, const Shape& block, const H5Offset& offset,
                  const std::string& path) {
  if (block.rank == 0) return;  // scalar: the whole (single) element
  if (block.numel() == 0) {
    H5_CHECK(H5Sselect_none(space), path);
    return;
  }
  hsize_t start[Shape::kMaxDims], count[Shape::kMaxDims];
  for (int d = 0; d < block.rank; ++d) {
    start[d] = static_cast<hsize_t>(offset[d]);
    count[d] = static_cast<hsize_t>(block[d]);
  }
  H5_CHECK(H5Sselect_hyperslab(space, H5S_SELECT_SET, start, nullptr, count, nullptr), path);
}

void fsync_path(const std::string& path, const std::string& file_for_errors) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  MOE_USER_CHECK(fd >= 0, file_for_errors, ": cannot open ", path, " to sync it: ",
                 std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  // Some file systems cannot sync a directory (EINVAL): the rename is then as durable
  // as they make it.
  MOE_USER_CHECK(rc == 0 || err == EINVAL, file_for_errors, ": cannot sync ", path, ": ",
                 std::strerror(err));
}

Id dataspace_for(const Shape& shape, const std::string& path) {
  if (shape.rank == 0) return Id(H5_CHECK(H5Screate(H5S_SCALAR), path), H5Sclose);
  hsize_t dims[Shape::kMaxDims];
  for (int d = 0; d < shape.rank; ++d) {
    MOE_CHECK(shape[d] >= 0, "negative dimension in ", shape.str());
    dims[d] = static_cast<hsize_t>(shape[d]);
  }
  return Id(H5_CHECK(H5Screate_simple(shape.rank, dims, nullptr), path), H5Sclose);
}

// Selects `block` at `offset` in the file dataspace `space` and returns the matching
// memory dataspace; with `any` false both select nothing (a rank that takes part in a
// collective transfer without data).
Id select_transfer(hid_t space, const Shape& block, const H5Offset& offset, bool any,
                   const std::string& path) {
  Id mem_space = dataspace_for(any ? block : Shape{1}, path);
  if (any) {
    select_block(space, block, offset, path);
  } else {
    H5_CHECK(H5Sselect_none(space), path);
    H5_CHECK(H5Sselect_none(mem_space.get()), path);
  }
  return mem_space;
}

herr_t collect_name(hid_t /*group*/, const char* name, const H5L_info_t* /*info*/,
                    void* client) {
  static_cast<std::vector<std::string>*>(client)->emplace_back(name);
  return 0;
}

// Opens attribute `name` of `object`, checking that it is a single value.
Id open_scalar_attr(hid_t file, const std::string& path, const std::string& object,
                    const std::string& name) {
  Id attr(H5_USER_CHECK(H5Aopen_by_name(file, object.c_str(), name.c_str(), H5P_DEFAULT,
                                        H5P_DEFAULT),
                        path, "cannot open attribute ", name, " of ", object),
          H5Aclose);
  const Id space(H5_USER_CHECK(H5Aget_space(attr.get()), path, "cannot read attribute ", name,
                               " of ", object),
                 H5Sclose);
  if (H5_USER_CHECK(H5Sget_simple_extent_npoints(space.get()), path, "cannot read attribute ",
                    name, " of ", object) != 1)
    MOE_USER_FAIL(path, ": attribute ", name, " of ", object, " is not a single value");
  return attr;
}

}  // namespace

// A failed call on this file: a user error when the file is open for reading (what
// fails there is the file: damaged, truncated, not of this format), an internal one
// while writing it.
#define H5_FILE_CHECK(call) \
  MOE_H5_CALL(call, path_, !writable_, "cannot read it: the file is damaged or not of this format")

H5File::H5File(hid_t file, std::string path, std::string write_path, bool writable,
               MPI_Comm comm)
    : file_(file), path_(std::move(path)), write_path_(std::move(write_path)),
      writable_(writable), comm_(comm) {
  if (comm_ != MPI_COMM_NULL) MPI_Comm_rank(comm_, &rank_);
}

H5File::H5File(H5File&& other) noexcept
    : file_(std::exchange(other.file_, -1)), path_(std::move(other.path_)),
      write_path_(std::move(other.write_path_)), writable_(other.writable_),
      comm_(other.comm_), rank_(other.rank_), collective_(other.collective_),
      attributes_(std::move(other.attributes_)) {}

H5File H5File::create(const std::string& path, MPI_Comm comm) {
  const std::string tmp = path + ".tmp";
  const Id fapl = file_access_plist(path, comm, /*read_only=*/false);
  const hid_t file =
      H5_USER_CHECK(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), path,
                    "cannot create the file (writing ", tmp, ")");
  return H5File(file, path, tmp, true, comm);
}

H5File H5File::open(const std::string& path, MPI_Comm comm) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) MOE_USER_FAIL(path, ": no such file");
  const Id fapl = file_access_plist(path, comm, /*read_only=*/true);
  const hid_t file = H5_USER_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()), path,
                                   "not an HDF5 file, truncated, or unreadable");
  return H5File(file, path, path, false, comm);
}

H5File::~H5File() {
  if (file_ < 0) return;
  // A parallel file of several ranks cannot be closed while an exception unwinds (see
  // the header); its temporary file goes at once, its handle with the aborted job.
  if (parallel() && comm_size() > 1 && std::uncaught_exceptions() > 0) {
    if (writable_) std::remove(write_path_.c_str());
    return;
  }
  H5E_BEGIN_TRY { H5Fclose(file_); }
  H5E_END_TRY;
  // Never committed: drop the partial file so the final name stays untouched.
  if (writable_ && rank_ == 0) std::remove(write_path_.c_str());
}

int H5File::comm_size() const {
  int size = 1;
  if (comm_ != MPI_COMM_NULL) MPI_Comm_size(comm_, &size);
  return size;
}

bool H5File::all_ranks(bool ok) const {
  int value = ok ? 1 : 0;
  if (parallel()) MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &value, 1, MPI_INT, MPI_MIN, comm_));
  return value == 1;
}

void H5File::commit() {
  fsync_path(write_path_, path_);
  if (std::rename(write_path_.c_str(), path_.c_str()) != 0)
    MOE_USER_FAIL(path_, ": cannot rename ", write_path_, " to it: ", std::strerror(errno));
  const std::filesystem::path dir = std::filesystem::path(path_).parent_path();
  fsync_path(dir.empty() ? "." : dir.string(), path_);
}

void H5File::close() {
  if (file_ < 0) return;
  if (!writable_) {
    const hid_t file = std::exchange(file_, -1);
    H5_USER_CHECK(H5Fclose(file), path_, "cannot close the file");
    return;
  }
  // The attributes checksum last: it covers every attribute written before it.
  const uint64_t attributes = attributes_.checksum();
  write_attr("/", kAttributesChecksum, H5T_NATIVE_UINT64, H5T_STD_U64LE, &attributes);
  // Each step is agreed by all ranks, so that they fail (or succeed) together.
  std::string error;
  const bool closed = close_handle(&error);
  if (!all_ranks(closed)) {
    discard();
    MOE_USER_FAIL(path_, ": cannot finish writing ", write_path_,
                  closed ? " (on another rank)" : " (H5Fclose: " + error + ")");
  }
  std::string commit_error;
  if (rank_ == 0) {
    try {
      commit();
    } catch (const Error& e) {
      commit_error = e.what();
      std::remove(write_path_.c_str());
    }
  }
  // Nobody returns before the file has its final name (or is gone).
  if (!all_ranks(commit_error.empty()))
    MOE_USER_FAIL(rank_ == 0 ? commit_error : path_ + ": rank 0 could not rename it into place");
}

bool H5File::close_handle(std::string* error) {
  herr_t rc = 0;
  H5E_BEGIN_TRY {
    rc = H5Fclose(file_);
    if (rc < 0 && error != nullptr) *error = h5::last_error();
  }
  H5E_END_TRY;
  // A failed close may keep the file open in HDF5 (then it can be closed again later).
  if (rc >= 0 || H5Iis_valid(file_) <= 0) file_ = -1;
  return rc >= 0;
}

void H5File::discard() {
  if (file_ >= 0) {
    // Give the space back first (a full disk is the usual reason to be here), so that
    // closing can write the little metadata it still holds.
    if (writable_ && rank_ == 0) [[maybe_unused]] const int rc = ::truncate(write_path_.c_str(), 0);
    all_ranks(true);  // nobody closes before the truncation
    if (!close_handle(nullptr)) file_ = -1;  // given up: released with the process
  }
  if (writable_ && rank_ == 0) std::remove(write_path_.c_str());
}

hid_t H5File::require_open() const {
  MOE_CHECK(file_ >= 0, "HDF5 file ", path_, " used after close()");
  return file_;
}

bool H5File::exists(const std::string& object) const {
  const hid_t file = require_open();
  // H5Lexists fails (rather than answering false) when a parent is missing, so walk
  // the path one component at a time.
  size_t pos = 0;
  while (pos < object.size()) {
    size_t next = object.find('/', pos + 1);
    if (next == std::string::npos) next = object.size();
    const std::string prefix = object.substr(0, next);
    if (prefix != "/" && !prefix.empty()) {
      if (H5_FILE_CHECK(H5Lexists(file, prefix.c_str(), H5P_DEFAULT)) <= 0) return false;
    }
    pos = next;
  }
  return true;
}

std::vector<std::string> H5File::list(const std::string& group) const {
  const hid_t file = require_open();
  if (!exists(group)) MOE_USER_FAIL(path_, ": no group ", group);
  const Id g(H5_USER_CHECK(H5Gopen2(file, group.c_str(), H5P_DEFAULT), path_, group,
                           " is not a group"),
             H5Gclose);
  std::vector<std::string> names;
  hsize_t index = 0;
  H5_FILE_CHECK(H5Literate(g.get(), H5_INDEX_NAME, H5_ITER_INC, &index, collect_name, &names));
  return names;
}

Shape H5File::dataset_shape(const std::string& dataset) const {
  const hid_t file = require_open();
  if (!exists(dataset)) MOE_USER_FAIL(path_, ": no dataset ", dataset);
  const Id ds(H5_USER_CHECK(H5Dopen2(file, dataset.c_str(), H5P_DEFAULT), path_, dataset,
                            " is not a dataset"),
              H5Dclose);
  const Id space(H5_FILE_CHECK(H5Dget_space(ds.get())), H5Sclose);
  const int rank = H5_FILE_CHECK(H5Sget_simple_extent_ndims(space.get()));
  if (rank > Shape::kMaxDims)
    MOE_USER_FAIL(path_, ": dataset ", dataset, " has ", rank, " dimensions, at most ",
                  Shape::kMaxDims, " are supported");
  hsize_t dims[Shape::kMaxDims] = {};
  H5_FILE_CHECK(H5Sget_simple_extent_dims(space.get(), dims, nullptr));
  Shape shape;
  shape.rank = rank;
  for (int d = 0; d < rank; ++d) shape[d] = static_cast<int64_t>(dims[d]);
  return shape;
}

hid_t H5File::create_dataset(const std::string& dataset, hid_t file_type, const Shape& shape) {
  const hid_t file = require_open();
  MOE_CHECK(writable_, "write of ", dataset, " to ", path_, ", which is open read-only");
  const Id lcpl(H5_FILE_CHECK(H5Pcreate(H5P_LINK_CREATE)), H5Pclose);
  H5_FILE_CHECK(H5Pset_create_intermediate_group(lcpl.get(), 1));
  // Every element is written by someone: filling with zeros first would write twice.
  const Id dcpl(H5_FILE_CHECK(H5Pcreate(H5P_DATASET_CREATE)), H5Pclose);
  H5_FILE_CHECK(H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER));
  const Id space = dataspace_for(shape, path_);
  return H5_CHECK(H5Dcreate2(file, dataset.c_str(), file_type, space.get(), lcpl.get(),
                             dcpl.get(), H5P_DEFAULT),
                  path_ + " (dataset " + dataset + ")");
}

void H5File::write_dataset(const std::string& dataset, hid_t file_type, const void* data,
                           const Shape& shape) {
  const Id ds(create_dataset(dataset, file_type, shape), H5Dclose);
  if (shape.numel() == 0) return;
  // The memory type is the native twin of the file type (little-endian here).
  const hid_t mem_type = H5_FILE_CHECK(H5Tget_native_type(file_type, H5T_DIR_ASCEND));
  const Id mem(mem_type, H5Tclose);
  const Id space(H5_FILE_CHECK(H5Dget_space(ds.get())), H5Sclose);
  const Id mem_space = dataspace_for(shape, path_);
  if (rank_ != 0) {  // parallel: rank 0's copy is written
    H5_FILE_CHECK(H5Sselect_none(space.get()));
    H5_FILE_CHECK(H5Sselect_none(mem_space.get()));
  }
  const Id dxpl = transfer_plist(parallel(), collective_, path_);
  H5_USER_CHECK(H5Dwrite(ds.get(), mem.get(), mem_space.get(), space.get(), dxpl.get(), data),
                path_, "cannot write dataset ", dataset);
}

void H5File::create_float_dataset(const std::string& dataset, const Shape& shape) {
  const Id ds(create_dataset(dataset, H5T_IEEE_F32LE, shape), H5Dclose);
}

void H5File::write_block(const std::string& dataset, const float* data, const Shape& block,
                         const H5Offset& offset, bool participate) {
  const hid_t file = require_open();
  MOE_CHECK(writable_, "write of ", dataset, " to ", path_, ", which is open read-only");
  const Id ds(H5_CHECK(H5Dopen2(file, dataset.c_str(), H5P_DEFAULT), path_ + " (" + dataset + ")"),
              H5Dclose);
  const Id space(H5_FILE_CHECK(H5Dget_space(ds.get())), H5Sclose);
  const bool any = participate && block.numel() > 0;
  const Id mem_space = select_transfer(space.get(), block, offset, any, path_);
  const float none = 0.0f;  // HDF5 wants a buffer even for an empty selection
  const Id dxpl = transfer_plist(parallel(), collective_, path_);
  H5_USER_CHECK(H5Dwrite(ds.get(), H5T_NATIVE_FLOAT, mem_space.get(), space.get(), dxpl.get(),
                         any ? data : &none),
                path_, "cannot write dataset ", dataset);
}

void H5File::write(const std::string& dataset, const float* data, const Shape& shape) {
  write_dataset(dataset, H5T_IEEE_F32LE, data, shape);
}
void H5File::write(const std::string& dataset, const int32_t* data, const Shape& shape) {
  write_dataset(dataset, H5T_STD_I32LE, data, shape);
}
void H5File::write(const std::string& dataset, const int64_t* data, const Shape& shape) {
  write_dataset(dataset, H5T_STD_I64LE, data, shape);
}

hid_t H5File::open_for_read(const std::string& dataset, hid_t mem_type, Shape* shape) const {
  const hid_t file = require_open();
  *shape = dataset_shape(dataset);  // checks existence
  Id ds(H5_USER_CHECK(H5Dopen2(file, dataset.c_str(), H5P_DEFAULT), path_,
                      "cannot open dataset ", dataset),
        H5Dclose);
  const Id type(H5_FILE_CHECK(H5Dget_type(ds.get())), H5Tclose);
  const H5T_class_t stored = H5_FILE_CHECK(H5Tget_class(type.get()));
  const H5T_class_t wanted = H5_FILE_CHECK(H5Tget_class(mem_type));
  const bool narrowing_int =
      wanted == H5T_INTEGER && H5Tget_size(type.get()) > H5Tget_size(mem_type);
  if (stored != wanted || narrowing_int)
    MOE_USER_FAIL(path_, ": dataset ", dataset, " holds ",
                  stored == H5T_FLOAT ? "floating-point" : stored == H5T_INTEGER ? "integer"
                                                                                 : "other",
                  " data of ", H5Tget_size(type.get()), " bytes, expected ",
                  wanted == H5T_FLOAT ? "floating-point" : "integer", " data of ",
                  H5Tget_size(mem_type), " bytes");
  return ds.release();
}

void H5File::read_dataset(const std::string& dataset, hid_t mem_type, void* out,
                          const Shape& expected) const {
  Shape shape;
  const Id ds(open_for_read(dataset, mem_type, &shape), H5Dclose);
  if (!(shape == expected))
    MOE_USER_FAIL(path_, ": dataset ", dataset, " has shape ", shape.str(), ", expected ",
                  expected.str());
  if (shape.numel() == 0) return;
  const Id dxpl = transfer_plist(parallel(), collective_, path_);
  H5_USER_CHECK(H5Dread(ds.get(), mem_type, H5S_ALL, H5S_ALL, dxpl.get(), out), path_,
                "cannot read dataset ", dataset);
}

void H5File::read_block(const std::string& dataset, float* out, const Shape& block,
                        const H5Offset& offset) const {
  Shape shape;
  const Id ds(open_for_read(dataset, H5T_NATIVE_FLOAT, &shape), H5Dclose);
  bool inside = shape.rank == block.rank;
  for (int d = 0; inside && d < block.rank; ++d)
    inside = offset[d] >= 0 && block[d] >= 0 && offset[d] + block[d] <= shape[d];
  if (!inside)
    MOE_USER_FAIL(path_, ": dataset ", dataset, " has shape ", shape.str(),
                  ", which does not hold the block ", block.str(), " at the expected offset");
  const Id space(H5_FILE_CHECK(H5Dget_space(ds.get())), H5Sclose);
  const bool any = block.numel() > 0;
  const Id mem_space = select_transfer(space.get(), block, offset, any, path_);
  float none = 0.0f;
  const Id dxpl = transfer_plist(parallel(), collective_, path_);
  H5_USER_CHECK(H5Dread(ds.get(), H5T_NATIVE_FLOAT, mem_space.get(), space.get(), dxpl.get(),
                        any ? out : &none),
                path_, "cannot read dataset ", dataset);
}

void H5File::read(const std::string& dataset, float* out, const Shape& expected) const {
  read_dataset(dataset, H5T_NATIVE_FLOAT, out, expected);
}
void H5File::read(const std::string& dataset, int32_t* out, const Shape& expected) const {
  read_dataset(dataset, H5T_NATIVE_INT32, out, expected);
}
void H5File::read(const std::string& dataset, int64_t* out, const Shape& expected) const {
  read_dataset(dataset, H5T_NATIVE_INT64, out, expected);
}

hid_t H5File::open_or_create_group(const std::string& group) {
  const hid_t file = require_open();
  if (exists(group))
    return H5_CHECK(H5Oopen(file, group.c_str(), H5P_DEFAULT), path_ + " (" + group + ")");
  const Id lcpl(H5_FILE_CHECK(H5Pcreate(H5P_LINK_CREATE)), H5Pclose);
  H5_FILE_CHECK(H5Pset_create_intermediate_group(lcpl.get(), 1));
  return H5_CHECK(H5Gcreate2(file, group.c_str(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT),
                  path_ + " (group " + group + ")");
}

void H5File::write_attr(const std::string& object, const std::string& name, hid_t mem_type,
                        hid_t file_type, const void* value) {
  require_open();
  MOE_CHECK(writable_, "attribute ", name, " set on ", path_, ", which is open read-only");
  const Id obj(open_or_create_group(object), H5Oclose);
  if (H5_FILE_CHECK(H5Aexists(obj.get(), name.c_str())) > 0)
    H5_FILE_CHECK(H5Adelete(obj.get(), name.c_str()));
  const Id space(H5_FILE_CHECK(H5Screate(H5S_SCALAR)), H5Sclose);
  const Id attr(H5_CHECK(H5Acreate2(obj.get(), name.c_str(), file_type, space.get(),
                                    H5P_DEFAULT, H5P_DEFAULT),
                         path_ + " (attribute " + object + ":" + name + ")"),
                H5Aclose);
  H5_USER_CHECK(H5Awrite(attr.get(), mem_type, value), path_, "cannot write attribute ",
                name, " of ", object);
}

void H5File::set_string_attr(const std::string& object, const std::string& name,
                             const std::string& value) {
  // Fixed-length, null-terminated UTF-8: the bytes sit in the attribute itself, inside
  // the checksummed object header (a variable-length string lives in the global heap,
  // which has no checksum, behind a length a damaged file can make anything).
  const Id type(H5_FILE_CHECK(H5Tcopy(H5T_C_S1)), H5Tclose);
  H5_FILE_CHECK(H5Tset_size(type.get(), value.size() + 1));
  H5_FILE_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8));
  write_attr(object, name, type.get(), type.get(), value.c_str());
  attributes_.add(object, name, 's', value);
}

void H5File::set_int_attr(const std::string& object, const std::string& name,
                          int64_t value) {
  write_attr(object, name, H5T_NATIVE_INT64, H5T_STD_I64LE, &value);
  attributes_.add_int(object, name, value);
}

void H5File::set_uint_attr(const std::string& object, const std::string& name,
                           uint64_t value) {
  write_attr(object, name, H5T_NATIVE_UINT64, H5T_STD_U64LE, &value);
  attributes_.add_uint(object, name, value);
}

void H5File::set_float_attr(const std::string& object, const std::string& name,
                            double value) {
  write_attr(object, name, H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, &value);
  attributes_.add_float(object, name, value);
}

void H5File::check_attributes() const {
  const hid_t file = require_open();
  MOE_USER_CHECK(has_attr("/", kAttributesChecksum), path_, ": no ", kAttributesChecksum,
                 " attribute: not written by this format version, or damaged");
  const uint64_t stored = uint_attr("/", kAttributesChecksum);
  MOE_USER_CHECK(read_attributes(file, path_).checksum() == stored, path_,
                 ": its attributes (config, format, trainer state, dataset annotations) fail "
                 "their checksum (", kAttributesChecksum, "): the file is corrupted");
}

bool H5File::has_attr(const std::string& object, const std::string& name) const {
  const hid_t file = require_open();
  if (!exists(object)) return false;
  return H5_FILE_CHECK(H5Aexists_by_name(file, object.c_str(), name.c_str(), H5P_DEFAULT)) > 0;
}

void H5File::read_attr(const std::string& object, const std::string& name, H5T_class_t cls,
                       hid_t mem_type, void* out) const {
  const hid_t file = require_open();
  if (!has_attr(object, name)) MOE_USER_FAIL(path_, ": no attribute ", name, " on ", object);
  const Id attr = open_scalar_attr(file, path_, object, name);
  const Id type(H5_FILE_CHECK(H5Aget_type(attr.get())), H5Tclose);
  const H5T_class_t stored = H5_FILE_CHECK(H5Tget_class(type.get()));
  // Integers convert to double; nothing else converts.
  const bool ok = stored == cls || (cls == H5T_FLOAT && stored == H5T_INTEGER);
  if (!ok)
    MOE_USER_FAIL(path_, ": attribute ", name, " of ", object, " is not ",
                  cls == H5T_INTEGER ? "an integer" : "a number");
  H5_USER_CHECK(H5Aread(attr.get(), mem_type, out), path_, "cannot read attribute ", name,
                " of ", object);
}

int64_t H5File::int_attr(const std::string& object, const std::string& name) const {
  int64_t value = 0;
  read_attr(object, name, H5T_INTEGER, H5T_NATIVE_INT64, &value);
  return value;
}

uint64_t H5File::uint_attr(const std::string& object, const std::string& name) const {
  uint64_t value = 0;
  read_attr(object, name, H5T_INTEGER, H5T_NATIVE_UINT64, &value);
  return value;
}

double H5File::float_attr(const std::string& object, const std::string& name) const {
  double value = 0;
  read_attr(object, name, H5T_FLOAT, H5T_NATIVE_DOUBLE, &value);
  return value;
}

std::string H5File::string_attr(const std::string& object, const std::string& name) const {
  const hid_t file = require_open();
  if (!has_attr(object, name)) MOE_USER_FAIL(path_, ": no attribute ", name, " on ", object);
  const Id attr = open_scalar_attr(file, path_, object, name);
  const Id type(H5_FILE_CHECK(H5Aget_type(attr.get())), H5Tclose);
  if (H5_FILE_CHECK(H5Tget_class(type.get())) != H5T_STRING)
    MOE_USER_FAIL(path_, ": attribute ", name, " of ", object, " is not a string");
  const Id mem(H5_FILE_CHECK(H5Tcopy(H5T_C_S1)), H5Tclose);
  // HDF5 converts no strings between character sets: read in the stored one.
  const H5T_cset_t cset = H5_FILE_CHECK(H5Tget_cset(type.get()));
  H5_FILE_CHECK(H5Tset_cset(mem.get(), cset));
  if (H5_FILE_CHECK(H5Tis_variable_str(type.get())) > 0) {
    H5_FILE_CHECK(H5Tset_size(mem.get(), H5T_VARIABLE));
    char* text = nullptr;
    H5_USER_CHECK(H5Aread(attr.get(), mem.get(), &text), path_, "cannot read attribute ",
                  name, " of ", object);
    std::string value = text != nullptr ? text : "";
    H5free_memory(text);
    return value;
  }
  // Fixed-length (null-terminated or null-padded) strings, as numpy bytes write them.
  const size_t size = H5Tget_size(type.get());
  MOE_USER_CHECK(size > 0 && size <= kMaxStringAttributeBytes, path_, ": attribute ", name,
                 " of ", object, " claims ", size, " bytes: the file is damaged");
  H5_FILE_CHECK(H5Tset_size(mem.get(), size + 1));
  std::string buffer(size + 1, '\0');
  H5_USER_CHECK(H5Aread(attr.get(), mem.get(), buffer.data()), path_,
                "cannot read attribute ", name, " of ", object);
  buffer.resize(std::strlen(buffer.c_str()));
  return buffer;
}

}  // namespace moe
