// Reading the config: Boost.Program_options parses the command line and the INI file
// against the option table (options.cpp); precedence defaults < file < command line;
// then the typed fields are parsed, validated (validate.cpp) and the resolved INI text
// is produced.

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <memory>
#include <set>
#include <sstream>

#include <boost/program_options.hpp>

#include "framework/config/config.h"
#include "framework/config/family.h"
#include "framework/config/options.h"
#include "framework/core/error.h"

namespace moe {
namespace po = boost::program_options;
using config_detail::OptionDef;
using config_detail::option_table;

namespace {

constexpr const char* kCommandLine = "command line";

// Every section.key with its default (from a default-constructed Config) as a string;
// typed parsing happens afterwards so that errors can name key, value and source.
po::options_description key_options() {
  const Config defaults;
  po::options_description desc;
  for (const OptionDef& def : option_table())
    desc.add_options()(def.key.c_str(), po::value<std::string>()->default_value(
                                            def.format(defaults)), def.help.c_str());
  return desc;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// " (did you mean section.key?)" for the closest known key, or "" when none is close.
// A key without its section ("steps") matches the key's name part.
std::string suggestion(const std::string& unknown) {
  // No key is longer than this: a longer one is no typo of one (and the distance is
  // quadratic in the length).
  if (unknown.size() > 64) return "";
  const OptionDef* best = nullptr;
  size_t best_distance = std::max<size_t>(2, unknown.size() / 4) + 1;
  for (const OptionDef& def : option_table()) {
    const size_t d = std::min(edit_distance(unknown, def.key), edit_distance(unknown, def.name()));
    if (d < best_distance) {
      best_distance = d;
      best = &def;
    }
  }
  return best ? " (did you mean " + best->key + "?)" : "";
}

// "--train.step=3" -> "train.step"
std::string bare_option_name(std::string name) {
  name.erase(0, name.find_first_not_of('-'));
  return name.substr(0, name.find('='));
}

// Rethrows a Boost error as a one-line user error naming the key and where it came from.
[[noreturn]] void rethrow_boost_error(const po::error& e, const std::string& where) {
  const bool on_command_line = where == kCommandLine;
  const std::string in = on_command_line ? " on the command line" : " in " + where;
  if (const auto* unknown = dynamic_cast<const po::unknown_option*>(&e)) {
    const std::string name = bare_option_name(unknown->get_option_name());
    MOE_USER_FAIL("unknown ", on_command_line ? "option --" : "key ", name, in,
                  suggestion(name));
  }
  if (const auto* repeated = dynamic_cast<const po::multiple_occurrences*>(&e))
    MOE_USER_FAIL(bare_option_name(repeated->get_option_name()), ": given more than once",
                  in);
  MOE_USER_FAIL(on_command_line ? "command line: " : where + ": ", e.what());
}

// Command-line tokens Boost accepts: "--key=" (an empty value) becomes "--key" "".
std::vector<std::string> split_empty_values(const std::vector<std::string>& args) {
  std::vector<std::string> out;
  for (const std::string& a : args) {
    if (a.size() > 3 && a.starts_with("--") && a.back() == '=') {
      out.push_back(a.substr(0, a.size() - 1));
      out.emplace_back();
    } else {
      out.push_back(a);
    }
  }
  return out;
}

struct ParsedArgs {
  // `options` points into `description`, which therefore lives (and moves) with it.
  std::unique_ptr<po::options_description> description;
  po::parsed_options options{nullptr};
  std::string config_file;  // "" when --config is absent
};

ParsedArgs parse_command_line(const std::vector<std::string>& args) {
  ParsedArgs parsed;
  parsed.description = std::make_unique<po::options_description>(key_options());
  parsed.description->add_options()("config", po::value<std::string>(), "INI file")(
      "help", po::bool_switch(), "print the options and exit");
  namespace style = po::command_line_style;
  try {
    // Long options only, no prefix guessing: "--train.step" must not mean train.steps.
    parsed.options = po::command_line_parser(split_empty_values(args))
                         .options(*parsed.description)
                         .style(style::allow_long | style::long_allow_adjacent |
                                style::long_allow_next)
                         .run();
  } catch (const po::error& e) {
    rethrow_boost_error(e, kCommandLine);
  }
  // A key given twice takes its last value, so scripts can append overrides; two
  // config files are ambiguous and rejected.
  std::vector<po::option>& options = parsed.options.options;
  std::set<std::string> seen;
  for (auto it = options.rbegin(); it != options.rend(); ++it) {
    MOE_USER_CHECK(!it->string_key.empty(), "unexpected argument '",
                   it->original_tokens.empty() ? "" : it->original_tokens[0],
                   "' on the command line (expected --config FILE or --section.key=value)");
    if (seen.insert(it->string_key).second) continue;
    MOE_USER_CHECK(it->string_key != "config", "--config: given more than once");
    it->string_key.clear();  // overridden by a later occurrence; removed below
  }
  std::erase_if(options, [](const po::option& o) { return o.string_key.empty(); });
  for (const po::option& o : options)
    if (o.string_key == "config") parsed.config_file = o.value.at(0);
  return parsed;
}

// Reads every key: command line first so that its values win (Boost keeps the first
// non-default value stored), then the INI text named `ini_name` in messages.
Config build_config(const ParsedArgs& args, std::istream* ini, const std::string& ini_name) {
  po::variables_map vm;
  try {
    po::store(args.options, vm);
  } catch (const po::error& e) {
    rethrow_boost_error(e, kCommandLine);
  }
  std::set<std::string> from_command_line;
  for (const po::option& o : args.options.options) from_command_line.insert(o.string_key);
  if (ini) {
    try {
      po::store(po::parse_config_file(*ini, key_options(), /*allow_unregistered=*/false), vm);
    } catch (const po::error& e) {
      rethrow_boost_error(e, ini_name);
    }
  }
  Config config;
  for (const OptionDef& def : option_table()) {
    const po::variable_value& v = vm[def.key];
    const std::string source = from_command_line.count(def.key) ? " (command line)"
                               : v.defaulted()                  ? ""
                                                                : " (in " + ini_name + ")";
    def.parse(config, v.as<std::string>(), source);
  }
  config_detail::validate_config(config);
  config.resolved_ini = resolved_ini_text(config);
  return config;
}

Config load(const std::vector<std::string>& args, const std::string* ini_text) {
  const ParsedArgs parsed = parse_command_line(args);
  if (ini_text) {
    MOE_USER_CHECK(parsed.config_file.empty(), "--config: not accepted with an INI text");
    std::istringstream in(*ini_text);
    return build_config(parsed, &in, "config text");
  }
  if (parsed.config_file.empty()) return build_config(parsed, nullptr, "");
  const std::string& path = parsed.config_file;
  MOE_USER_CHECK(std::filesystem::exists(path), "--config: file '", path, "' does not exist");
  MOE_USER_CHECK(std::filesystem::is_regular_file(path), "--config: '", path,
                 "' is not a regular file");
  std::ifstream in(path);
  MOE_USER_CHECK(in.good(), "--config: cannot read '", path, "'");
  return build_config(parsed, &in, path);
}

}  // namespace

Config load_config(int argc, const char* const* argv) {
  return load(std::vector<std::string>(argv + std::min(argc, 1), argv + argc), nullptr);
}

Config load_config_text(const std::string& ini_text, const std::vector<std::string>& overrides) {
  std::vector<std::string> args;
  for (const std::string& o : overrides) args.push_back(o.starts_with("--") ? o : "--" + o);
  return load(args, &ini_text);
}

std::string resolved_ini_text(const Config& config) {
  std::ostringstream os;
  os << "# Resolved configuration: every key with its final value.\n"
        "# Loads again with: moe-train --config config.ini\n";
  std::string section;
  for (const OptionDef& def : option_table()) {
    if (def.section() != section) {
      section = def.section();
      os << "\n[" << section << "]\n";
    }
    const std::string value = def.format(config);
    os << def.name() << " =" << (value.empty() ? "" : " ") << value << "\n";
  }
  return os.str();
}

std::vector<std::string> config_keys() {
  std::vector<std::string> keys;
  for (const OptionDef& def : option_table()) keys.push_back(def.key);
  return keys;
}

std::string config_help() {
  const Config defaults;
  size_t key_width = 0, default_width = 0;
  for (const OptionDef& def : option_table()) {
    key_width = std::max(key_width, def.key.size() + def.type.size() + 3);
    default_width = std::max(default_width, def.format(defaults).size() + 2);
  }
  std::ostringstream os;
  os << "Options: defaults < --config FILE (INI: [section] key = value) < --section.key=value\n"
        "(or --section.key value). See docs/configuration.md.\n\n"
        "  --config FILE   INI file with the experiment's settings\n"
        "  --help          print this help and exit\n";
  std::string section;
  for (const OptionDef& def : option_table()) {
    if (def.section() != section) {
      section = def.section();
      os << "\n[" << section << "]\n";
    }
    const std::string value = std::string(1, '\'').append(def.format(defaults)).append("'");
    os << "  --" << std::left << std::setw(static_cast<int>(key_width))
       << (def.key + "=<" + def.type + ">") << std::setw(static_cast<int>(default_width + 2))
       << value << def.help << "\n";
  }
  os << "\nModel families (model.family):\n";
  for (const std::string& name : family_names())
    os << "  " << std::left << std::setw(12) << name << family_traits(name).summary << "\n";
  return os.str();
}

bool help_requested(int argc, const char* const* argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") return true;
  }
  return false;
}

void check_world_size(const ParallelConfig& parallel, int world_size) {
  MOE_USER_CHECK(parallel.dp * parallel.tp == world_size, "parallel.dp * parallel.tp: ",
                 parallel.dp, " * ", parallel.tp, " = ", parallel.dp * parallel.tp,
                 " ranks, but the job has ", world_size);
  MOE_USER_CHECK(parallel.ranks_per_node == 0 || world_size % parallel.ranks_per_node == 0,
                 "parallel.ranks_per_node: ", parallel.ranks_per_node,
                 " does not divide the job's ", world_size, " ranks");
}

}  // namespace moe
