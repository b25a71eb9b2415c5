#pragma once
// Token shards: a flat array of token ids behind a 32-byte little-endian header
// (docs/data-format.md):
//
//   offset size field
//        0    8 magic        "MOETOKS\0"
//        8    4 version      uint32, 1
//       12    4 token_bytes  uint32, 2 (uint16 tokens) or 4 (uint32 tokens)
//       16    8 count        uint64, number of tokens
//       24    4 vocab_size   uint32, 0 = unknown; else every token < vocab_size
//       28    4 reserved     uint32, 0
//       32      tokens       count * token_bytes bytes, little-endian
//
// The reader maps the file read-only and validates it completely on open (header,
// exact file length, every token against vocab_size), so a bad file fails at start-up
// with one line naming it, never in the middle of training.

#include <cstdint>
#include <span>
#include <string>

namespace moe {

inline constexpr char kTokenShardMagic[8] = {'M', 'O', 'E', 'T', 'O', 'K', 'S', '\0'};
inline constexpr uint32_t kTokenShardVersion = 1;
inline constexpr int64_t kTokenShardHeaderBytes = 32;

class TokenShard {
 public:
  // Maps and validates `path`; any problem throws a user moe::Error naming the file.
  explicit TokenShard(const std::string& path);
  ~TokenShard();
  TokenShard(TokenShard&& other) noexcept;
  TokenShard& operator=(TokenShard&& other) noexcept;
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;

  const std::string& path() const { return path_; }
  int64_t size() const { return count_; }           // tokens in the shard
  int token_bytes() const { return token_bytes_; }   // 2 or 4
  uint32_t vocab_size() const { return vocab_size_; }  // 0 = unknown
  uint32_t max_token() const { return max_token_; }  // largest token (0 if empty)

  int32_t token(int64_t i) const;
  // out[j] = token(begin + j) for j < out.size(); the range must lie in the shard.
  void read(int64_t begin, std::span<int32_t> out) const;

 private:
  void validate_tokens();
  void unmap();

  std::string path_;
  const unsigned char* map_ = nullptr;  // whole file, header included
  int64_t map_bytes_ = 0;
  const unsigned char* tokens_ = nullptr;  // map_ + header
  int64_t count_ = 0;
  int token_bytes_ = 0;
  uint32_t vocab_size_ = 0;
  uint32_t max_token_ = 0;
};

// Writes `tokens` as a shard of token_bytes (2 or 4) per token. vocab_size 0 means
// unknown; otherwise every token must be < vocab_size. Bad arguments or an unwritable
// path throw a user moe::Error naming the file.
void write_token_shard(const std::string& path, std::span<const uint32_t> tokens,
                       int token_bytes, uint32_t vocab_size);

// Checks that every token of `shard` fits a model vocabulary of `model_vocab`, naming
// the config key the shard came from ("data.train_path") in the error.
void require_vocab(const TokenShard& shard, int64_t model_vocab, const std::string& key);

}  // namespace moe
