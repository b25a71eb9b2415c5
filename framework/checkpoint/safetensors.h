#pragma once
// safetensors files (the format of Hugging Face's `safetensors` library; no Debian
// package exists, and the format is small enough to write here):
//
//   8 bytes      N, the header length, unsigned little-endian
//   N bytes      JSON: {"__metadata__": {string: string, ...},
//                       "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...}
//                padded with spaces to a multiple of 8 bytes
//   the data     each tensor row-major little-endian at [b, e) of this byte buffer
//
// Only float32 tensors are written (dtype "F32"). Like H5File, a file is written as
// "<path>.tmp" and renamed when complete.

#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "framework/tensor/tensor.h"

namespace moe {

class SafetensorsWriter {
 public:
  struct Entry {
    std::string name;
    Shape shape;
  };
  // Writes the header for `entries` (in this order in the data) to "<path>.tmp".
  SafetensorsWriter(std::string path, std::vector<Entry> entries,
                    const std::map<std::string, std::string>& metadata);
  ~SafetensorsWriter();  // an unfinished file is removed
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // Appends the data of the next entry (entries are written in order).
  void write_next(const float* data);
  // Checks every entry was written, syncs and renames the file to its path.
  void close();

 private:
  std::string path_, tmp_;
  std::vector<Entry> entries_;
  size_t next_ = 0;
  std::FILE* out_ = nullptr;
};

// The header of a safetensors file: tensor name -> (dtype, shape, data offsets), plus
// the metadata. For tests and `moe-ckpt`; a malformed file is a user error.
struct SafetensorsHeader {
  struct Tensor {
    std::string dtype;
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0;  // in the data buffer
  };
  std::map<std::string, std::string> metadata;
  std::map<std::string, Tensor> tensors;
  uint64_t data_start = 0;  // file offset of the data buffer
};
SafetensorsHeader read_safetensors_header(const std::string& path);

}  // namespace moe
