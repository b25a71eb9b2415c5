// checkpoint_fuzz FILE FLIPS SEED: flips one random bit of FILE at a time, FLIPS times,
// and checks each damaged copy the way `moe-ckpt verify` does (verify_against_model),
// in a forked child so that a crash is seen as one:
//
//   detected    the check exits with a user error (status 2)
//   harmless    the check passes and everything the loader reads (the summary: format
//               fields, config text, names, shapes, shard annotations, trainer state;
//               and every tensor's data) equals the original's
//   FAIL        a signal (crash), a timeout, an internal error (status 1), or a check
//               that passes while the loaded content changed (undetected corruption)
//
// Five in six flips land in the metadata (object headers, attributes, strings, heaps:
// every byte outside the tensors' data), one in six in tensor data. Prints the counts
// as one JSON line; exit status 1 when anything failed.

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/checkpoint/h5_file.h"
#include "framework/checkpoint/inspect.h"
#include "models/verify_checkpoint.h"

namespace {

// What the loader reads, hashed (FNV-1a 64): the summary and every tensor's data.
uint64_t content_digest(const moe::H5File& file, const moe::CheckpointSummary& s) {
  uint64_t h = 0xCBF29CE484222325ULL;
  auto eat = [&h](const void* data, size_t n) {
    const auto* bytes = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ bytes[i]) * 0x100000001B3ULL;
  };
  moe::CheckpointSummary content = s;
  content.path.clear();  // the damaged copy lives under another name
  const std::string summary = moe::summary_json(content).dump();
  eat(summary.data(), summary.size());
  std::vector<std::string> datasets;
  for (const moe::TensorEntry& e : s.params) {
    datasets.push_back("/model/" + e.name);
    if (s.trainer) {
      datasets.push_back("/optim/" + e.name + "/exp_avg");
      datasets.push_back("/optim/" + e.name + "/exp_avg_sq");
    }
  }
  for (const moe::TensorEntry& e : s.buffers) datasets.push_back("/buffers/" + e.name);
  moe::Buffer scratch;
  for (const std::string& name : datasets) {
    const moe::Shape shape = file.dataset_shape(name);
    float* data = scratch.view(shape.numel() > 0 ? shape : moe::Shape{1}).data;
    file.read_block(name, data, shape, {});
    eat(data, static_cast<size_t>(shape.numel()) * sizeof(float));
  }
  return h;
}

// The byte ranges of the tensors' data (contiguous datasets).
std::vector<bool> data_bytes(const std::string& path, size_t size) {
  std::vector<bool> is_data(size, false);
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  H5Ovisit2(
      file, H5_INDEX_NAME, H5_ITER_INC,
      [](hid_t root, const char* name, const H5O_info_t* info, void* client) -> herr_t {
        if (info->type != H5O_TYPE_DATASET) return 0;
        const hid_t ds = H5Dopen2(root, name, H5P_DEFAULT);
        const haddr_t offset = H5Dget_offset(ds);
        const hsize_t bytes = H5Dget_storage_size(ds);
        auto& marks = *static_cast<std::vector<bool>*>(client);
        for (hsize_t i = 0; offset != HADDR_UNDEF && i < bytes && offset + i < marks.size(); ++i)
          marks[offset + i] = true;
        H5Dclose(ds);
        return 0;
      },
      &is_data, H5O_INFO_BASIC);
  H5Fclose(file);
  return is_data;
}

// The check in a child: exit 0 and the digest on `fd`, or the check's exit status.
[[noreturn]] void check_in_child(const std::string& path, int fd) {
  alarm(20);  // a hang is a failure too (SIGALRM)
  try {
    const moe::H5File file = moe::H5File::open(path);
    const moe::VerifiedCheckpoint v = moe::verify_against_model(file);
    const uint64_t digest = content_digest(file, v.summary);
    if (::write(fd, &digest, sizeof(digest)) != sizeof(digest)) _exit(1);
    _exit(0);
  } catch (const moe::Error& e) {
    _exit(e.user_error() ? 2 : 1);
  } catch (const std::bad_alloc&) {
    _exit(2);  // moe-ckpt reports out of memory as a bad file
  } catch (...) {
    _exit(1);
  }
}

struct Outcome {
  int status = -1;  // exit status, or -1 for a signal
  int signal = 0;
  uint64_t digest = 0;
};

