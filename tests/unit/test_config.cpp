// The config system: defaults, precedence (defaults < file < command line), the resolved
// INI round trip, and one-line user errors that name the key or file.

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "framework/config/config.h"
#include "framework/core/error.h"
#include "framework/kernels/device.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

// The message of the user error `fn` throws; fails the test if it throws anything else.
template <class Fn>
std::string user_error_of(Fn fn) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_TRUE(e.user_error()) << e.what();
    const std::string message = e.what();
    EXPECT_EQ(message.find('\n'), std::string::npos) << "not one line: " << message;
    return message;
  }
  ADD_FAILURE() << "no error thrown";
  return "";
}

std::string error_for_overrides(const std::vector<std::string>& overrides) {
  return user_error_of([&] { load_config_text("", overrides); });
}

// A file in a per-test temporary directory, removed with it.
class TempDir {
 public:
  TempDir() {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            (std::string("moe_test_config_") + std::to_string(::getpid()) + "_" +
             test->test_suite_name() + "_" + test->name());
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string write(const std::string& name, const std::string& text) const {
    const fs::path p = path_ / name;
    std::ofstream(p) << text;
    return p.string();
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

Config load_argv(const std::vector<std::string>& args) {
  std::vector<const char*> argv{"moe-train"};
  for (const std::string& a : args) argv.push_back(a.c_str());
  return load_config(static_cast<int>(argv.size()), argv.data());
}

TEST(Config, DefaultsMatchTheStructs) {
  const Config c = load_config_text("", {});
  const Config d;
  EXPECT_EQ(c.model.family, d.model.family);
  EXPECT_EQ(c.model.d_model, d.model.d_model);
  EXPECT_EQ(c.moe.top_k, d.moe.top_k);
  EXPECT_EQ(c.moe.dispatcher, d.moe.dispatcher);
  EXPECT_EQ(c.optim.lr, d.optim.lr);
  EXPECT_EQ(c.optim.eps, d.optim.eps);
  EXPECT_EQ(c.optim.schedule, d.optim.schedule);
  EXPECT_EQ(c.train.steps, d.train.steps);
  EXPECT_EQ(c.train.seed, d.train.seed);
  EXPECT_EQ(c.run.dir, d.run.dir);
  EXPECT_EQ(c.run.overwrite, d.run.overwrite);
  EXPECT_EQ(c.parallel.ranks_per_node, d.parallel.ranks_per_node);
  EXPECT_NE(c.resolved_ini.find("[model]\nfamily = moe_gpt\n"), std::string::npos);
}

TEST(Config, FileThenCommandLinePrecedence) {
  const std::string ini =
      "[train]\nsteps = 7\nseed = 99\n[optim]\nlr = 0.5\nmin_lr = 0.01\nschedule = wsd\n"
      "[run]\noverwrite = yes\n";
  const Config c = load_config_text(ini, {"train.steps=11", "--optim.min_lr=0.02"});
  EXPECT_EQ(c.train.steps, 11);        // command line beats file
  EXPECT_EQ(c.optim.min_lr, 0.02f);    // with or without the leading --
  EXPECT_EQ(c.train.seed, 99u);        // file beats default
  EXPECT_EQ(c.optim.lr, 0.5f);
  EXPECT_EQ(c.optim.schedule, ScheduleKind::kWsd);
  EXPECT_TRUE(c.run.overwrite);
  EXPECT_EQ(c.model.d_model, ModelConfig{}.d_model);  // default stays
}

TEST(Config, LoadConfigReadsFileAndBothOverrideSpellings) {
  TempDir dir;
  const std::string path = dir.write("x.ini", "[model]\nd_model = 32\n[train]\nsteps = 3\n");
  const Config c = load_argv({"--config", path, "--train.steps", "5", "--model.num_heads=2",
                              "--run.resume="});
  EXPECT_EQ(c.model.d_model, 32);
  EXPECT_EQ(c.model.num_heads, 2);
  EXPECT_EQ(c.train.steps, 5);
  EXPECT_TRUE(c.run.resume.fresh());
  const Config with_equals = load_argv({"--config=" + path});
  EXPECT_EQ(with_equals.train.steps, 3);
}

TEST(Config, ResolvedIniRoundTrip) {
  TempDir dir;
  const std::string shard = dir.write("t.tok", "x");
  const Config a = load_config_text(
      "[moe]\nnum_experts = 8\ntop_k = 3\nrenormalize = true\ncapacity_factor = 1.25\n"
      "[optim]\neps = 1e-9\nlr = 0.0003\nmin_lr = 3e-05\n[train]\nseed = 18446744073709551615\n"
      "peak_gflops = 123.456\n",
      {"data.train_path=" + shard, "run.dir=some/dir", "model.norm_eps=1e-5"});
  const Config b = load_config_text(a.resolved_ini, {});
  EXPECT_EQ(a.resolved_ini, b.resolved_ini);
  EXPECT_EQ(b.moe.num_experts, 8);
  EXPECT_EQ(b.moe.top_k, 3);
  EXPECT_TRUE(b.moe.renormalize);
  EXPECT_EQ(b.moe.capacity_factor, 1.25f);
  EXPECT_EQ(b.optim.eps, 1e-9f);
  EXPECT_EQ(b.optim.min_lr, 3e-05f);
  EXPECT_EQ(b.model.norm_eps, 1e-5f);
  EXPECT_EQ(b.train.seed, 18446744073709551615ull);
  EXPECT_EQ(b.train.peak_gflops, 123.456);
  EXPECT_EQ(b.data.train_path, shard);
  EXPECT_EQ(b.run.dir, "some/dir");
  // Every key appears once, under its section.
  for (const std::string& key : config_keys()) {
    const std::string name = key.substr(key.find('.') + 1);
    EXPECT_NE(a.resolved_ini.find("\n" + name + " ="), std::string::npos) << key;
  }
}

TEST(Config, HelpListsEveryKeyWithItsDefault) {
  const std::string help = config_help();
  for (const std::string& key : config_keys())
    EXPECT_NE(help.find("--" + key + "="), std::string::npos) << key;
  EXPECT_NE(help.find("'moe_gpt'"), std::string::npos);
  const char* argv[] = {"moe-train", "--config", "x.ini", "-h"};
  EXPECT_TRUE(help_requested(4, argv));
  EXPECT_FALSE(help_requested(3, argv));
}

TEST(Config, EveryKeyIsDocumented) {
  // docs/configuration.md, found from this source file's location.
  const fs::path doc = fs::path(__FILE__).parent_path() / "../../docs/configuration.md";
  if (!fs::exists(doc)) GTEST_SKIP() << "no " << doc;
  std::ifstream in(doc);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const std::string& key : config_keys())
    EXPECT_NE(text.find("`" + key + "`"), std::string::npos) << key << " is not in " << doc;
}

TEST(ConfigErrors, UnknownKeyOnCommandLine) {
  const std::string m = error_for_overrides({"train.step=3"});
  EXPECT_NE(m.find("train.step"), std::string::npos) << m;
  EXPECT_NE(m.find("command line"), std::string::npos) << m;
  EXPECT_NE(m.find("did you mean train.steps"), std::string::npos) << m;
}

TEST(ConfigErrors, UnknownKeyInFile) {
  TempDir dir;
  const std::string path = dir.write("bad.ini", "[train]\nsteps = 3\n\n[moe]\nnum_expert = 4\n");
  const std::string m = user_error_of([&] { load_argv({"--config", path}); });
  EXPECT_NE(m.find("moe.num_expert"), std::string::npos) << m;
  EXPECT_NE(m.find(path), std::string::npos) << m;
  EXPECT_NE(m.find("did you mean moe.num_experts"), std::string::npos) << m;
  // A key outside any section is unknown too, and the suggestion adds the section.
  const std::string m2 = user_error_of([&] { load_config_text("steps = 3\n", {}); });
  EXPECT_NE(m2.find("did you mean train.steps"), std::string::npos) << m2;
}

TEST(ConfigErrors, StrayArgumentsAndRepeats) {
  // A repeated override takes its last value (scripts append overrides) ...
  EXPECT_EQ(load_config_text("", {"train.steps=3", "train.steps=4"}).train.steps, 4);
  // ... but two config files are ambiguous.
  const std::string twice = user_error_of([] { load_argv({"--config", "a.ini", "--config", "b.ini"}); });
  EXPECT_NE(twice.find("--config: given more than once"), std::string::npos) << twice;
  const std::string m = user_error_of([] {
    load_argv({"--train.steps=3", "oops"});
  });
  EXPECT_NE(m.find("'oops'"), std::string::npos) << m;
  const std::string m2 = user_error_of([] { load_argv({"--train.steps"}); });
  EXPECT_NE(m2.find("train.steps"), std::string::npos) << m2;
  const std::string m3 =
      user_error_of([] { load_config_text("[train]\nsteps = 3\nsteps = 4\n", {}); });
  EXPECT_NE(m3.find("train.steps"), std::string::npos) << m3;
}

TEST(ConfigErrors, BadValueType) {
  EXPECT_EQ(error_for_overrides({"train.steps=abc"}),
            "train.steps: 'abc' is not an integer (command line)");
  EXPECT_NE(error_for_overrides({"model.d_model=1.5"}).find("'1.5' is not an integer"),
            std::string::npos);
  EXPECT_NE(error_for_overrides({"optim.lr=fast"}).find("optim.lr: 'fast' is not a number"),
            std::string::npos);
  EXPECT_NE(error_for_overrides({"optim.lr=nan"}).find("optim.lr"), std::string::npos);
  EXPECT_NE(error_for_overrides({"run.overwrite=maybe"})
                .find("run.overwrite: 'maybe' is not a boolean"),
            std::string::npos);
  EXPECT_NE(error_for_overrides({"train.seed=-1"}).find("train.seed"), std::string::npos);
  EXPECT_NE(error_for_overrides({"model.seq_len=99999999999"}).find("out of range"),
            std::string::npos);
  const std::string in_file =
      user_error_of([] { load_config_text("[model]\nnum_layers = two\n", {}); });
  EXPECT_EQ(in_file, "model.num_layers: 'two' is not an integer (in config text)");
}

TEST(ConfigErrors, OutOfRange) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"model.vocab_size=0", "model.vocab_size"},
      {"model.seq_len=-4", "model.seq_len"},
      {"moe.top_k=0", "moe.top_k"},
      {"moe.aux_loss=-0.1", "moe.aux_loss"},
      {"moe.z_loss=-1", "moe.z_loss"},
      {"optim.beta1=1", "optim.beta1"},
      {"optim.beta2=-0.5", "optim.beta2"},
      {"optim.eps=0", "optim.eps"},
      {"optim.weight_decay=-1", "optim.weight_decay"},
      {"optim.warmup_steps=-1", "optim.warmup_steps"},
      {"optim.decay_fraction=1.5", "optim.decay_fraction"},
      {"optim.schedule=linear", "optim.schedule"},
      {"data.batch_size=0", "data.batch_size"},
      {"train.steps=0", "train.steps"},
      {"train.log_interval=0", "train.log_interval"},
      {"checkpoint.keep=0", "checkpoint.keep"},
      {"parallel.dp=0", "parallel.dp"},
      {"moe.routing=expert_choice", "moe.routing"},
      {"moe.routing=bilevel", "moe.node_groups"},
      {"model.family=gpt", "model.family"},
      {"run.dir=", "run.dir"},
  };
  for (const auto& [override_text, key] : cases) {
    const std::string m = error_for_overrides({override_text});
    EXPECT_EQ(m.rfind(key, 0), 0u) << override_text << " -> " << m;
  }
  EXPECT_NO_THROW(load_config_text("", {"moe.dispatcher=two_level"}));
  EXPECT_NO_THROW(load_config_text("", {"moe.dispatcher=node_dedup"}));
  EXPECT_EQ(error_for_overrides({"moe.dispatcher=nccl"}),
            "moe.dispatcher: 'nccl' is not a dispatcher (known: auto, local, flat, two_level, "
            "node_dedup, shm) (command line)");
  // run.resume is auto or an existing checkpoint; run.init_from an existing file.
  EXPECT_EQ(error_for_overrides({"run.resume=/nonexistent/step_00000010.h5"}),
            "run.resume: file '/nonexistent/step_00000010.h5' does not exist");
  EXPECT_EQ(error_for_overrides({"run.init_from=/nonexistent/model.h5"}),
            "run.init_from: file '/nonexistent/model.h5' does not exist");
  EXPECT_TRUE(load_config_text("", {"run.resume=auto"}).run.resume.automatic());
}

