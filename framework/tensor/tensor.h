#pragma once
// Tensor: a non-owning, row-major view of float32 data with up to four dimensions.
// Buffer: owning, 64-byte aligned storage that hands out Tensors.
// Everything is fp32 on the host for now; the dtype/device fields are where the CUDA
// backend will plug in.

#include <array>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <memory>
#include <string>

#include "framework/core/error.h"

namespace moe {

enum class Device : uint8_t { kCpu, kCuda };

struct Shape {
  static constexpr int kMaxDims = 4;
  std::array<int64_t, kMaxDims> dims{};
  int rank = 0;

  Shape() = default;
  Shape(std::initializer_list<int64_t> list) {
    MOE_CHECK(list.size() <= kMaxDims, "shape has more than ", kMaxDims, " dims");
    for (int64_t d : list) dims[rank++] = d;
  }
  int64_t operator[](int i) const { return dims[i]; }
  int64_t& operator[](int i) { return dims[i]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= dims[i];
    return n;
  }
  bool operator==(const Shape& o) const {
    if (rank != o.rank) return false;
    for (int i = 0; i < rank; ++i)
      if (dims[i] != o.dims[i]) return false;
    return true;
  }
  std::string str() const;  // "(2, 3, 4)"
};

struct Tensor {
  float* data = nullptr;
  Shape shape;
  Device device = Device::kCpu;

  Tensor() = default;
  Tensor(float* d, Shape s) : data(d), shape(s) {}
  int64_t numel() const { return shape.numel(); }
  int64_t dim(int i) const { return shape[i]; }
  int rank() const { return shape.rank; }
  // Rows of the view when read as a matrix (all leading dims) x (last dim).
  int64_t rows() const { return numel() / shape[shape.rank - 1]; }
  int64_t cols() const { return shape[shape.rank - 1]; }
  Tensor reshaped(Shape s) const {
    MOE_CHECK(s.numel() == numel(), "reshape ", shape.str(), " -> ", s.str());
    return Tensor(data, s);
  }
  // Rows [begin, begin + count) of the leading dimension.
  Tensor slice_rows(int64_t begin, int64_t count) const {
    Shape s = shape;
    const int64_t stride = numel() / shape[0];
    s[0] = count;
    return Tensor(data + begin * stride, s);
  }
  float& operator[](int64_t i) const { return data[i]; }
};

// Owning, aligned, zero-initialised float storage. Grows on demand, never shrinks.
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(int64_t n) { resize(n); }
  Buffer(Buffer&&) = default;
  Buffer& operator=(Buffer&&) = default;

  // Ensures capacity for n floats; contents are zeroed when it reallocates.
  void resize(int64_t n);
  void zero();
  float* data() const { return data_.get(); }
  int64_t size() const { return size_; }
  // A view of the first shape.numel() floats, growing the buffer if needed.
  Tensor view(Shape shape) {
    resize(shape.numel());
    return Tensor(data_.get(), shape);
  }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float[], Free> data_;
  int64_t size_ = 0;
  int64_t capacity_ = 0;
};

}  // namespace moe
