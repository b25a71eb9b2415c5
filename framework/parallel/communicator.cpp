#include "framework/parallel/communicator.h"

#include <cstring>
#include <tuple>

#include "framework/core/error.h"

namespace moe {

size_t comm_type_size(CommType type) {
  switch (type) {
    case CommType::kFloat32: return sizeof(float);
    case CommType::kFloat64: return sizeof(double);
    case CommType::kInt32: return sizeof(int32_t);
    case CommType::kInt64: return sizeof(int64_t);
    case CommType::kUint8: return sizeof(uint8_t);
    case CommType::kBFloat16: return sizeof(bf16);
  }
  MOE_FAIL("unknown CommType ", static_cast<int>(type));
}

CommStats& CommStats::operator+=(const CommStats& other) {
  bytes_sent += other.bytes_sent;
  seconds += other.seconds;
  calls += other.calls;
  intra_node_bytes += other.intra_node_bytes;
  inter_node_bytes += other.inter_node_bytes;
  intra_node_messages += other.intra_node_messages;
  inter_node_messages += other.inter_node_messages;
  return *this;
}

void Communicator::set_peer_nodes(std::vector<int> node_of_rank) {
  MOE_CHECK(node_of_rank.empty() || node_of_rank.size() == static_cast<size_t>(size()),
            "set_peer_nodes: ", node_of_rank.size(), " nodes for a communicator of ",
            size(), " ranks");
  peer_nodes_ = std::move(node_of_rank);
}

void Communicator::count_sent(int peer, int64_t bytes, int64_t messages) {
  stats_.bytes_sent += bytes;
  if (same_node(peer)) {
    stats_.intra_node_bytes += bytes;
    stats_.intra_node_messages += messages;
  } else {
    stats_.inter_node_bytes += bytes;
    stats_.inter_node_messages += messages;
  }
}

void Communicator::count_ring(int64_t bytes, int64_t messages) {
  if (size() > 1) count_sent((rank() + 1) % size(), bytes, messages);
}

void Communicator::check_blocks(const char* call, const char* block_name, size_t block,
                                const char* total_name, size_t total) const {
  const size_t n = static_cast<size_t>(size());
  MOE_CHECK(total == n * block, call, ": ", total_name, " has ", total,
            " elements, expected size() * ", block_name, " = ", n, " * ", block, " = ",
            n * block);
}

namespace {
// Sum of one count array of all_to_all_v, after checking its length and signs.
size_t checked_total(std::span<const int64_t> counts, const char* name, int ranks) {
  MOE_CHECK(counts.size() == static_cast<size_t>(ranks), "all_to_all_v: ", name, " has ",
            counts.size(), " entries, expected one per rank (", ranks, ")");
  size_t total = 0;
  for (size_t r = 0; r < counts.size(); ++r) {
    MOE_CHECK(counts[r] >= 0, "all_to_all_v: ", name, "[", r, "] = ", counts[r],
              " is negative");
    total += static_cast<size_t>(counts[r]);
  }
  return total;
}
}  // namespace

void Communicator::check_all_to_all_v(size_t send_size, std::span<const int64_t> send_counts,
                                      size_t recv_size,
                                      std::span<const int64_t> recv_counts) const {
  const size_t send_total = checked_total(send_counts, "send_counts", size());
  const size_t recv_total = checked_total(recv_counts, "recv_counts", size());
  MOE_CHECK(send_size == send_total, "all_to_all_v: send has ", send_size,
            " elements, but send_counts sum to ", send_total);
  MOE_CHECK(recv_size == recv_total, "all_to_all_v: recv has ", recv_size,
            " elements, but recv_counts sum to ", recv_total);
}

void Communicator::check_all_to_all(size_t send_size, size_t recv_size) const {
  MOE_CHECK(send_size % static_cast<size_t>(size()) == 0, "all_to_all: send has ", send_size,
            " elements, not a multiple of size() = ", size());
  MOE_CHECK(recv_size == send_size, "all_to_all: recv has ", recv_size,
            " elements, expected the same as send (", send_size, ")");
}

void Communicator::check_all_to_all_blocks(
    size_t send_size, std::span<const std::vector<CommBlock>> send_blocks, size_t recv_size,
    std::span<const std::vector<CommBlock>> recv_blocks) const {
  const size_t n = static_cast<size_t>(size());
  MOE_CHECK(send_blocks.size() == n && recv_blocks.size() == n, "all_to_all_blocks: ",
            send_blocks.size(), " send and ", recv_blocks.size(), " receive lists for ", n,
            " ranks");
  for (const auto& [lists, total, side] : {std::tuple{send_blocks, send_size, "send"},
                                           std::tuple{recv_blocks, recv_size, "recv"}})
    for (size_t r = 0; r < n; ++r)
      for (const CommBlock& b : lists[r])
        MOE_CHECK(b.offset >= 0 && b.count >= 0 &&
                      static_cast<size_t>(b.offset + b.count) <= total,
                  "all_to_all_blocks: ", side, " block [", b.offset, ", +", b.count,
                  ") of rank ", r, " outside a buffer of ", total, " elements");
  const auto& out = send_blocks[static_cast<size_t>(rank())];
  const auto& in = recv_blocks[static_cast<size_t>(rank())];
  MOE_CHECK(out.size() == in.size(), "all_to_all_blocks: ", out.size(),
            " blocks to this rank itself, ", in.size(), " expected");
  for (size_t j = 0; j < out.size(); ++j)
    MOE_CHECK(out[j].count == in[j].count, "all_to_all_blocks: own block ", j, " of ",
              out[j].count, " elements into one of ", in[j].count);
}

void Communicator::all_to_all_blocks_raw(const void* send,
                                         const std::vector<CommBlock>* send_blocks,
                                         void* recv, const std::vector<CommBlock>* recv_blocks,
                                         CommType type) {
  const int n = size();
  const size_t bytes = comm_type_size(type);
  std::vector<int64_t> send_counts(static_cast<size_t>(n), 0), recv_counts(send_counts);
  for (int r = 0; r < n; ++r) {
    for (const CommBlock& b : send_blocks[r]) send_counts[r] += b.count;
    for (const CommBlock& b : recv_blocks[r]) recv_counts[r] += b.count;
  }
  std::vector<char> packed, unpacked;
  for (int r = 0; r < n; ++r)
    for (const CommBlock& b : send_blocks[r]) {
      const char* from = static_cast<const char*>(send) + b.offset * bytes;
      packed.insert(packed.end(), from, from + b.count * bytes);
    }
  int64_t recv_total = 0;
  for (int64_t c : recv_counts) recv_total += c;
  unpacked.resize(static_cast<size_t>(recv_total) * bytes);
  all_to_all_v_raw(packed.data(), send_counts.data(), unpacked.data(), recv_counts.data(), type);
  const char* from = unpacked.data();
  for (int r = 0; r < n; ++r)
    for (const CommBlock& b : recv_blocks[r]) {
      std::memcpy(static_cast<char*>(recv) + b.offset * bytes, from, b.count * bytes);
      from += b.count * bytes;
    }
}

void Communicator::check_variable_blocks(const char* call, std::span<const int64_t> counts,
                                         size_t mine, size_t all) const {
  MOE_CHECK(static_cast<int>(counts.size()) == size(), call, ": ", counts.size(),
            " counts for ", size(), " ranks");
  int64_t total = 0;
  for (int64_t c : counts) {
    MOE_CHECK(c >= 0, call, ": negative count ", c);
    total += c;
  }
  MOE_CHECK(static_cast<int64_t>(mine) == counts[rank()], call, ": this rank's block has ",
            mine, " elements, its count is ", counts[rank()]);
  MOE_CHECK(static_cast<int64_t>(all) == total, call, ": the packed blocks hold ", all,
            " elements, the counts sum to ", total);
}

}  // namespace moe
