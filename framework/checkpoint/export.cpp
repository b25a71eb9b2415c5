#include "framework/checkpoint/export.h"

#include <filesystem>
#include <map>

#include "framework/checkpoint/checksum.h"
#include "framework/checkpoint/inspect.h"
#include "framework/checkpoint/safetensors.h"

namespace moe {
namespace {

struct Source {
  std::string dataset;  // in the source file
  std::string name;     // exported name
  Shape shape;
  std::string shard;
};

std::vector<Source> sources(const CheckpointSummary& s) {
  std::vector<Source> out;
  for (const TensorEntry& e : s.params) out.push_back({"/model/" + e.name, e.name, e.shape, e.shard});
  for (const TensorEntry& e : s.buffers)
    out.push_back({"/buffers/" + e.name, e.name, e.shape, ""});
  return out;
}

// Reads a tensor and checks its checksum.
const float* load(const H5File& file, const Source& src, Buffer& scratch, uint64_t* sum) {
  return read_checked(file, src.dataset, src.shape, scratch, sum);
}

std::map<std::string, std::string> metadata(const CheckpointSummary& s) {
  std::string buffers;
  for (const TensorEntry& e : s.buffers) buffers += (buffers.empty() ? "" : ",") + e.name;
  std::map<std::string, std::string> m = {
      {"format", kWeightsFormat},
      {"format_version", std::to_string(kCheckpointFormatVersion)},
      {"framework_version", s.framework_version},
      {"model_family", s.origin.family},
      {"config", s.origin.config_ini},
      {"buffers", buffers}};
  if (s.trainer) m["step"] = std::to_string(s.trainer->step);
  return m;
}

ExportResult to_safetensors(const H5File& file, const CheckpointSummary& s,
                            const std::string& out) {
  const std::vector<Source> srcs = sources(s);
  std::vector<SafetensorsWriter::Entry> entries;
  for (const Source& src : srcs) entries.push_back({src.name, src.shape});
  SafetensorsWriter writer(out, entries, metadata(s));
  Buffer scratch;
  ExportResult result;
  for (const Source& src : srcs) {
    uint64_t sum = 0;
    writer.write_next(load(file, src, scratch, &sum));
    result.bytes += src.shape.numel() * static_cast<int64_t>(sizeof(float));
    ++result.tensors;
  }
  writer.close();
  return result;
}

ExportResult to_hdf5(const H5File& file, const CheckpointSummary& s, const std::string& out) {
  H5File dest = H5File::create(out);
  write_origin(dest, s.origin, kWeightsFormat);
  Buffer scratch;
  ExportResult result;
  for (const Source& src : sources(s)) {
    uint64_t sum = 0;
    const float* data = load(file, src, scratch, &sum);
    dest.create_float_dataset(src.dataset, src.shape);
    dest.write_block(src.dataset, data, src.shape, {});
    dest.set_uint_attr(src.dataset, "checksum", sum);
    if (!src.shard.empty()) dest.set_string_attr(src.dataset, "shard", src.shard);
    result.bytes += src.shape.numel() * static_cast<int64_t>(sizeof(float));
    ++result.tensors;
  }
  dest.close();
  return result;
}

}  // namespace

const float* read_checked(const H5File& file, const std::string& dataset, const Shape& shape,
                          Buffer& scratch, uint64_t* checksum) {
  float* data = scratch.view(shape.numel() > 0 ? shape : Shape{1}).data;
  file.read_block(dataset, data, shape, {});
  const uint64_t sum = block_checksum(data, shape, shape, {});
  MOE_USER_CHECK(file.has_attr(dataset, "checksum") && file.uint_attr(dataset, "checksum") == sum,
                 file.path(), ": dataset ", dataset, " fails its checksum: the file is corrupted");
  if (checksum) *checksum = sum;
  return data;
}

ExportFormat export_format(const std::string& name, const std::string& out) {
  if (name == "safetensors") return ExportFormat::kSafetensors;
  if (name == "h5" || name == "hdf5") return ExportFormat::kHdf5;
  if (name == "hf") return ExportFormat::kHuggingFace;
  MOE_USER_CHECK(name.empty(), "--format: '", name,
                 "' is not an export format (safetensors, h5, hf)");
  const std::string ext = std::filesystem::path(out).extension().string();
  if (ext == ".safetensors") return ExportFormat::kSafetensors;
  if (ext == ".h5" || ext == ".hdf5") return ExportFormat::kHdf5;
  MOE_USER_FAIL("--out: '", out, "' ends neither in .safetensors nor in .h5; give --format");
}

void require_new_output(const std::string& out) {
  std::error_code ec;
  MOE_USER_CHECK(!std::filesystem::exists(out, ec), "--out: '", out,
                 "' exists; not overwriting it");
}

ExportResult export_weights(const H5File& source, const std::string& out, ExportFormat format) {
  MOE_CHECK(format != ExportFormat::kHuggingFace,
            "export_weights: a Hugging Face export is the model family's (models/registry.h)");
  require_new_output(out);
  const CheckpointSummary s = summarize_checkpoint(source);
  return format == ExportFormat::kSafetensors ? to_safetensors(source, s, out)
                                              : to_hdf5(source, s, out);
}

}  // namespace moe
