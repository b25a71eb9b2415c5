#include "framework/train/tensorboard.h"

#include <filesystem>

#include "framework/core/error.h"
#include "framework/data/png.h"
#include "framework/train/tensorboard_event.pb.h"

namespace moe {
namespace {

bool is_eval_metric(const std::string& key) {
  return key.starts_with("val_") || key.starts_with("test_");
}

bool all_numbers(const nlohmann::json& array) {
  for (const nlohmann::json& v : array)
    if (!v.is_number()) return false;
  return true;
}

// Summaries of `value` under `tag` (nested objects and arrays recurse).
void collect(const std::string& tag, const nlohmann::json& value, RecordSummaries& out) {
  if (value.is_number()) {
    out.scalars.push_back({tag, value.get<double>()});
  } else if (value.is_object()) {
    for (const auto& [key, child] : value.items()) collect(tag + "/" + key, child, out);
  } else if (value.is_array() && all_numbers(value)) {
    out.histograms.push_back({tag, value.get<std::vector<double>>()});
  } else if (value.is_array()) {
    for (size_t i = 0; i < value.size(); ++i) {
      const nlohmann::json& item = value[i];
      const bool layered = item.is_object() && item.contains("layer") && item["layer"].is_number();
      const std::string prefix =
          tag + "/" + (layered ? "layer_" + std::to_string(item["layer"].get<int64_t>())
                               : std::to_string(i));
      if (!item.is_object()) {
        collect(prefix, item, out);
        continue;
      }
      for (const auto& [key, child] : item.items())
        if (!(layered && key == "layer")) collect(prefix + "/" + key, child, out);
    }
  }
}

// Bins [i - 0.5, i + 0.5] with counts[i] in bin i (HistogramProto's bins are
// (limit[i-1], limit[i]], the first one starting at min).
void fill_histogram(const std::vector<double>& counts, tensorboard::HistogramProto& h) {
  double num = 0, sum = 0, sum_squares = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const double x = static_cast<double>(i);
    num += counts[i];
    sum += x * counts[i];
    sum_squares += x * x * counts[i];
    h.add_bucket_limit(x + 0.5);
    h.add_bucket(counts[i]);
  }
  h.set_min(-0.5);
  h.set_max(static_cast<double>(counts.size()) - 0.5);
  h.set_num(num);
  h.set_sum(sum);
  h.set_sum_squares(sum_squares);
}

}  // namespace

RecordSummaries summarize_record(const nlohmann::json& record) {
  MOE_CHECK(record.is_object() && record.contains("step"), "a metrics record without a step");
  RecordSummaries out;
  out.step = record["step"].get<int64_t>();
  for (const auto& [key, value] : record.items()) {
    if (key == "step") continue;
    if (value.is_number())
      out.scalars.push_back({(is_eval_metric(key) ? "eval/" : "train/") + key,
                             value.get<double>()});
    else
      collect(key, value, out);
  }
  return out;
}

namespace {

// `dir` after removing its events files: the member initialiser of a fresh run's writer.
const std::string& without_event_files(const std::string& dir) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec))
    if (entry.path().filename().string().starts_with("events.out.tfevents."))
      std::filesystem::remove(entry.path(), ec);
  return dir;
}

}  // namespace

TensorBoardWriter::TensorBoardWriter(const std::string& dir, int64_t resumed_after)
    : file_(resumed_after > 0 ? dir : without_event_files(dir)) {
  if (resumed_after <= 0) return;
  tensorboard::Event event;
  event.set_wall_time(wall_time_now());
  event.set_step(resumed_after + 1);
  event.mutable_session_log()->set_status(tensorboard::SessionLog::START);
  file_.write(event);
}

void TensorBoardWriter::write(const nlohmann::json& record) {
  const RecordSummaries s = summarize_record(record);
  tensorboard::Event event;
  event.set_wall_time(wall_time_now());
  event.set_step(s.step);
  tensorboard::Summary* summary = event.mutable_summary();
  for (const ScalarSummary& scalar : s.scalars) {
    tensorboard::Summary::Value* v = summary->add_value();
    v->set_tag(scalar.tag);
    v->set_simple_value(static_cast<float>(scalar.value));
  }
  for (const IndexHistogram& histogram : s.histograms) {
    tensorboard::Summary::Value* v = summary->add_value();
    v->set_tag(histogram.tag);
    fill_histogram(histogram.counts, *v->mutable_histo());
  }
  file_.write(event);
}

void TensorBoardWriter::write_image(int64_t step, const std::string& tag, int64_t width,
                                    int64_t height, const std::vector<uint8_t>& pixels) {
  tensorboard::Event event;
  event.set_wall_time(wall_time_now());
  event.set_step(step);
  tensorboard::Summary::Value* v = event.mutable_summary()->add_value();
  v->set_tag(tag);
  tensorboard::Summary::Image* image = v->mutable_image();
  image->set_width(static_cast<int32_t>(width));
  image->set_height(static_cast<int32_t>(height));
  image->set_colorspace(1);  // grey
  const std::vector<uint8_t> png = encode_png_gray(width, height, pixels);
  image->set_encoded_image_string(std::string(png.begin(), png.end()));
  file_.write(event);
}

}  // namespace moe
