#include "framework/parallel/grad_sync.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "framework/core/error.h"
#include "framework/optim/clip.h"

namespace moe {

namespace {

bool is_expert(const Param& p) { return is_expert_shard(p.spec.shard); }

}  // namespace

GradSync::GradSync(ParamStore& store, Communicator& dp, Communicator& edp, int token_shards,
                   int64_t bucket_bytes, Communicator* sequence) {
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

void GradSync::all_reduce() {
  for (const Bucket& b : buckets_) {
    if (b.comm->size() == 1 && b.scale == 1.0f) continue;
    float* flat = flat_.view({b.numel}).data;
    int64_t at = 0;
    for (const Param* p : b.params) {
      std::memcpy(flat + at, p->grad.data(), static_cast<size_t>(p->numel()) * sizeof(float));
      at += p->numel();
    }
    b.comm->all_reduce<float>({flat, static_cast<size_t>(b.numel)});
    at = 0;
    for (Param* p : b.params) {
      float* g = p->grad.data();
      for (int64_t i = 0; i < p->numel(); ++i) g[i] = flat[at + i] * b.scale;
      at += p->numel();
    }
  }
}

double global_grad_norm(const ParamStore& store, Communicator& tp, Communicator& ep,
                        Communicator& etp) {
  auto tp_block = [](const Param& p) {
    return p.spec.shard == Shard::kTpColumn || p.spec.shard == Shard::kTpRow ||
           p.spec.shard == Shard::kVocab;
  };
  double replicated = grad_sum_squares(store, [&](const Param& p) {
    return !is_expert(p) && !tp_block(p);
  });
  double tp_part = grad_sum_squares(store, tp_block);
  double expert_part = grad_sum_squares(store, is_expert);
  // one block per tp rank, one per (ep, etp) rank; replicated parts are equal everywhere
  if (tp.size() > 1) tp.all_reduce<double>({&tp_part, 1});
  ep.all_reduce<double>({&expert_part, 1});
  if (etp.size() > 1) etp.all_reduce<double>({&expert_part, 1});
  return std::sqrt(replicated + tp_part + expert_part);
}

}  // namespace moe
