// mpi-ranks: 1 2 3 4
// Checkpoint files under mpirun: every rank writes its own blocks into one file and any
// layout reads it back.
//   - round trip of every tensor (parameters, exp_avg, exp_avg_sq), the AdamW step,
//     the buffers and every trainer field, written with experts sharded over ep = world
//     (uneven: 7 experts) and read back into the same layout, into replicated expert
//     blocks (ep = 2 with edp copies) and into whole tensors on every rank;
//   - the file is the logical tensor: each element has its logical value, written once;
//   - bad files are user errors on every rank: missing, truncated, foreign, another
//     format version, another model family, a parameter of another shape, a corrupted
//     tensor (checksum), a weights file given to resume.
//
// Checks after a collective use EXPECT (not ASSERT): a rank leaving a test early would
// leave the others waiting in the next collective.

#include <gtest/gtest.h>
#include <hdf5.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "framework/checkpoint/checkpoint.h"
#include "framework/moe/placement.h"
#include "framework/parallel/mpi_communicator.h"
#include "tests/parallel/mpi_test.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kExperts = 7, kF = 3, kC = 4;

// The value of logical element i of copy `copy` (0 value, 1 exp_avg, 2 exp_avg_sq) of
// parameter `param`: distinct everywhere, exact in float.
float expected_value(size_t param, int copy, int64_t i) {
  return static_cast<float>(param) * 1000.0f + static_cast<float>(copy) * 100.0f +
         static_cast<float>(i) * 0.25f;
}

// A model of two parameters: a replicated matrix and experts (E, F, C) in blocks over
// `ep` ranks (ep_rank = world rank mod ep; ep = 1: whole on every rank).
struct Model {
  ParamStore store;
  std::unique_ptr<AdamW> optimizer;
  std::vector<float> bias = std::vector<float>(kExperts, 0.0f);

  Model(int ep, int rank) {
    store.add({"layers.0.attn.w_qkv", Shape{6, kC}, Shard::kReplicated, Init::zeros()});
    const ExpertPlacement placement{kExperts, ep, rank % ep};
    store.add_shard({"layers.1.moe.experts.w_up", Shape{kExperts, kF, kC}, Shard::kExpert,
                     Init::zeros()},
                    Shape{placement.num_local(), kF, kC}, {placement.first_local(), 0, 0});
    optimizer = std::make_unique<AdamW>(store, OptimConfig{});
  }
  float* data(size_t i, int copy) {
    if (copy == 0) return store.params()[i].value.data();
    return copy == 1 ? optimizer->exp_avg(i).data : optimizer->exp_avg_sq(i).data;
  }
  // Fills every local element with its expected logical value.
  void fill() {
    for (size_t i = 0; i < store.params().size(); ++i)
      for (int copy = 0; copy < 3; ++copy) {
        const Param& p = store.params()[i];
        const int64_t per_expert = p.spec.shape.numel() / p.spec.shape[0];
        for (int64_t j = 0; j < p.numel(); ++j)
          data(i, copy)[j] = expected_value(i, copy, p.offset[0] * per_expert + j);
      }
    for (int64_t e = 0; e < kExperts; ++e) bias[e] = 0.5f * static_cast<float>(e) - 1.0f;
    optimizer->set_step_count(17);
  }
  // Number of local elements that differ from their expected value.
  int64_t mismatches() {
    int64_t bad = 0;
    for (size_t i = 0; i < store.params().size(); ++i)
      for (int copy = 0; copy < 3; ++copy) {
        const Param& p = store.params()[i];
        const int64_t per_expert = p.spec.shape.numel() / p.spec.shape[0];
        for (int64_t j = 0; j < p.numel(); ++j)
          bad += data(i, copy)[j] != expected_value(i, copy, p.offset[0] * per_expert + j);
      }
    for (int64_t e = 0; e < kExperts; ++e) bad += bias[e] != 0.5f * static_cast<float>(e) - 1.0f;
    return bad;
  }
};

