#include "framework/train/metrics.h"

#include <cstdio>
#include <filesystem>

#include "framework/core/error.h"

namespace moe {

MetricsWriter::MetricsWriter(const std::string& path) : out_(path, std::ios::trunc), path_(path) {
  MOE_USER_CHECK(out_.is_open(), "run.dir: cannot open ", path, " for writing");
}

MetricsWriter MetricsWriter::resume(const std::string& path, int64_t step) {
  const std::string tmp = path + ".tmp";
  {
    std::ifstream in(path);  // absent: nothing to keep
    std::ofstream out(tmp, std::ios::trunc);
    MOE_CHECK(out.is_open(), "cannot open ", tmp, " for writing");
    std::string line;
    while (std::getline(in, line)) {
      const nlohmann::json record = nlohmann::json::parse(line, nullptr, false);
      if (record.is_discarded() || !record.contains("step")) continue;  // a torn last line
      if (record["step"].get<int64_t>() <= step) out << line << "\n";
    }
    MOE_CHECK(out.good(), "write to ", tmp, " failed");
  }
  MOE_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename ", tmp, " to ", path);
  MetricsWriter writer;
  writer.out_.open(path, std::ios::app);
  writer.path_ = path;
  MOE_CHECK(writer.out_.is_open(), "cannot open ", path, " for appending");
  return writer;
}

void MetricsWriter::write(const nlohmann::json& record) {
  out_ << record.dump() << "\n";
  out_.flush();
  MOE_USER_CHECK(out_.good(), "run.dir: cannot write ", path_, " (is the disk full?)");
}

}  // namespace moe
