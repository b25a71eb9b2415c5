// moe-sample --checkpoint RUN/model.h5 --out FILE.png [options] [--section.key=value ...]
//
// Generates class-conditional samples from a trained model of a family that generates
// images (dit_moe: the weights and resolved config that moe-train saves as
// <run.dir>/model.h5) with the sampler of its config (dit_moe: diffusion.sampler, DDIM
// for ddpm, Euler for rectified flow, diffusion.sample_steps steps, classifier-free
// guidance diffusion.guidance); --section.key=value overrides those (or any) options of
// the checkpoint's config. Writes a PNG grid with one row per class, and prints one
// JSON line with what it did.
//
//   --per-class N        samples per class (default 10, at most 10000); the grid is
//                        classes x N
//   --seed S             seed of the initial noise (default 0)
//   --classifier PATH    a model.h5 of a family that classifies images (vit_moe):
//                        classify every sample and report the share
//                        classified as the class it was conditioned on (class
//                        consistency), overall and per class
//   --stats FILE.json    per-step expert selection counts of every MoE layer
//   --batch N            images generated at once (default 100, at most 10000)
//
// Everything is checked before sampling: the checkpoint, the classifier, and that
// --out (and --stats) do not exist yet: nothing is overwritten.
//
// Exit status: 0 done, 2 bad input (one line naming it), 1 any other failure.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <new>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/checkpoint/checkpoint.h"
#include "framework/checkpoint/h5_file.h"
#include "framework/checkpoint/state_dict.h"
#include "framework/cli/args.h"
#include "framework/config/config.h"
#include "framework/core/printable.h"
#include "framework/core/timer.h"
#include "framework/data/png.h"
#include "framework/kernels/ops.h"
#include "framework/moe/dispatcher.h"
#include "models/registry.h"

namespace {

struct Args {
  std::string checkpoint, out, classifier, stats;
  int per_class = 10;
  int batch = 100;
  uint64_t seed = 0;
  std::vector<std::string> overrides;  // --section.key=value for the checkpoint's config
};

void require_new_file(const char* flag, const std::string& path) {
  std::error_code ec;
  MOE_USER_CHECK(!std::filesystem::exists(path, ec), flag, ": '", path,
                 "' exists; not overwriting it");
}

Args parse_args(int argc, char** argv) {
  Args a;
  moe::cli::ArgReader args(argc, argv);
  using moe::cli::parse_number;
  while (args.next()) {
    const std::string& arg = args.arg();
    if (arg == "--checkpoint") a.checkpoint = args.value();
    else if (arg == "--out") a.out = args.value();
    else if (arg == "--classifier") a.classifier = args.value();
    else if (arg == "--stats") a.stats = args.value();
    // sizes bounded so that no value can ask for unbounded memory or time
    else if (arg == "--per-class") a.per_class = parse_number<int>(arg, args.value(), 1, 10000);
    else if (arg == "--batch") a.batch = parse_number<int>(arg, args.value(), 1, 10000);
    else if (arg == "--seed") a.seed = parse_number<uint64_t>(arg, args.value(), 0, INT64_MAX);
    else if (args.is_flag() && arg.find('.') != std::string::npos)
      a.overrides.push_back(arg.substr(2) + "=" + args.value());
    else
      MOE_USER_FAIL("unexpected argument '", arg, "' (see moe-sample --help)");
  }
  MOE_USER_CHECK(!a.checkpoint.empty(), "--checkpoint: required");
  MOE_USER_CHECK(!a.out.empty(), "--out: required");
  require_new_file("--out", a.out);
  if (!a.stats.empty()) require_new_file("--stats", a.stats);
  return a;
}

// A model file written by moe-train: its config (with overrides) and its weights.
struct LoadedModel {
  moe::Config config;
  moe::ParamStore store;
  moe::LocalDispatcher dispatcher;
};

moe::Config read_config(const moe::H5File& file, const std::vector<std::string>& overrides) {
  moe::check_format(file);  // not ours, or another format version: say so first
  return moe::config_for_use(file.string_attr("/config", "ini"), overrides);
}

uint8_t to_pixel(float x, const moe::DataConfig& d) {
  const float p = std::clamp(x * d.image_std + d.image_mean, 0.0f, 1.0f);
  return static_cast<uint8_t>(std::lround(p * 255.0f));
}

// Per-step expert selection counts: counts[step][layer][expert].
struct ExpertStats {
  std::vector<double> timesteps;
  std::vector<std::vector<std::vector<int64_t>>> counts;

