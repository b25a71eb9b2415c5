#include "models/registry.h"

#include <map>

#include "framework/core/error.h"

namespace moe {
namespace {

// Filled during static initialisation by the families' registrations, read-only after.
std::map<std::string, ModelFamily>& registry() {
  static std::map<std::string, ModelFamily> families;
  return families;
}

}  // namespace

FamilyRegistration::FamilyRegistration(ModelFamily family) {
  MOE_CHECK(family.make_network && family.make_model, "model family '", family.traits.name,
            "' registered without its builders");
  register_family_traits(family.traits);
  const std::string name = family.traits.name;
  registry().emplace(name, std::move(family));
}

const ModelFamily& model_family(const std::string& name) {
  family_traits(name);  // the user error for an unknown name
  return registry().at(name);
}

std::string families_that(const std::function<bool(const ModelFamily&)>& has) {
  std::string names;
  for (const auto& [name, family] : registry())
    if (has(family)) names += (names.empty() ? "" : ", ") + name;
  return names.empty() ? "none" : names;
}

}  // namespace moe
