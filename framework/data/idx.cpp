#include "framework/data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <memory>

#include "framework/core/error.h"

namespace moe {

namespace {

constexpr uint8_t kUnsignedByte = 0x08;

struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose(f); }
};
using GzFile = std::unique_ptr<gzFile_s, GzCloser>;

// Reads exactly `n` bytes; returns how many it got (fewer at the end of the data).
// A corrupt compressed stream is a user error naming the file.
int64_t read_bytes(gzFile f, const std::string& path, uint8_t* out, int64_t n) {
  int64_t got = 0;
  while (got < n) {
    const unsigned chunk = static_cast<unsigned>(std::min<int64_t>(n - got, 1 << 30));
    const int r = gzread(f, out + got, chunk);
    if (r < 0) {
      int code = 0;
      const char* msg = gzerror(f, &code);
      MOE_USER_CHECK(code != Z_BUF_ERROR, path, ": truncated compressed data (zlib: ",
                     msg ? msg : "?", ")");
      MOE_USER_FAIL(path, ": cannot decompress (zlib: ", msg ? msg : "?", ")");
    }
    if (r == 0) break;
    got += r;
  }
  return got;
}

// Fails when the stream ended early or broken (zlib reports a truncated gzip member
// as Z_BUF_ERROR "unexpected end of file" once the data runs out).
void check_stream(gzFile f, const std::string& path) {
  int code = Z_OK;
  const char* msg = gzerror(f, &code);
  MOE_USER_CHECK(code == Z_OK || code == Z_STREAM_END, path,
                 ": corrupt or truncated file (zlib: ", msg ? msg : "?", ")");
}

}  // namespace

IdxArray read_idx(const std::string& path) {
  GzFile f(gzopen(path.c_str(), "rb"));
  MOE_USER_CHECK(f != nullptr, path, ": cannot open");
  IdxArray out;
  out.path = path;
  uint8_t magic[4] = {};
  const int64_t head = read_bytes(f.get(), path, magic, 4);
  check_stream(f.get(), path);
  MOE_USER_CHECK(head == 4 && magic[0] == 0 && magic[1] == 0, path,
                 ": not an IDX file (the first two bytes must be zero)");
  MOE_USER_CHECK(magic[2] == kUnsignedByte, path, ": IDX element type 0x", std::hex,
                 static_cast<int>(magic[2]), std::dec,
                 " is not supported (only unsigned bytes, 0x08)");
  const int ndims = magic[3];
  MOE_USER_CHECK(ndims >= 1 && ndims <= 4, path, ": IDX file with ", ndims,
                 " dimensions (1 to 4 supported)");
  uint8_t raw[16] = {};
  MOE_USER_CHECK(read_bytes(f.get(), path, raw, 4 * ndims) == 4 * ndims, path,
                 ": truncated in the IDX header");
  int64_t total = 1;
  for (int d = 0; d < ndims; ++d) {
    const int64_t dim = (int64_t{raw[4 * d]} << 24) | (int64_t{raw[4 * d + 1]} << 16) |
                        (int64_t{raw[4 * d + 2]} << 8) | int64_t{raw[4 * d + 3]};
    MOE_USER_CHECK(dim > 0, path, ": IDX dimension ", d, " is 0");
    out.dims.push_back(dim);
    total *= dim;
    MOE_USER_CHECK(total <= (int64_t{1} << 36), path, ": IDX dimensions too large");
  }
  out.data.resize(static_cast<size_t>(total));
  const int64_t got = read_bytes(f.get(), path, out.data.data(), total);
  MOE_USER_CHECK(got == total, path, ": truncated: the header promises ", total,
                 " data bytes, the file holds ", got);
  check_stream(f.get(), path);
  uint8_t extra = 0;
  MOE_USER_CHECK(read_bytes(f.get(), path, &extra, 1) == 0, path,
                 ": has bytes after the ", total, " data bytes its header promises");
  check_stream(f.get(), path);
  return out;
}

void write_idx(const std::string& path, const std::vector<int64_t>& dims,
               const std::vector<uint8_t>& data) {
  const bool gz = path.size() > 3 && path.substr(path.size() - 3) == ".gz";
  GzFile f(gzopen(path.c_str(), gz ? "wb" : "wbT"));  // T: plain, no compression
  MOE_USER_CHECK(f != nullptr, path, ": cannot create");
  std::vector<uint8_t> head = {0, 0, kUnsignedByte, static_cast<uint8_t>(dims.size())};
  int64_t total = 1;
  for (int64_t d : dims) {
    total *= d;
    for (int shift = 24; shift >= 0; shift -= 8) head.push_back(static_cast<uint8_t>(d >> shift));
  }
  MOE_CHECK(static_cast<int64_t>(data.size()) == total, "write_idx: ", data.size(),
            " bytes for dimensions of ", total);
  MOE_USER_CHECK(gzwrite(f.get(), head.data(), static_cast<unsigned>(head.size())) ==
                         static_cast<int>(head.size()) &&
                     (data.empty() || gzwrite(f.get(), data.data(),
                                              static_cast<unsigned>(data.size())) ==
                                          static_cast<int>(data.size())),
                 path, ": write failed");
  MOE_USER_CHECK(gzclose(f.release()) == Z_OK, path, ": write failed");
}

ImageDataset::ImageDataset(const std::string& images_path, const std::string& labels_path,
                           int num_classes)
    : images_(read_idx(images_path)), labels_(read_idx(labels_path)) {
  MOE_USER_CHECK(images_.dims.size() == 3, images_path, ": expected images (N, H, W), the "
                 "IDX file has ", images_.dims.size(), " dimensions");
  MOE_USER_CHECK(labels_.dims.size() == 1, labels_path, ": expected labels (N), the IDX "
                 "file has ", labels_.dims.size(), " dimensions (images given as labels?)");
  count_ = images_.dims[0];
  height_ = images_.dims[1];
  width_ = images_.dims[2];
  MOE_USER_CHECK(labels_.dims[0] == count_, labels_path, ": ", labels_.dims[0],
                 " labels for the ", count_, " images of ", images_path);
  for (int64_t i = 0; i < count_; ++i)
    MOE_USER_CHECK(labels_.data[i] < num_classes, labels_path, ": label ",
                   int{labels_.data[i]}, " of item ", i, " is not below model.num_classes = ",
                   num_classes);
}

void ImageDataset::require_shape(int64_t channels, int64_t image_size,
                                 const std::string& key) const {
  MOE_USER_CHECK(channels == 1 && height_ == image_size && width_ == image_size, key, ": '",
                 images_.path, "' holds ", height_, "x", width_, " grey images, the model "
                 "expects ", channels, " channel(s) of ", image_size, "x", image_size,
                 " (model.image_channels, model.image_size)");
}

}  // namespace moe
