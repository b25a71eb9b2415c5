#include "framework/tensor/tensor.h"

#include <sstream>
#include <utility>

#include "framework/tensor/device_memory.h"

namespace moe {

std::string Shape::str() const {
  std::ostringstream os;
  os << "(";
  for (int i = 0; i < rank; ++i) os << (i ? ", " : "") << dims[i];
  os << ")";
  return os.str();
}

Buffer::Buffer(Buffer&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      capacity_(std::exchange(other.capacity_, 0)),
      device_(other.device_),
      dtype_(other.dtype_) {}

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    release();
    ptr_ = std::exchange(other.ptr_, nullptr);
    size_ = std::exchange(other.size_, 0);
    capacity_ = std::exchange(other.capacity_, 0);
    device_ = other.device_;
    dtype_ = other.dtype_;
  }
  return *this;
}

Buffer::~Buffer() { release(); }

void Buffer::release() {
  device_free(device_, ptr_);
  ptr_ = nullptr;
}

void Buffer::resize(int64_t n) {
  MOE_CHECK(n >= 0, "negative buffer size ", n);
  if (n > capacity_) {
    void* p = device_allocate(device_, static_cast<size_t>(n) * dtype_size(dtype_));
    release();
    ptr_ = p;
    capacity_ = n;
  }
  size_ = n;
}

void Buffer::zero() {
  device_zero(device_, ptr_, static_cast<size_t>(size_) * dtype_size(dtype_));
}

}  // namespace moe
