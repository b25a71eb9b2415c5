#pragma once
// The option table behind framework/config/config.h (internal to framework/config).
//
// Every key is declared exactly once, in options.cpp, as `section.key` bound to a field
// of Config by member pointers. Its default is read from a default-constructed Config,
// so the structs in config.h are the only place defaults are written.

#include <functional>
#include <string>
#include <vector>

#include "framework/config/config.h"

namespace moe::config_detail {

struct OptionDef {
  std::string key;   // "section.key"
  std::string type;  // "int", "int64", "uint64", "float", "double", "bool", "string"
  std::string help;  // one line: meaning and validation rule
  // Parses `text` into the bound field of `config`; a bad value throws a user error
  // "<key>: '<text>' is not <type>" followed by `where` (" (in FILE)", ...).
  std::function<void(Config& config, const std::string& text, const std::string& where)>
      parse;
  // The bound field of `config` as text that `parse` reads back to the same value.
  std::function<std::string(const Config& config)> format;

  std::string section() const { return key.substr(0, key.find('.')); }
  std::string name() const { return key.substr(key.find('.') + 1); }
};

// All options, grouped by section in the order config.ini lists them.
const std::vector<OptionDef>& option_table();

// Range and consistency checks on a fully parsed config; the first violation throws a
// user error naming the key(s). Files named by data.* must exist.
void validate_config(const Config& config);

}  // namespace moe::config_detail
