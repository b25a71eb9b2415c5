// The pure parts of the failure handling (docs/failure-behaviour.md): printable
// messages, the watchdog's view of a peer, run directory ownership, pre-flight
// estimates, the attributes checksum and the size bounds of the config.

#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "framework/checkpoint/attr_checksum.h"
#include "framework/checkpoint/h5_file.h"
#include "framework/config/config.h"
#include "framework/core/printable.h"
#include "framework/parallel/watchdog.h"
#include "framework/train/preflight.h"
#include "framework/train/run_lock.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

// The message of the moe::Error `body` throws ("" when it throws none).
template <class F>
std::string error_of(F&& body, bool* user = nullptr) {
  try {
    body();
  } catch (const Error& e) {
    if (user) *user = e.user_error();
    return e.what();
  }
  return "";
}

class ReliabilityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("moe_test_reliability_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  Config config(const std::string& run, const std::string& checkpoints = "") const {
    Config c;
    c.run.dir = path(run);
    c.checkpoint.dir = checkpoints.empty() ? "" : path(checkpoints);
    return c;
  }

  fs::path dir_;
};

TEST(Printable, EscapesControlBytesAndBadUtf8AndShortensLongText) {
  EXPECT_EQ(printable("plain é ✓"), "plain é ✓");  // valid UTF-8 stays
  EXPECT_EQ(printable("a\x1b[31mb\n"), "a\\x1B[31mb\\x0A");
  EXPECT_EQ(printable(std::string("x\xff\xc3", 3)), "x\\xFF\\xC3");  // invalid, truncated
  const std::string shown = printable(std::string(100000, 'k'), 100);
  EXPECT_LT(shown.size(), 140u);
  EXPECT_NE(shown.find("(100000 bytes)"), std::string::npos) << shown;
}

TEST(Watchdog, DescribesWhatAPeerDoes) {
  WatchSlot me;
  me.in_call = 1, me.group = 1, me.call = 7, me.step = 12, me.heartbeat_ms = 10000;
  WatchSlot peer = me;
  EXPECT_EQ(describe_peer(me, &peer, 10500, 3), "");  // in the same call: not waited for
  EXPECT_EQ(describe_peer(me, nullptr, 10500, 3), "");  // out of sight: listed apart
  peer.heartbeat_ms = 1000;
  EXPECT_NE(describe_peer(me, &peer, 10500, 3).find("rank 3 (not responding for 9.5 s"),
            std::string::npos);
  peer.heartbeat_ms = 10000, peer.call = 6, peer.kind = 3, peer.group = 3, peer.since_ms = 9000;
  EXPECT_NE(describe_peer(me, &peer, 10500, 3).find("waiting in all_to_all_v over ep for 1.5 s"),
            std::string::npos)
      << describe_peer(me, &peer, 10500, 3);
  peer.in_call = 0, peer.layer = 3;
  EXPECT_NE(describe_peer(me, &peer, 10500, 3).find("computing for 1.5 s, step 12, MoE layer 3"),
            std::string::npos)
      << describe_peer(me, &peer, 10500, 3);
}

TEST_F(ReliabilityTest, ASecondRunOnTheSameDirectoryIsRefused) {
  const Config c = config("run");
  auto first = RunLock::acquire(c);
  EXPECT_TRUE(fs::exists(path("run/.lock")));
  bool user = false;
  const std::string m = error_of([&] { RunLock::acquire(c); }, &user);
  EXPECT_TRUE(user);
  EXPECT_NE(m.find("run.dir: '" + path("run") + "' is in use by another run"),
            std::string::npos) << m;
  first.reset();  // never committed: what it made goes again
  EXPECT_FALSE(fs::exists(path("run")));
  auto again = RunLock::acquire(c);
  again->commit();  // started: the lock file names the holder
  const std::string named = error_of([&] { RunLock::acquire(c); });
  EXPECT_NE(named.find("(pid " + std::to_string(::getpid()) + " on "), std::string::npos)
      << named;
  again.reset();
  EXPECT_TRUE(fs::exists(path("run/.lock")));  // a started run keeps its directory
}

TEST_F(ReliabilityTest, ArtefactsOfARunNeedResumeOrOverwrite) {
  fs::create_directories(path("run"));
  std::ofstream(path("run/model.h5")) << "x";
  Config c = config("run");
  const std::string m = error_of([&] { RunLock::acquire(c); });
  EXPECT_NE(m.find("already holds a run (" + path("run/model.h5") + ")"), std::string::npos) << m;
  c.run.overwrite = true;
  EXPECT_NO_THROW(RunLock::acquire(c));
}

