#include "framework/checkpoint/attr_checksum.h"

#include <cstring>
#include <exception>
#include <vector>

#include "framework/checkpoint/h5_file.h"

namespace moe {
namespace {

void append_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

template <class T>
std::string bytes_of(T value) {
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  std::string out;
  append_u64(out, bits);
  return out;
}

// Closes an HDF5 identifier when it goes out of scope.
struct Handle {
  hid_t id;
  herr_t (*close)(hid_t);
  ~Handle() {
    if (id >= 0) close(id);
  }
};

struct Visit {
  hid_t file;
  const std::string* path;
  AttributeLedger* ledger;
  std::string object;        // the object being visited
  std::exception_ptr error;  // thrown in a callback: HDF5 only sees the iteration stop
};

// One attribute, by its stored type, with every size checked before it is used.
void read_one(hid_t attr, Visit& v, const std::string& name) {
  const std::string where = v.object + "@" + name;
  const Handle type{H5_USER_CHECK(H5Aget_type(attr), *v.path, "cannot read the type of ", where),
                    H5Tclose};
  const Handle space{H5_USER_CHECK(H5Aget_space(attr), *v.path, "cannot read ", where),
                     H5Sclose};
  MOE_USER_CHECK(H5Sget_simple_extent_npoints(space.id) == 1, *v.path, ": attribute ", where,
                 " is not a single value");
  const H5T_class_t cls = H5Tget_class(type.id);
  if (cls == H5T_INTEGER) {
    const bool is_signed = H5Tget_sign(type.id) != H5T_SGN_NONE;
    uint64_t bits = 0;
    H5_USER_CHECK(H5Aread(attr, is_signed ? H5T_NATIVE_INT64 : H5T_NATIVE_UINT64, &bits),
                  *v.path, "cannot read attribute ", where);
    v.ledger->add(v.object, name, is_signed ? 'i' : 'u', bytes_of(bits));
  } else if (cls == H5T_FLOAT) {
    double value = 0;
    H5_USER_CHECK(H5Aread(attr, H5T_NATIVE_DOUBLE, &value), *v.path, "cannot read attribute ",
                  where);
    v.ledger->add_float(v.object, name, value);
  } else if (cls == H5T_STRING) {
    MOE_USER_CHECK(H5Tis_variable_str(type.id) == 0, *v.path, ": attribute ", where,
                   " is a variable-length string; this format stores fixed-length ones");
    const size_t size = H5Tget_size(type.id);
    MOE_USER_CHECK(size > 0 && size <= kMaxStringAttributeBytes, *v.path, ": attribute ", where,
                   " claims ", size, " bytes: the file is damaged");
    const Handle mem{H5_USER_CHECK(H5Tcopy(type.id), *v.path, "cannot read ", where), H5Tclose};
    std::string text(size, '\0');
    H5_USER_CHECK(H5Aread(attr, mem.id, text.data()), *v.path, "cannot read attribute ", where);
    text.resize(std::strlen(text.c_str()));  // null-padded
    v.ledger->add(v.object, name, 's', text);
  } else {
    MOE_USER_FAIL(*v.path, ": attribute ", where, " has an unexpected type");
  }
}

herr_t on_attribute(hid_t object, const char* name, const H5A_info_t*, void* data) {
  Visit& v = *static_cast<Visit*>(data);
  if (v.object == "/" && std::strcmp(name, kAttributesChecksum) == 0) return 0;
  try {
    const Handle attr{H5_USER_CHECK(H5Aopen(object, name, H5P_DEFAULT), *v.path,
                                    "cannot open attribute ", v.object, "@", name),
                      H5Aclose};
    read_one(attr.id, v, name);
    return 0;
  } catch (...) {
    v.error = std::current_exception();
    return -1;
  }
}

herr_t on_object(hid_t root, const char* name, const H5O_info_t* info, void* data) {
  Visit& v = *static_cast<Visit*>(data);
  v.object.assign(1, '/');
  if (std::strcmp(name, ".") != 0) v.object.append(name);
  if (info->num_attrs == 0) return 0;
  hid_t object = -1;
  H5E_BEGIN_TRY { object = H5Oopen(root, name, H5P_DEFAULT); }
  H5E_END_TRY;
  if (object < 0) return -1;
  hsize_t index = 0;
  herr_t rc = -1;
  H5E_BEGIN_TRY { rc = H5Aiterate2(object, H5_INDEX_NAME, H5_ITER_INC, &index, on_attribute, &v); }
  H5E_END_TRY;
  H5Oclose(object);
  return rc < 0 ? -1 : 0;
}

}  // namespace

void AttributeLedger::add(const std::string& object, const std::string& name, char type,
                          std::string value) {
  records_[{object, name}] = {type, std::move(value)};
}

void AttributeLedger::add_int(const std::string& object, const std::string& name,
                              int64_t value) {
  add(object, name, 'i', bytes_of(value));
}

void AttributeLedger::add_uint(const std::string& object, const std::string& name,
                               uint64_t value) {
  add(object, name, 'u', bytes_of(value));
}

void AttributeLedger::add_float(const std::string& object, const std::string& name,
                                double value) {
  add(object, name, 'f', bytes_of(value));
}

uint64_t AttributeLedger::checksum() const {
  uint64_t h = 0xCBF29CE484222325ULL;  // FNV-1a 64 offset basis
  auto eat = [&h](const std::string& bytes) {
    for (unsigned char c : bytes) {
      h ^= c;
      h *= 0x100000001B3ULL;  // FNV-1a 64 prime
    }
  };
  for (const auto& [key, value] : records_) {
    std::string record;
    append_u64(record, key.first.size());
    record += key.first;
    append_u64(record, key.second.size());
    record += key.second;
    record.push_back(value.first);
    append_u64(record, value.second.size());
    record += value.second;
    eat(record);
  }
  return h;
}

AttributeLedger read_attributes(hid_t file, const std::string& path) {
  AttributeLedger ledger;
  Visit visit{file, &path, &ledger, "", nullptr};
  herr_t rc = -1;
  H5E_BEGIN_TRY { rc = H5Ovisit2(file, H5_INDEX_NAME, H5_ITER_INC, on_object, &visit, H5O_INFO_NUM_ATTRS); }
  H5E_END_TRY;
  if (visit.error) std::rethrow_exception(visit.error);
  MOE_USER_CHECK(rc >= 0, path, ": cannot read the attributes of ",
                 visit.object.empty() ? "/" : visit.object, ": the file is damaged");
  return ledger;
}

}  // namespace moe
