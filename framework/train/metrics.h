#pragma once
// Metrics of a run: one JSON object per logged step in <run.dir>/metrics.jsonl
// (docs/metrics.md lists the fields), written by rank 0 and flushed per line so a
// killed run keeps everything it logged.

#include <cstdint>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace moe {

class MetricsWriter {
 public:
  MetricsWriter() = default;
  explicit MetricsWriter(const std::string& path);  // truncates
  // Continues the metrics of a run resumed after `step` steps: keeps the records whose
  // "step" is at most `step` (rewriting the file through a temporary name) and appends.
  static MetricsWriter resume(const std::string& path, int64_t step);
  bool is_open() const { return out_.is_open(); }
  void write(const nlohmann::json& record);

 private:
  std::ofstream out_;
  std::string path_;
};

}  // namespace moe