TrainerState sample_state() {
  TrainerState t;
  t.step = 17;
  t.tokens_seen = 17 * 256;
  t.rng_seed = 0xFEDCBA9876543210ull;  // above 2^63: stored unsigned
  t.rng_counter = 17;
  t.data_position = 17;
  t.lr_schedule = "wsd";
  t.lr_total_steps = 40;
  t.lr_warmup_steps = 5;
  t.lr_peak = 3e-3;
  t.lr_min = 3e-4;
  t.lr_decay_fraction = 0.2;
  t.lr_last = 2.5e-3;
  return t;
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    world_ = std::make_unique<MpiCommunicator>(test::mpi_env().world());
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    // One directory for all ranks: named by the test and the job's size.
    dir_ = fs::temp_directory_path() / ("moe_test_ckpt_np" + std::to_string(world_->size()) +
                                        "_" + info->name());
    if (world_->rank() == 0) {
      fs::remove_all(dir_);
      fs::create_directories(dir_);
    }
    world_->barrier();
  }
  void TearDown() override {
    world_->barrier();
    if (world_->rank() == 0) fs::remove_all(dir_);
  }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }
  int rank() const { return world_->rank(); }
  int size() const { return world_->size(); }

  CheckpointOrigin origin(int ep) const {
    ParallelConfig layout;
    layout.dp = size();
    layout.ep = ep;
    return {"[model]\nfamily = moe_gpt\n", "moe_gpt", layout, size()};
  }

  // Writes a checkpoint of the model with experts over `ep` ranks.
  void write(const std::string& path, int ep, bool full = true, bool collective = true) {
    Model m(ep, rank());
    m.fill();
    TrainerState state = sample_state();
    const BlockPlan plan(m.store, *world_);
    CheckpointContent content{&m.store, full ? m.optimizer.get() : nullptr,
                              {{"layers.1.moe.router.bias", m.bias}}, full ? &state : nullptr};
    WriteOptions options;
    options.collective = collective;
    write_checkpoint(path, content, origin(ep), plan, *world_, options);
  }

  // Reads `path` into a model with experts over `ep` ranks; returns the user error
  // message ("" when none).
  std::string read(const std::string& path, int ep, Model* out = nullptr,
                   TrainerState* state_out = nullptr, ReadWhat what = ReadWhat::kEverything,
                   const std::string& family = "moe_gpt") {
    Model local(ep, rank());
    Model& m = out ? *out : local;
    TrainerState state;
    const BlockPlan plan(m.store, *world_);
    CheckpointContent content{&m.store, m.optimizer.get(), {{"layers.1.moe.router.bias", m.bias}},
                              &state};
    try {
      read_checkpoint(path, content, what, family, plan, *world_);
    } catch (const Error& e) {
      EXPECT_TRUE(e.user_error()) << e.what();
      return e.what();
    }
    if (state_out) *state_out = state;
    return "";
  }

  // Rank 0 changes the file (then everyone may read it).
  template <class F>
  void on_rank0(F&& change) {
    if (rank() == 0) change();
    world_->barrier();
  }

  std::unique_ptr<MpiCommunicator> world_;
  fs::path dir_;
};

TEST_F(CheckpointTest, RoundTripsEveryTensorAndFieldInTheSameLayout) {
  const int ep = std::min<int>(size(), kExperts);
  write(file("a.h5"), ep);
  EXPECT_TRUE(fs::exists(file("a.h5")));
  EXPECT_FALSE(fs::exists(file("a.h5.tmp")));
  Model m(ep, rank());
  TrainerState state;
  EXPECT_EQ(read(file("a.h5"), ep, &m, &state), "");
  EXPECT_EQ(m.mismatches(), 0);
  EXPECT_EQ(m.optimizer->step_count(), 17);
  const TrainerState want = sample_state();
  EXPECT_EQ(state.step, want.step);
  EXPECT_EQ(state.tokens_seen, want.tokens_seen);
  EXPECT_EQ(state.rng_seed, want.rng_seed);
  EXPECT_EQ(state.rng_counter, want.rng_counter);
  EXPECT_EQ(state.data_position, want.data_position);
  EXPECT_EQ(state.lr_schedule, want.lr_schedule);
  EXPECT_EQ(state.lr_total_steps, want.lr_total_steps);
  EXPECT_EQ(state.lr_warmup_steps, want.lr_warmup_steps);
  EXPECT_EQ(state.lr_peak, want.lr_peak);
  EXPECT_EQ(state.lr_min, want.lr_min);
  EXPECT_EQ(state.lr_decay_fraction, want.lr_decay_fraction);
  EXPECT_EQ(state.lr_last, want.lr_last);
}

TEST_F(CheckpointTest, ReadsBackIntoOtherLayouts) {
  // checkpoint.collective_io = true and false write the same tensors
  for (bool collective : {true, false}) {
    write(file("a.h5"), std::min<int>(size(), kExperts), true, collective);
    for (int ep : {1, 2, 3}) {
      if (ep > size()) continue;
      Model m(ep, rank());
      EXPECT_EQ(read(file("a.h5"), ep, &m), "") << "ep " << ep << " collective " << collective;
      EXPECT_EQ(m.mismatches(), 0) << "ep " << ep << " collective " << collective;
    }
    world_->barrier();
    if (rank() == 0) fs::remove(file("a.h5"));
    world_->barrier();
  }
}

