#include "models/moe_gpt/hf_tokenizer.h"

#include <string>

#include "framework/core/error.h"

namespace moe {
namespace {

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    MOE_CHECK(cp < 0x10000, "utf8: code point ", cp);
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// What tokenizers' ByteLevel pre-tokenizer and decoder are configured with here.
nlohmann::json byte_level_options() {
  return {{"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}};
}

}  // namespace

uint32_t byte_level_char(uint8_t b) {
  // GPT-2's bytes_to_unicode: the printable bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF
  // stand for themselves; the others, in byte order, take 256, 257, ...
  auto printable = [](uint32_t x) {
    return (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF);
  };
  if (printable(b)) return b;
  uint32_t n = 0;
  for (uint32_t x = 0; x < b; ++x) n += !printable(x);
  return 256 + n;
}

nlohmann::json byte_level_tokenizer_json(int64_t vocab) {
  MOE_CHECK(vocab >= 256, "a byte-level tokenizer needs 256 tokens, got ", vocab);
  nlohmann::json ids = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) ids[utf8(byte_level_char(static_cast<uint8_t>(b)))] = b;
  nlohmann::json added = nlohmann::json::array();
  for (int64_t id = 256; id < vocab; ++id)
    added.push_back({{"id", id},
                     {"content", "<|token_" + std::to_string(id) + "|>"},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  nlohmann::json pre = byte_level_options(), decoder = byte_level_options();
  pre["type"] = "ByteLevel";
  decoder["type"] = "ByteLevel";
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", pre},
          {"post_processor", nullptr},
          {"decoder", decoder},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr},
            {"fuse_unk", false},
            {"byte_fallback", false},
            {"vocab", ids},
            {"merges", nlohmann::json::array()}}}};
}

nlohmann::json byte_level_tokenizer_config() {
  return {{"tokenizer_class", "PreTrainedTokenizerFast"},
          {"add_bos_token", false},
          {"add_eos_token", false},
          {"clean_up_tokenization_spaces", false},
          {"model_max_length", 1000000000}};
}

}  // namespace moe
