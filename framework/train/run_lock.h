#pragma once
// RunLock: the directories a run owns for its whole life, taken by rank 0 after the
// config and data have been validated and before anything is read from or written to
// them (docs/failure-behaviour.md).
//
//   lock       flock(LOCK_EX | LOCK_NB) on <run.dir>/.lock and, when checkpoint.dir
//              lies outside run.dir, on <checkpoint.dir>/.lock, held until the process
//              ends (the kernel drops the lock of a dead process: a crash leaves no
//              stale lock). A second run on either directory is refused.
//   owner      an explicit checkpoint.dir records the run.dir of the run that writes
//              there (<checkpoint.dir>/OWNER); a run with another run.dir is refused.
//   artefacts  a run.dir whose run left metrics.jsonl, model.h5 or checkpoints is
//              refused unless run.resume or run.overwrite says what to do with them.
//   resume     run.resume = auto in a checkpoint.dir with checkpoint files but no
//              readable `latest` is refused, naming the newest complete file to pass
//              as run.resume instead of silently starting over.
//
// Every refusal is a user error naming the directory and the way out. A run that fails
// before it starts (release without commit()) removes the directories and lock files
// acquire() created, so bad input leaves nothing behind.

#include <memory>
#include <string>
#include <vector>

#include "framework/config/config.h"

namespace moe {

class RunLock {
 public:
  // Rank 0: the checks above, then creates run.dir and the checkpoint directory and
  // takes their locks.
  static std::unique_ptr<RunLock> acquire(const Config& config);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

  // The run has started writing: its directories stay whatever happens next, and the
  // lock files name this process for the message of a refused run.
  void commit();

 private:
  RunLock() = default;
  struct Held {
    std::string dir;
    bool created = false;            // acquire() made the directory
    bool created_lock_file = false;  // and the lock file in it
    int fd = -1;                     // the open, locked <dir>/.lock
  };
  void lock(const std::string& dir, const char* key);

  std::vector<Held> held_;  // run.dir first
  bool committed_ = false;
};

// run.overwrite: removes what the previous run of run.dir left (metrics.jsonl,
// model.h5, its checkpoints and `latest`), so that nothing of it can be mistaken for
// this run's. Rank 0, with the lock held.
void discard_previous_run(const Config& config);

}  // namespace moe
