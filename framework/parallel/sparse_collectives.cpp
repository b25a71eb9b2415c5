#include "framework/parallel/sparse_collectives.h"

#include <algorithm>
#include <cstring>

#include "framework/core/error.h"

namespace moe {

namespace {

bool holds(const std::vector<int>& holders, int rank) {
  return std::binary_search(holders.begin(), holders.end(), rank);
}

void check_items(const Communicator& group, const SparseItems& items) {
  const size_t n = items.owner.size();
  MOE_CHECK(items.holders.size() == n && items.item >= 0, "sparse collectives: ", n,
            " owners, ", items.holders.size(), " holder sets");
  for (size_t i = 0; i < n; ++i) {
    MOE_CHECK(items.owner[i] >= 0 && items.owner[i] < group.size() &&
                  (i == 0 || items.owner[i] >= items.owner[i - 1]) &&
                  holds(items.holders[i], items.owner[i]),
              "sparse collectives: item ", i, " has owner ", items.owner[i],
              " (owners must be nondecreasing ranks of the group, among the holders)");
  }
}

// Per-peer floats of the exchange owners -> other holders: to[d] what this rank sends d,
// from[s] what it receives from s.
struct Flows {
  std::vector<int64_t> to, from;
};

Flows owner_to_holders(const Communicator& group, const SparseItems& items) {
  const int me = group.rank();
  Flows f{std::vector<int64_t>(static_cast<size_t>(group.size()), 0),
          std::vector<int64_t>(static_cast<size_t>(group.size()), 0)};
  for (size_t i = 0; i < items.owner.size(); ++i) {
    const int owner = items.owner[i];
    for (int h : items.holders[i]) {
      if (h == owner) continue;
      if (owner == me) f.to[h] += items.item;
      if (h == me) f.from[owner] += items.item;
    }
  }
  return f;
}

}  // namespace

std::vector<int64_t> SparseItems::owned(int rank) const {
  std::vector<int64_t> out;
  for (size_t i = 0; i < owner.size(); ++i)
    if (owner[i] == rank) out.push_back(static_cast<int64_t>(i));
  return out;
}

std::vector<int64_t> SparseItems::replicas(int rank) const {
  std::vector<int64_t> out;
  for (size_t i = 0; i < owner.size(); ++i)
    if (owner[i] != rank && holds(holders[i], rank)) out.push_back(static_cast<int64_t>(i));
  return out;
}

void sparse_all_gather(Communicator& group, const SparseItems& items,
                       std::span<const float> owned, std::span<float> replicas) {
  check_items(group, items);
  const int me = group.rank();
  const std::vector<int64_t> mine = items.owned(me);
  MOE_CHECK(owned.size() == mine.size() * static_cast<size_t>(items.item) &&
                replicas.size() == items.replicas(me).size() * static_cast<size_t>(items.item),
            "sparse_all_gather: buffers of ", owned.size(), " and ", replicas.size(),
            " floats for ", mine.size(), " owned items of ", items.item);
  const Flows f = owner_to_holders(group, items);
  // destination-major: every owned item once per other holder, items ascending
  std::vector<float> send;
  for (int d = 0; d < group.size(); ++d) {
    if (d == me) continue;
    for (size_t j = 0; j < mine.size(); ++j)
      if (holds(items.holders[mine[j]], d)) {
        const float* src = owned.data() + j * items.item;
        send.insert(send.end(), src, src + items.item);
      }
  }
  // Owners ascend with the item index, so the source-major arrival is item order.
  group.all_to_all_v<float>(send, f.to, replicas, f.from);
}

void sparse_reduce_scatter(Communicator& group, const SparseItems& items,
                           std::span<const float> replica_grads, std::span<float> owned_grads) {
  check_items(group, items);
  const int me = group.rank();
  const std::vector<int64_t> mine = items.owned(me);
  MOE_CHECK(owned_grads.size() == mine.size() * static_cast<size_t>(items.item) &&
                replica_grads.size() ==
                    items.replicas(me).size() * static_cast<size_t>(items.item),
            "sparse_reduce_scatter: buffers of ", replica_grads.size(), " and ",
            owned_grads.size(), " floats for ", mine.size(), " owned items of ", items.item);
  const Flows f = owner_to_holders(group, items);  // used in reverse
  int64_t total = 0;
  for (int64_t c : f.to) total += c;
  std::vector<float> recv(static_cast<size_t>(total));  // [source][owned items it holds]
  // replicas ascend in item order and so in owner order: already destination-major
  group.all_to_all_v<float>(replica_grads, f.from, recv, f.to);
  // Block start of every source, then add in ascending source rank per item.
  std::vector<int64_t> at(static_cast<size_t>(group.size()), 0);
  for (int s = 1; s < group.size(); ++s) at[s] = at[s - 1] + f.to[s - 1];
  for (int s = 0; s < group.size(); ++s) {
    if (s == me) continue;
    for (size_t j = 0; j < mine.size(); ++j) {
      if (!holds(items.holders[mine[j]], s)) continue;
      float* dst = owned_grads.data() + j * items.item;
      const float* src = recv.data() + at[s];
      for (int64_t x = 0; x < items.item; ++x) dst[x] += src[x];
      at[s] += items.item;
    }
  }
}

std::vector<float> sparse_move(Communicator& group, std::span<const int> from,
                               std::span<const int> to, int64_t item, std::span<const float> src) {
  const int me = group.rank(), ranks = group.size();
  const size_t n = from.size();
  MOE_CHECK(to.size() == n, "sparse_move: ", from.size(), " old and ", to.size(), " new owners");
  for (size_t i = 1; i < n; ++i)
    MOE_CHECK(from[i] >= from[i - 1] && to[i] >= to[i - 1],
              "sparse_move: owners must be nondecreasing");
  std::vector<int64_t> send_counts(static_cast<size_t>(ranks), 0);
  std::vector<int64_t> recv_counts(static_cast<size_t>(ranks), 0);
  int64_t held = 0, kept = 0;
  for (size_t i = 0; i < n; ++i) {
    held += from[i] == me ? 1 : 0;
    kept += to[i] == me ? 1 : 0;
    if (from[i] == to[i]) continue;
    if (from[i] == me) send_counts[to[i]] += item;
    if (to[i] == me) recv_counts[from[i]] += item;
  }
  MOE_CHECK(src.size() == static_cast<size_t>(held * item), "sparse_move: ", src.size(),
            " floats for ", held, " items of ", item);
  // Items leave in item order, which is destination order (new owners ascend) and arrive
  // in source order, which is item order (old owners ascend).
  std::vector<float> send, recv;
  for (int64_t c : recv_counts) recv.resize(recv.size() + static_cast<size_t>(c));
  int64_t at = 0;  // position in src
  for (size_t i = 0; i < n; ++i) {
    if (from[i] != me) continue;
    if (to[i] != me) send.insert(send.end(), src.begin() + at, src.begin() + at + item);
    at += item;
  }
  group.all_to_all_v<float>(send, send_counts, recv, recv_counts);
  std::vector<float> out;
  out.reserve(static_cast<size_t>(kept * item));
  int64_t mine = 0, arrived = 0;  // positions in src and recv
  for (size_t i = 0; i < n; ++i) {
    const bool had = from[i] == me;
    if (to[i] == me) {
      const float* p = had ? src.data() + mine : recv.data() + arrived;
      out.insert(out.end(), p, p + item);
      if (!had) arrived += item;
    }
    if (had) mine += item;
  }
  return out;
}

}  // namespace moe
