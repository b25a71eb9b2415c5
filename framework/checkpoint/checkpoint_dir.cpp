#include "framework/checkpoint/checkpoint_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "framework/core/error.h"

namespace moe {
namespace fs = std::filesystem;

namespace {
constexpr const char* kLatest = "latest";

void sync_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}
}  // namespace

std::string checkpoint_dir_of(const Config& c) {
  return c.checkpoint.dir.empty() ? (fs::path(c.run.dir) / "checkpoints").string()
                                  : c.checkpoint.dir;
}

std::string CheckpointDir::file_name(int64_t step) {
  std::ostringstream name;
  name << "step_" << std::setw(8) << std::setfill('0') << step << ".h5";
  return name.str();
}

std::string CheckpointDir::path_for(int64_t step) const {
  return (fs::path(dir_) / file_name(step)).string();
}

std::optional<int64_t> CheckpointDir::step_of(const std::string& name) {
  const std::string prefix = "step_", suffix = ".h5";
  if (name.size() <= prefix.size() + suffix.size() || !name.starts_with(prefix) ||
      !name.ends_with(suffix))
    return std::nullopt;
  const std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return std::stoll(digits);
}

std::optional<std::string> CheckpointDir::latest() const {
  const fs::path pointer = fs::path(dir_) / kLatest;
  std::error_code ec;
  if (!fs::exists(pointer, ec)) return std::nullopt;
  std::ifstream in(pointer);
  std::string name;
  std::getline(in, name);
  MOE_USER_CHECK(step_of(name).has_value(), pointer.string(), ": '", name,
                 "' is not a checkpoint file name");
  const fs::path file = fs::path(dir_) / name;
  MOE_USER_CHECK(fs::is_regular_file(file, ec), pointer.string(), ": names ", name,
                 ", which does not exist");
  return file.string();
}

std::vector<int64_t> CheckpointDir::steps() const {
  std::vector<int64_t> steps;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir_, ec))
    if (const auto step = step_of(e.path().filename().string())) steps.push_back(*step);
  std::sort(steps.begin(), steps.end());
  return steps;
}

void CheckpointDir::create() const {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  MOE_USER_CHECK(!ec, "checkpoint.dir: cannot create '", dir_, "': ", ec.message());
}

void CheckpointDir::publish(int64_t step) const {
  const fs::path pointer = fs::path(dir_) / kLatest;
  const std::string tmp = pointer.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << file_name(step) << "\n";
    out.flush();
    MOE_USER_CHECK(out.good(), tmp, ": cannot write the latest-checkpoint pointer");
  }
  sync_file(tmp);
  MOE_USER_CHECK(std::rename(tmp.c_str(), pointer.c_str()) == 0, pointer.string(),
                 ": cannot rename ", tmp, " to it: ", std::strerror(errno));
  sync_file(dir_);
}

void CheckpointDir::retain(int keep, int64_t step) const {
  std::error_code ec;  // a file that cannot be removed stays; the next save tries again
  std::vector<int64_t> kept;
  for (int64_t s : steps()) {
    if (s <= step) kept.push_back(s);
    else fs::remove(path_for(s), ec);
  }
  // kept is ascending: all but the last `keep` go
  for (size_t i = 0; i + static_cast<size_t>(keep) < kept.size(); ++i)
    if (kept[i] != step) fs::remove(path_for(kept[i]), ec);
  for (const fs::directory_entry& e : fs::directory_iterator(dir_, ec)) {
    const std::string name = e.path().filename().string();
    if (name.ends_with(".tmp")) fs::remove(e.path(), ec);
  }
}

}  // namespace moe
