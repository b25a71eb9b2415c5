#pragma once
// Live TensorBoard output of a run (run.tensorboard): rank 0 turns every metrics record
// (docs/metrics.md) into summaries of one events file under <run.dir>/tb/
// (framework/train/event_file.h), flushed record by record, so `tensorboard --logdir
// <run.dir>/tb` follows the run as it trains.
//
// The record's "step" is the event step; its fields become tags (summarize_record):
//   number k at the top                 scalar  train/k, or eval/k for val_* and test_*
//   number in object k (nested)         scalar  k/<key>/<key>...   (time_ms/forward,
//                                               comm/ep/inter_node_bytes)
//   array of objects with a "layer"     the same under k/layer_<l>/ (experts/layer_1/dropped)
//   array of numbers c                  histogram over the index i with c[i] in bin i
//                                       (experts/layer_1/tokens: tokens per expert)
// Strings and booleans are left out. Scalars are float32 (TensorBoard's simple_value).
// A histogram's bins are [i - 0.5, i + 0.5], so TensorBoard draws one bar per index.
//
// Images (write_image) are 8-bit grey PNGs, e.g. dit_moe's sample grid at evaluations.
// A run resumed after step s starts its file with a SessionLog START at step s + 1:
// TensorBoard then drops what the interrupted run logged after its checkpoint, as
// metrics.jsonl does.

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/train/event_file.h"

namespace moe {

struct ScalarSummary {
  std::string tag;
  double value = 0.0;
};
struct IndexHistogram {
  std::string tag;
  std::vector<double> counts;  // [i] the count of index i
};
struct RecordSummaries {
  int64_t step = 0;
  std::vector<ScalarSummary> scalars;
  std::vector<IndexHistogram> histograms;
};

// The summaries of one metrics record, by the rules above.
RecordSummaries summarize_record(const nlohmann::json& record);

class TensorBoardWriter {
 public:
  // A new events file in `dir`. resumed_after > 0 marks a restart at resumed_after + 1;
  // 0 is a fresh run, which first removes the events files of an earlier run in `dir`
  // (run.overwrite), as metrics.jsonl is truncated.
  TensorBoardWriter(const std::string& dir, int64_t resumed_after);

  void write(const nlohmann::json& record);
  // (height, width) grey pixels, row-major.
  void write_image(int64_t step, const std::string& tag, int64_t width, int64_t height,
                   const std::vector<uint8_t>& pixels);
  const std::string& path() const { return file_.path(); }

 private:
  EventFileWriter file_;
};

}  // namespace moe
