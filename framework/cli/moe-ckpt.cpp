// moe-ckpt: checkpoints and weights files for people and downstream tools
// (docs/checkpoint-format.md).
//
//   moe-ckpt info PATH [--json]        format, model family, the layout it was written
//                                      with, step, tensors and shapes, the config
//   moe-ckpt export PATH --out FILE [--format safetensors|h5]
//                                      the weights (parameters and router biases) to
//                                      safetensors or to an HDF5 weights file; the
//                                      format follows the extension unless given
//   moe-ckpt export PATH --format hf --out DIR
//                                      a moe_gpt model as a Hugging Face model
//                                      directory (Qwen2-MoE for moe_gpt; models/moe_gpt/hf_export.h)
//   moe-ckpt verify PATH               every field, every checksum, and the tensors
//                                      against the model its config describes
//
// PATH may be a checkpoint directory: its `latest` checkpoint.
//
// Exit status: 0 done (verify: the file is intact), 2 bad input or a bad file (one line
// naming the file and what is wrong), 1 any other failure.

#include <cstring>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "framework/checkpoint/checkpoint_dir.h"
#include "framework/checkpoint/export.h"
#include "framework/checkpoint/inspect.h"
#include "framework/cli/args.h"
#include "framework/config/config.h"
#include "framework/core/printable.h"
#include "models/registry.h"
#include "models/verify_checkpoint.h"

namespace {

constexpr const char* kUsage =
    "usage: moe-ckpt info PATH [--json]\n"
    "       moe-ckpt export PATH --out FILE [--format safetensors|h5]\n"
    "       moe-ckpt export PATH --format hf --out DIR\n"
    "       moe-ckpt verify PATH\n";

struct Args {
  std::string command, path, out, format;
  bool json = false;
};

Args parse_args(int argc, char** argv) {
  Args a;
  std::vector<std::string> positional;
  moe::cli::ArgReader args(argc, argv);
  while (args.next()) {
    const std::string& arg = args.arg();
    if (arg == "--out") a.out = args.value();
    else if (arg == "--format") a.format = args.value();
    else if (arg == "--json") a.json = true;
    else if (args.is_flag()) MOE_USER_FAIL("unknown option '", arg, "' (see moe-ckpt --help)");
    else positional.push_back(arg);
  }
  MOE_USER_CHECK(!positional.empty(), "a command is required: info, export or verify");
  a.command = positional[0];
  MOE_USER_CHECK(a.command == "info" || a.command == "export" || a.command == "verify",
                 "'", a.command, "' is not a command (info, export, verify)");
  MOE_USER_CHECK(positional.size() == 2, a.command, ": needs exactly one checkpoint path");
  a.path = positional[1];
  std::error_code ec;
  if (std::filesystem::is_directory(a.path, ec)) {
    // A checkpoint directory stands for its newest complete checkpoint.
    const std::optional<std::string> latest = moe::CheckpointDir(a.path).latest();
    MOE_USER_CHECK(latest.has_value(), a.path, ": a directory without a 'latest' checkpoint "
                   "pointer; name a checkpoint file (step_XXXXXXXX.h5)");
    a.path = *latest;
  }
  MOE_USER_CHECK(a.command == "export" || (a.out.empty() && a.format.empty()),
                 "--out and --format belong to export");
  MOE_USER_CHECK(a.command != "export" || !a.out.empty(), "export: --out FILE is required");
  return a;
}

void print_info(const moe::CheckpointSummary& s) {
  std::cout << s.path << "\n"
            << "  format            " << s.format << " version " << s.format_version
            << " (framework " << s.framework_version << ")\n"
            << "  model family      " << s.origin.family << "\n"
            << "  written by        " << s.origin.world_size << " ranks: dp "
            << s.origin.layout.dp << ", tp " << s.origin.layout.tp << ", ep "
            << s.origin.layout.ep << ", etp " << s.origin.layout.etp << "\n";
  if (s.trainer)
    std::cout << "  step              " << s.trainer->step << " (" << s.trainer->tokens_seen
              << " tokens; lr " << s.trainer->lr_last << ", " << s.trainer->lr_schedule
              << " over " << s.trainer->lr_total_steps << " steps)\n";
  int64_t numel = 0;
  for (const moe::TensorEntry& e : s.params) numel += e.shape.numel();
  std::cout << "  parameters        " << numel << " in " << s.params.size() << " tensors\n"
            << "  file              " << s.file_bytes << " bytes\n\n";
  for (const moe::TensorEntry& e : s.params)
    std::cout << "  " << std::left << std::setw(40) << e.name << std::setw(18) << e.shape.str()
              << e.shard << "\n";
  for (const moe::TensorEntry& e : s.buffers)
    std::cout << "  " << std::left << std::setw(40) << e.name << std::setw(18) << e.shape.str()
              << "buffer\n";
  std::cout << "\n[config]\n" << s.origin.config_ini;
}

// A Hugging Face export is the model family's; the other formats are the same for all.
moe::ExportResult export_model(const moe::H5File& file, const std::string& out,
                               moe::ExportFormat format) {
  if (format != moe::ExportFormat::kHuggingFace) return moe::export_weights(file, out, format);
  moe::require_new_output(out);
  const moe::CheckpointSummary s = moe::summarize_checkpoint(file);
  const moe::ModelFamily& family = moe::model_family(s.origin.family);
  MOE_USER_CHECK(family.export_hugging_face, "--format hf: ", file.path(), " holds a ",
                 s.origin.family, " model; only ",
                 moe::families_that([](const moe::ModelFamily& f) {
                   return static_cast<bool>(f.export_hugging_face);
                 }),
                 " has a Hugging Face architecture here");
  return family.export_hugging_face(file, s, out);
}

int run(const Args& a) {
  const moe::H5File file = moe::H5File::open(a.path);
  if (a.command == "info") {
    const moe::CheckpointSummary s = moe::summarize_checkpoint(file);
    if (a.json) std::cout << moe::summary_json(s).dump(2) << "\n";
    else print_info(s);
  } else if (a.command == "export") {
    const moe::ExportResult r = export_model(file, a.out, moe::export_format(a.format, a.out));
    for (const std::string& note : r.notes) std::cerr << "moe-ckpt: note: " << note << "\n";
    std::cout << a.out << ": " << r.tensors << " tensors, " << r.bytes << " bytes\n";
  } else {
    const moe::VerifiedCheckpoint v = moe::verify_against_model(file);
    const moe::CheckpointSummary& s = v.summary;
    std::cout << a.path << ": ok (" << s.format << " version " << s.format_version << ", "
              << v.tensors << " tensors, checksums and shapes match the " << s.origin.family
              << " model of its config)\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // HDF5 cannot terminate cleanly after it gave up on a damaged file (it says so at
  // exit): a damaged file is reported once, by us.
  H5dont_atexit();
  return moe::cli::run_tool("moe-ckpt", kUsage, argc, argv,
                            [&] { return run(parse_args(argc, argv)); },
                            "reading the file: damaged sizes?");
}
