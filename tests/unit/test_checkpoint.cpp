// The single-process pieces of checkpoints: the blockwise checksum, block I/O of
// H5File, the checkpoint directory (names, latest pointer, retention), safetensors
// files, resumed metrics files and the config comparison of a resume. The collective
// writer and reader are tested under mpirun (tests/parallel/test_checkpoint.cpp).

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "framework/checkpoint/checkpoint_dir.h"
#include "framework/checkpoint/checkpointer.h"
#include "framework/checkpoint/checksum.h"
#include "framework/checkpoint/h5_file.h"
#include "framework/checkpoint/safetensors.h"
#include "framework/train/metrics.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

class CheckpointPieces : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("moe_test_ckpt_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }
  void touch(const std::string& name) const { std::ofstream(file(name)) << "x"; }

  fs::path dir_;
};

std::vector<float> ramp(int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = 0.01f * static_cast<float>(i * i % 97) - 0.3f;
  return v;
}

TEST(Checksum, BlocksAddUpToTheWholeTensor) {
  const Shape shape{5, 3, 4};
  const std::vector<float> all = ramp(shape.numel());
  const uint64_t whole = block_checksum(all.data(), shape, shape, {});
  // the expert axis in blocks of 2, 2, 1 (contiguous)
  uint64_t sum = 0;
  for (int64_t first : {0, 2, 4}) {
    const Shape block{first == 4 ? 1 : 2, 3, 4};
    sum += block_checksum(all.data() + first * 12, shape, block, {first, 0, 0});
  }
  EXPECT_EQ(sum, whole);
  // a split of the last axis (strided rows, as tensor parallelism would make)
  std::vector<float> left, right;
  for (int64_t r = 0; r < 15; ++r) {
    left.insert(left.end(), all.begin() + r * 4, all.begin() + r * 4 + 3);
    right.push_back(all[r * 4 + 3]);
  }
  EXPECT_EQ(block_checksum(left.data(), shape, Shape{5, 3, 3}, {0, 0, 0}) +
                block_checksum(right.data(), shape, Shape{5, 3, 1}, {0, 0, 3}),
            whole);
}

TEST(Checksum, SeesAChangedBitAndSwappedElements) {
  const Shape shape{64};
  std::vector<float> v = ramp(64);
  const uint64_t base = block_checksum(v.data(), shape, shape, {});
  std::vector<float> flipped = v;
  flipped[17] = std::nextafter(flipped[17], 1.0f);
  EXPECT_NE(block_checksum(flipped.data(), shape, shape, {}), base);
  std::swap(v[3], v[40]);
  EXPECT_NE(block_checksum(v.data(), shape, shape, {}), base);
}

TEST(Checksum, MatchesTheDocumentedFormula) {
  // Two elements computed by hand from docs/checkpoint-format.md.
  auto mix = [](uint64_t k) {
    k ^= k >> 33;
    k *= 0xFF51AFD7ED558CCDull;
    k ^= k >> 33;
    k *= 0xC4CEB9FE1A85EC53ull;
    k ^= k >> 33;
    return k;
  };
  const float v[2] = {1.0f, -2.0f};  // bits 0x3F800000, 0xC0000000
  const uint64_t want = mix(0 * 0x9E3779B97F4A7C15ull + 0x3F800000u) +
                        mix(1 * 0x9E3779B97F4A7C15ull + 0xC0000000u);
  EXPECT_EQ(block_checksum(v, Shape{2}, Shape{2}, {}), want);
}

TEST_F(CheckpointPieces, H5BlocksWriteAndReadHyperslabs) {
  const Shape shape{4, 3};
  const std::vector<float> all = ramp(12);
  {
    H5File f = H5File::create(file("b.h5"));
    f.create_float_dataset("/t", shape);
    f.write_block("/t", all.data(), Shape{3, 3}, {0, 0});
    f.write_block("/t", all.data() + 9, Shape{1, 3}, {3, 0});
    f.write_block("/t", nullptr, Shape{1, 3}, {0, 0}, /*participate=*/false);
    f.close();
  }
  const H5File f = H5File::open(file("b.h5"));
  std::vector<float> back(12), part(4);
  f.read("/t", back.data(), shape);
  EXPECT_EQ(back, all);
  f.read_block("/t", part.data(), Shape{2, 2}, {2, 1});
  EXPECT_EQ(part, (std::vector<float>{all[7], all[8], all[10], all[11]}));
  try {
    f.read_block("/t", part.data(), Shape{2, 2}, {3, 1});
    ADD_FAILURE() << "a block outside the dataset was read";
  } catch (const Error& e) {
    EXPECT_TRUE(e.user_error());
    EXPECT_NE(std::string(e.what()).find("does not hold the block"), std::string::npos);
  }
}