TEST_F(CheckpointTest, ReplicatedBlocksAreWrittenOnceAndTheFileIsLogical) {
  // ep = 2 on an even world: ranks r and r + 2, r + 4, ... hold the same experts
  if (size() % 2 != 0) GTEST_SKIP() << "needs an even number of ranks";
  write(file("a.h5"), 2);
  on_rank0([&] {
    const hid_t f = H5Fopen(file("a.h5").c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    std::vector<float> all(kExperts * kF * kC);
    const hid_t ds = H5Dopen2(f, "/optim/layers.1.moe.experts.w_up/exp_avg", H5P_DEFAULT);
    ASSERT_GE(H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, all.data()), 0);
    for (size_t i = 0; i < all.size(); ++i)
      EXPECT_EQ(all[i], expected_value(1, 1, static_cast<int64_t>(i))) << i;
    H5Dclose(ds);
    H5Fclose(f);
  });
  Model m(1, rank());
  EXPECT_EQ(read(file("a.h5"), 1, &m), "");
  EXPECT_EQ(m.mismatches(), 0);
}

TEST_F(CheckpointTest, WeightsFilesHoldWeightsOnly) {
  write(file("w.h5"), std::min<int>(size(), kExperts), /*full=*/false);
  Model m(1, rank());
  EXPECT_EQ(read(file("w.h5"), 1, &m, nullptr, ReadWhat::kWeights), "");
  for (size_t i = 0; i < m.store.params().size(); ++i) {
    const Param& p = m.store.params()[i];
    for (int64_t j = 0; j < p.numel(); ++j) EXPECT_EQ(p.value.data()[j], expected_value(i, 0, j));
  }
  EXPECT_NE(read(file("w.h5"), 1).find("a weights file"), std::string::npos);
}

TEST_F(CheckpointTest, BadFilesAreUserErrorsOnEveryRank) {
  write(file("a.h5"), 1);
  EXPECT_NE(read(file("none.h5"), 1).find("no such file"), std::string::npos);
  EXPECT_NE(read(file("a.h5"), 1, nullptr, nullptr, ReadWhat::kEverything, "dit_moe")
                .find("holds a moe_gpt model, but model.family is dit_moe"),
            std::string::npos);

  on_rank0([&] {
    fs::copy_file(file("a.h5"), file("short.h5"));
    fs::resize_file(file("short.h5"), fs::file_size(file("a.h5")) / 2);
  });
  EXPECT_NE(read(file("short.h5"), 1).find("truncated"), std::string::npos);

  on_rank0([&] {
    const hid_t f = H5Fcreate(file("foreign.h5").c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Gclose(H5Gcreate2(f, "/model", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Fclose(f);
  });
  EXPECT_NE(read(file("foreign.h5"), 1).find("not a moe checkpoint"), std::string::npos);

  on_rank0([&] {  // format_version 1: w_qkv was (3C, C)
    fs::copy_file(file("a.h5"), file("v1.h5"));
    const hid_t f = H5Fopen(file("v1.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    const hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
    const int64_t one = 1;
    H5Awrite(a, H5T_NATIVE_INT64, &one);
    H5Aclose(a);
    H5Fclose(f);
  });
  EXPECT_NE(read(file("v1.h5"), 1).find("format version 1 is not supported (this build reads version 3)"),
            std::string::npos);

  on_rank0([&] {  // one float of the experts' exp_avg_sq changed in place
    fs::copy_file(file("a.h5"), file("bad.h5"));
    const hid_t f = H5Fopen(file("bad.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    const hid_t ds = H5Dopen2(f, "/optim/layers.1.moe.experts.w_up/exp_avg_sq", H5P_DEFAULT);
    const haddr_t at = H5Dget_offset(ds);
    H5Dclose(ds);
    H5Fclose(f);
    std::FILE* raw = std::fopen(file("bad.h5").c_str(), "r+b");
    std::fseek(raw, static_cast<long>(at) + 40, SEEK_SET);
    const float changed = 12345.0f;
    std::fwrite(&changed, sizeof(changed), 1, raw);
    std::fclose(raw);
  });
  EXPECT_NE(read(file("bad.h5"), 1)
                .find("dataset /optim/layers.1.moe.experts.w_up/exp_avg_sq fails its checksum"),
            std::string::npos);
}

TEST_F(CheckpointTest, AShapeMismatchNamesTheParameter) {
  write(file("a.h5"), 1);
  ParamStore store;
  store.add({"layers.0.attn.w_qkv", Shape{6, kC}, Shard::kReplicated, Init::zeros()});
  store.add({"layers.1.moe.experts.w_up", Shape{kExperts + 1, kF, kC}, Shard::kExpert,
             Init::zeros()});
  AdamW optimizer(store, OptimConfig{});
  std::vector<float> bias(kExperts + 1);
  TrainerState state;
  const BlockPlan plan(store, *world_);
  CheckpointContent content{&store, &optimizer, {{"layers.1.moe.router.bias", bias}}, &state};
  std::string message;
  try {
    read_checkpoint(file("a.h5"), content, ReadWhat::kEverything, "moe_gpt", plan, *world_);
  } catch (const Error& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("parameter layers.1.moe.experts.w_up has shape (7, 3, 4) in the "
                         "checkpoint, the model expects (8, 3, 4)"),
            std::string::npos)
      << message;
}

}  // namespace
}  // namespace moe
