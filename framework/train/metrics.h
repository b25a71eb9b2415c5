#pragma once
// Metrics of a run: one JSON object per logged step in <run.dir>/metrics.jsonl
// (docs/metrics.md lists the fields), written by rank 0 and flushed per line so a
// killed run keeps everything it logged.

#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace moe {

class MetricsWriter {
 public:
  MetricsWriter() = default;
  explicit MetricsWriter(const std::string& path);  // truncates
  bool is_open() const { return out_.is_open(); }
  void write(const nlohmann::json& record);

 private:
  std::ofstream out_;
  std::string path_;
};

}  // namespace moe
