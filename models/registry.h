#pragma once
// The model families. Each one lives in models/<family>/ and registers itself there,
// once, with a FamilyRegistration object:
//
//   const FamilyRegistration kMoeGpt({.traits = {...}, .make_network = ..., ...});
//
// which makes it known to the configuration (framework/config/family.h: its name, its
// own validation, tokens per sample) and to the programs (the builders below). The
// trainer, moe-ckpt and moe-sample look a family up by model.family and name none;
// adding a family touches models/<family>/, configs/ and docs/ only.
//
// The library is linked whole into every program (CMakeLists.txt), so each family's
// registration object is there even though nothing refers to it by name.

#include <functional>
#include <memory>
#include <string>

#include "framework/checkpoint/export.h"
#include "framework/checkpoint/inspect.h"
#include "framework/config/family.h"
#include "models/model.h"

namespace moe {

struct ModelFamily {
  FamilyTraits traits;
  // The network alone, its parameters registered in `store` (not initialised), no data
  // opened: what tools that load a checkpoint need (moe-ckpt, moe-sample).
  std::function<std::unique_ptr<Network>(const Config&, ParamStore&, const MoeRuntime&)>
      make_network;
  // The family for the trainer: network, data (opened and validated: bad files are user
  // errors), loss and evaluation.
  std::function<std::unique_ptr<Model>(const Config&, ParamStore&, const MoeRuntime&)>
      make_model;
  // What its networks can do besides training (dynamic_cast of make_network's result).
  bool classifies_images = false;  // ImageClassifier
  bool generates_images = false;   // ImageGenerator
  // A decoder over KV caches for text generation (moe-generate) of the model of a
  // config, weights not loaded; empty: the family does not generate text.
  std::function<std::unique_ptr<TokenDecoder>(const Config&)> make_decoder = {};
  // Writes a checkpoint or weights file of the family (summary: its summary) as a
  // Hugging Face model directory out_dir (moe-ckpt export --format hf); empty: the
  // family has no Hugging Face architecture.
  std::function<ExportResult(const H5File&, const CheckpointSummary&, const std::string&)>
      export_hugging_face = {};
};

// Registers a family at static initialisation.
class FamilyRegistration {
 public:
  explicit FamilyRegistration(ModelFamily family);
};

// The family of model.family = name (a user error naming the known ones otherwise).
const ModelFamily& model_family(const std::string& name);
// The names of the families that have a capability, for messages ("dit_moe").
std::string families_that(const std::function<bool(const ModelFamily&)>& has);

}  // namespace moe