TEST(ConfigErrors, InconsistentCombinations) {
  EXPECT_EQ(error_for_overrides({"moe.num_experts=4", "moe.top_k=5"}),
            "moe.top_k: 5 must be in [1, moe.num_experts = 4]");
  EXPECT_NE(error_for_overrides({"model.d_model=66", "model.num_heads=4"})
                .find("model.d_model: 66 must be divisible by model.num_heads (4)"),
            std::string::npos);
  EXPECT_NE(error_for_overrides({"model.d_model=12", "model.num_heads=4"}).find("even"),
            std::string::npos);
  EXPECT_NE(error_for_overrides({"model.num_layers=2", "model.dense_layers=3"})
                .find("model.dense_layers"),
            std::string::npos);
  EXPECT_NE(error_for_overrides({"optim.lr=0.001", "optim.min_lr=0.01"}).find("optim.min_lr"),
            std::string::npos);
  EXPECT_NE(error_for_overrides({"parallel.dp=2", "data.batch_size=3"}).find("data.batch_size"),
            std::string::npos);
  EXPECT_NE(error_for_overrides({"parallel.ep=2"}).find("parallel.ep"), std::string::npos);
  // expert-tensor parallelism: the folding and the expert width
  EXPECT_EQ(error_for_overrides({"parallel.dp=4", "parallel.etp=3"}),
            "parallel.ep * parallel.etp: 3 must divide parallel.dp * parallel.tp = 4");
  EXPECT_EQ(error_for_overrides({"parallel.dp=8", "parallel.ep=2", "parallel.etp=4",
                                 "moe.num_experts=4", "moe.expert_ffn=30"}),
            "moe.expert_ffn: 30 must be divisible by parallel.etp = 4");
  EXPECT_NO_THROW(load_config_text("", {"parallel.dp=4", "parallel.ep=2", "parallel.etp=2",
                                        "moe.num_experts=4", "moe.expert_ffn=32"}));
}

