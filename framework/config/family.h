#pragma once
// What the configuration needs to know of a model family. The families live in
// models/<family>/ and register themselves there (models/registry.h), which also fills
// this table; framework/config, train and cli name no family and ask it instead.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "framework/config/config.h"

namespace moe {

struct FamilyTraits {
  std::string name;     // the value of model.family
  std::string summary;  // one line for --help
  // Checks of the options only this family reads, run by load_config after the generic
  // ones; a violation is a user error naming the key.
  std::function<void(const Config&)> validate;
  // Sequence positions one sample puts through the transformer (T, or patches + CLS).
  std::function<int64_t(const ModelConfig&)> tokens_per_sample;
  // What one sample is, plural, for messages: "sequences", "images".
  std::string samples = "samples";
  // Sequence parallelism keeps whole samples per tp rank (the DiT's conditioning is per
  // image); otherwise it splits each rank's rows of samples x tokens.
  bool whole_samples_per_tp_rank = false;
};

// Adds a family (at static initialisation, through models/registry.h). A second family
// of the same name is an internal error.
void register_family_traits(FamilyTraits traits);
// The traits of model.family = name; an unknown name is a user error naming
// model.family and the registered families.
const FamilyTraits& family_traits(const std::string& name);
// The registered family names, sorted.
std::vector<std::string> family_names();

}  // namespace moe
