#include "framework/parallel/two_level_all_to_all.h"

#include <numeric>

#include "framework/kernels/ops.h"

namespace moe {

namespace {

int64_t sum(std::span<const int64_t> v) { return std::accumulate(v.begin(), v.end(), int64_t{0}); }

std::span<const uint8_t> u8(std::span<const std::byte> s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}
std::span<uint8_t> u8(std::span<std::byte> s) {
  return {reinterpret_cast<uint8_t*>(s.data()), s.size()};
}

}  // namespace

TwoLevelAllToAll::TwoLevelAllToAll(Communicator& group, const NodeMap& nodes)
    : group_(group),
      nodes_(nodes.num_nodes),
      per_node_(nodes.ranks_per_node),
      node_(0),
      local_(0) {
  MOE_CHECK(nodes.size() == group.size(), "two-level all-to-all: node map of ", nodes.size(),
            " ranks for a group of ", group.size());
  MOE_CHECK(nodes.blocked(), "two-level all-to-all: the group's ranks are not placed node "
            "by node in equal numbers (", nodes.describe(), ")");
  node_ = group.rank() / per_node_;
  local_ = group.rank() % per_node_;
  intra_ = group.split(node_, local_);
  inter_ = group.split(local_, node_);
  // By construction every intra link stays on the node and every inter link leaves it.
  intra_->set_peer_nodes(std::vector<int>(static_cast<size_t>(per_node_), node_));
  std::vector<int> inter_nodes(static_cast<size_t>(nodes_));
  std::iota(inter_nodes.begin(), inter_nodes.end(), 0);
  inter_->set_peer_nodes(std::move(inter_nodes));
}

CommStats TwoLevelAllToAll::stats() const {
  CommStats total = intra_->stats();
  total += inter_->stats();
  return total;
}

void TwoLevelAllToAll::reset_stats() {
  intra_->stats() = CommStats{};
  inter_->stats() = CommStats{};
}

void TwoLevelAllToAll::check_plan(const TwoLevelPlan& plan) const {
  const size_t w = static_cast<size_t>(group_.size());
  MOE_CHECK(plan.send.size() == w && plan.recv.size() == w &&
                plan.staged.size() == static_cast<size_t>(nodes_ * per_node_),
            "two-level all-to-all: plan of ", plan.send.size(), "/", plan.recv.size(), "/",
            plan.staged.size(), " counts for ", w, " ranks");
}

TwoLevelPlan TwoLevelAllToAll::plan_known(
    const std::function<int64_t(int src, int dst)>& rows) const {
  const int w = group_.size(), me = group_.rank();
  TwoLevelPlan plan;
  for (int d = 0; d < w; ++d) {
    plan.send.push_back(rows(me, d));
    plan.recv.push_back(rows(d, me));
  }
  // step 2 brings this rank what local rank l'' of its node sends to (n', local_)
  plan.staged.resize(static_cast<size_t>(per_node_ * nodes_));
  for (int src_local = 0; src_local < per_node_; ++src_local)
    for (int n = 0; n < nodes_; ++n)
      plan.staged[src_local * nodes_ + n] =
          rows(node_ * per_node_ + src_local, n * per_node_ + local_);
  return plan;
}

TwoLevelPlan TwoLevelAllToAll::all_to_all_counts(std::span<const int64_t> counts,
                                                 std::span<const int64_t> segment,
                                                 std::vector<int64_t>& received) {
  const int w = group_.size();
  MOE_CHECK(segment.size() == static_cast<size_t>(w) && sum(segment) ==
                static_cast<int64_t>(counts.size()),
            "two-level all_to_all_counts: ", counts.size(), " counts in ", segment.size(),
            " segments summing to ", sum(segment), ", expected one segment per rank (", w,
            ")");
  // The counts' own plan is known everywhere: segment[d] entries go to d from any source.
  TwoLevelPlan counted;
  counted.send.assign(segment.begin(), segment.end());
  counted.recv.assign(static_cast<size_t>(w), segment[group_.rank()]);
  counted.staged.resize(static_cast<size_t>(per_node_ * nodes_));
  for (int src_local = 0; src_local < per_node_; ++src_local)
    for (int n = 0; n < nodes_; ++n)
      counted.staged[src_local * nodes_ + n] = segment[n * per_node_ + local_];

  TwoLevelPlan rows;
  rows.send.resize(static_cast<size_t>(w));
  int64_t at = 0;
  for (int d = 0; d < w; ++d) {
    rows.send[d] = sum(counts.subspan(static_cast<size_t>(at), static_cast<size_t>(segment[d])));
    at += segment[d];
  }
  // Steps 1-2 bring this rank the counts it forwards: their sums are rows.staged.
  const std::span<const std::byte> bytes{reinterpret_cast<const std::byte*>(counts.data()),
                                         counts.size_bytes()};
  intra_step(counted, bytes, staged_, sizeof(int64_t));
  const auto* staged = reinterpret_cast<const int64_t*>(staged_.data());
  rows.staged.resize(counted.staged.size());
  at = 0;
  for (size_t b = 0; b < counted.staged.size(); ++b) {
    rows.staged[b] = sum({staged + at, static_cast<size_t>(counted.staged[b])});
    at += counted.staged[b];
  }
  // Steps 3-4 deliver every source's counts for this rank.
  received.resize(static_cast<size_t>(sum(counted.recv)));
  inter_step(counted, staged_, as_writable_bytes(std::span<int64_t>(received)),
             sizeof(int64_t));
  rows.recv.resize(static_cast<size_t>(w));
  at = 0;
  const int64_t mine = segment[group_.rank()];
  for (int s = 0; s < w; ++s, at += mine)
    rows.recv[s] = sum(std::span<const int64_t>(received).subspan(static_cast<size_t>(at),
                                                                  static_cast<size_t>(mine)));
  return rows;
}

void TwoLevelAllToAll::intra_step(const TwoLevelPlan& plan, std::span<const std::byte> send,
                                  std::vector<std::byte>& staged, size_t element) {
  const int64_t e = static_cast<int64_t>(element);
  std::vector<int64_t> out(static_cast<size_t>(per_node_), 0), in(out.size(), 0);  // bytes
  for (int l = 0; l < per_node_; ++l)
    for (int n = 0; n < nodes_; ++n) {
      out[l] += plan.send[n * per_node_ + l] * e;
      in[l] += plan.staged[l * nodes_ + n] * e;
    }
  // 1. [dst_node][dst_local] -> [dst_local][dst_node]
  packed_.resize(send.size());
  ops::transpose_blocks(Device::kCpu, send.data(), packed_.data(),
                        plan.send, nodes_, per_node_, element, /*inverse=*/false);
  // 2. intra-node: local rank l gets the blocks for (any node, local index l)
  staged.resize(static_cast<size_t>(sum(in)));
  intra_->all_to_all_v<uint8_t>(u8(std::span<const std::byte>(packed_)), out,
                                u8(std::span<std::byte>(staged)), in);
}

void TwoLevelAllToAll::inter_step(const TwoLevelPlan& plan, std::span<const std::byte> staged,
                                  std::span<std::byte> recv, size_t element) {
  const int64_t e = static_cast<int64_t>(element);
  std::vector<int64_t> out(static_cast<size_t>(nodes_), 0), in(out.size(), 0);  // bytes
  for (int n = 0; n < nodes_; ++n)
    for (int l = 0; l < per_node_; ++l) {
      out[n] += plan.staged[l * nodes_ + n] * e;
      in[n] += plan.recv[n * per_node_ + l] * e;
    }
  // 3. [src_local][dst_node] -> [dst_node][src_local]
  packed_.resize(staged.size());
  ops::transpose_blocks(Device::kCpu, staged.data(), packed_.data(),
                        plan.staged, per_node_, nodes_, element, /*inverse=*/false);
  // 4. inter-node among the ranks of this local index: [src_node][src_local] arrives
  inter_->all_to_all_v<uint8_t>(u8(std::span<const std::byte>(packed_)), out, u8(recv), in);
}

void TwoLevelAllToAll::exchange(const TwoLevelPlan& plan, std::span<const std::byte> send,
                                std::span<std::byte> recv, size_t element, bool reverse) {
  check_plan(plan);
  const int64_t e = static_cast<int64_t>(element);
  const int64_t send_elems = reverse ? sum(plan.recv) : sum(plan.send);
  const int64_t recv_elems = reverse ? sum(plan.send) : sum(plan.recv);
  MOE_CHECK(static_cast<int64_t>(send.size()) == send_elems * e &&
                static_cast<int64_t>(recv.size()) == recv_elems * e,
            "two-level all-to-all: buffers of ", send.size(), " and ", recv.size(),
            " bytes, the plan moves ", send_elems, " and ", recv_elems, " elements of ",
            element, " bytes");
  if (!reverse) {
    intra_step(plan, send, staged_, element);
    inter_step(plan, staged_, recv, element);
    return;
  }
  // The forward steps backwards: 4, 3, 2, 1.
  std::vector<int64_t> node_in(static_cast<size_t>(nodes_), 0), node_out(node_in.size(), 0);
  for (int n = 0; n < nodes_; ++n)
    for (int l = 0; l < per_node_; ++l) {
      node_out[n] += plan.recv[n * per_node_ + l] * e;
      node_in[n] += plan.staged[l * nodes_ + n] * e;
    }
  packed_.resize(static_cast<size_t>(sum(node_in)));
  inter_->all_to_all_v<uint8_t>(u8(send), node_out, u8(std::span<std::byte>(packed_)), node_in);
  staged_.resize(packed_.size());
  ops::transpose_blocks(Device::kCpu, packed_.data(), staged_.data(),
                        plan.staged, per_node_, nodes_, element, /*inverse=*/true);
  std::vector<int64_t> local_in(static_cast<size_t>(per_node_), 0), local_out(local_in.size(), 0);
  for (int l = 0; l < per_node_; ++l)
    for (int n = 0; n < nodes_; ++n) {
      local_out[l] += plan.staged[l * nodes_ + n] * e;
      local_in[l] += plan.send[n * per_node_ + l] * e;
    }
  packed_.resize(static_cast<size_t>(sum(local_in)));
  intra_->all_to_all_v<uint8_t>(u8(std::span<const std::byte>(staged_)), local_out,
                                u8(std::span<std::byte>(packed_)), local_in);
  ops::transpose_blocks(Device::kCpu, packed_.data(), recv.data(),
                        plan.send, nodes_, per_node_, element, /*inverse=*/true);
}

void TwoLevelAllToAll::equal_blocks(std::span<const std::byte> send, std::span<std::byte> recv,
                                    size_t element) {
  const size_t w = static_cast<size_t>(group_.size());
  MOE_CHECK(send.size() == recv.size() && send.size() % (w * element) == 0,
            "two-level all_to_all: send of ", send.size(), " bytes and recv of ", recv.size(),
            " bytes, expected equal sizes holding ", w, " blocks of ", element, "-byte elements");
  const int64_t block = static_cast<int64_t>(send.size() / w);  // bytes per peer
  const std::vector<int64_t> blocks(w, block);
  packed_.resize(send.size());
  staged_.resize(send.size());
  // 1-2: [dst_node][dst_local] -> [dst_local][dst_node], blocks of N*S within the node
  ops::transpose_blocks(Device::kCpu, send.data(), packed_.data(),
                        blocks, nodes_, per_node_, 1, false);
  intra_->all_to_all<uint8_t>(u8(std::span<const std::byte>(packed_)),
                              u8(std::span<std::byte>(staged_)));
  // 3-4: [src_local][dst_node] -> [dst_node][src_local], blocks of G*S across nodes
  ops::transpose_blocks(Device::kCpu, staged_.data(), packed_.data(),
                        blocks, per_node_, nodes_, 1, false);
  inter_->all_to_all<uint8_t>(u8(std::span<const std::byte>(packed_)), u8(recv));
}

}  // namespace moe
