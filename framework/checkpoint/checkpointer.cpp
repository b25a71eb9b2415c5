#include "framework/checkpoint/checkpointer.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>

#include "framework/core/timer.h"

namespace moe {
namespace fs = std::filesystem;

namespace {

std::map<std::string, std::string> ini_values(const std::string& ini) {
  std::map<std::string, std::string> values;
  std::istringstream in(ini);
  std::string line, section;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line.front() == '[' && line.back() == ']') {
      section = line.substr(1, line.size() - 2);
      continue;
    }
    const size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    auto trim = [](std::string s) {
      s.erase(0, s.find_first_not_of(' '));
      s.erase(s.find_last_not_of(' ') + 1);
      return s;
    };
    values[section + "." + trim(line.substr(0, eq))] = trim(line.substr(eq + 1));
  }
  return values;
}

std::string megabytes(double bytes) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(1) << bytes / 1e6 << " MB";
  return os.str();
}

}  // namespace

std::vector<std::string> config_differences(const std::string& before, const std::string& after) {
  const auto a = ini_values(before), b = ini_values(after);
  std::vector<std::string> out;
  for (const auto& [key, value] : b) {
    if (key.starts_with("run.") || key.starts_with("parallel.")) continue;
    const auto it = a.find(key);
    const std::string old = it == a.end() ? "(absent)" : it->second;
    if (old != value) out.push_back(key + ": " + old + " -> " + value);
  }
  return out;
}

Checkpointer::Checkpointer(const Config& config, Communicator& world, ParamStore& store,
                           AdamW& optimizer, std::vector<NamedBuffer> buffers,
                           const Logger& log)
    : config_(config), world_(world), store_(store),
      optimizer_(optimizer), buffers_(std::move(buffers)), log_(log), plan_(store, world),
      dir_(checkpoint_dir_of(config)) {
  if (const char* hook = std::getenv("MOE_TEST_CHECKPOINT_PAUSE"); hook && *hook) {
    const std::string text = hook;
    const size_t colon = text.find(':');
    pause_step_ = std::stoll(text.substr(0, colon));
    if (colon != std::string::npos) pause_seconds_ = std::stoi(text.substr(colon + 1));
  }
}

CheckpointOrigin Checkpointer::origin() const {
  return {config_.resolved_ini, config_.model.family, config_.parallel, world_.size()};
}

bool Checkpointer::due(int64_t completed, int64_t total) const {
  const int interval = config_.checkpoint.interval;
  return completed == total || (interval > 0 && completed % interval == 0);
}

std::optional<std::string> Checkpointer::resume_path() const {
  const ResumeFrom& resume = config_.run.resume;
  if (resume.fresh()) return std::nullopt;
  if (!resume.automatic()) {
    std::error_code ec;
    MOE_USER_CHECK(fs::is_regular_file(resume.path, ec), "run.resume: checkpoint '",
                   resume.path, "' does not exist");
    return resume.path;
  }
  const std::optional<std::string> latest = dir_.latest();
  if (!latest) log_.info("run.resume=auto: no checkpoint in ", dir_.dir(), ", starting fresh");
  return latest;
}

std::optional<TrainerState> Checkpointer::restore() {
  CheckpointContent content{&store_, &optimizer_, buffers_, nullptr};
  if (const std::optional<std::string> path = resume_path()) {
    TrainerState state;
    content.trainer = &state;
    Stopwatch clock;
    const CheckpointOrigin from = read_checkpoint(*path, content, ReadWhat::kEverything,
                                                  config_.model.family, plan_, world_);
    const double seconds = clock.seconds();
    std::error_code ec;
    const double bytes = static_cast<double>(fs::file_size(*path, ec));
    log_.info("resumed from ", *path, " at step ", state.step, " (written by dp ",
              from.layout.dp, " tp ", from.layout.tp, " ep ", from.layout.ep, " on ",
              from.world_size, " ranks; read ",
              megabytes(bytes), " in ", std::fixed, std::setprecision(3), seconds, " s, ",
              std::setprecision(1), bytes / 1e6 / std::max(seconds, 1e-9), " MB/s)");
    for (const std::string& d : config_differences(from.config_ini, config_.resolved_ini))
      log_.info("note: the config differs from the checkpoint's: ", d);
    if (!config_.run.init_from.empty())
      log_.info("run.init_from is ignored: the run resumes from a checkpoint");
    return state;
  }
  if (!config_.run.init_from.empty()) {
    const std::string& path = config_.run.init_from;
    std::error_code ec;
    MOE_USER_CHECK(fs::is_regular_file(path, ec), "run.init_from: checkpoint '", path,
                   "' does not exist");
    read_checkpoint(path, content, ReadWhat::kWeights, config_.model.family, plan_, world_);
    log_.info("initialised the weights from ", path, " (fresh optimizer and schedule)");
  }
  return std::nullopt;
}

void Checkpointer::pause_for_test(int64_t step) const {
  if (step != pause_step_) return;
  if (world_.rank() == 0)
    std::cerr << "moe-train: test hook: pausing " << pause_seconds_ << " s in the middle of "
              << dir_.path_for(step) << ".tmp (MOE_TEST_CHECKPOINT_PAUSE)" << std::endl;
  ::sleep(static_cast<unsigned>(pause_seconds_));
}

void Checkpointer::save(const TrainerState& state) {
  Stopwatch clock;
  if (world_.rank() == 0) dir_.create();
  world_.barrier();  // the directory exists before any rank opens the file
  TrainerState copy = state;
  CheckpointContent content{&store_, &optimizer_, buffers_, &copy};
  const std::string path = dir_.path_for(state.step);
  WriteOptions options;
  options.collective = config_.checkpoint.collective_io;
  options.mid_write = [&] { pause_for_test(state.step); };
  write_checkpoint(path, content, origin(), plan_, world_, options);
  if (world_.rank() != 0) return;
  dir_.publish(state.step);
  dir_.retain(config_.checkpoint.keep, state.step);
  const double seconds = clock.seconds();
  std::error_code ec;
  const double bytes = static_cast<double>(fs::file_size(path, ec));
  log_.info("checkpoint ", path, ": ", megabytes(bytes), " in ", std::fixed,
            std::setprecision(3), seconds, " s (", std::setprecision(1),
            bytes / 1e6 / std::max(seconds, 1e-9), " MB/s)");
}

void Checkpointer::save_weights(const std::string& path) {
  CheckpointContent content{&store_, nullptr, buffers_, nullptr};
  WriteOptions options;
  options.collective = config_.checkpoint.collective_io;
  write_checkpoint(path, content, origin(), plan_, world_, options);
}

}  // namespace moe
