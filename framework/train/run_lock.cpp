#include "framework/train/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "framework/checkpoint/checkpoint.h"
#include "framework/checkpoint/checkpoint_dir.h"
#include "framework/checkpoint/h5_file.h"
#include "framework/core/error.h"

namespace moe {
namespace fs = std::filesystem;

namespace {

constexpr const char* kLockFile = ".lock";
constexpr const char* kOwnerFile = "OWNER";

fs::path canonical_path(const std::string& dir) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(fs::absolute(dir), ec);
  if (ec) p = fs::absolute(dir).lexically_normal();
  return p.has_filename() ? p : p.parent_path();  // no trailing separator
}

// True when `inner` is `outer` or lies below it.
bool is_within(const fs::path& inner, const fs::path& outer) {
  auto i = inner.begin();
  for (auto o = outer.begin(); o != outer.end(); ++o, ++i)
    if (i == inner.end() || *i != *o) return false;
  return true;
}

// An explicit checkpoint.dir outside run.dir: it gets its own lock and OWNER record.
bool separate_checkpoint_dir(const Config& c) {
  return !c.checkpoint.dir.empty() &&
         !is_within(canonical_path(c.checkpoint.dir), canonical_path(c.run.dir));
}

// What a finished or interrupted run leaves: "metrics.jsonl", "checkpoints/latest", ...
std::vector<std::string> artefacts(const Config& c) {
  std::vector<std::string> found;
  std::error_code ec;
  const fs::path run(c.run.dir);
  for (const char* name : {"metrics.jsonl", "model.h5"})
    if (fs::exists(run / name, ec)) found.push_back((run / name).string());
  const CheckpointDir ckpt(checkpoint_dir_of(c));
  if (fs::exists(fs::path(ckpt.dir()) / "latest", ec))
    found.push_back((fs::path(ckpt.dir()) / "latest").string());
  const std::vector<int64_t> steps = ckpt.steps();
  if (!steps.empty()) found.push_back(ckpt.path_for(steps.back()));
  return found;
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

// The run.dir an explicit checkpoint.dir belongs to ("" when it has no OWNER record).
std::string owner_of(const std::string& checkpoint_dir) {
  std::ifstream in(fs::path(checkpoint_dir) / kOwnerFile);
  std::string line;
  std::getline(in, line);
  const std::string prefix = "run.dir = ";
  return line.starts_with(prefix) ? line.substr(prefix.size()) : "";
}

void check_owner(const Config& c) {
  if (!separate_checkpoint_dir(c)) return;
  const std::string owner = owner_of(c.checkpoint.dir);
  const std::string mine = canonical_path(c.run.dir).string();
  MOE_USER_CHECK(owner.empty() || owner == mine, "checkpoint.dir: '", c.checkpoint.dir,
                 "' holds the checkpoints of the run in '", owner, "' (its ", kOwnerFile,
                 " file), not of run.dir '", mine, "'; choose another checkpoint.dir");
}

// The newest checkpoint file of `dir` that opens as a complete checkpoint, if any.
std::optional<std::string> newest_complete(const CheckpointDir& dir) {
  const std::vector<int64_t> steps = dir.steps();
  for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
    try {
      H5File file = H5File::open(dir.path_for(*it));
      if (check_format(file) == kCheckpointFormat && read_trainer_state(file).step == *it)
        return dir.path_for(*it);
    } catch (const Error&) {
      // damaged: try the next older one
    }
  }
  return std::nullopt;
}

// run.resume = auto must not start over a run whose pointer is lost.
void check_resume_pointer(const Config& c) {
  if (!c.run.resume.automatic()) return;
  const CheckpointDir dir(checkpoint_dir_of(c));
  if (dir.steps().empty()) return;
  std::string problem;
  try {
    if (dir.latest()) return;
    problem = "has no 'latest' pointer";
  } catch (const Error& e) {
    problem = std::string("has an unusable 'latest' pointer (") + e.what() + ")";
  }
  const std::optional<std::string> newest = newest_complete(dir);
  MOE_USER_CHECK(!newest, "run.resume: auto: checkpoint directory '", dir.dir(), "' ", problem,
                 " but holds checkpoints; the newest complete one is ", newest.value_or(""),
                 ": pass --run.resume=", newest.value_or(""), " to continue from it");
  MOE_USER_FAIL("run.resume: auto: checkpoint directory '", dir.dir(), "' ", problem,
                " and none of its checkpoint files is complete; pass --run.resume=PATH or "
                "start over with --run.overwrite=true");
}

// mkdir -p; returns whether it made the directory.
bool make_dir(const std::string& dir, const char* key) {
  std::error_code ec;
  if (fs::is_directory(dir, ec)) return false;
  fs::create_directories(dir, ec);
  MOE_USER_CHECK(!ec, key, ": cannot create '", dir, "': ", ec.message());
  return true;
}

}  // namespace

