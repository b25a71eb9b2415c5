#include "framework/parallel/grad_sync.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <map>

#include "framework/core/error.h"
#include "framework/kernels/ops.h"
#include "framework/optim/clip.h"

namespace moe {

namespace {

bool is_expert(const Param& p) { return is_expert_shard(p.spec.shard); }

}  // namespace

GradSync::GradSync(ParamStore& store, Communicator& dp, Communicator& edp, int token_shards,
                   int64_t bucket_bytes, Communicator* sequence, bool shard_state)
    : store_(store), shard_state_(shard_state), flat_(store.device()) {
  MOE_CHECK(token_shards > 0 && bucket_bytes > 0, "gradient sync: ", token_shards,
            " token shards, bucket of ", bucket_bytes, " bytes");
  const int64_t bucket_elems = std::max<int64_t>(1, bucket_bytes / int64_t{sizeof(float)});
  Bucket dense, experts, rows;
  dense.comm = &dp;
  rows.comm = sequence;
  rows.scale = 1.0f / static_cast<float>(token_shards);
  dense.scale = 1.0f / static_cast<float>(token_shards);
  experts.comm = &edp;
  experts.scale = 1.0f / static_cast<float>(token_shards);
  auto flush = [&](Bucket& b) {
    b.sharded = shard_state && b.comm != nullptr && b.comm->size() > 1;
    if (!b.params.empty()) buckets_.push_back(b);
    b.params.clear();
    b.numel = 0;
  };
  for (Param& p : store.params()) {
    MOE_CHECK(!p.spec.sequence_parallel || sequence, "gradient sync: ", p.spec.name,
              " is sequence-parallel but no dp x tp group was given");
    Bucket& b = is_expert(p) ? experts : p.spec.sequence_parallel ? rows : dense;
    if (b.numel > 0 && b.numel + p.numel() > bucket_elems) flush(b);
    b.params.push_back(&p);
    b.numel += p.numel();
  }
  flush(dense);
  flush(experts);
  flush(rows);
}

void GradSync::refresh_sizes() {
  for (Bucket& b : buckets_) {
    int64_t numel = 0;
    for (const Param* p : b.params) numel += p->numel();
    MOE_CHECK(!b.sharded || numel == b.numel, "gradient sync: a bucket with sharded state "
              "changed size from ", b.numel, " to ", numel, " elements");
    b.numel = numel;
  }
}

void GradSync::all_reduce() {
  MOE_CHECK(!shard_state_, "gradient sync: all_reduce with sharded optimizer state");
  for (const Bucket& b : buckets_) {
    if (b.comm->size() == 1 && b.scale == 1.0f) continue;
    // the bucket's gradients packed in flat_, on their device (the communicator's)
    const Tensor flat = flat_.view({b.numel});
    int64_t at = 0;
    for (const Param* p : b.params) {
      ops::copy(p->dgrad().reshaped({p->numel()}), flat.slice_rows(at, p->numel()));
      at += p->numel();
    }
    b.comm->all_reduce<float>({flat.data, static_cast<size_t>(b.numel)});
    at = 0;
    for (Param* p : b.params) {
      const Tensor g = p->dgrad().reshaped({p->numel()});
      ops::copy(flat.slice_rows(at, p->numel()), g);
      ops::scale(g, b.scale);  // g = sum * scale, as one product per element
      at += p->numel();
    }
  }
}

StateRange GradSync::slice(const Bucket& b, int64_t numel, int q) {
  const int64_t n = b.comm->size();
  return {numel * q / n, numel * (q + 1) / n};
}

std::vector<int64_t> GradSync::slice_counts(const Bucket& b) {
  std::vector<int64_t> counts(static_cast<size_t>(b.comm->size()), 0);
  for (int q = 0; q < b.comm->size(); ++q)
    for (const Param* p : b.params) counts[q] += slice(b, p->numel(), q).size();
  return counts;
}

void GradSync::reduce_scatter() {
  MOE_CHECK(shard_state_, "gradient sync: reduce_scatter without sharded optimizer state");
  for (const Bucket& b : buckets_) {
    if (!b.sharded) {  // a group of one rank: nothing to reduce
      if (b.scale != 1.0f)
        for (Param* p : b.params) ops::scale(p->dgrad(), b.scale);
      continue;
    }
    const std::vector<int64_t> counts = slice_counts(b);
    const int me = b.comm->rank();
    // rank-major: rank 0's slices of every parameter, then rank 1's, ...
    float* flat = flat_.view({b.numel}).data;
    int64_t at = 0;
    for (int q = 0; q < b.comm->size(); ++q)
      for (const Param* p : b.params) {
        const StateRange r = slice(b, p->numel(), q);
        std::memcpy(flat + at, p->grad.data() + r.begin,
                    static_cast<size_t>(r.size()) * sizeof(float));
        at += r.size();
      }
    float* mine = gathered_.view({counts[me]}).data;
    b.comm->reduce_scatter_v<float>({flat, static_cast<size_t>(b.numel)}, counts,
                                    {mine, static_cast<size_t>(counts[me])});
    at = 0;
    for (Param* p : b.params) {
      const StateRange r = slice(b, p->numel(), me);
      float* g = p->grad.data() + r.begin;
      for (int64_t i = 0; i < r.size(); ++i) g[i] = mine[at + i] * b.scale;
      at += r.size();
    }
  }
}

void GradSync::all_gather_params() {
  for (const Bucket& b : buckets_) {
    if (!b.sharded) continue;
    const std::vector<int64_t> counts = slice_counts(b);
    const int me = b.comm->rank();
    float* mine = flat_.view({counts[me]}).data;
    int64_t at = 0;
    for (const Param* p : b.params) {
      const StateRange r = slice(b, p->numel(), me);
      std::memcpy(mine + at, p->value.data() + r.begin,
                  static_cast<size_t>(r.size()) * sizeof(float));
      at += r.size();
    }
    float* all = gathered_.view({b.numel}).data;
    b.comm->all_gather_v<float>({mine, static_cast<size_t>(counts[me])},
                                {all, static_cast<size_t>(b.numel)}, counts);
    at = 0;
    for (int q = 0; q < b.comm->size(); ++q)
      for (Param* p : b.params) {
        const StateRange r = slice(b, p->numel(), q);
        std::memcpy(p->value.data() + r.begin, all + at,
                    static_cast<size_t>(r.size()) * sizeof(float));
        at += r.size();
      }
  }
}

namespace {

// The position of every parameter in the store (the optimizer's state index).
std::map<const Param*, size_t> state_index(const ParamStore& store) {
  std::map<const Param*, size_t> index;
  for (size_t i = 0; i < store.params().size(); ++i) index[&store.params()[i]] = i;
  return index;
}

// A copy of `n` elements of `from` starting at `first`.
Buffer copy_of(const float* from, int64_t first, int64_t n) {
  Buffer out(n);
  std::memcpy(out.data(), from + first, static_cast<size_t>(n) * sizeof(float));
  return out;
}

}  // namespace

void GradSync::slice_state(AdamW& optimizer) {
  const std::map<const Param*, size_t> index = state_index(store_);
  for (const Bucket& b : buckets_) {
    if (!b.sharded) continue;
    for (const Param* p : b.params) {
      const size_t i = index.at(p);
      const StateRange r = slice(b, p->numel(), b.comm->rank());
      MOE_CHECK(optimizer.state_range(i).size() == p->numel(), "slice_state: the state of ",
                p->spec.name, " is not whole");
      optimizer.set_state(i, r, copy_of(optimizer.exp_avg(i).data, r.begin, r.size()),
                          copy_of(optimizer.exp_avg_sq(i).data, r.begin, r.size()));
    }
  }
}

std::vector<Buffer> GradSync::gather_bucket(const Bucket& b,
                                            const std::vector<const float*>& slices) {
  const std::vector<int64_t> counts = slice_counts(b);
  const int me = b.comm->rank();
  float* mine = flat_.view({counts[me]}).data;
  int64_t at = 0;
  for (size_t k = 0; k < b.params.size(); ++k) {
    const int64_t n = slice(b, b.params[k]->numel(), me).size();
    std::memcpy(mine + at, slices[k], static_cast<size_t>(n) * sizeof(float));
    at += n;
  }
  float* all = gathered_.view({b.numel}).data;
  b.comm->all_gather_v<float>({mine, static_cast<size_t>(counts[me])},
                              {all, static_cast<size_t>(b.numel)}, counts);
  std::vector<Buffer> whole;
  for (const Param* p : b.params) whole.emplace_back(p->numel());
  at = 0;  // rank-major, as packed
  for (int q = 0; q < b.comm->size(); ++q)
    for (size_t k = 0; k < b.params.size(); ++k) {
      const StateRange r = slice(b, b.params[k]->numel(), q);
      std::memcpy(whole[k].data() + r.begin, all + at,
                  static_cast<size_t>(r.size()) * sizeof(float));
      at += r.size();
    }
  return whole;
}

void GradSync::gather_state(AdamW& optimizer) {
  const std::map<const Param*, size_t> index = state_index(store_);
  for (const Bucket& b : buckets_) {
    if (!b.sharded) continue;
    std::vector<const float*> m, v;
    for (const Param* p : b.params) {
      const size_t i = index.at(p);
      MOE_CHECK(optimizer.state_range(i).begin == slice(b, p->numel(), b.comm->rank()).begin,
                "gather_state: the state of ", p->spec.name, " is not this rank's slice");
      m.push_back(optimizer.exp_avg(i).data);
      v.push_back(optimizer.exp_avg_sq(i).data);
    }
    std::vector<Buffer> whole_m = gather_bucket(b, m), whole_v = gather_bucket(b, v);
    for (size_t k = 0; k < b.params.size(); ++k)
      optimizer.set_state(index.at(b.params[k]), {0, b.params[k]->numel()},
                          std::move(whole_m[k]), std::move(whole_v[k]));
  }
}

double GradSync::global_grad_norm(Communicator& tp, Communicator& ep,
                                  Communicator& etp) const {
  if (!shard_state_) return moe::global_grad_norm(store_, tp, ep, etp);
  // Unsharded parameters whole; sharded ones by this rank's slices, whose squares are
  // summed over the bucket's group (one all-reduce per group, in bucket order) first.
  enum Part { kReplicated, kTp, kExpert, kParts };
  auto part_of = [](const Param& p) {
    if (is_expert(p)) return kExpert;
    const Shard s = p.spec.shard;
    return s == Shard::kTpColumn || s == Shard::kTpRow || s == Shard::kVocab ? kTp
                                                                             : kReplicated;
  };
  std::array<double, kParts> part{};
  std::vector<std::pair<Communicator*, std::array<double, kParts>>> groups;
  std::map<const Param*, const Bucket*> sharded;
  for (const Bucket& b : buckets_) {
    if (!b.sharded) continue;
    size_t g = 0;
    while (g < groups.size() && groups[g].first != b.comm) ++g;
    if (g == groups.size()) groups.push_back({b.comm, {}});
    for (const Param* p : b.params) {
      const StateRange r = slice(b, p->numel(), b.comm->rank());
      groups[g].second[part_of(*p)] +=
          ops::sum_squares(Tensor(p->grad.data() + r.begin, Shape{r.size()}));
      sharded[p] = &b;
    }
  }
  for (const Param& p : store_.params())
    if (!sharded.count(&p)) part[part_of(p)] += ops::sum_squares(p.dgrad());
  for (auto& [comm, sums] : groups) {
    comm->all_reduce<double>(sums);
    for (int k = 0; k < kParts; ++k) part[k] += sums[k];
  }
  // one block per tp rank, one per (ep, etp) rank; replicated parts are equal everywhere
  if (tp.size() > 1) tp.all_reduce<double>({&part[kTp], 1});
  ep.all_reduce<double>({&part[kExpert], 1});
  if (etp.size() > 1) etp.all_reduce<double>({&part[kExpert], 1});
  return std::sqrt(part[kReplicated] + part[kTp] + part[kExpert]);
}

double global_grad_norm(const ParamStore& store, Communicator& tp, Communicator& ep,
                        Communicator& etp) {
  auto tp_block = [](const Param& p) {
    return p.spec.shard == Shard::kTpColumn || p.spec.shard == Shard::kTpRow ||
           p.spec.shard == Shard::kVocab;
  };
  // every gradient's sum of squares in one op, then each part summed in store order
  const std::vector<double> each = grad_squares_each(store);
  double replicated = 0.0, tp_part = 0.0, expert_part = 0.0;
  size_t i = 0;
  for (const Param& p : store.params()) {
    const double sq = each[i++];
    if (is_expert(p)) expert_part += sq;
    else if (tp_block(p)) tp_part += sq;
    else replicated += sq;
  }
  // one block per tp rank, one per (ep, etp) rank; replicated parts are equal everywhere
  if (tp.size() > 1) tp.all_reduce<double>({&tp_part, 1});
  ep.all_reduce<double>({&expert_part, 1});
  if (etp.size() > 1) etp.all_reduce<double>({&expert_part, 1});
  return std::sqrt(replicated + tp_part + expert_part);
}

}  // namespace moe
