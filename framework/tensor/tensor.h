#pragma once
// Tensor: a non-owning, row-major view of up to four dimensions, with the device its
// elements live on and their dtype. Buffer: owning, 64-byte aligned storage on a device
// that hands out Tensors. Layers pass Tensors to the op API (framework/kernels/ops.h),
// which picks the kernel by device and dtype.

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "framework/core/dtype.h"
#include "framework/core/error.h"

namespace moe {

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
  // The elements of an fp32 tensor; null for other dtypes, whose elements are reached
  // through ptr<T>() (so fp32 code cannot misread bf16 or int32 storage).
  float* data = nullptr;
  Shape shape;
  Device device = Device::kCpu;
  DType dtype = DType::kF32;

  Tensor() = default;
  Tensor(float* d, Shape s) : data(d), shape(s), raw_(d) {}
  Tensor(void* p, Shape s, DType t, Device dev = Device::kCpu)
      : data(t == DType::kF32 ? static_cast<float*>(p) : nullptr),
        shape(s),
        device(dev),
        dtype(t),
        raw_(p) {}

  void* raw() const { return raw_; }
  // The elements as T, which must be the tensor's dtype.
  template <class T>
  T* ptr() const {
    MOE_CHECK(dtype == dtype_of<T>(), "tensor ", shape.str(), " holds ", dtype_name(dtype),
              ", read as ", dtype_name(dtype_of<T>()));
    return static_cast<T*>(raw_);
  }
  int64_t numel() const { return shape.numel(); }
  int64_t dim(int i) const { return shape[i]; }
  int rank() const { return shape.rank; }
  // Rows of the view when read as a matrix (all leading dims) x (last dim); a scalar
  // (rank 0) is (1, 1).
  int64_t rows() const { return cols() > 0 ? numel() / cols() : 0; }
  int64_t cols() const { return shape.rank > 0 ? shape[shape.rank - 1] : 1; }
  size_t bytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  Tensor reshaped(Shape s) const {
    MOE_CHECK(s.numel() == numel(), "reshape ", shape.str(), " -> ", s.str());
    return Tensor(raw_, s, dtype, device);
  }
  // Rows [begin, begin + count) of the leading dimension.
  Tensor slice_rows(int64_t begin, int64_t count) const {
    Shape s = shape;
    const int64_t stride = numel() / shape[0];
    s[0] = count;
    return Tensor(static_cast<char*>(raw_) + begin * stride * static_cast<int64_t>(dtype_size(dtype)),
                  s, dtype, device);
  }
  float& operator[](int64_t i) const { return data[i]; }

 private:
  void* raw_ = nullptr;  // the elements, whatever the dtype
};

// Owning, aligned, zero-initialised storage of one dtype on one device. Grows on demand,
// never shrinks.
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(Device device, DType dtype = DType::kF32) : device_(device), dtype_(dtype) {}
  explicit Buffer(int64_t n) { resize(n); }
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer();

  // Ensures capacity for n elements; contents are zeroed when it reallocates.
  void resize(int64_t n);
  void zero();
  // The fp32 elements (an internal error for other dtypes).
  float* data() const {
    MOE_CHECK(dtype_ == DType::kF32 || ptr_ == nullptr, "fp32 access to a ",
              dtype_name(dtype_), " buffer");
    return static_cast<float*>(ptr_);
  }
  void* raw() const { return ptr_; }
  int64_t size() const { return size_; }
  Device device() const { return device_; }
  DType dtype() const { return dtype_; }
  // A view of the first shape.numel() elements, growing the buffer if needed.
  Tensor view(Shape shape) {
    resize(shape.numel());
    return Tensor(ptr_, shape, dtype_, device_);
  }
  // A view of the first shape.numel() elements, which the buffer must hold already.
  Tensor view_of(Shape shape) const {
    MOE_CHECK(shape.numel() <= size_, "view ", shape.str(), " of a buffer of ", size_,
              " elements");
    return Tensor(ptr_, shape, dtype_, device_);
  }

 private:
  void release();

  void* ptr_ = nullptr;
  int64_t size_ = 0;
  int64_t capacity_ = 0;
  Device device_ = Device::kCpu;
  DType dtype_ = DType::kF32;
};

}  // namespace moe
