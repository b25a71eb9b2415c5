#include "framework/tensor/tensor.h"

#include <cstring>
#include <new>
#include <sstream>

namespace moe {

std::string Shape::str() const {
  std::ostringstream os;
  os << "(";
  for (int i = 0; i < rank; ++i) os << (i ? ", " : "") << dims[i];
  os << ")";
  return os.str();
}

void Buffer::resize(int64_t n) {
  MOE_CHECK(n >= 0, "negative buffer size ", n);
  if (n > capacity_) {
    const size_t bytes = ((static_cast<size_t>(n) * sizeof(float) + 63) / 64) * 64;
    float* p = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (p == nullptr) throw std::bad_alloc();  // main() reports it (exit 2)
    std::memset(p, 0, bytes);
    data_.reset(p);
    capacity_ = n;
  }
  size_ = n;
}

void Buffer::zero() {
  if (size_ > 0) std::memset(data_.get(), 0, static_cast<size_t>(size_) * sizeof(float));
}

}  // namespace moe
