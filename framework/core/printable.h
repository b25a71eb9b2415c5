#pragma once
// Text that came from a user (a config file, a command line, a checkpoint attribute),
// made safe to print in a one-line message: control bytes (terminal escapes, line
// breaks) and bytes that are not valid UTF-8 become \xNN, and a text longer than
// `max_bytes` keeps its head and tail around "...(N bytes)...".

#include <cstddef>
#include <string>
#include <string_view>

namespace moe {

std::string printable(std::string_view text, size_t max_bytes = 1000);

}  // namespace moe
