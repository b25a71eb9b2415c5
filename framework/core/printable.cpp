#include "framework/core/printable.h"

#include <cstdio>

namespace moe {
namespace {

// Length of the valid UTF-8 sequence starting at text[i] (1 for ASCII), or 0.
size_t utf8_length(std::string_view text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte(i);
  size_t n = 0;
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) n = 2;
  else if (lead >= 0xE0 && lead <= 0xEF) n = 3;
  else if (lead >= 0xF0 && lead <= 0xF4) n = 4;
  else return 0;
  if (i + n > text.size()) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
  return n;
}

void append_escaped(std::string_view text, std::string& out) {
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    const size_t n = utf8_length(text, i);
    if (n == 0 || c < 0x20 || c == 0x7F) {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "\\x%02X", c);
      out += hex;
      ++i;
    } else {
      out.append(text.substr(i, n));
      i += n;
    }
  }
}

}  // namespace

std::string printable(std::string_view text, size_t max_bytes) {
  std::string out;
  if (text.size() <= max_bytes) {
    append_escaped(text, out);
    return out;
  }
  // Cut on byte boundaries: a split UTF-8 sequence shows as \xNN, which is harmless.
  append_escaped(text.substr(0, max_bytes / 2), out);
  out += "...(" + std::to_string(text.size()) + " bytes)...";
  append_escaped(text.substr(text.size() - max_bytes / 2), out);
  return out;
}

}  // namespace moe