std::unique_ptr<RunLock> RunLock::acquire(const Config& c) {
  check_owner(c);
  if (c.run.resume.fresh() && !c.run.overwrite) {
    const std::vector<std::string> found = artefacts(c);
    MOE_USER_CHECK(found.empty(), "run.dir: '", c.run.dir, "' already holds a run (",
                   joined(found), "); choose another run.dir, continue it with "
                   "--run.resume=auto or start over with --run.overwrite=true");
  }
  check_resume_pointer(c);
  std::unique_ptr<RunLock> lock(new RunLock);
  lock->lock(c.run.dir, "run.dir");
  const std::string checkpoints = checkpoint_dir_of(c);
  if (separate_checkpoint_dir(c)) {
    lock->lock(checkpoints, "checkpoint.dir");
    if (owner_of(checkpoints).empty()) {
      std::ofstream owner(fs::path(checkpoints) / kOwnerFile, std::ios::trunc);
      owner << "run.dir = " << canonical_path(c.run.dir).string() << "\n";
      MOE_USER_CHECK(owner.flush().good(), "checkpoint.dir: cannot write '",
                     (fs::path(checkpoints) / kOwnerFile).string(), "'");
    }
  } else {
    lock->held_.push_back({checkpoints, make_dir(checkpoints, "checkpoint.dir"), false, -1});
  }
  return lock;
}

void RunLock::lock(const std::string& dir, const char* key) {
  held_.push_back({dir, make_dir(dir, key), false, -1});
  Held& held = held_.back();
  const std::string path = (fs::path(dir) / kLockFile).string();
  held.fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  held.created_lock_file = held.fd >= 0;
  if (held.fd < 0 && errno == EEXIST) held.fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  MOE_USER_CHECK(held.fd >= 0, key, ": cannot create the lock file '", path,
                 "': ", std::strerror(errno));
  if (::flock(held.fd, LOCK_EX | LOCK_NB) != 0) {
    // Another run's directory and lock file: this run removes neither.
    held.created = held.created_lock_file = false;
    std::string holder;
    std::ifstream in(path);
    std::getline(in, holder);
    MOE_USER_FAIL(key, ": '", dir, "' is in use by another run",
                  holder.empty() ? "" : " (" + holder + ")",
                  "; wait for it to end or choose another ", key);
  }
}

void RunLock::commit() {
  committed_ = true;
  // Who holds the locks, for the message of a refused run (the lock itself is what
  // counts). Only now: a run refused before it starts changes no file.
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  const std::string who = "pid " + std::to_string(::getpid()) + " on " + host + "\n";
  for (const Held& held : held_) {
    if (held.fd < 0) continue;
    [[maybe_unused]] const bool noted =
        ::ftruncate(held.fd, 0) == 0 &&
        ::pwrite(held.fd, who.data(), who.size(), 0) == static_cast<ssize_t>(who.size());
  }
}

void discard_previous_run(const Config& c) {
  std::error_code ec;
  for (const char* name : {"metrics.jsonl", "model.h5"})
    fs::remove(fs::path(c.run.dir) / name, ec);
  const CheckpointDir dir(checkpoint_dir_of(c));
  fs::remove(fs::path(dir.dir()) / "latest", ec);
  for (int64_t step : dir.steps()) fs::remove(dir.path_for(step), ec);
}

RunLock::~RunLock() {
  std::error_code ec;
  for (auto it = held_.rbegin(); it != held_.rend(); ++it) {
    if (!committed_ && it->created_lock_file) fs::remove(fs::path(it->dir) / kLockFile, ec);
    if (!committed_ && it->created) {
      fs::remove(fs::path(it->dir) / kOwnerFile, ec);
      fs::remove(it->dir, ec);  // only when empty
    }
    if (it->fd >= 0) ::close(it->fd);
  }
}

}  // namespace moe
