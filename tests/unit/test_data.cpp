// Token shards (format round trip, rejection of bad files with the file named) and the
// (seed, step) batch sampler (determinism, dp slicing, next-token targets).

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "framework/core/error.h"
#include "framework/data/sampler.h"
#include "framework/data/token_shard.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

class DataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           (std::string("moe_test_data_") + std::to_string(::getpid()) + "_" + test->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // Reads the raw bytes of a file, lets `edit` change them, writes them back.
  template <class Edit>
  void edit_file(const std::string& file, Edit edit) {
    std::ifstream in(file, std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    in.close();
    edit(bytes);
    std::ofstream(file, std::ios::binary | std::ios::trunc).write(bytes.data(), bytes.size());
  }

  // The message of the user error opening `file` throws.
  static std::string open_error(const std::string& file) {
    try {
      TokenShard shard(file);
    } catch (const Error& e) {
      EXPECT_TRUE(e.user_error()) << e.what();
      return e.what();
    }
    ADD_FAILURE() << "opening " << file << " did not fail";
    return "";
  }

  fs::path dir_;
};

std::vector<uint32_t> ramp(int64_t n, uint32_t modulo) {
  std::vector<uint32_t> t(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) t[i] = static_cast<uint32_t>((i * 7919 + 13) % modulo);
  return t;
}

TEST_F(DataTest, RoundTripUint16) {
  const std::vector<uint32_t> tokens = ramp(1000, 256);
  write_token_shard(path("a.tok"), tokens, 2, 256);
  EXPECT_EQ(fs::file_size(path("a.tok")), 32u + 2 * 1000);
  const TokenShard shard(path("a.tok"));
  EXPECT_EQ(shard.size(), 1000);
  EXPECT_EQ(shard.token_bytes(), 2);
  EXPECT_EQ(shard.vocab_size(), 256u);
  EXPECT_EQ(shard.max_token(), 255u);
  for (int64_t i = 0; i < shard.size(); ++i) ASSERT_EQ(shard.token(i), int32_t(tokens[i]));
  std::vector<int32_t> part(10);
  shard.read(500, part);
  for (int j = 0; j < 10; ++j) EXPECT_EQ(part[j], int32_t(tokens[500 + j]));
}

TEST_F(DataTest, RoundTripUint32AndUnknownVocab) {
  std::vector<uint32_t> tokens = ramp(300, 100000);
  tokens[17] = 2000000000u;
  write_token_shard(path("b.tok"), tokens, 4, 0);
  const TokenShard shard(path("b.tok"));
  EXPECT_EQ(shard.token_bytes(), 4);
  EXPECT_EQ(shard.vocab_size(), 0u);
  EXPECT_EQ(shard.max_token(), 2000000000u);
  for (int64_t i = 0; i < shard.size(); ++i) ASSERT_EQ(shard.token(i), int32_t(tokens[i]));
  // The model's vocabulary check names the key and the file.
  try {
    require_vocab(shard, 256, "data.train_path");
    ADD_FAILURE() << "token 2e9 accepted for vocab 256";
  } catch (const Error& e) {
    EXPECT_TRUE(e.user_error());
    EXPECT_NE(std::string(e.what()).find("data.train_path"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find(path("b.tok")), std::string::npos);
  }
}

TEST_F(DataTest, HeaderLayoutIsLittleEndianFieldByField) {
  write_token_shard(path("h.tok"), std::vector<uint32_t>{1, 2, 3}, 2, 50);
  std::ifstream in(path("h.tok"), std::ios::binary);
  unsigned char h[32];
  in.read(reinterpret_cast<char*>(h), 32);
  EXPECT_EQ(std::memcmp(h, "MOETOKS\0", 8), 0);
  EXPECT_EQ(h[8], 1);   // version
  EXPECT_EQ(h[12], 2);  // token_bytes
  EXPECT_EQ(h[16], 3);  // count
  EXPECT_EQ(h[24], 50);  // vocab_size
  for (int i : {9, 10, 11, 13, 14, 15, 17, 18, 19, 20, 21, 22, 23, 25, 26, 27, 28, 29, 30, 31})
    EXPECT_EQ(h[i], 0) << "byte " << i;
}

TEST_F(DataTest, RejectsTruncatedFile) {
  const std::string file = path("t.tok");
  write_token_shard(file, ramp(100, 256), 2, 256);
  edit_file(file, [](std::vector<char>& b) { b.resize(b.size() - 3); });
  const std::string m = open_error(file);
  EXPECT_NE(m.find(file), std::string::npos) << m;
  EXPECT_NE(m.find("truncated"), std::string::npos) << m;
  edit_file(file, [](std::vector<char>& b) { b.resize(10); });
  EXPECT_NE(open_error(file).find(file), std::string::npos);
}

TEST_F(DataTest, RejectsBadMagic) {
  const std::string file = path("m.tok");
  write_token_shard(file, ramp(100, 256), 2, 256);
  edit_file(file, [](std::vector<char>& b) { b[0] = 'X'; });
  const std::string m = open_error(file);
  EXPECT_NE(m.find(file), std::string::npos) << m;
  EXPECT_NE(m.find("magic"), std::string::npos) << m;
}

TEST_F(DataTest, RejectsWrongVersion) {
  const std::string file = path("v.tok");
  write_token_shard(file, ramp(100, 256), 2, 256);
  edit_file(file, [](std::vector<char>& b) { b[8] = 2; });
  const std::string m = open_error(file);
  EXPECT_NE(m.find(file), std::string::npos) << m;
  EXPECT_NE(m.find("version 2"), std::string::npos) << m;
}

TEST_F(DataTest, RejectsTokenOutOfVocab) {
  const std::string file = path("o.tok");
  write_token_shard(file, ramp(100, 256), 2, 256);
  // Token 42 becomes 300 (>= vocab 256): little-endian uint16 at 32 + 2 * 42.
  edit_file(file, [](std::vector<char>& b) {
    b[32 + 84] = static_cast<char>(300 & 0xff);
    b[32 + 85] = static_cast<char>(300 >> 8);
  });
  const std::string m = open_error(file);
  EXPECT_NE(m.find(file), std::string::npos) << m;
  EXPECT_NE(m.find("token 300 at index 42"), std::string::npos) << m;
}

TEST_F(DataTest, WriterRejectsBadTokensAndMissingFileIsNamed) {
  EXPECT_THROW(write_token_shard(path("w.tok"), std::vector<uint32_t>{1, 256}, 2, 256), Error);
  EXPECT_THROW(write_token_shard(path("w.tok"), std::vector<uint32_t>{70000}, 2, 0), Error);
  const std::string missing = path("missing.tok");
  EXPECT_NE(open_error(missing).find(missing), std::string::npos);
}

struct Batch {
  std::vector<int32_t> inputs, targets;
};

Batch take(const BatchSampler& s, int64_t step, int rank, int ranks) {
  const size_t n = static_cast<size_t>(s.local_batch(ranks) * s.seq_len());
  Batch b{std::vector<int32_t>(n), std::vector<int32_t>(n)};
  s.batch(step, rank, ranks, b.inputs, b.targets);
  return b;
}

TEST_F(DataTest, SamplerIsAPureFunctionOfSeedAndStep) {
  // Tokens equal to their index (mod 2^16) make offsets visible in the batch.
  std::vector<uint32_t> tokens(5000);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<uint32_t>(i);
  write_token_shard(path("s.tok"), tokens, 2, 0);
  const TokenShard shard(path("s.tok"));
  const int64_t T = 16, B = 8;
  const BatchSampler a(shard, T, B, 1234), b(shard, T, B, 1234), other(shard, T, B, 4321);

  const Batch a3 = take(a, 3, 0, 1);
  EXPECT_EQ(a3.inputs, take(b, 3, 0, 1).inputs);     // same (seed, step): same batch
  EXPECT_EQ(a3.inputs, take(a, 3, 0, 1).inputs);     // and calling again changes nothing
  EXPECT_NE(a3.inputs, take(a, 4, 0, 1).inputs);     // another step
  EXPECT_NE(a3.inputs, take(other, 3, 0, 1).inputs);  // another seed

  for (int64_t r = 0; r < B; ++r) {
    const int64_t o = a.sample_offset(3, r);
    EXPECT_EQ(o, int64_t(random_u64(philox_key(1234, hash_name("data.train")), 3, r) %
                         (shard.size() - T - 1)));
    for (int64_t t = 0; t < T; ++t) {
      EXPECT_EQ(a3.inputs[r * T + t], o + t);       // a contiguous window at the offset
      EXPECT_EQ(a3.targets[r * T + t], o + t + 1);  // targets: inputs shifted by one
    }
  }
}

TEST_F(DataTest, DpSlicesConcatenateToTheGlobalBatch) {
  write_token_shard(path("d.tok"), ramp(4000, 256), 2, 256);
  const TokenShard shard(path("d.tok"));
  const BatchSampler s(shard, 12, 8, 7);
  for (int64_t step : {0, 1, 99}) {
    const Batch whole = take(s, step, 0, 1);
    for (int ranks : {2, 4}) {
      Batch joined;
      for (int r = 0; r < ranks; ++r) {
        const Batch part = take(s, step, r, ranks);
        joined.inputs.insert(joined.inputs.end(), part.inputs.begin(), part.inputs.end());
        joined.targets.insert(joined.targets.end(), part.targets.begin(), part.targets.end());
      }
      EXPECT_EQ(joined.inputs, whole.inputs) << "step " << step << " ranks " << ranks;
      EXPECT_EQ(joined.targets, whole.targets) << "step " << step << " ranks " << ranks;
    }
  }
}

TEST_F(DataTest, EvalWindowsAreTheShardInOrderForEveryLayout) {
  const std::vector<uint32_t> tokens = ramp(4000, 256);
  write_token_shard(path("e.tok"), tokens, 2, 256);
  const TokenShard shard(path("e.tok"));
  const int64_t T = 12, B = 8;
  const BatchSampler s(shard, T, B, 7);
  EXPECT_EQ(s.eval_windows(int64_t{1} << 40), (4000 - 1) / T);  // the whole shard
  EXPECT_EQ(s.eval_windows(100), 100 / T);                      // its first 100 tokens
  const int64_t windows = 21;  // batches of 8, 8 and 5 windows
  for (int ranks : {1, 2, 4}) {
    const int64_t rows = B / ranks;
    int64_t counted = 0;
    for (int64_t batch = 0; batch < 3; ++batch)
      for (int r = 0; r < ranks; ++r) {
        std::vector<int32_t> in(static_cast<size_t>(rows * T)), out(in.size());
        const int64_t n = s.eval_batch(batch, windows, r, ranks, in, out);
        counted += n;
        for (int64_t row = 0; row < rows; ++row) {
          const int64_t w = batch * B + r * rows + row;  // the window of this row
          const int64_t start = row < n ? w * T : 0;     // padding repeats window 0
          EXPECT_EQ(row < n, w < windows);
          for (int64_t t = 0; t < T; ++t) {
            EXPECT_EQ(in[row * T + t], int32_t(tokens[start + t])) << "ranks " << ranks;
            EXPECT_EQ(out[row * T + t], int32_t(tokens[start + t + 1]));
          }
        }
      }
    EXPECT_EQ(counted, windows) << "ranks " << ranks;
  }
}

TEST_F(DataTest, ShardTooShortForTheSequenceIsAUserError) {
  write_token_shard(path("short.tok"), ramp(10, 256), 2, 256);
  const TokenShard shard(path("short.tok"));
  try {
    BatchSampler s(shard, 9, 1, 0);
    ADD_FAILURE() << "10 tokens accepted for T = 9";
  } catch (const Error& e) {
    EXPECT_TRUE(e.user_error());
    EXPECT_NE(std::string(e.what()).find(path("short.tok")), std::string::npos);
  }
  EXPECT_NO_THROW(BatchSampler(shard, 8, 1, 0));
}

}  // namespace
}  // namespace moe
