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
//
// docs/checkpoint-format.md maps the names onto PyTorch modules. Every tensor's
// checksum is checked on the way; nothing is overwritten.

#include <cstdint>
#include <string>

#include "framework/checkpoint/h5_file.h"

namespace moe {

enum class ExportFormat { kSafetensors, kHdf5 };

// "safetensors" or "h5"/"hdf5"; "" picks by the extension of `out` (.safetensors, .h5).
ExportFormat export_format(const std::string& name, const std::string& out);

struct ExportResult {
  int64_t tensors = 0;
  int64_t bytes = 0;  // tensor data written
};

ExportResult export_weights(const H5File& source, const std::string& out, ExportFormat format);

}  // namespace moe
