#pragma once
// Everything `moe-ckpt verify` checks, shared with the tests that fuzz it: every field
// and checksum of the file (framework/checkpoint/inspect.h), then its tensors and router
// biases against the model its own config describes, built without the config's data
// (the paths it names may not exist here). The first problem is a user error naming
// the file and the field.

#include <cstdint>

#include "framework/checkpoint/h5_file.h"
#include "framework/checkpoint/inspect.h"

namespace moe {

struct VerifiedCheckpoint {
  CheckpointSummary summary;
  int64_t tensors = 0;  // checked against their checksums
};

VerifiedCheckpoint verify_against_model(const H5File& file);

}  // namespace moe