  // Adds the loads the MoE layers hold now (after the model evaluation of sampling step
  // `step`, at timestep t) to that step's counts.
  void record(const std::vector<moe::MoELayer*>& layers, int step, double t, int64_t experts) {
    if (static_cast<size_t>(step) >= counts.size()) {
      timesteps.push_back(t);
      counts.emplace_back(layers.size());
      for (size_t l = 0; l < layers.size(); ++l)
        counts[step][l].assign(static_cast<size_t>(experts), 0);
    }
    for (size_t l = 0; l < layers.size(); ++l) {
      const std::vector<int64_t>& assigned = layers[l]->load_stats().assigned;
      for (size_t e = 0; e < assigned.size(); ++e) counts[step][l][e] += assigned[e];
    }
  }
};

// The model of --classifier (a family that classifies images), loaded and checked
// against the samples before any sampling.
struct Classifier {
  LoadedModel m;
  std::unique_ptr<moe::Network> net;
};

std::unique_ptr<Classifier> load_classifier(const std::string& path, int64_t image_floats,
                                            int num_classes) {
  moe::H5File file = moe::H5File::open(path);
  auto c = std::make_unique<Classifier>(Classifier{{read_config(file, {}), {}, {}}, nullptr});
  LoadedModel& m = c->m;
  const moe::ModelFamily& family = moe::model_family(m.config.model.family);
  MOE_USER_CHECK(family.classifies_images, "--classifier: '", path, "' holds a ",
                 m.config.model.family, " model, which does not classify images (families "
                 "that do: ", moe::families_that([](const moe::ModelFamily& f) { return f.classifies_images; }), ")");
  MOE_USER_CHECK(int64_t{m.config.model.image_channels} * m.config.model.image_size *
                         m.config.model.image_size == image_floats &&
                     m.config.model.num_classes == num_classes,
                 "--classifier: '", path, "' takes other images or classes than the samples");
  c->net = family.make_network(m.config, m.store,
                               moe::MoeRuntime::local(m.dispatcher, m.config.moe.num_experts));
  moe::load_weights(file, m.store);
  return c;
}

nlohmann::json classify(Classifier& classifier, const std::vector<uint8_t>& pixels,
                        const std::vector<int32_t>& labels, int64_t image_floats,
                        int num_classes) {
  LoadedModel& m = classifier.m;
  auto& model = dynamic_cast<moe::ImageClassifier&>(*classifier.net);
  const int64_t n = static_cast<int64_t>(labels.size());
  std::vector<int64_t> correct(num_classes, 0), total(num_classes, 0);
  const moe::DataConfig& d = m.config.data;
  const int64_t chunk = 100;
  std::vector<float> x;
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const int64_t count = std::min(chunk, n - begin);
    x.resize(static_cast<size_t>(count * image_floats));
    for (int64_t i = 0; i < count * image_floats; ++i)
      x[i] = (pixels[begin * image_floats + i] / 255.0f - d.image_mean) / d.image_std;
    const moe::Tensor logits = model.predict(x.data(), count);
    for (int64_t b = 0; b < count; ++b) {
      const float* row = logits.data + b * logits.cols();
      const int64_t best = std::max_element(row, row + logits.cols()) - row;
      const int32_t y = labels[begin + b];
      total[y] += 1;
      correct[y] += best == y;
    }
  }
  nlohmann::json per_class = nlohmann::json::array();
  int64_t sum_correct = 0;
  for (int c = 0; c < num_classes; ++c) {
    sum_correct += correct[c];
    per_class.push_back(total[c] ? static_cast<double>(correct[c]) / total[c] : 0.0);
  }
  return {{"class_consistency", static_cast<double>(sum_correct) / std::max<int64_t>(n, 1)},
          {"per_class", per_class}};
}

// Mean share of each expert over the first and the last third of the sampling steps
// (high-noise vs low-noise timesteps), per layer.
nlohmann::json stats_summary(const ExpertStats& s, const std::vector<int>& blocks) {
  const size_t steps = s.counts.size();
  nlohmann::json layers = nlohmann::json::array();
  if (steps == 0) return layers;
  const size_t third = std::max<size_t>(1, steps / 3);
  for (size_t l = 0; l < blocks.size(); ++l) {
    auto share = [&](size_t begin, size_t end) {
      std::vector<double> sum(s.counts[0][l].size(), 0.0);
      double total = 0.0;
      for (size_t i = begin; i < end; ++i)
        for (size_t e = 0; e < sum.size(); ++e) {
          sum[e] += static_cast<double>(s.counts[i][l][e]);
          total += static_cast<double>(s.counts[i][l][e]);
        }
      for (double& v : sum) v /= std::max(total, 1.0);
      return sum;
    };
    layers.push_back({{"layer", blocks[l]},
                      {"early_share", share(0, third)},
                      {"late_share", share(steps - third, steps)}});
  }
  return layers;
}