TEST_F(ReliabilityTest, ACheckpointDirBelongsToOneRun) {
  RunLock::acquire(config("a", "shared"))->commit();
  EXPECT_TRUE(fs::exists(path("shared/OWNER")));
  const std::string m = error_of([&] { RunLock::acquire(config("b", "shared")); });
  EXPECT_NE(m.find("checkpoint.dir: '" + path("shared") + "' holds the checkpoints of the run in '" +
                   fs::weakly_canonical(path("a")).string()),
            std::string::npos) << m;
  EXPECT_FALSE(fs::exists(path("b")));
  EXPECT_NO_THROW(RunLock::acquire(config("a", "shared")));  // its own run comes back
}

TEST(Preflight, EstimatesGrowWithTheRunAndAbsurdOnesAreRefused) {
  Config c;
  const MemoryEstimate small = estimate_memory(c, 1000, 64, 1);
  c.data.batch_size *= 1000;
  const MemoryEstimate large = estimate_memory(c, 1000, 64, 1);
  EXPECT_DOUBLE_EQ(small.state_bytes, 16000.0);
  EXPECT_GT(large.activation_bytes, 999 * small.activation_bytes);
  c.data.batch_size = 1 << 24;
  c.model.seq_len = 1 << 20;
  bool user = false;
  const std::string m = error_of([&] { check_memory(estimate_memory(c, 1000, 1 << 20, 1), 1); },
                                 &user);
  EXPECT_TRUE(user);
  EXPECT_NE(m.find("GiB per rank"), std::string::npos) << m;
  EXPECT_NO_THROW(check_memory(small, 1));
  EXPECT_GE(usable_cores(), 1);
  EXPECT_NE(error_of([] { check_threads(100000); }).find("train.threads: 100000"),
            std::string::npos);
  EXPECT_GT(checkpoint_bytes(1000), 12000.0);
  EXPECT_EQ(gibibytes(1.5 * (1 << 30)), "1.5 GiB");
  EXPECT_EQ(gibibytes(512.0 * (1 << 20)), "512.0 MiB");
}

TEST_F(ReliabilityTest, EveryAttributeIsCoveredByTheChecksum) {
  {
    H5File f = H5File::create(path("a.h5"));
    f.set_string_attr("/", "format", "moe-checkpoint");
    f.set_int_attr("/trainer", "step", 7);
    f.set_float_attr("/trainer", "lr_last", 0.5);
    f.set_string_attr("/config", "ini", "[train]\nsteps = 20\n");
    f.close();
  }
  EXPECT_NO_THROW(H5File::open(path("a.h5")).check_attributes());
  // Change one attribute behind the writer's back: the reader notices.
  {
    const hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18);
    const hid_t file = H5Fopen(path("a.h5").c_str(), H5F_ACC_RDWR, fapl);
    const hid_t group = H5Gopen2(file, "/trainer", H5P_DEFAULT);
    ASSERT_GE(H5Adelete(group, "step"), 0);
    const hid_t space = H5Screate(H5S_SCALAR);
    const hid_t attr = H5Acreate2(group, "step", H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    const int64_t eight = 8;
    ASSERT_GE(H5Awrite(attr, H5T_NATIVE_INT64, &eight), 0);
    H5Aclose(attr);
    H5Sclose(space);
    H5Gclose(group);
    H5Fclose(file);
    H5Pclose(fapl);
  }
  bool user = false;
  const std::string m = error_of([&] { H5File::open(path("a.h5")).check_attributes(); }, &user);
  EXPECT_TRUE(user);
  EXPECT_NE(m.find("fail their checksum (attrs_checksum)"), std::string::npos) << m;
  // The ledger: a change of any single byte of a record changes the checksum.
  AttributeLedger a, b;
  a.add("/config", "ini", 's', "steps = 20");
  b.add("/config", "ini", 's', "steps = 21");
  EXPECT_NE(a.checksum(), b.checksum());
}

TEST(ConfigBounds, SizesThatCannotRunAreRefused) {
  for (const auto& [override, key] :
       std::vector<std::pair<std::string, std::string>>{
           {"model.num_layers=100000000", "model.num_layers"},
           {"data.batch_size=2000000000", "data.batch_size"},
           {"parallel.grad_bucket_mb=1e-9", "parallel.grad_bucket_mb"},
           {"train.threads=5000", "train.threads"},
           {"train.eval_tokens=10", "train.eval_tokens"},
           {"train.on_nonfinite=ignore", "train.on_nonfinite"},
           {"checkpoint.on_error=retry", "checkpoint.on_error"},
           {"parallel.timeout_s=-1", "parallel.timeout_s"}}) {
    bool user = false;
    const std::string m = error_of([&] { load_config_text("", {override}); }, &user);
    EXPECT_TRUE(user) << override;
    EXPECT_EQ(m.rfind(key + ":", 0), 0u) << override << ": " << m;
  }
}

}  // namespace
}  // namespace moe
