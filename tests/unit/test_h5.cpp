// HDF5 state-dict files: round trips, all-or-nothing writes, and clear user errors.

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "framework/checkpoint/h5_file.h"
#include "framework/checkpoint/state_dict.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test (ctest runs tests side by side), removed afterwards.
class H5Test : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("moe_test_h5_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

// Runs `body`, expecting a moe::Error; returns it for inspection.
template <class F>
Error expect_error(F&& body) {
  try {
    body();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "no moe::Error thrown";
  return Error("", false);
}

bool one_line(const std::string& s) { return s.find('\n') == std::string::npos; }

TEST_F(H5Test, RoundTripsDatasetsAndAttributes) {
  const std::string path = file("a.h5");
  const std::vector<float> w = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -7.0f};
  const float scalar = 4.5f;
  const std::vector<int32_t> tokens = {1, -2, 3, 2147483647};
  const std::vector<int64_t> big = {int64_t{1} << 40, -5, 0};
  {
    H5File f = H5File::create(path);
    f.write("/model/layers.0.attn.w_qkv", w.data(), Shape{2, 3});
    f.write("/result/loss", &scalar, Shape{});
    f.write("/batch/inputs", tokens.data(), Shape{2, 2});
    f.write("/counters/steps", big.data(), Shape{3});
    f.set_string_attr("/", "format", "moe-state-dict");
    f.set_string_attr("/config", "ini", "[model]\nd_model = 64\n");
    f.set_int_attr("/config", "model.d_model", 64);
    f.set_float_attr("/config", "moe.aux_loss", 0.01);
    f.set_int_attr("/config", "model.d_model", 128);  // replaces
    f.set_string_attr("/model", "note", "");
    EXPECT_TRUE(fs::exists(path + ".tmp"));
    EXPECT_FALSE(fs::exists(path));
    f.close();
  }
  EXPECT_TRUE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  const H5File f = H5File::open(path);
  EXPECT_FALSE(f.writable());
  EXPECT_TRUE(f.exists("/model"));
  EXPECT_TRUE(f.exists("/model/layers.0.attn.w_qkv"));
  EXPECT_FALSE(f.exists("/model/layers.0"));
  EXPECT_FALSE(f.exists("/nothing/here"));
  EXPECT_EQ(f.list("/model"), std::vector<std::string>{"layers.0.attn.w_qkv"});
  EXPECT_EQ(f.list("/"),
            (std::vector<std::string>{"batch", "config", "counters", "model", "result"}));
  EXPECT_EQ(f.dataset_shape("/model/layers.0.attn.w_qkv"), (Shape{2, 3}));
  EXPECT_EQ(f.dataset_shape("/result/loss").rank, 0);

  std::vector<float> w2(6);
  f.read("/model/layers.0.attn.w_qkv", w2.data(), Shape{2, 3});
  EXPECT_EQ(w2, w);
  float scalar2 = 0;
  f.read("/result/loss", &scalar2, Shape{});
  EXPECT_EQ(scalar2, scalar);
  std::vector<int32_t> tokens2(4);
  f.read("/batch/inputs", tokens2.data(), Shape{2, 2});
  EXPECT_EQ(tokens2, tokens);
  std::vector<int64_t> big2(3);
  f.read("/counters/steps", big2.data(), Shape{3});
  EXPECT_EQ(big2, big);
  // int32 data widen into int64.
  std::vector<int64_t> tokens64(4);
  f.read("/batch/inputs", tokens64.data(), Shape{2, 2});
  EXPECT_EQ(tokens64[3], 2147483647);

  EXPECT_EQ(f.string_attr("/", "format"), "moe-state-dict");
  EXPECT_EQ(f.string_attr("/config", "ini"), "[model]\nd_model = 64\n");
  EXPECT_EQ(f.int_attr("/config", "model.d_model"), 128);
  EXPECT_DOUBLE_EQ(f.float_attr("/config", "moe.aux_loss"), 0.01);
  EXPECT_DOUBLE_EQ(f.float_attr("/config", "model.d_model"), 128.0);
  EXPECT_EQ(f.string_attr("/model", "note"), "");
  EXPECT_TRUE(f.has_attr("/config", "moe.aux_loss"));
  EXPECT_FALSE(f.has_attr("/config", "moe.top_k"));
  EXPECT_FALSE(f.has_attr("/absent", "x"));
}

TEST_F(H5Test, FileNotClosedIsDiscardedAndOldFileKept) {
  const std::string path = file("b.h5");
  const float one = 1.0f, two = 2.0f;
  {
    H5File f = H5File::create(path);
    f.write("/x", &one, Shape{});
    f.close();
  }
  {
    H5File f = H5File::create(path);
    f.write("/x", &two, Shape{});
    // Destroyed without close(), as when an exception unwinds a checkpoint write.
  }
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  float x = 0;
  H5File::open(path).read("/x", &x, Shape{});
  EXPECT_EQ(x, 1.0f);
}

TEST_F(H5Test, MissingDatasetIsAUserErrorNamingIt) {
  const std::string path = file("c.h5");
  const float v = 1.0f;
  {
    H5File f = H5File::create(path);
    f.write("/model/a", &v, Shape{1});
    f.close();
  }
  const H5File f = H5File::open(path);
  float out = 0;
  for (const std::string name : {"/model/b", "/other/b"}) {
    const Error e = expect_error([&] { f.read(name, &out, Shape{1}); });
    EXPECT_TRUE(e.user_error());
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    EXPECT_TRUE(one_line(e.what())) << e.what();
  }
  const Error e = expect_error([&] { (void)f.string_attr("/model", "nope"); });
  EXPECT_TRUE(e.user_error());
  EXPECT_NE(std::string(e.what()).find("nope"), std::string::npos) << e.what();
}

TEST_F(H5Test, WrongShapeOrTypeIsAUserErrorNamingTheDataset) {
  const std::string path = file("d.h5");
  const std::vector<float> w(6, 0.5f);
  const std::vector<int64_t> ids(6, 3);
  {
    H5File f = H5File::create(path);
    f.write("/model/w", w.data(), Shape{2, 3});
    f.write("/batch/ids", ids.data(), Shape{6});
    f.set_string_attr("/", "name", "x");
    f.close();
  }
  const H5File f = H5File::open(path);
  std::vector<float> out(6);
  Error e = expect_error([&] { f.read("/model/w", out.data(), Shape{3, 2}); });
  EXPECT_TRUE(e.user_error());
  EXPECT_NE(std::string(e.what()).find("/model/w has shape (2, 3), expected (3, 2)"),
            std::string::npos)
      << e.what();
  e = expect_error([&] { f.read("/batch/ids", out.data(), Shape{6}); });
  EXPECT_TRUE(e.user_error());
  EXPECT_NE(std::string(e.what()).find("/batch/ids"), std::string::npos) << e.what();
  std::vector<int32_t> narrow(6);  // int64 does not narrow silently into int32
  e = expect_error([&] { f.read("/batch/ids", narrow.data(), Shape{6}); });
  EXPECT_TRUE(e.user_error());
  e = expect_error([&] { (void)f.int_attr("/", "name"); });
  EXPECT_TRUE(e.user_error());
}

TEST_F(H5Test, FileThatIsNotHdf5IsRejectedInOneLine) {
  const std::string path = file("not_h5.h5");
  std::ofstream(path) << "step,loss\n1,5.5\n";
  Error e = expect_error([&] { (void)H5File::open(path); });
  EXPECT_TRUE(e.user_error());
  const std::string what = e.what();
  EXPECT_EQ(what.rfind(path + ": not an HDF5 file", 0), 0u) << what;
  EXPECT_TRUE(one_line(what)) << what;

  e = expect_error([&] { (void)H5File::open(file("absent.h5")); });
  EXPECT_TRUE(e.user_error());
  EXPECT_EQ(std::string(e.what()), file("absent.h5") + ": no such file");

  e = expect_error([&] { (void)H5File::create(file("no_dir/x.h5")); });
  EXPECT_TRUE(e.user_error());
  EXPECT_NE(std::string(e.what()).find("no_dir/x.h5: cannot create"), std::string::npos)
      << e.what();
}

TEST_F(H5Test, H5CheckNamesTheCallAndFile) {
  const Error e = expect_error([] { H5_CHECK(H5Dopen2(-1, "/x", H5P_DEFAULT), "f.h5"); });
  EXPECT_FALSE(e.user_error());
  EXPECT_NE(std::string(e.what()).find("H5Dopen2"), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find("f.h5"), std::string::npos) << e.what();
  // A successful call yields its value.
  const hid_t space = H5_CHECK(H5Screate(H5S_SCALAR), "f.h5");
  EXPECT_GE(space, 0);
  H5_CHECK(H5Sclose(space), "f.h5");
}

ParamStore make_store(int64_t rows) {
  ParamStore store;
  store.add({"embed.weight", Shape{rows, 4}, Shard::kReplicated, Init::normal(0.02f)});
  store.add({"layers.0.attn_norm.weight", Shape{4}, Shard::kReplicated, Init::ones(), false});
  store.add({"layers.1.moe.experts.w_up", Shape{2, 3, 4}, Shard::kExpert, Init::normal(1.0f)});
  return store;
}

TEST_F(H5Test, StateDictRoundTripsValuesAndGradients) {
  const std::string path = file("sd.h5");
  ParamStore saved = make_store(5);
  saved.initialize(7);
  for (Param& p : saved.params())
    for (int64_t i = 0; i < p.numel(); ++i) p.grad.data()[i] = 0.5f * static_cast<float>(i);
  {
    H5File f = H5File::create(path);
    save_params(f, "/model", saved, false);
    save_params(f, "/grads", saved, true);
    f.close();
  }
  const H5File f = H5File::open(path);
  EXPECT_EQ(f.dataset_shape("/model/layers.1.moe.experts.w_up"), (Shape{2, 3, 4}));
  ParamStore loaded = make_store(5);
  load_params(f, "/model", loaded);
  ParamStore grads = make_store(5);
  load_params(f, "/grads", grads);
  for (size_t k = 0; k < saved.params().size(); ++k) {
    const Param& a = saved.params()[k];
    const Param& b = loaded.params()[k];
    const Param& g = grads.params()[k];
    for (int64_t i = 0; i < a.numel(); ++i) {
      EXPECT_EQ(a.value.data()[i], b.value.data()[i]) << a.spec.name;
      EXPECT_EQ(a.grad.data()[i], g.value.data()[i]) << a.spec.name;
    }
  }

  ParamStore wrong = make_store(6);
  Error e = expect_error([&] { load_params(f, "/model", wrong); });
  EXPECT_TRUE(e.user_error());
  EXPECT_NE(std::string(e.what()).find("parameter embed.weight has shape (5, 4)"),
            std::string::npos)
      << e.what();
  EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();

  ParamStore extra = make_store(5);
  extra.add({"lm_head.weight", Shape{5, 4}, Shard::kVocab, Init::normal(0.02f)});
  e = expect_error([&] { load_params(f, "/model", extra); });
  EXPECT_TRUE(e.user_error());
  EXPECT_NE(std::string(e.what()).find("parameter lm_head.weight is missing"),
            std::string::npos)
      << e.what();
}

TEST_F(H5Test, ShardedParametersAreRefusedForNow) {
  ParamStore store;
  store.add_shard({"layers.1.moe.experts.w_up", Shape{4, 3, 2}, Shard::kExpert,
                   Init::normal(1.0f)},
                  Shape{2, 3, 2}, {2, 0, 0});
  H5File f = H5File::create(file("sharded.h5"));
  const Error e = expect_error([&] { save_params(f, "/model", store, false); });
  EXPECT_FALSE(e.user_error());
  EXPECT_NE(std::string(e.what()).find("is sharded"), std::string::npos) << e.what();
}

}  // namespace
}  // namespace moe
