#include "framework/train/memory_record.h"

#include <algorithm>
#include <array>
#include <vector>

namespace moe {

nlohmann::json memory_record(const ParamStore& store, const AdamW& optimizer,
                             int64_t replica_bytes, Communicator& world) {
  constexpr int64_t kFloat = sizeof(float);
  // params, grads, state, replicas
  std::array<int64_t, 4> mine{0, 0, optimizer.state_bytes(), replica_bytes};
  for (const Param& p : store.params()) {
    mine[0] += p.value.size() * kFloat;
    mine[1] += p.grad.size() * kFloat;
  }
  std::vector<int64_t> all(mine.size() * static_cast<size_t>(world.size()));
  world.all_gather<int64_t>(mine, all);
  nlohmann::json record;
  const char* names[] = {"parameter_bytes", "gradient_bytes", "optimizer_state_bytes",
                         "replica_bytes"};
  for (size_t k = 0; k < mine.size(); ++k) {
    std::vector<int64_t> per_rank;
    for (int r = 0; r < world.size(); ++r) per_rank.push_back(all[r * mine.size() + k]);
    record[names[k]] = per_rank;
  }
  return record;
}

int64_t replica_bytes(const std::vector<MoELayer*>& layers) {
  int64_t bytes = 0;
  for (MoELayer* layer : layers) bytes += layer->experts().replica_bytes();
  return bytes;
}

int64_t layer_replica_peak(const std::vector<MoELayer*>& layers) {
  int64_t bytes = 0;
  for (MoELayer* layer : layers) bytes = std::max(bytes, layer->experts().replica_peak());
  return bytes;
}

std::vector<RankBalance> rank_balance(const std::vector<MoELayer*>& layers,
                                      Communicator& world) {
  std::vector<int64_t> mine;
  for (const MoELayer* layer : layers) mine.push_back(layer->rows_computed());
  std::vector<int64_t> all(mine.size() * static_cast<size_t>(world.size()));
  world.all_gather<int64_t>(mine, all);
  std::vector<RankBalance> out(layers.size());
  for (size_t l = 0; l < layers.size(); ++l) {
    int64_t total = 0;
    for (int r = 0; r < world.size(); ++r) {
      const int64_t rows = all[r * mine.size() + l];
      out[l].max = std::max(out[l].max, rows);
      total += rows;
    }
    out[l].mean = static_cast<double>(total) / world.size();
  }
  return out;
}

}  // namespace moe
