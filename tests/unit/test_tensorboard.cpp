// TensorBoard output: CRC-32C against published check values, the TFRecord framing, the
// tags a metrics record becomes (framework/train/tensorboard.h), and an events file's
// records parsed back with the generated protobuf classes. tests/reference/tensorboard.sh
// reads whole runs with TensorBoard's own reader.

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "framework/train/event_file.h"
#include "framework/train/tensorboard.h"
#include "framework/train/tensorboard_event.pb.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

uint64_t read_le(const std::string& s, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(s[at + i]);
  return v;
}

TEST(TensorBoard, Crc32cCheckValues) {
  // The CRC-32C check value (RFC 3720 B.4 and every CRC catalogue) and iSCSI vectors.
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(crc32c(std::string(32, '\xff')), 0x62A8AB43u);
  std::string ascending;
  for (int i = 0; i < 32; ++i) ascending.push_back(static_cast<char>(i));
  EXPECT_EQ(crc32c(ascending), 0x46DD794Eu);
  const uint32_t c = crc32c("abc");
  EXPECT_EQ(masked_crc32c("abc"), ((c >> 15) | (c << 17)) + 0xa282ead8u);
}

TEST(TensorBoard, RecordFraming) {
  const std::string data = "hello, events";
  const std::string r = tfrecord(data);
  ASSERT_EQ(r.size(), 8 + 4 + data.size() + 4);
  EXPECT_EQ(read_le(r, 0, 8), data.size());
  EXPECT_EQ(read_le(r, 8, 4), masked_crc32c(r.substr(0, 8)));
  EXPECT_EQ(r.substr(12, data.size()), data);
  EXPECT_EQ(read_le(r, 12 + data.size(), 4), masked_crc32c(data));
}

TEST(TensorBoard, RecordTags) {
  const nlohmann::json record = nlohmann::json::parse(R"({
    "step": 7, "loss": 2.5, "val_loss": 2.75, "test_accuracy": 0.5, "dispatcher": "flat",
    "time_ms": {"forward": 1.5}, "comm": {"ep": {"bytes": 64}, "total_ms": 0.25},
    "experts": [{"layer": 3, "tokens": [1, 0, 5], "dropped": 0.125, "balanced": true}]})");
  const RecordSummaries s = summarize_record(record);
  EXPECT_EQ(s.step, 7);
  std::map<std::string, double> scalars;
  for (const ScalarSummary& v : s.scalars) scalars[v.tag] = v.value;
  const std::map<std::string, double> want = {
      {"train/loss", 2.5},          {"eval/val_loss", 2.75},  {"eval/test_accuracy", 0.5},
      {"time_ms/forward", 1.5},     {"comm/ep/bytes", 64},    {"comm/total_ms", 0.25},
      {"experts/layer_3/dropped", 0.125}};
  EXPECT_EQ(scalars, want);
  ASSERT_EQ(s.histograms.size(), 1u);
  EXPECT_EQ(s.histograms[0].tag, "experts/layer_3/tokens");
  EXPECT_EQ(s.histograms[0].counts, (std::vector<double>{1, 0, 5}));
}

TEST(TensorBoard, EventsFileParsesBack) {
  const fs::path dir = fs::temp_directory_path() / ("moe_test_tb_" + std::to_string(getpid()));
  fs::remove_all(dir);
  std::string path;
  {
    TensorBoardWriter writer(dir.string(), /*resumed_after=*/4);
    writer.write(nlohmann::json{{"step", 5}, {"loss", 1.25}, {"experts", {{{"layer", 1}, {"tokens", {2, 3}}}}}});
    writer.write_image(5, "samples", 3, 2, {0, 50, 100, 150, 200, 250});
    path = writer.path();
  }
  EXPECT_TRUE(fs::path(path).filename().string().starts_with("events.out.tfevents."));
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<tensorboard::Event> events;
  for (size_t at = 0; at < bytes.size();) {
    const uint64_t n = read_le(bytes, at, 8);
    ASSERT_EQ(read_le(bytes, at + 8, 4), masked_crc32c(bytes.substr(at, 8)));
    const std::string data = bytes.substr(at + 12, n);
    ASSERT_EQ(read_le(bytes, at + 12 + n, 4), masked_crc32c(data));
    ASSERT_TRUE(events.emplace_back().ParseFromString(data));
    at += 16 + n;
  }
  ASSERT_EQ(events.size(), 4u);  // file_version, restart, record, image
  EXPECT_EQ(events[0].file_version(), "brain.Event:2");
  EXPECT_EQ(events[1].session_log().status(), tensorboard::SessionLog::START);
  EXPECT_EQ(events[1].step(), 5);
  const tensorboard::Summary& s = events[2].summary();
  ASSERT_EQ(s.value_size(), 2);
  EXPECT_EQ(s.value(0).tag(), "train/loss");
  EXPECT_EQ(s.value(0).simple_value(), 1.25f);
  const tensorboard::HistogramProto& h = s.value(1).histo();
  EXPECT_EQ(s.value(1).tag(), "experts/layer_1/tokens");
  EXPECT_EQ(std::vector<double>(h.bucket().begin(), h.bucket().end()), (std::vector<double>{2, 3}));
  EXPECT_EQ(std::vector<double>(h.bucket_limit().begin(), h.bucket_limit().end()),
            (std::vector<double>{0.5, 1.5}));
  EXPECT_EQ(h.num(), 5);
  EXPECT_EQ(h.sum(), 3);
  const tensorboard::Summary::Image& image = events[3].summary().value(0).image();
  EXPECT_EQ(image.width(), 3);
  EXPECT_EQ(image.height(), 2);
  EXPECT_EQ(image.encoded_image_string().substr(1, 3), "PNG");
  // A fresh run in the same directory replaces the earlier events file: what is left is
  // its own file, holding the file_version record alone.
  std::string fresh_path;
  {
    TensorBoardWriter fresh(dir.string(), 0);
    fresh_path = fresh.path();
  }
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);
  EXPECT_EQ(fs::file_size(fresh_path), 16 + events[0].ByteSizeLong());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace moe