// One check in flight: the child checking `path`, and the flip it checks.
struct Pending {
  pid_t pid = -1;
  int fd = -1;  // the read end of the child's digest pipe
  size_t at = 0;
  int bit = 0;
};

Pending start_check(const std::string& path) {
  int pipe_fd[2];
  if (::pipe(pipe_fd) != 0) std::exit(1);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipe_fd[0]);
    check_in_child(path, pipe_fd[1]);
  }
  ::close(pipe_fd[1]);
  return {pid, pipe_fd[0], 0, 0};
}

Outcome finish_check(const Pending& p) {
  Outcome out;
  int status = 0;
  ::waitpid(p.pid, &status, 0);
  if (WIFEXITED(status)) out.status = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) out.signal = WTERMSIG(status);
  if (out.status == 0 && ::read(p.fd, &out.digest, sizeof(out.digest)) != sizeof(out.digest))
    out.status = 1;
  ::close(p.fd);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: checkpoint_fuzz FILE FLIPS SEED\n";
    return 2;
  }
  H5dont_atexit();  // children end with _exit; damaged files may leave HDF5 unclean
  const std::string source = argv[1];
  const int flips = std::atoi(argv[2]);
  std::mt19937_64 rng(std::strtoull(argv[3], nullptr, 10));
  std::ifstream in(source, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::vector<bool> is_data = data_bytes(source, bytes.size());
  std::vector<size_t> metadata, data;
  for (size_t i = 0; i < bytes.size(); ++i) (is_data[i] ? data : metadata).push_back(i);

  const Outcome original = finish_check(start_check(source));
  if (original.status != 0) {
    std::cerr << "checkpoint_fuzz: " << source << " does not verify to begin with\n";
    return 1;
  }
  int detected = 0, harmless = 0, crashed = 0, internal = 0, undetected = 0;
  int in_metadata = 0;
  auto judge = [&](const Pending& p) {
    const Outcome out = finish_check(p);
    const char* problem = nullptr;
    if (out.signal != 0) {
      ++crashed;
      problem = "killed by a signal";
    } else if (out.status == 2) {
      ++detected;
    } else if (out.status == 0 && out.digest == original.digest) {
      ++harmless;
    } else if (out.status == 0) {
      ++undetected;
      problem = "passed with changed content";
    } else {
      ++internal;
      problem = "internal error";
    }
    if (problem) {
      std::cerr << "checkpoint_fuzz: byte " << p.at << " bit " << p.bit << ": " << problem;
      if (out.signal) std::cerr << " " << out.signal;
      std::cerr << "\n";
    }
  };
  // Two checks at a time, each on its own copy of the file.
  constexpr int kSlots = 2;
  std::vector<Pending> slots(kSlots);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < flips; ++i) {
    Pending& slot = slots[i % kSlots];
    if (slot.pid > 0) judge(slot);
    const bool meta = i % 6 != 5;
    const std::vector<size_t>& pool = meta ? metadata : data;
    const size_t at = pool[rng() % pool.size()];
    const int bit = static_cast<int>(rng() % 8);
    in_metadata += meta;
    const std::string copy = source + ".fuzz" + std::to_string(i % kSlots);
    bytes[at] = static_cast<char>(bytes[at] ^ (1 << bit));
    std::ofstream(copy, std::ios::binary | std::ios::trunc).write(bytes.data(), bytes.size());
    bytes[at] = static_cast<char>(bytes[at] ^ (1 << bit));
    slot = start_check(copy);
    slot.at = at;
    slot.bit = bit;
  }
  for (const Pending& slot : slots)
    if (slot.pid > 0) judge(slot);
  for (int k = 0; k < kSlots; ++k) std::remove((source + ".fuzz" + std::to_string(k)).c_str());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const nlohmann::json report = {{"file", source},        {"bytes", bytes.size()},
                                 {"metadata_bytes", metadata.size()},
                                 {"flips", flips},        {"in_metadata", in_metadata},
                                 {"detected", detected},  {"harmless", harmless},
                                 {"undetected", undetected}, {"crashed", crashed},
                                 {"internal_errors", internal}, {"seconds", seconds}};
  std::cout << report.dump() << std::endl;
  return crashed + internal + undetected == 0 ? 0 : 1;
}
