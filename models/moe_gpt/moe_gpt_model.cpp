// The moe_gpt family: MoeGpt on byte-level token shards behind the trainer's Model
// interface (validation loss and bits per byte), and its registration.

#include <cmath>

#include "framework/data/sampler.h"
#include "framework/data/token_shard.h"
#include "models/moe_gpt/generate.h"
#include "models/moe_gpt/hf_export.h"
#include "models/moe_gpt/moe_gpt.h"
#include "models/registry.h"

namespace moe {
namespace {

class MoeGptModel final : public Model {
 public:
  MoeGptModel(const Config& c, ParamStore& store, const MoeRuntime& runtime)
      : seq_len_(c.model.seq_len),
        eval_tokens_(c.train.eval_tokens),
        train_shard_(open_shard(c.data.train_path, "data.train_path", c.model.vocab_size)),
        val_shard_(open_shard(c.data.val_path, "data.val_path", c.model.vocab_size)),
        train_sampler_(train_shard_, c.model.seq_len, c.data.batch_size, c.train.seed),
        val_sampler_(val_shard_, c.model.seq_len, c.data.batch_size, c.train.seed),
        net_(c.model, c.moe, store, runtime) {}

  void load_train_batch(int64_t step, int dp_rank, int dp_size) override {
    resize(dp_size);
    train_sampler_.batch(step, dp_rank, dp_size, inputs_, targets_);
  }
  LossParts forward() override {
    return net_.forward(inputs_.data(), targets_.data(), local_batch());
  }
  void backward() override { net_.backward(); }

  // sums = {CE summed over the tokens of the evaluation windows, their tokens}: the
  // first train.eval_tokens tokens of the validation shard in windows of T, in order
  // (sampler.h), the same text for every batch size and layout.
  std::vector<double> evaluate(int dp_rank, int dp_size) override {
    if (eval_tokens_ == 0) return {0.0, 0.0};
    resize(dp_size);
    const int64_t windows = val_sampler_.eval_windows(eval_tokens_);
    const int64_t batch = val_sampler_.global_batch();
    double loss = 0.0, tokens = 0.0;
    for (int64_t i = 0; i < (windows + batch - 1) / batch; ++i) {
      const int64_t rows = val_sampler_.eval_batch(i, windows, dp_rank, dp_size, inputs_, targets_);
      net_.forward(inputs_.data(), targets_.data(), local_batch());
      const std::span<const float> losses = net_.token_losses();  // (B_local * T)
      for (int64_t t = 0; t < rows * seq_len_; ++t) loss += losses[t];
      tokens += static_cast<double>(rows * seq_len_);
    }
    return {loss, tokens};
  }
  nlohmann::json eval_metrics(std::span<const double> sums) const override {
    if (sums[1] == 0) return nlohmann::json::object();  // train.eval_tokens = 0
    const double loss = sums[0] / sums[1];
    return {{"val_loss", loss}, {"val_bpb", loss / std::log(2.0)}};  // one token = one byte
  }

  Network& network() override { return net_; }

 private:
  static TokenShard open_shard(const std::string& path, const std::string& key, int vocab) {
    MOE_USER_CHECK(!path.empty(), key, ": no token shard given");
    TokenShard shard(path);
    require_vocab(shard, vocab, key);
    return shard;
  }
  void resize(int dp_size) {
    inputs_.resize(static_cast<size_t>(train_sampler_.local_batch(dp_size) * seq_len_));
    targets_.resize(inputs_.size());
  }
  int64_t local_batch() const { return static_cast<int64_t>(inputs_.size()) / seq_len_; }

  int64_t seq_len_;
  int64_t eval_tokens_;
  TokenShard train_shard_, val_shard_;
  BatchSampler train_sampler_, val_sampler_;
  MoeGpt net_;
  std::vector<int32_t> inputs_, targets_;  // (B_local, T)
};

void validate(const Config& c) {
  const ModelConfig& m = c.model;
  MOE_USER_CHECK((m.d_model / m.num_heads) % 2 == 0, "model.d_model / model.num_heads: head dim ",
                 m.d_model / m.num_heads, " must be even (rotary rotates pairs)");
  // The vocabulary is split in blocks of ceil(V / tp) rows, the last one short
  // (nn/vocab_parallel.h): every rank needs at least one row.
  const int tp = c.parallel.tp;
  const int64_t vocab_block = (m.vocab_size + tp - 1) / tp;
  MOE_USER_CHECK((tp - 1) * vocab_block < m.vocab_size, "model.vocab_size: ", m.vocab_size,
                 " leaves tp rank ", tp - 1, " no row in blocks of ", vocab_block,
                 " (parallel.tp = ", tp, "); use a larger vocabulary or a smaller tp");
  const int64_t eval_tokens = c.train.eval_tokens;
  MOE_USER_CHECK(eval_tokens == 0 || eval_tokens >= m.seq_len, "train.eval_tokens: ",
                 eval_tokens, " is less than one window of model.seq_len = ", m.seq_len,
                 " tokens (0 turns validation off)");
}

const FamilyRegistration kRegistration({
    .traits = {.name = "moe_gpt",
               .summary = "MoE language model (DeepSeekMoE / FLAME-MoE style) on token shards",
               .validate = validate,
               .tokens_per_sample = [](const ModelConfig& m) -> int64_t { return m.seq_len; },
               .samples = "sequences"},
    .make_network = [](const Config& c, ParamStore& store, const MoeRuntime& runtime)
        -> std::unique_ptr<Network> {
      return std::make_unique<MoeGpt>(c.model, c.moe, store, runtime);
    },
    .make_model = [](const Config& c, ParamStore& store, const MoeRuntime& runtime)
        -> std::unique_ptr<Model> { return std::make_unique<MoeGptModel>(c, store, runtime); },
    .make_decoder = [](const Config& c) -> std::unique_ptr<TokenDecoder> {
      return std::make_unique<MoeGptDecoder>(c);
    },
    .export_hugging_face = export_hugging_face,
});

}  // namespace
}  // namespace moe
