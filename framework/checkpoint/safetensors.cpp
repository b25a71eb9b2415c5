#include "framework/checkpoint/safetensors.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "framework/core/error.h"

namespace moe {

SafetensorsWriter::SafetensorsWriter(std::string path, std::vector<Entry> entries,
                                     const std::map<std::string, std::string>& metadata)
    : path_(std::move(path)), tmp_(path_ + ".tmp"), entries_(std::move(entries)) {
  // nlohmann::ordered_json keeps the entries in data order, which readers do not need
  // but humans reading the header like.
  nlohmann::ordered_json header;
  header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const Entry& e : entries_) {
    std::vector<int64_t> shape(e.shape.dims.begin(), e.shape.dims.begin() + e.shape.rank);
    const uint64_t bytes = static_cast<uint64_t>(e.shape.numel()) * sizeof(float);
    MOE_CHECK(!header.contains(e.name), "safetensors: tensor ", e.name, " given twice");
    header[e.name] = {{"dtype", "F32"}, {"shape", shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  out_ = std::fopen(tmp_.c_str(), "wb");
  MOE_USER_CHECK(out_ != nullptr, path_, ": cannot create ", tmp_, ": ", std::strerror(errno));
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(text.size() >> (8 * i));
  MOE_USER_CHECK(std::fwrite(length, 1, 8, out_) == 8 &&
                     std::fwrite(text.data(), 1, text.size(), out_) == text.size(),
                 path_, ": cannot write ", tmp_);
}

SafetensorsWriter::~SafetensorsWriter() {
  if (out_ == nullptr) return;
  std::fclose(out_);
  std::remove(tmp_.c_str());
}

void SafetensorsWriter::write_next(const float* data) {
  MOE_CHECK(next_ < entries_.size(), "safetensors: more tensors than announced");
  // Little-endian floats: the host order here (x86-64, aarch64).
  const size_t n = static_cast<size_t>(entries_[next_].shape.numel());
  MOE_USER_CHECK(std::fwrite(data, sizeof(float), n, out_) == n, path_, ": cannot write ",
                 tmp_, ": ", std::strerror(errno));
  ++next_;
}

void SafetensorsWriter::close() {
  MOE_CHECK(next_ == entries_.size(), "safetensors: ", next_, " of ", entries_.size(),
            " tensors written");
  const bool ok = std::fflush(out_) == 0 && ::fsync(fileno(out_)) == 0;
  std::fclose(out_);
  out_ = nullptr;
  if (!ok || std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp_.c_str());
    MOE_USER_FAIL(path_, ": cannot finish writing ", tmp_, ": ", std::strerror(err));
  }
}

namespace {
void read_entries(const nlohmann::json& header, uint64_t size, const std::string& path,
                  SafetensorsHeader& out) {
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      for (const auto& [key, text_value] : value.items())
        out.metadata[key] = text_value.get<std::string>();
      continue;
    }
    SafetensorsHeader::Tensor t;
    t.dtype = value.at("dtype").get<std::string>();
    t.shape = value.at("shape").get<std::vector<int64_t>>();
    t.begin = value.at("data_offsets").at(0).get<uint64_t>();
    t.end = value.at("data_offsets").at(1).get<uint64_t>();
    MOE_USER_CHECK(t.begin <= t.end && out.data_start + t.end <= size, path, ": tensor ", name,
                   " lies outside the file (truncated?)");
    out.tensors[name] = t;
  }
}
}  // namespace

SafetensorsHeader read_safetensors_header(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MOE_USER_CHECK(in.good(), path, ": cannot open");
  unsigned char length[8];
  in.read(reinterpret_cast<char*>(length), 8);
  MOE_USER_CHECK(in.gcount() == 8, path, ": not a safetensors file (shorter than 8 bytes)");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | length[i];
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  MOE_USER_CHECK(n <= size - 8, path, ": not a safetensors file (header of ", n,
                 " bytes in a file of ", size, ")");
  std::string text(n, '\0');
  in.read(text.data(), static_cast<std::streamsize>(n));
  const nlohmann::json header = nlohmann::json::parse(text, nullptr, false);
  MOE_USER_CHECK(header.is_object(), path, ": not a safetensors file (bad JSON header)");
  SafetensorsHeader out;
  out.data_start = 8 + n;
  try {
    read_entries(header, size, path, out);
  } catch (const nlohmann::json::exception& e) {
    MOE_USER_FAIL(path, ": not a safetensors file (", e.what(), ")");
  }
  return out;
}

}  // namespace moe

