#include "models/moe_gpt/hf_export.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "models/moe_gpt/hf_tokenizer.h"
#include "framework/checkpoint/safetensors.h"
#include "framework/config/config.h"
#include "models/model.h"

namespace moe {
namespace {
namespace fs = std::filesystem;

// One tensor of the Hugging Face file: `shape` floats taken from dataset `source` of the
// file at element `offset` and multiplied by `scale`, or zeros when source is empty.
struct Piece {
  std::string name;
  Shape shape;
  std::string source;
  int64_t offset = 0;
  float scale = 1.0f;
};

// The options of `c` that Qwen2-MoE cannot express exactly are user errors; what the
// user should know about the others goes into `notes`.
void check_exportable(const Config& c, std::vector<std::string>& notes) {
  const MoeConfig& m = c.moe;
  const char* why = "; Qwen2-MoE has no counterpart, so the model cannot be exported exactly";
  MOE_USER_CHECK(m.expert_act == ExpertActivation::kSwiGLU, "--format hf: moe.expert_act = ", m.expert_act,
                 ": Qwen2-MoE's experts are SwiGLU", why);
  MOE_USER_CHECK(m.routing == RoutingKind::kTopK, "--format hf: moe.routing = ", m.routing,
                 ": Qwen2-MoE routes with one softmax top-k router", why);
  MOE_USER_CHECK(!m.bias_balance, "--format hf: moe.bias_balance = true: the router's "
                 "selection bias (aux-loss-free balancing) changes which experts are chosen",
                 why);
  MOE_USER_CHECK(m.max_nodes_per_token == 0, "--format hf: moe.max_nodes_per_token = ",
                 m.max_nodes_per_token, ": node-limited routing depends on the training "
                 "layout's nodes", why);
  if (m.capacity_factor > 0)
    notes.push_back("moe.capacity_factor = " + std::to_string(m.capacity_factor) +
                    " dropped tokens over capacity in training; the exported Qwen2-MoE "
                    "model is dropless (as moe-generate)");
  if (c.model.vocab_size < 256)
    notes.push_back("model.vocab_size = " + std::to_string(c.model.vocab_size) +
                    " < 256: no byte-level tokenizer written; feed token ids directly");
}

// The Qwen2-MoE tensors in file order. moe_layers: the blocks with an MoE FFN.
std::vector<Piece> plan(const Config& c, const std::set<int>& moe_layers) {
  const int64_t C = c.model.d_model, V = c.model.vocab_size;
  const int64_t E = c.moe.num_experts, F = c.moe.expert_ffn;
  const int64_t Fd = c.model.dense_ffn, Fs = int64_t{c.moe.num_shared} * c.moe.shared_ffn;
  auto model = [](const std::string& name) { return "/model/" + name; };
  std::vector<Piece> out = {{"model.embed_tokens.weight", {V, C}, model("embed.weight")}};
  for (int l = 0; l < c.model.num_layers; ++l) {
    const std::string ours = "layers." + std::to_string(l) + ".";
    const std::string hf = "model.layers." + std::to_string(l) + ".";
    out.push_back({hf + "input_layernorm.weight", {C}, model(ours + "attn_norm.weight")});
    const char* qkv[3] = {"q_proj", "k_proj", "v_proj"};
    for (int i = 0; i < 3; ++i) {
      out.push_back({hf + "self_attn." + qkv[i] + ".weight", {C, C}, model(ours + "attn.w_qkv"),
                     i * C * C});
      out.push_back({hf + "self_attn." + qkv[i] + ".bias", {C}, ""});  // we have none
    }
    out.push_back({hf + "self_attn.o_proj.weight", {C, C}, model(ours + "attn.w_out")});
    out.push_back({hf + "post_attention_layernorm.weight", {C}, model(ours + "ffn_norm.weight")});
    if (!moe_layers.count(l)) {
      out.push_back({hf + "mlp.gate_proj.weight", {Fd, C}, model(ours + "mlp.w_gate")});
      out.push_back({hf + "mlp.up_proj.weight", {Fd, C}, model(ours + "mlp.w_up")});
      out.push_back({hf + "mlp.down_proj.weight", {C, Fd}, model(ours + "mlp.w_down")});
      continue;
    }
    out.push_back({hf + "mlp.gate.weight", {E, C}, model(ours + "moe.router.weight")});
    for (int64_t e = 0; e < E; ++e) {
      const std::string x = hf + "mlp.experts." + std::to_string(e) + ".";
      out.push_back({x + "gate_proj.weight", {F, C}, model(ours + "moe.experts.w_gate"), e * F * C});
      out.push_back({x + "up_proj.weight", {F, C}, model(ours + "moe.experts.w_up"), e * F * C});
      out.push_back({x + "down_proj.weight", {C, F}, model(ours + "moe.experts.w_down"), e * C * F});
    }
    // sigmoid(0) = 0.5 times the doubled down projection: our ungated shared expert.
    const std::string s = hf + "mlp.shared_expert.";
    if (Fs > 0) {
      out.push_back({s + "gate_proj.weight", {Fs, C}, model(ours + "moe.shared.w_gate")});
      out.push_back({s + "up_proj.weight", {Fs, C}, model(ours + "moe.shared.w_up")});
      out.push_back({s + "down_proj.weight", {C, Fs}, model(ours + "moe.shared.w_down"), 0, 2.0f});
    } else {  // no shared expert: one of width 1 whose output is exactly zero
      out.push_back({s + "gate_proj.weight", {1, C}, ""});
      out.push_back({s + "up_proj.weight", {1, C}, ""});
      out.push_back({s + "down_proj.weight", {C, 1}, ""});
    }
    out.push_back({hf + "mlp.shared_expert_gate.weight", {1, C}, ""});
  }
  out.push_back({"model.norm.weight", {C}, model("final_norm.weight")});
  out.push_back({"lm_head.weight", {V, C}, model("lm_head.weight")});
  return out;
}

// The double with the shortest decimal form that rounds to `f` (1e-06, not
// 9.999999974752427e-07): the JSON reads as the option was written, and PyTorch, which
// rounds it to float32 against float32 tensors, gets `f` back.
double decimal(float f) {
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), f);
  MOE_CHECK(ec == std::errc(), "cannot format ", f);
  return std::strtod(std::string(buf, end).c_str(), nullptr);
}