TEST(ConfigErrors, Device) {
  EXPECT_EQ(error_for_overrides({"run.device=gpu"}),
            "run.device: 'gpu' is not a device (known: cpu, cuda) (command line)");
  EXPECT_EQ(error_for_overrides({"run.share_gpus=true"}),
            "run.share_gpus: true needs run.device = cuda");
  EXPECT_EQ(load_config_text("", {}).run.device, Device::kCpu);
  if (cuda_backend_built()) {
    EXPECT_EQ(load_config_text("", {"run.device=cuda"}).run.device, Device::kCuda);
  } else {
    EXPECT_EQ(error_for_overrides({"run.device=cuda"}),
              "run.device: cuda, but this build has no CUDA backend (build where nvcc is "
              "installed, or with -DMOE_WITH_CUDA=ON)");
  }
}

// One GPU per rank: local rank mod visible GPUs, refused without enough GPUs.
TEST(ConfigErrors, GpuChoice) {
  EXPECT_EQ(choose_gpu(0, 1, 1, false), 0);
  EXPECT_EQ(choose_gpu(3, 4, 8, false), 3);
  EXPECT_EQ(choose_gpu(5, 8, 4, true), 1);
  EXPECT_EQ(user_error_of([] { choose_gpu(0, 1, 0, false); }),
            "run.device: cuda, but no CUDA device is visible to this process (check the "
            "driver and CUDA_VISIBLE_DEVICES)");
  EXPECT_EQ(user_error_of([] { choose_gpu(2, 4, 2, false); }),
            "run.device: cuda with 4 ranks on this node but 2 visible GPUs; start at most 2 "
            "ranks per node or set run.share_gpus = true");
  // Without a GPU (or without the backend) a cuda device is refused before anything runs.
  if (visible_cuda_devices() == 0) {
    EXPECT_NE(user_error_of([] { ComputeDevice d(Device::kCuda, 0, 1, false); })
                  .find("run.device: cuda"),
              std::string::npos);
  }
  EXPECT_EQ(ComputeDevice(Device::kCpu, 0, 1, false).description(), "cpu");
}

