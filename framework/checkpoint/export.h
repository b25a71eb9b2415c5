#pragma once
// Exporting the weights of a checkpoint or weights file for downstream use (moe-ckpt
// export): every /model tensor and /buffers tensor, logical and float32, under its
// global name, to
//
//   safetensors  tensors named "<global name>" (parameters and buffers in one flat
//                namespace: buffers are listed in the metadata key "buffers"); the
//                metadata holds format, format_version, framework_version,
//                model_family, config (the resolved INI) and step (checkpoints)
//   hdf5         a weights file (format moe-weights, docs/checkpoint-format.md), which
//                run.init_from and moe-sample read
//   hf           a Hugging Face model directory: the model family's own export
//                (ModelFamily::export_hugging_face, models/registry.h; moe_gpt:
//                models/moe_gpt/hf_export.h)
//
// docs/checkpoint-format.md maps the names onto PyTorch modules. Every tensor's
// checksum is checked on the way; nothing is overwritten.

#include <cstdint>
#include <string>
#include <vector>

#include "framework/checkpoint/h5_file.h"

namespace moe {

enum class ExportFormat { kSafetensors, kHdf5, kHuggingFace };

// "safetensors", "h5"/"hdf5" or "hf"; "" picks by the extension of `out` (.safetensors,
// .h5).
ExportFormat export_format(const std::string& name, const std::string& out);

// Reads dataset `dataset` of `shape` whole into `scratch` and checks it against its
// checksum attribute (a mismatch is a user error naming the file and the dataset);
// *checksum (when given) receives the sum.
const float* read_checked(const H5File& file, const std::string& dataset, const Shape& shape,
                          Buffer& scratch, uint64_t* checksum = nullptr);

struct ExportResult {
  int64_t tensors = 0;
  int64_t bytes = 0;               // tensor data written
  std::vector<std::string> notes;  // what the user should know about the export
};

// safetensors or h5 (not hf, which the family writes).
ExportResult export_weights(const H5File& source, const std::string& out, ExportFormat format);

// An output path that does not exist yet (a user error naming --out otherwise): no
// export overwrites anything.
void require_new_output(const std::string& out);

}  // namespace moe