nlohmann::json hf_config(const Config& c, const std::set<int>& moe_layers) {
  std::vector<int> dense;
  for (int l = 0; l < c.model.num_layers; ++l)
    if (!moe_layers.count(l)) dense.push_back(l);
  const int64_t shared = int64_t{c.moe.num_shared} * c.moe.shared_ffn;
  return {{"architectures", {"Qwen2MoeForCausalLM"}},
          {"model_type", "qwen2_moe"},
          {"vocab_size", c.model.vocab_size},
          {"hidden_size", c.model.d_model},
          {"num_hidden_layers", c.model.num_layers},
          {"num_attention_heads", c.model.num_heads},
          {"num_key_value_heads", c.model.num_heads},
          {"hidden_act", "silu"},
          {"intermediate_size", c.model.dense_ffn},
          {"moe_intermediate_size", c.moe.expert_ffn},
          {"shared_expert_intermediate_size", shared > 0 ? shared : 1},
          {"num_experts", c.moe.num_experts},
          {"num_experts_per_tok", c.moe.top_k},
          {"norm_topk_prob", c.moe.renormalize},
          {"decoder_sparse_step", 1},
          {"mlp_only_layers", dense},
          {"max_position_embeddings", c.model.seq_len},
          {"rms_norm_eps", decimal(c.model.norm_eps)},
          {"rope_theta", decimal(c.model.rope_theta)},
          {"rope_scaling", nullptr},
          {"tie_word_embeddings", false},
          {"use_sliding_window", false},
          {"attention_dropout", 0.0},
          {"initializer_range", decimal(c.model.init_std)},
          {"router_aux_loss_coef", decimal(c.moe.aux_loss)},
          {"output_router_logits", false},
          {"use_cache", true},
          {"torch_dtype", "float32"},
          {"transformers_version", "4.44.2"}};
}

void write_json(const fs::path& path, const nlohmann::json& value) {
  std::ofstream out(path, std::ios::trunc);
  out << value.dump(2) << "\n";
  MOE_CHECK(out.good(), "cannot write ", path.string());
}