TEST_F(CheckpointPieces, DirectoryNamesPointerAndRetention) {
  const CheckpointDir dir(dir_.string());
  EXPECT_EQ(CheckpointDir::file_name(40), "step_00000040.h5");
  EXPECT_EQ(CheckpointDir::step_of("step_00000040.h5"), 40);
  EXPECT_FALSE(CheckpointDir::step_of("step_0000004x.h5").has_value());
  EXPECT_FALSE(CheckpointDir::step_of("latest").has_value());
  EXPECT_FALSE(dir.latest().has_value());

  for (int s : {10, 20, 30, 40, 50}) touch(CheckpointDir::file_name(s));
  touch("step_00000060.h5.tmp");  // a write that was killed
  dir.publish(30);
  EXPECT_EQ(dir.latest(), file("step_00000030.h5"));
  // Keep 2 up to step 30: 20 and 30; 40 and 50 belong to an abandoned continuation.
  dir.retain(2, 30);
  EXPECT_EQ(dir.steps(), (std::vector<int64_t>{20, 30}));
  EXPECT_FALSE(fs::exists(file("step_00000060.h5.tmp")));
  EXPECT_EQ(dir.latest(), file("step_00000030.h5"));

  std::ofstream(file("latest")) << "step_00000099.h5\n";
  try {
    dir.latest();
    ADD_FAILURE() << "a dangling pointer was accepted";
  } catch (const Error& e) {
    EXPECT_TRUE(e.user_error());
    EXPECT_NE(std::string(e.what()).find("does not exist"), std::string::npos) << e.what();
  }
}

TEST_F(CheckpointPieces, SafetensorsFilesFollowTheFormat) {
  const std::vector<float> a = ramp(6), b = ramp(5);
  {
    SafetensorsWriter w(file("w.safetensors"), {{"a.weight", Shape{2, 3}}, {"b", Shape{5}}},
                        {{"format", "moe-weights"}});
    w.write_next(a.data());
    w.write_next(b.data());
    w.close();
  }
  EXPECT_FALSE(fs::exists(file("w.safetensors.tmp")));
  const SafetensorsHeader h = read_safetensors_header(file("w.safetensors"));
  EXPECT_EQ(h.data_start % 8, 0u);  // the header is padded to 8 bytes
  EXPECT_EQ(h.metadata.at("format"), "moe-weights");
  ASSERT_EQ(h.tensors.size(), 2u);
  EXPECT_EQ(h.tensors.at("a.weight").dtype, "F32");
  EXPECT_EQ(h.tensors.at("a.weight").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(h.tensors.at("b").begin, 24u);
  EXPECT_EQ(h.tensors.at("b").end, 44u);
  EXPECT_EQ(fs::file_size(file("w.safetensors")), h.data_start + 44);
  std::ifstream in(file("w.safetensors"), std::ios::binary);
  in.seekg(static_cast<std::streamoff>(h.data_start + 24));
  std::vector<float> back(5);
  in.read(reinterpret_cast<char*>(back.data()), 20);
  EXPECT_EQ(back, b);

  {  // an unfinished writer leaves nothing behind
    SafetensorsWriter w(file("x.safetensors"), {{"a", Shape{2}}}, {});
  }
  EXPECT_FALSE(fs::exists(file("x.safetensors")));
  EXPECT_FALSE(fs::exists(file("x.safetensors.tmp")));

  fs::resize_file(file("w.safetensors"), h.data_start + 30);
  try {
    read_safetensors_header(file("w.safetensors"));
    ADD_FAILURE() << "a truncated file was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
}

TEST_F(CheckpointPieces, ResumedMetricsKeepTheRecordsUpToTheCheckpoint) {
  std::ofstream(file("m.jsonl")) << "{\"step\":0,\"val_loss\":5}\n{\"step\":1,\"loss\":4}\n"
                                    "{\"step\":2,\"loss\":3}\n{\"step\":3,\"loss\":2}\n{\"st";
  {
    MetricsWriter w = MetricsWriter::resume(file("m.jsonl"), 2);
    w.write({{"step", 3}, {"loss", 2.5}});
  }
  std::ifstream in(file("m.jsonl"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text,
            "{\"step\":0,\"val_loss\":5}\n{\"step\":1,\"loss\":4}\n{\"step\":2,\"loss\":3}\n"
            "{\"loss\":2.5,\"step\":3}\n");
}

TEST(ConfigDifferences, ListsChangedKeysButNotRunOrLayout) {
  const std::string a = "[train]\nsteps = 20\nseed = 1\n[run]\ndir = a\n[parallel]\ndp = 1\n";
  const std::string b = "[train]\nsteps = 40\nseed = 1\n[run]\ndir = b\n[parallel]\ndp = 4\n";
  EXPECT_EQ(config_differences(a, b), (std::vector<std::string>{"train.steps: 20 -> 40"}));
  EXPECT_TRUE(config_differences(a, a).empty());
}

}  // namespace
}  // namespace moe
