// moe-generate --checkpoint PATH (--prompt TEXT | --prompts FILE) [options]
//
// Continues text prompts with a trained model of a family that generates text (moe_gpt:
// a checkpoint or the model.h5 that moe-train saves), with a KV cache: the prompt runs
// once, then each new token costs one token's forward pass (models/generation.h,
// docs/generation.md).
// Tokens are bytes (the byte-level vocabulary of the token shards).
//
//   --prompt TEXT          one prompt
//   --prompts FILE         one prompt per line ("-": standard input), generated together
//   --max-new-tokens N     tokens to generate per prompt (default 200)
//   --temperature T        0 = greedy; else sample from softmax(logits / T) (default 1)
//   --top-k K              sample among the K most probable tokens (default 0: all)
//   --top-p P              sample from the smallest set of mass >= P (default 1: all)
//   --seed S               seed of the draws (default 0): a fixed seed repeats a run
//   --jsonl                one JSON object per prompt instead of text
//
// Text output streams: each prompt is written, then its new bytes as they are chosen
// (with several prompts, the first streams and the others follow in order when it
// ends). Token ids >= 256 (no byte) are written as <|id|>. --jsonl writes
// {"index", "prompt", "completion", "tokens"} per prompt (invalid UTF-8 replaced by
// U+FFFD in the text fields; "tokens" holds the exact ids). A summary goes to stderr.
//
// Exit status: 0 done, 2 bad input (one line naming it), 1 any other failure.

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/core/error.h"
#include "framework/core/timer.h"
#include "framework/cli/args.h"
#include "framework/kernels/ops.h"
#include "models/generation.h"

namespace {

constexpr const char* kUsage =
    "usage: moe-generate --checkpoint PATH (--prompt TEXT | --prompts FILE|-)\n"
    "       [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]\n"
    "       [--jsonl]\n";

struct Args {
  std::string checkpoint, prompt, prompts_file;
  bool has_prompt = false, jsonl = false;
  int64_t max_new_tokens = 200;
  moe::SamplingOptions sampling;
};

Args parse_args(int argc, char** argv) {
  Args a;
  moe::cli::ArgReader args(argc, argv);
  using moe::cli::parse_number;
  while (args.next()) {
    const std::string& arg = args.arg();
    if (arg == "--checkpoint") a.checkpoint = args.value();
    else if (arg == "--prompt") { a.prompt = args.value(); a.has_prompt = true; }
    else if (arg == "--prompts") a.prompts_file = args.value();
    else if (arg == "--max-new-tokens") a.max_new_tokens = parse_number<int64_t>(arg, args.value());
    else if (arg == "--temperature") a.sampling.temperature = parse_number<float>(arg, args.value());
    else if (arg == "--top-k") a.sampling.top_k = parse_number<int>(arg, args.value());
    else if (arg == "--top-p") a.sampling.top_p = parse_number<float>(arg, args.value());
    else if (arg == "--seed") a.sampling.seed = parse_number<uint64_t>(arg, args.value());
    else if (arg == "--jsonl") a.jsonl = true;
    else MOE_USER_FAIL("unexpected argument '", arg, "' (see moe-generate --help)");
  }
  MOE_USER_CHECK(!a.checkpoint.empty(), "--checkpoint: required");
  std::error_code ec;
  MOE_USER_CHECK(std::filesystem::is_regular_file(a.checkpoint, ec), "--checkpoint: '",
                 a.checkpoint, "' does not exist or is not a file");
  MOE_USER_CHECK(a.has_prompt != !a.prompts_file.empty(),
                 "give exactly one of --prompt TEXT and --prompts FILE");
  MOE_USER_CHECK(a.max_new_tokens >= 1, "--max-new-tokens: must be at least 1, got ",
                 a.max_new_tokens);
  MOE_USER_CHECK(a.sampling.temperature >= 0.0f, "--temperature: must be >= 0, got ",
                 a.sampling.temperature);
  MOE_USER_CHECK(a.sampling.top_k >= 0, "--top-k: must be >= 0, got ", a.sampling.top_k);
  MOE_USER_CHECK(a.sampling.top_p > 0.0f && a.sampling.top_p <= 1.0f,
                 "--top-p: must be in (0, 1], got ", a.sampling.top_p);
  return a;
}

// The prompts: --prompt, or the lines of --prompts (without their line breaks).
std::vector<std::string> read_prompts(const Args& a) {
  if (a.has_prompt) {
    MOE_USER_CHECK(!a.prompt.empty(), "--prompt: empty; give at least one character");
    return {a.prompt};
  }
  std::ifstream file;
  if (a.prompts_file != "-") {
    file.open(a.prompts_file, std::ios::binary);
    MOE_USER_CHECK(file.is_open(), "--prompts: cannot read '", a.prompts_file, "'");
  }
  std::istream& in = a.prompts_file == "-" ? std::cin : file;
  std::vector<std::string> prompts;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    MOE_USER_CHECK(!line.empty(), "--prompts: line ", prompts.size() + 1, " of '",
                   a.prompts_file, "' is empty; every line is a prompt");
    prompts.push_back(line);
  }
  MOE_USER_CHECK(!prompts.empty(), "--prompts: '", a.prompts_file, "' holds no prompt");
  return prompts;
}

