#include "framework/data/token_shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "framework/core/error.h"

namespace moe {

// The file format is little-endian and tokens are read in place.
static_assert(std::endian::native == std::endian::little, "token shards need a little-endian host");

namespace {

struct Header {
  char magic[8];
  uint32_t version;
  uint32_t token_bytes;
  uint64_t count;
  uint32_t vocab_size;
  uint32_t reserved;
};
static_assert(sizeof(Header) == kTokenShardHeaderBytes, "header layout");

uint32_t load_token(const unsigned char* tokens, int token_bytes, int64_t i) {
  if (token_bytes == 2) {
    uint16_t t;
    std::memcpy(&t, tokens + 2 * i, 2);
    return t;
  }
  uint32_t t;
  std::memcpy(&t, tokens + 4 * i, 4);
  return t;
}

// Closes a file descriptor on scope exit.
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

TokenShard::TokenShard(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  MOE_USER_CHECK(fd >= 0, path, ": cannot open token shard (", std::strerror(errno), ")");
  FdCloser closer{fd};
  struct stat st {};
  MOE_USER_CHECK(::fstat(fd, &st) == 0 && S_ISREG(st.st_mode), path,
                 ": not a regular file");
  const int64_t file_bytes = st.st_size;
  MOE_USER_CHECK(file_bytes >= kTokenShardHeaderBytes, path, ": ", file_bytes,
                 " bytes, too short for the ", kTokenShardHeaderBytes,
                 "-byte token shard header");

  void* map = ::mmap(nullptr, static_cast<size_t>(file_bytes), PROT_READ, MAP_PRIVATE, fd, 0);
  MOE_CHECK(map != MAP_FAILED, path, ": mmap failed (", std::strerror(errno), ")");
  map_ = static_cast<const unsigned char*>(map);
  map_bytes_ = file_bytes;
  try {
    Header h;
    std::memcpy(&h, map_, sizeof(h));
    MOE_USER_CHECK(std::memcmp(h.magic, kTokenShardMagic, sizeof(h.magic)) == 0, path,
                   ": not a token shard (bad magic; expected \"MOETOKS\\0\")");
    MOE_USER_CHECK(h.version == kTokenShardVersion, path, ": token shard version ", h.version,
                   " is not supported (expected ", kTokenShardVersion, ")");
    MOE_USER_CHECK(h.token_bytes == 2 || h.token_bytes == 4, path, ": token_bytes ",
                   h.token_bytes, " must be 2 or 4");
    MOE_USER_CHECK(h.reserved == 0, path, ": reserved header field is ", h.reserved,
                   ", expected 0");
    const uint64_t payload = static_cast<uint64_t>(file_bytes - kTokenShardHeaderBytes);
    MOE_USER_CHECK(h.count <= payload / h.token_bytes && h.count * h.token_bytes == payload,
                   path, ": header says ", h.count, " tokens of ", h.token_bytes,
                   " bytes but the file holds ", payload,
                   " bytes after the header (truncated or corrupt)");
    count_ = static_cast<int64_t>(h.count);
    token_bytes_ = static_cast<int>(h.token_bytes);
    vocab_size_ = h.vocab_size;
    tokens_ = map_ + kTokenShardHeaderBytes;
    validate_tokens();
  } catch (...) {
    unmap();
    throw;
  }
}

void TokenShard::validate_tokens() {
  uint32_t max_token = 0;
  int64_t max_at = 0;
  for (int64_t i = 0; i < count_; ++i) {
    const uint32_t t = load_token(tokens_, token_bytes_, i);
    if (t > max_token) {
      max_token = t;
      max_at = i;
    }
  }
  MOE_USER_CHECK(vocab_size_ == 0 || count_ == 0 || max_token < vocab_size_, path_,
                 ": token ", max_token, " at index ", max_at, " is >= the header's vocab_size ",
                 vocab_size_);
  MOE_USER_CHECK(max_token <= static_cast<uint32_t>(std::numeric_limits<int32_t>::max()),
                 path_, ": token ", max_token, " at index ", max_at, " does not fit int32");
  max_token_ = max_token;
}

TokenShard::~TokenShard() { unmap(); }

TokenShard::TokenShard(TokenShard&& other) noexcept { *this = std::move(other); }

TokenShard& TokenShard::operator=(TokenShard&& other) noexcept {
  if (this != &other) {
    unmap();
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
    tokens_ = std::exchange(other.tokens_, nullptr);
    count_ = std::exchange(other.count_, 0);
    token_bytes_ = other.token_bytes_;
    vocab_size_ = other.vocab_size_;
    max_token_ = other.max_token_;
  }
  return *this;
}

void TokenShard::unmap() {
  if (map_) ::munmap(const_cast<unsigned char*>(map_), static_cast<size_t>(map_bytes_));
  map_ = nullptr;
  tokens_ = nullptr;
}

int32_t TokenShard::token(int64_t i) const {
  MOE_CHECK(i >= 0 && i < count_, path_, ": token index ", i, " outside [0, ", count_, ")");
  return static_cast<int32_t>(load_token(tokens_, token_bytes_, i));
}

void TokenShard::read(int64_t begin, std::span<int32_t> out) const {
  const int64_t n = static_cast<int64_t>(out.size());
  MOE_CHECK(begin >= 0 && begin + n <= count_, path_, ": tokens [", begin, ", ", begin + n,
            ") outside [0, ", count_, ")");
  for (int64_t j = 0; j < n; ++j)
    out[j] = static_cast<int32_t>(load_token(tokens_, token_bytes_, begin + j));
}

void write_token_shard(const std::string& path, std::span<const uint32_t> tokens,
                       int token_bytes, uint32_t vocab_size) {
  MOE_USER_CHECK(token_bytes == 2 || token_bytes == 4, path, ": token_bytes ", token_bytes,
                 " must be 2 or 4");
  const uint64_t limit = vocab_size ? vocab_size : (token_bytes == 2 ? 65536ull : 1ull << 32);
  MOE_USER_CHECK(token_bytes == 4 || limit <= 65536, path, ": vocab_size ", vocab_size,
                 " does not fit 2-byte tokens");
  for (size_t i = 0; i < tokens.size(); ++i)
    MOE_USER_CHECK(tokens[i] < limit, path, ": token ", tokens[i], " at index ", i,
                   " is >= ", limit);

  Header h{};
  std::memcpy(h.magic, kTokenShardMagic, sizeof(h.magic));
  h.version = kTokenShardVersion;
  h.token_bytes = static_cast<uint32_t>(token_bytes);
  h.count = tokens.size();
  h.vocab_size = vocab_size;

  std::FILE* f = std::fopen(path.c_str(), "wb");
  MOE_USER_CHECK(f != nullptr, path, ": cannot write token shard (", std::strerror(errno), ")");
  bool ok = std::fwrite(&h, sizeof(h), 1, f) == 1;
  if (token_bytes == 4) {
    ok = ok && std::fwrite(tokens.data(), 4, tokens.size(), f) == tokens.size();
  } else {
    std::vector<uint16_t> narrow(tokens.begin(), tokens.end());
    ok = ok && std::fwrite(narrow.data(), 2, narrow.size(), f) == narrow.size();
  }
  ok = (std::fclose(f) == 0) && ok;
  MOE_CHECK(ok, path, ": writing the token shard failed (", std::strerror(errno), ")");
}

void require_vocab(const TokenShard& shard, int64_t model_vocab, const std::string& key) {
  MOE_USER_CHECK(shard.size() == 0 || shard.max_token() < model_vocab, key, ": '",
                 shard.path(), "' holds token ", shard.max_token(),
                 ", outside model.vocab_size ", model_vocab);
}

}  // namespace moe
