#pragma once
// TensorBoard event files: a sequence of records in the TFRecord framing, each holding
// one serialized Event (tensorboard_event.proto):
//
//   uint64  length of the data, little-endian
//   uint32  masked CRC-32C of those 8 bytes
//   bytes   the data (length bytes)
//   uint32  masked CRC-32C of the data
//
// masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8 (mod 2^32): TFRecord's masking, so
// that a CRC of data holding CRCs stays well mixed. The CRC is CRC-32C (Castagnoli,
// polynomial 0x1EDC6F41, reflected, initial and final value 0xFFFFFFFF), from
// Boost.CRC. A file is named events.out.tfevents.<unix seconds>.<host>.<pid>, the
// pattern TensorBoard looks for, and starts with an Event whose file_version is
// "brain.Event:2".

#include <cstdint>
#include <fstream>
#include <string>
#include <string_view>

namespace moe {

namespace tensorboard {
class Event;
}

uint32_t crc32c(std::string_view data);
uint32_t masked_crc32c(std::string_view data);
// The framed record of `data`.
std::string tfrecord(std::string_view data);

class EventFileWriter {
 public:
  // Creates `dir` if needed and a new events file in it; writes the file_version event.
  explicit EventFileWriter(const std::string& dir);
  // Appends one event and flushes it, so TensorBoard sees it while the run goes on.
  void write(const tensorboard::Event& event);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

// Seconds since the epoch, the wall_time of an event.
double wall_time_now();

}  // namespace moe
