#pragma once
// The attributes checksum of a file (docs/checkpoint-format.md): the root attribute
// `attrs_checksum` covers every other attribute of every object of the file - the
// format fields, the config text, the trainer state, every dataset's `checksum` and
// `shard` annotation, and with them the names of the objects that carry them. Each
// attribute is one record, and the records sorted by (object, name) are hashed with
// 64-bit FNV-1a:
//
//   u64 len(object) | object | u64 len(name) | name | u8 type | u64 len(value) | value
//
// u64 little-endian; object the absolute HDF5 path ("/", "/config", "/model/<name>");
// type 'i' int64, 'u' uint64, 'f' float64 (8 little-endian bytes), 's' string (its
// bytes). Every step of FNV-1a is a bijection of its state, so a change confined to
// one byte always changes the checksum.

#include <hdf5.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>

namespace moe {

inline constexpr const char* kAttributesChecksum = "attrs_checksum";
// A string attribute longer than this is damage, not data (the config text is a few KB).
inline constexpr size_t kMaxStringAttributeBytes = 1 << 24;

class AttributeLedger {
 public:
  // Records (or replaces) one attribute; `value` holds its bytes as described above.
  void add(const std::string& object, const std::string& name, char type, std::string value);
  void add_int(const std::string& object, const std::string& name, int64_t value);
  void add_uint(const std::string& object, const std::string& name, uint64_t value);
  void add_float(const std::string& object, const std::string& name, double value);
  uint64_t checksum() const;
  size_t size() const { return records_.size(); }

 private:
  std::map<std::pair<std::string, std::string>, std::pair<char, std::string>> records_;
};

// Every attribute of the open file `file` except attrs_checksum, read with bounds on
// every size. A damaged or unexpected attribute is a user error naming `path`.
AttributeLedger read_attributes(hid_t file, const std::string& path);

}  // namespace moe
