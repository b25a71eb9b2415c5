#pragma once
// Tokenizer files of a byte-level model for Hugging Face's `tokenizers` and
// `transformers` (AutoTokenizer): token id b is byte b for b < 256, as in our token
// shards (docs/data-format.md). tokenizer.json is a BPE model over the ByteLevel
// alphabet (GPT-2's printable stand-in for each byte) with no merges, so every byte is
// one token; its ByteLevel pre-tokenizer (no regex split, no prefix space) and decoder
// turn text into UTF-8 bytes and back. Ids from 256 to vocab - 1 are special tokens
// "<|token_N|>".

#include <cstdint>

#include <nlohmann/json.hpp>

namespace moe {

// The stand-in character of byte b in the ByteLevel alphabet (a Unicode code point).
uint32_t byte_level_char(uint8_t b);

// tokenizer.json for a vocabulary of `vocab` >= 256 tokens.
nlohmann::json byte_level_tokenizer_json(int64_t vocab);
// tokenizer_config.json: the fast tokenizer class, no special tokens added.
nlohmann::json byte_level_tokenizer_config();

}  // namespace moe