std::vector<int32_t> to_tokens(const std::string& text, int64_t vocab, size_t index) {
  std::vector<int32_t> tokens;
  for (size_t i = 0; i < text.size(); ++i) {
    const int32_t byte = static_cast<unsigned char>(text[i]);
    MOE_USER_CHECK(byte < vocab, "prompt ", index + 1, ": byte ", byte, " at offset ", i,
                   " is outside the model's vocabulary of ", vocab, " tokens");
    tokens.push_back(byte);
  }
  return tokens;
}

std::string to_text(int32_t token) {
  if (token < 256) return std::string(1, static_cast<char>(token));
  return "<|" + std::to_string(token) + "|>";
}

std::string to_text(const std::vector<int32_t>& tokens) {
  std::string text;
  for (int32_t t : tokens) text += to_text(t);
  return text;
}

// Streams sequence `current` as its tokens come; the others wait for their turn.
class TextStream {
 public:
  explicit TextStream(const std::vector<std::string>& prompts)
      : prompts_(prompts), pending_(prompts.size()) {
    std::cout << prompts_[0] << std::flush;
  }
  void token(int64_t s, int32_t t) {
    if (s == 0) std::cout << to_text(t) << std::flush;
    else pending_[s] += to_text(t);
  }
  void finish() {
    std::cout << "\n";
    for (size_t s = 1; s < prompts_.size(); ++s) std::cout << prompts_[s] << pending_[s] << "\n";
    std::cout << std::flush;
  }

 private:
  const std::vector<std::string>& prompts_;
  std::vector<std::string> pending_;
};

int run(const Args& a) {
  const std::vector<std::string> texts = read_prompts(a);
  moe::Stopwatch load_clock;
  const std::unique_ptr<moe::TokenDecoder> decoder = moe::load_decoder(a.checkpoint);
  const double load_s = load_clock.seconds();
  const int64_t vocab = decoder->vocab_size();
  std::vector<std::vector<int32_t>> prompts;
  for (size_t i = 0; i < texts.size(); ++i) prompts.push_back(to_tokens(texts[i], vocab, i));

  moe::Stopwatch clock;
  std::unique_ptr<TextStream> stream;
  if (!a.jsonl) stream = std::make_unique<TextStream>(texts);
  const auto completions = moe::generate(
      *decoder, prompts, a.max_new_tokens, a.sampling,
      [&](int64_t s, int32_t t) { if (stream) stream->token(s, t); });
  const double seconds = clock.seconds();
  if (stream) stream->finish();
  for (size_t s = 0; a.jsonl && s < texts.size(); ++s) {
    const nlohmann::json record = {{"index", s},
                                   {"prompt", texts[s]},
                                   {"completion", to_text(completions[s])},
                                   {"tokens", completions[s]}};
    std::cout << record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
  std::cout << std::flush;
  const double tokens = static_cast<double>(texts.size() * a.max_new_tokens);
  std::cerr << "moe-generate: " << texts.size() << " prompt(s), " << a.max_new_tokens
            << " new tokens each in " << seconds << " s (" << tokens / seconds
            << " tokens/s; model loaded in " << load_s << " s)\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  moe::ops::select_cpu_kernels(argv);  // may re-execute: before anything else
  return moe::cli::run_tool("moe-generate", kUsage, argc, argv,
                            [&] { return run(parse_args(argc, argv)); },
                            "use fewer prompts or fewer --max-new-tokens");
}
