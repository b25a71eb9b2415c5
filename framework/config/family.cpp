#include "framework/config/family.h"

#include <algorithm>
#include <map>

#include "framework/core/error.h"

namespace moe {
namespace {

// Filled once, during static initialisation, by the families' registrations; read-only
// afterwards.
std::map<std::string, FamilyTraits>& registry() {
  static std::map<std::string, FamilyTraits> families;
  return families;
}

}  // namespace

void register_family_traits(FamilyTraits traits) {
  const std::string name = traits.name;
  MOE_CHECK(!name.empty() && traits.validate && traits.tokens_per_sample,
            "model family '", name, "' registered without its name or hooks");
  MOE_CHECK(registry().emplace(name, std::move(traits)).second, "model family '", name,
            "' registered twice");
}

const FamilyTraits& family_traits(const std::string& name) {
  const auto it = registry().find(name);
  if (it != registry().end()) return it->second;
  std::string known;
  for (const std::string& n : family_names()) known += (known.empty() ? "" : ", ") + n;
  MOE_USER_FAIL("model.family: '", name, "' is not a model family (known: ", known, ")");
}

std::vector<std::string> family_names() {
  std::vector<std::string> names;
  for (const auto& [name, traits] : registry()) names.push_back(name);
  return names;
}

}  // namespace moe