int run(const Args& a) {
  moe::Stopwatch clock;
  moe::H5File file = moe::H5File::open(a.checkpoint);
  LoadedModel m{read_config(file, a.overrides), {}, {}};
  const moe::Config& c = m.config;
  const moe::ModelFamily& family = moe::model_family(c.model.family);
  MOE_USER_CHECK(family.generates_images, "--checkpoint: '", a.checkpoint, "' holds a ",
                 c.model.family, " model; moe-sample needs a family that generates images (",
                 moe::families_that([](const moe::ModelFamily& f) { return f.generates_images; }), ")");
  const std::unique_ptr<moe::Network> net = family.make_network(
      c, m.store, moe::MoeRuntime::local(m.dispatcher, c.moe.num_experts));
  auto& generator = dynamic_cast<moe::ImageGenerator&>(*net);
  moe::load_weights(file, m.store);

  const int classes = c.model.num_classes;
  const int64_t size = c.model.image_size;
  const int64_t image_floats = int64_t{c.model.image_channels} * size * size;
  std::unique_ptr<Classifier> classifier;
  if (!a.classifier.empty()) classifier = load_classifier(a.classifier, image_floats, classes);
  std::vector<int32_t> labels;
  for (int y = 0; y < classes; ++y) labels.insert(labels.end(), a.per_class, y);

  ExpertStats stats;
  const std::vector<moe::MoELayer*> layers = net->moe_layers();
  std::vector<uint8_t> pixels(labels.size() * image_floats);
  const int64_t n = static_cast<int64_t>(labels.size());
  for (int64_t begin = 0, chunk = 0; begin < n; begin += a.batch, ++chunk) {
    const int64_t count = std::min<int64_t>(a.batch, n - begin);
    const uint64_t seed = a.seed * 1000003u + static_cast<uint64_t>(chunk);  // noise per chunk
    const std::span<const int32_t> chunk_labels(labels.data() + begin, count);
    const std::vector<float> x = generator.generate(chunk_labels, seed, [&](int step, double t) {
      stats.record(layers, step, t, c.moe.num_experts);
    });
    for (int64_t i = 0; i < count * image_floats; ++i)
      pixels[begin * image_floats + i] = to_pixel(x[i], c.data);
  }

  // The grid: one row per class, the first channel of each sample.
  std::vector<std::vector<uint8_t>> tiles;
  for (int64_t i = 0; i < n; ++i)
    tiles.emplace_back(pixels.begin() + i * image_floats,
                       pixels.begin() + i * image_floats + size * size);
  int64_t width = 0, height = 0;
  const std::vector<uint8_t> grid =
      moe::tile_images(tiles, classes, a.per_class, size, size, 2, 255, &width, &height);

  nlohmann::json result = {{"out", a.out},
                           {"samples", n},
                           {"width", width},
                           {"height", height},
                           {"sampler", generator.sampler_name()},
                           {"steps", c.diffusion.sample_steps},
                           {"guidance", c.diffusion.guidance}};
  if (!a.stats.empty()) {
    std::ofstream out(a.stats, std::ios::trunc);
    MOE_USER_CHECK(out.good(), "--stats: cannot write '", a.stats, "'");
    out << nlohmann::json{{"timesteps", stats.timesteps},
                          {"layers", net->moe_layer_blocks()},
                          {"counts", stats.counts},
                          {"summary", stats_summary(stats, net->moe_layer_blocks())}}
               .dump()
        << "\n";
    MOE_USER_CHECK(out.good(), "--stats: cannot write '", a.stats, "'");
  }
  if (classifier) result.update(classify(*classifier, pixels, labels, image_floats, classes));
  moe::write_png_gray(a.out, width, height, grid);
  result["seconds"] = clock.seconds();
  std::cout << result.dump() << std::endl;
  return 0;
}


constexpr const char* kUsage =
    "usage: moe-sample --checkpoint RUN/model.h5 --out FILE.png [--per-class N]\n"
    "       [--seed S] [--batch N] [--classifier VIT/model.h5] [--stats FILE.json]\n"
    "       [--section.key=value ...]   (overrides, e.g. --diffusion.guidance=4)\n";

}  // namespace

int main(int argc, char** argv) {
  // HDF5 cannot terminate cleanly after it gave up on a damaged file (it says so at
  // exit): a damaged file is reported once, by us.
  H5dont_atexit();
  moe::ops::select_cpu_kernels(argv);  // may re-execute: before anything else
  return moe::cli::run_tool("moe-sample", kUsage, argc, argv,
                            [&] { return run(parse_args(argc, argv)); },
                            "use fewer --per-class samples or a smaller --batch");
}