TEST(ConfigErrors, TensorParallelSizes) {
  const std::vector<std::string> ok = {"model.d_model=32", "model.num_heads=4",
                                       "model.dense_ffn=64", "moe.num_shared=1",
                                       "moe.shared_ffn=32", "model.vocab_size=256"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), ok.begin(), ok.end());
    return extra;
  };
  EXPECT_NO_THROW(load_config_text("", with({"parallel.tp=4"})));
  EXPECT_EQ(error_for_overrides(with({"parallel.tp=8"})),
            "model.num_heads: 4 must be divisible by parallel.tp = 8");
  EXPECT_EQ(error_for_overrides(with({"parallel.tp=4", "model.dense_ffn=66"})),
            "model.dense_ffn: 66 must be divisible by parallel.tp = 4");
  EXPECT_EQ(error_for_overrides(with({"parallel.tp=4", "moe.shared_ffn=30"})),
            "moe.num_shared * moe.shared_ffn: 30 (the shared experts' width) must be "
            "divisible by parallel.tp = 4");
  // 257 over tp 4: blocks of 65, 65, 65, 62 (the last one padded); 5 over 4: 2, 2, 1, 0
  EXPECT_NO_THROW(load_config_text("", with({"parallel.tp=4", "model.vocab_size=257"})));
  EXPECT_EQ(error_for_overrides(with({"parallel.tp=4", "model.vocab_size=5"})),
            "model.vocab_size: 5 leaves tp rank 3 no row in blocks of 2 (parallel.tp = 4); "
            "use a larger vocabulary or a smaller tp");
  // tp and etp compose: experts folded as edp x ep x etp over the dp x tp ranks
  EXPECT_NO_THROW(load_config_text("", with({"parallel.tp=2", "parallel.etp=2"})));
}

