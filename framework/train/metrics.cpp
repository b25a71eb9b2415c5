#include "framework/train/metrics.h"

#include "framework/core/error.h"

namespace moe {

MetricsWriter::MetricsWriter(const std::string& path) : out_(path, std::ios::trunc), path_(path) {
  MOE_CHECK(out_.is_open(), "cannot open ", path, " for writing");
}

void MetricsWriter::write(const nlohmann::json& record) {
  out_ << record.dump() << "\n";
  out_.flush();
  MOE_CHECK(out_.good(), "write to ", path_, " failed");
}

}  // namespace moe
