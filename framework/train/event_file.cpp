#include "framework/train/event_file.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include <boost/crc.hpp>

#include "framework/core/error.h"
#include "framework/train/tensorboard_event.pb.h"

namespace moe {

uint32_t crc32c(std::string_view data) {
  // CRC-32C: polynomial 0x1EDC6F41, initial 0xFFFFFFFF, final xor 0xFFFFFFFF, input and
  // output reflected.
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
  crc.process_bytes(data.data(), data.size());
  return crc.checksum();
}

uint32_t masked_crc32c(std::string_view data) {
  const uint32_t c = crc32c(data);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

namespace {

void append_le(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

}  // namespace

std::string tfrecord(std::string_view data) {
  std::string length;
  append_le(length, data.size(), 8);
  std::string out = length;
  append_le(out, masked_crc32c(length), 4);
  out.append(data);
  append_le(out, masked_crc32c(data), 4);
  return out;
}

double wall_time_now() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

EventFileWriter::EventFileWriter(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  MOE_USER_CHECK(!ec, "run.tensorboard: cannot create '", dir, "': ", ec.message());
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  char seconds[32];
  std::snprintf(seconds, sizeof(seconds), "%010lld",
                static_cast<long long>(wall_time_now()));
  path_ = (std::filesystem::path(dir) / ("events.out.tfevents." + std::string(seconds) + "." +
                                         host + "." + std::to_string(getpid())))
              .string();
  out_.open(path_, std::ios::binary | std::ios::trunc);
  MOE_USER_CHECK(out_.is_open(), "run.tensorboard: cannot write '", path_, "'");
  tensorboard::Event first;
  first.set_wall_time(wall_time_now());
  first.set_file_version("brain.Event:2");
  write(first);
}

void EventFileWriter::write(const tensorboard::Event& event) {
  std::string data;
  MOE_CHECK(event.SerializeToString(&data), "cannot serialize a TensorBoard event");
  out_ << tfrecord(data);
  out_.flush();
  MOE_CHECK(out_.good(), "write to ", path_, " failed");
}

}  // namespace moe