TEST(ConfigErrors, SequenceParallelRows) {
  const std::vector<std::string> ok = {"model.d_model=32", "model.num_heads=4",
                                       "model.dense_ffn=64", "model.vocab_size=256",
                                       "parallel.sequence_parallel=true"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), ok.begin(), ok.end());
    return extra;
  };
  // the language model: B/dp * T rows per dp rank over tp
  EXPECT_NO_THROW(load_config_text("", with({"parallel.tp=2", "model.seq_len=5",
                                             "data.batch_size=2"})));
  EXPECT_EQ(error_for_overrides(with({"parallel.tp=2", "model.seq_len=5", "data.batch_size=3"})),
            "data.batch_size: 3 gives 15 rows per dp rank (3 x 5 tokens), not divisible by "
            "parallel.tp = 2 (parallel.sequence_parallel)");
  // at tp = 1 the option does nothing, so nothing needs to divide
  EXPECT_NO_THROW(load_config_text("", with({"model.seq_len=5", "data.batch_size=3"})));
  // ViT: CLS + 16 patches = 17 tokens per image
  const std::vector<std::string> vit = {"model.family=vit_moe", "model.image_size=28",
                                        "model.patch_size=7", "model.pool=cls"};
  std::vector<std::string> bad_vit = with({"parallel.tp=2", "data.batch_size=3"});
  bad_vit.insert(bad_vit.end(), vit.begin(), vit.end());
  EXPECT_EQ(error_for_overrides(bad_vit),
            "data.batch_size: 3 gives 51 rows per dp rank (3 x 17 tokens), not divisible by "
            "parallel.tp = 2 (parallel.sequence_parallel)");
  // DiT: whole images per tp rank
  EXPECT_EQ(error_for_overrides(with({"model.family=dit_moe", "parallel.tp=2",
                                      "data.batch_size=3"})),
            "data.batch_size: 3 gives 3 images per dp rank, not divisible by parallel.tp = 2 "
            "(parallel.sequence_parallel keeps whole images per tp rank)");
}

TEST(ConfigErrors, MissingFiles) {
  TempDir dir;
  const std::string missing = dir.file("nope.ini");
  const std::string m = user_error_of([&] { load_argv({"--config", missing}); });
  EXPECT_NE(m.find(missing), std::string::npos) << m;
  EXPECT_NE(m.find("does not exist"), std::string::npos) << m;
  const std::string shard = dir.file("nope.tok");
  const std::string m2 = error_for_overrides({"data.train_path=" + shard});
  EXPECT_EQ(m2, "data.train_path: file '" + shard + "' does not exist");
  const std::string m3 = error_for_overrides({"data.val_path=" + shard});
  EXPECT_EQ(m3.rfind("data.val_path", 0), 0u) << m3;
}

TEST(ConfigWorld, WorldSizeMustMatchTheGrid) {
  ParallelConfig p;
  EXPECT_NO_THROW(check_world_size(p, 1));
  p.dp = 2;
  p.tp = 2;
  EXPECT_NO_THROW(check_world_size(p, 4));
  const std::string m = user_error_of([&] { check_world_size(p, 2); });
  EXPECT_NE(m.find("parallel.dp * parallel.tp"), std::string::npos) << m;
}

}  // namespace
}  // namespace moe