// The router biases must be zeros (moe.bias_balance off): Qwen2-MoE selects by p alone.
void check_zero_biases(const H5File& file, const CheckpointSummary& s) {
  Buffer scratch;
  for (const TensorEntry& e : s.buffers) {
    const float* b = read_checked(file, "/buffers/" + e.name, e.shape, scratch);
    for (int64_t i = 0; i < e.shape.numel(); ++i)
      MOE_USER_CHECK(b[i] == 0.0f, "--format hf: ", e.name, " is not zero: the router's "
                     "selection bias has no counterpart in Qwen2-MoE (moe.bias_balance)");
  }
}

// Writes the pieces into `path`, reading each source dataset once (with its checksum).
int64_t write_weights(const H5File& file, const CheckpointSummary& s,
                      const std::vector<Piece>& pieces, const std::string& path) {
  std::map<std::string, Shape> shapes;
  for (const TensorEntry& e : s.params) shapes["/model/" + e.name] = e.shape;
  std::vector<SafetensorsWriter::Entry> entries;
  for (const Piece& p : pieces) entries.push_back({p.name, p.shape});
  std::ostringstream origin;
  origin << "moe " << s.framework_version << ", " << s.origin.family
         << (s.trainer ? ", step " + std::to_string(s.trainer->step) : "");
  SafetensorsWriter writer(path, entries, {{"format", "pt"}, {"source", origin.str()}});
  Buffer source, piece;
  std::string loaded;  // dataset held in `source`
  int64_t bytes = 0;
  for (const Piece& p : pieces) {
    float* out = piece.view(p.shape).data;
    const int64_t n = p.shape.numel();
    if (p.source.empty()) {
      std::fill(out, out + n, 0.0f);
    } else {
      MOE_USER_CHECK(shapes.count(p.source), file.path(), ": ", p.source,
                     " is missing: not the moe_gpt model its config describes");
      const Shape& shape = shapes[p.source];
      MOE_USER_CHECK(p.offset + n <= shape.numel(), file.path(), ": ", p.source, " has shape ",
                     shape.str(), ", which does not fit the model of its config");
      if (loaded != p.source) read_checked(file, p.source, shape, source);
      loaded = p.source;
      for (int64_t i = 0; i < n; ++i) out[i] = source.data()[p.offset + i] * p.scale;
    }
    writer.write_next(out);
    bytes += n * static_cast<int64_t>(sizeof(float));
  }
  writer.close();
  return bytes;
}

}  // namespace

ExportResult export_hugging_face(const H5File& file, const CheckpointSummary& s,
                                 const std::string& out_dir) {
  const Config c = config_for_use(s.origin.config_ini);
  ExportResult result;
  check_exportable(c, result.notes);
  check_zero_biases(file, s);
  std::set<int> moe_layers;
  for (int l = 0; l < c.model.num_layers; ++l)
    if (is_moe_block(c.model, l)) moe_layers.insert(l);
  const std::vector<Piece> pieces = plan(c, moe_layers);
  // Every tensor of the file has its place: nothing of the model is left behind.
  std::set<std::string> used;
  for (const Piece& p : pieces) used.insert(p.source);
  for (const TensorEntry& e : s.params)
    MOE_USER_CHECK(used.count("/model/" + e.name), "--format hf: ", file.path(), " holds ",
                   e.name, ", which has no place in Qwen2-MoE");

  // Written under a temporary name and renamed when complete.
  const fs::path tmp = out_dir + ".tmp-" + std::to_string(getpid());
  std::error_code ec;
  fs::create_directories(tmp, ec);
  MOE_USER_CHECK(!ec, "--out: cannot create '", tmp.string(), "': ", ec.message());
  try {
    result.bytes = write_weights(file, s, pieces, (tmp / "model.safetensors").string());
    result.tensors = static_cast<int64_t>(pieces.size());
    write_json(tmp / "config.json", hf_config(c, moe_layers));
    if (c.model.vocab_size >= 256) {
      write_json(tmp / "tokenizer.json", byte_level_tokenizer_json(c.model.vocab_size));
      write_json(tmp / "tokenizer_config.json", byte_level_tokenizer_config());
    }
    fs::rename(tmp, out_dir);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  return result;
}

}  // namespace moe
