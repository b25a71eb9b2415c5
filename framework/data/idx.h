#pragma once
// IDX files (the MNIST / Fashion-MNIST format), plain or gzip-compressed
// (docs/data-format.md):
//
//   offset size field
//        0    2 zero         0x00 0x00
//        2    1 type         0x08 = unsigned byte (the only type read here)
//        3    1 ndims        number of dimensions, 1..4
//        4  4*n dims         uint32 big-endian each
//     4+4n      data         prod(dims) bytes, row-major
//
// The reader decompresses with zlib (gzread reads plain files unchanged) and validates
// the whole file on open: magic, type, dimensions, and exactly prod(dims) data bytes
// (a truncated file or one with trailing bytes is rejected). Every problem is a user
// moe::Error naming the file.
//
// ImageDataset pairs an images file (N, H, W) with a labels file (N); it rejects a pair
// whose counts differ, a labels file that is not 1-D, and labels >= num_classes.

#include <cstdint>
#include <string>
#include <vector>

namespace moe {

struct IdxArray {
  std::string path;
  std::vector<int64_t> dims;  // e.g. {60000, 28, 28}
  std::vector<uint8_t> data;  // prod(dims) bytes, row-major
};

IdxArray read_idx(const std::string& path);

// Writes an unsigned-byte IDX file, gzip-compressed when `path` ends in ".gz" (tests
// and data preparation).
void write_idx(const std::string& path, const std::vector<int64_t>& dims,
               const std::vector<uint8_t>& data);

class ImageDataset {
 public:
  // Images (N, H, W) grey, labels (N) in [0, num_classes).
  ImageDataset(const std::string& images_path, const std::string& labels_path,
               int num_classes);

  int64_t size() const { return count_; }
  int64_t height() const { return height_; }
  int64_t width() const { return width_; }
  int64_t channels() const { return 1; }
  const uint8_t* image(int64_t i) const { return images_.data.data() + i * height_ * width_; }
  int32_t label(int64_t i) const { return labels_.data[i]; }
  const std::string& images_path() const { return images_.path; }

  // The model's image shape must match the files': a user error naming `key`
  // ("data.train_path") otherwise.
  void require_shape(int64_t channels, int64_t image_size, const std::string& key) const;

 private:
  IdxArray images_, labels_;
  int64_t count_ = 0, height_ = 0, width_ = 0;
};

}  // namespace moe
