#include "framework/moe/node_dedup_dispatcher.h"

#include <algorithm>
#include <bit>

#include "framework/kernels/ops.h"
#include "framework/parallel/two_level_all_to_all.h"

namespace moe {

namespace {

constexpr std::string_view kName = "node-dedup dispatcher";

}  // namespace

NodeDedupDispatcher::NodeDedupDispatcher(Communicator& ep, Communicator& intra,
                                         Communicator& inter, ExpertPlacement placement)
    : intra_(intra), inter_(inter), placement_(placement) {
  MOE_CHECK(placement.ep_size == ep.size() && placement.ep_rank == ep.rank(),
            "node-dedup dispatcher: placement for ep rank ", placement.ep_rank, " of ",
            placement.ep_size, " on ep rank ", ep.rank(), " of ", ep.size());
  MOE_CHECK(ep.size() == intra.size() * inter.size() &&
                ep.rank() == inter.rank() * intra.size() + intra.rank(),
            "node-dedup dispatcher: ep rank ", ep.rank(), " of ", ep.size(),
            " is not local rank ", intra.rank(), " of ", intra.size(), " on node ",
            inter.rank(), " of ", inter.size());
}

int NodeDedupDispatcher::node_of_expert(int64_t expert) const {
  return placement_.owner(expert) / intra_.size();
}

std::vector<int32_t> NodeDedupDispatcher::make_records(const RoutingPlan& plan,
                                                       NodeDedupState& state,
                                                       std::vector<int64_t>& sizes) const {
  const int nodes = inter_.size();
  const int64_t n = plan.num_tokens, k = plan.top_k;
  std::vector<std::vector<int32_t>> records(static_cast<size_t>(nodes)), tokens(records),
      pairs(records);  // per node: record entries, token of each row, assignment of each pair
  std::vector<int> node(static_cast<size_t>(k));  // [K] node of each kept choice, -1 dropped
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t j = 0; j < k; ++j)
      node[j] = plan.slot[t * k + j] >= 0 ? node_of_expert(plan.expert[t * k + j]) : -1;
    for (int m = 0; m < nodes; ++m) {
      const auto count = static_cast<int32_t>(std::count(node.begin(), node.end(), m));
      if (count == 0) continue;
      // record: [count, (expert, weight bits) in choice order]
      records[m].push_back(count);
      for (int64_t j = 0; j < k; ++j) {
        if (node[j] != m) continue;
        records[m].push_back(plan.expert[t * k + j]);
        records[m].push_back(std::bit_cast<int32_t>(plan.weight[t * k + j]));
        pairs[m].push_back(static_cast<int32_t>(t * k + j));
      }
      tokens[m].push_back(static_cast<int32_t>(t));
    }
  }
  state.sent_rows.assign(static_cast<size_t>(nodes), 0);
  state.sent_pairs.assign(static_cast<size_t>(nodes), 0);
  state.row_of_token_node.assign(static_cast<size_t>(n * nodes), -1);
  sizes.assign(static_cast<size_t>(nodes), 0);
  std::vector<int32_t> all;
  for (int m = 0; m < nodes; ++m) {
    state.sent_rows[m] = static_cast<int64_t>(tokens[m].size());
    state.sent_pairs[m] = static_cast<int64_t>(pairs[m].size());
    sizes[m] = static_cast<int64_t>(records[m].size());
    for (int32_t t : tokens[m]) {
      state.row_of_token_node[t * nodes + m] = static_cast<int32_t>(state.token_of_row.size());
      state.token_of_row.push_back(t);
    }
    state.assignment_of_pair.insert(state.assignment_of_pair.end(), pairs[m].begin(),
                                    pairs[m].end());
    all.insert(all.end(), records[m].begin(), records[m].end());
  }
  return all;
}

void NodeDedupDispatcher::land_records(const std::vector<int32_t>& records,
                                       const std::vector<int64_t>& sizes, int64_t top_k,
                                       NodeDedupState& state) {
  const int nodes = inter_.size(), per_node = intra_.size();
  // counts: [rows, record entries] to every node
  std::vector<int64_t> send_counts, recv_counts(static_cast<size_t>(2 * nodes));
  for (int m = 0; m < nodes; ++m) {
    send_counts.push_back(state.sent_rows[m]);
    send_counts.push_back(sizes[m]);
  }
  inter_.all_to_all<int64_t>(send_counts, recv_counts);
  state.landed_rows.assign(static_cast<size_t>(nodes), 0);
  std::vector<int64_t> landed_sizes(static_cast<size_t>(nodes));
  for (int s = 0; s < nodes; ++s) {
    state.landed_rows[s] = recv_counts[2 * s];
    landed_sizes[s] = recv_counts[2 * s + 1];
  }
  std::vector<int32_t> landed(static_cast<size_t>(sum_of(landed_sizes)));
  inter_.all_to_all_v<int32_t>(records, sizes, landed, landed_sizes);

  // parse the records: pairs in (source node, row, choice) order
  const int node = inter_.rank();
  const int64_t first = placement_.first(node * per_node);
  const int64_t experts_here = placement_.first((node + 1) * per_node) - first;
  std::vector<int32_t> pair_row, pair_expert;  // [P_land] landed row, expert - first
  std::vector<float> pair_weight;              // [P_land]
  state.landed_pairs.assign(static_cast<size_t>(nodes), 0);
  size_t at = 0;
  int32_t row = 0;
  for (int s = 0; s < nodes; ++s) {
    const size_t end = at + static_cast<size_t>(landed_sizes[s]);
    for (int64_t r = 0; r < state.landed_rows[s]; ++r, ++row) {
      MOE_CHECK(at < end, "node-dedup dispatcher: records of node ", s, " end early");
      const int32_t count = landed[at++];
      MOE_CHECK(count >= 1 && count <= top_k && at + 2 * static_cast<size_t>(count) <= end,
                "node-dedup dispatcher: bad record of ", count, " pairs from node ", s);
      for (int32_t j = 0; j < count; ++j, at += 2) {
        const int64_t e = landed[at] - first;
        MOE_CHECK(e >= 0 && e < experts_here, "node-dedup dispatcher: expert ", landed[at],
                  " sent to node ", node);
        pair_row.push_back(row);
        pair_expert.push_back(static_cast<int32_t>(e));
        pair_weight.push_back(std::bit_cast<float>(landed[at + 1]));
      }
      state.landed_pairs[s] += count;
    }
    MOE_CHECK(at == end, "node-dedup dispatcher: records of node ", s, " do not match rows");
  }

  // fan order: by expert (so by owner), stable, so (source node, row) within an expert
  const auto pairs = static_cast<int64_t>(pair_row.size());
  std::vector<int64_t> expert_start(static_cast<size_t>(experts_here + 1), 0);
  for (int32_t e : pair_expert) ++expert_start[e + 1];
  for (int64_t e = 0; e < experts_here; ++e) expert_start[e + 1] += expert_start[e];
  std::vector<int64_t> cursor(expert_start.begin(), expert_start.end() - 1);
  state.row_of_fan.assign(static_cast<size_t>(pairs), 0);
  state.weight_of_fan.assign(static_cast<size_t>(pairs), 0.0f);
  state.pair_of_fan.assign(static_cast<size_t>(pairs), 0);
  state.fan_of_row.assign(static_cast<size_t>(row * top_k), -1);
  state.weight_of_row.assign(static_cast<size_t>(row * top_k), 0.0f);
  std::vector<int32_t> filled(static_cast<size_t>(row), 0);  // pairs placed per landed row
  // block counts for every rank of the node: [q's local expert][source node]
  std::vector<int64_t> blocks(static_cast<size_t>(experts_here * nodes), 0);
  int32_t source = 0;
  int64_t source_end = state.landed_pairs.empty() ? 0 : state.landed_pairs[0];
  for (int64_t p = 0; p < pairs; ++p) {
    while (p >= source_end) source_end += state.landed_pairs[++source];
    const int32_t e = pair_expert[p], r = pair_row[p];
    const int64_t f = cursor[e]++;
    state.row_of_fan[f] = r;
    state.weight_of_fan[f] = pair_weight[p];
    state.pair_of_fan[f] = static_cast<int32_t>(p);
    const int32_t j = filled[r]++;
    state.fan_of_row[r * top_k + j] = static_cast<int32_t>(f);
    state.weight_of_row[r * top_k + j] = pair_weight[p];
    ++blocks[e * nodes + source];
  }

  // stage inside the node: block counts to each owner, [G][E_local][N] back
  state.fan_rows.assign(static_cast<size_t>(per_node), 0);
  std::vector<int64_t> block_sizes(static_cast<size_t>(per_node));
  for (int q = 0; q < per_node; ++q) {
    const int owner = node * per_node + q;
    state.fan_rows[q] = expert_start[placement_.first(owner + 1) - first] -
                        expert_start[placement_.first(owner) - first];
    block_sizes[q] = placement_.count(owner) * nodes;
  }
  const std::vector<int64_t> mine(static_cast<size_t>(per_node),
                                  placement_.num_local() * nodes);
  state.block_rows.assign(static_cast<size_t>(per_node * placement_.num_local() * nodes), 0);
  intra_.all_to_all_v<int64_t>(blocks, block_sizes, state.block_rows, mine);
  state.expert_rows.assign(static_cast<size_t>(per_node), 0);
  for (int l = 0; l < per_node; ++l)
    for (int64_t b = 0; b < placement_.num_local() * nodes; ++b)
      state.expert_rows[l] += state.block_rows[l * placement_.num_local() * nodes + b];
}

void NodeDedupDispatcher::across_nodes(const NodeDedupState& state, const float* src,
                                       float* dst, int64_t cols, bool back) {
  const std::vector<int64_t> sent = scaled(state.sent_rows, cols);
  const std::vector<int64_t> landed = scaled(state.landed_rows, cols);
  const auto& from = back ? landed : sent;
  const auto& to = back ? sent : landed;
  inter_.all_to_all_v<float>({src, static_cast<size_t>(sum_of(from))}, from,
                             {dst, static_cast<size_t>(sum_of(to))}, to);
}

void NodeDedupDispatcher::inside_node(const NodeDedupState& state, const float* src,
                                      float* dst, int64_t cols, bool back) {
  const int per_node = intra_.size();
  const int64_t blocks_per_landing = placement_.num_local() * inter_.size();
  const std::vector<int64_t> fanned = scaled(state.fan_rows, cols);
  const std::vector<int64_t> arrived = scaled(state.expert_rows, cols);
  const std::vector<int64_t> block_elems = scaled(state.block_rows, cols);
  const int64_t total = sum_of(arrived);
  scratch_a_.resize(total);
  float* staged = scratch_a_.data();  // [landing][expert][source node]
  if (!back) {
    // fan order -> [landing][expert][source node] -> [expert][source node][landing]
    intra_.all_to_all_v<float>({src, static_cast<size_t>(sum_of(fanned))}, fanned,
                               {staged, static_cast<size_t>(total)}, arrived);
    ops::transpose_blocks(scratch_a_.device(), staged, dst, block_elems, per_node,
                          blocks_per_landing, sizeof(float), /*inverse=*/false);
    return;
  }
  ops::transpose_blocks(scratch_a_.device(), src, staged, block_elems, per_node,
                        blocks_per_landing, sizeof(float), /*inverse=*/true);
  intra_.all_to_all_v<float>({staged, static_cast<size_t>(total)}, arrived,
                             {dst, static_cast<size_t>(sum_of(fanned))}, fanned);
}

DispatchHandle NodeDedupDispatcher::dispatch(Tensor x, std::shared_ptr<const RoutingPlan> plan) {
  const int64_t c = x.cols();
  check_rows(kName, "dispatch input", x, plan->num_tokens, c);
  MOE_CHECK(plan->num_experts == placement_.num_experts, "node-dedup dispatcher: plan over ",
            plan->num_experts, " experts, placement over ", placement_.num_experts);
  auto state = std::make_shared<NodeDedupState>();
  std::vector<int64_t> sizes;
  const std::vector<int32_t> records = make_records(*plan, *state, sizes);
  land_records(records, sizes, plan->top_k, *state);

  const int64_t num_local = placement_.num_local(), nodes = inter_.size();
  std::vector<int64_t> expert_offsets(static_cast<size_t>(num_local + 1), 0);
  for (int l = 0; l < intra_.size(); ++l)
    for (int64_t i = 0; i < num_local; ++i)
      for (int64_t s = 0; s < nodes; ++s)
        expert_offsets[i + 1] += state->block_rows[(l * num_local + i) * nodes + s];
  for (int64_t i = 0; i < num_local; ++i) expert_offsets[i + 1] += expert_offsets[i];

  const auto sent_rows = static_cast<int64_t>(state->token_of_row.size());
  const int64_t landed_rows = sum_of(state->landed_rows);
  const auto fanned_rows = static_cast<int64_t>(state->row_of_fan.size());
  Tensor sent = scratch_a_.view({sent_rows, c});  // (R_sent, C)
  ops::permute_rows(x, state->token_of_row, {}, sent);
  Tensor landed = scratch_b_.view({landed_rows, c});  // (R_land, C)
  across_nodes(*state, sent.data, landed.data, c, /*back=*/false);
  Tensor fanned = scratch_c_.view({fanned_rows, c});  // (P_land, C) fan order
  ops::permute_rows(landed, state->row_of_fan, {}, fanned);
  std::shared_ptr<Buffer> storage = storage_.acquire();
  Tensor rows = storage->view({expert_offsets.back(), c});  // (S_recv, C)
  inside_node(*state, fanned.data, rows.data, c, /*back=*/false);
  state->returned = returned_.acquire();
  state->returned->resize(fanned_rows * c);
  return DispatchHandle(std::move(plan), std::move(storage), rows, std::move(expert_offsets),
                        placement_.first_local(), std::move(state));
}

void NodeDedupDispatcher::combine(const DispatchHandle& handle, Tensor expert_out, Tensor y) {
  const NodeDedupState& state = state_as<NodeDedupState>(handle, kName);
  const int64_t c = expert_out.cols();
  check_combine(kName, handle, expert_out, y);
  float* returned = state.returned->data();  // (P_land, C) fan order
  inside_node(state, expert_out.data, returned, c, /*back=*/true);
  // P_{t,m} = sum of w Expert_e(x_t) over the pairs of each landed row, in choice order
  const int64_t landed_rows = sum_of(state.landed_rows);
  Tensor partial = scratch_b_.view({landed_rows, c});  // (R_land, C)
  ops::combine_rows(Tensor(returned, {static_cast<int64_t>(state.row_of_fan.size()), c}),
                    state.fan_of_row, state.weight_of_row, partial);
  Tensor back = scratch_c_.view({static_cast<int64_t>(state.token_of_row.size()), c});
  across_nodes(state, partial.data, back.data, c, /*back=*/true);
  // y_t = sum_m P_{t,m}
  ops::combine_rows(back, state.row_of_token_node, {}, y);
}

void NodeDedupDispatcher::combine_backward(const DispatchHandle& handle, Tensor expert_out,
                                           Tensor dy, Tensor d_expert_out, float* dweights) {
  const RoutingPlan& plan = handle.plan();
  const NodeDedupState& state = state_as<NodeDedupState>(handle, kName);
  const int64_t c = dy.cols();
  check_combine_backward(kName, handle, expert_out, dy, d_expert_out);
  const auto sent_rows = static_cast<int64_t>(state.token_of_row.size());
  const int64_t landed_rows = sum_of(state.landed_rows);
  const auto fanned_rows = static_cast<int64_t>(state.row_of_fan.size());
  Tensor sent = scratch_a_.view({sent_rows, c});  // (R_sent, C) dy once per (token, node)
  ops::permute_rows(dy, state.token_of_row, {}, sent);
  Tensor landed = scratch_b_.view({landed_rows, c});  // (R_land, C)
  across_nodes(state, sent.data, landed.data, c, /*back=*/false);

  // per fanned pair: dweights = <dy_t, Expert_e(x_t)>, in the landed records' order
  std::vector<float> pair_dweights(static_cast<size_t>(fanned_rows));  // [P_land]
  std::vector<float> fan_dweights(static_cast<size_t>(fanned_rows));  // [P_land] fan order
  ops::gather_dot(landed, state.row_of_fan, Tensor(state.returned->data(), {fanned_rows, c}),
                  {}, fan_dweights);
  for (int64_t f = 0; f < fanned_rows; ++f) pair_dweights[state.pair_of_fan[f]] = fan_dweights[f];
  // d_out = w dy_t, to the experts
  Tensor fanned = scratch_c_.view({fanned_rows, c});  // (P_land, C) fan order
  ops::permute_rows(landed, state.row_of_fan, state.weight_of_fan, fanned);
  inside_node(state, fanned.data, d_expert_out.data, c, /*back=*/false);

  // dweights back to the tokens' ranks; dropped assignments 0
  std::vector<float> sent_dweights(state.assignment_of_pair.size());  // [P_sent]
  inter_.all_to_all_v<float>(pair_dweights, state.landed_pairs, sent_dweights, state.sent_pairs);
  std::fill(dweights, dweights + plan.num_assignments(), 0.0f);
  for (size_t p = 0; p < sent_dweights.size(); ++p)
    dweights[state.assignment_of_pair[p]] = sent_dweights[p];
}

void NodeDedupDispatcher::dispatch_backward(const DispatchHandle& handle, Tensor d_rows,
                                            Tensor dx) {
  const NodeDedupState& state = state_as<NodeDedupState>(handle, kName);
  const int64_t c = dx.cols();
  check_dispatch_backward(kName, handle, d_rows, dx);
  const auto fanned_rows = static_cast<int64_t>(state.row_of_fan.size());
  const int64_t landed_rows = sum_of(state.landed_rows);
  Tensor fanned = scratch_c_.view({fanned_rows, c});  // (P_land, C) fan order
  inside_node(state, d_rows.data, fanned.data, c, /*back=*/true);
  // one row per landed (token, node): the sum over its experts here
  Tensor landed = scratch_b_.view({landed_rows, c});
  ops::combine_rows(fanned, state.fan_of_row, {}, landed);
  Tensor back = scratch_a_.view({static_cast<int64_t>(state.token_of_row.size()), c});
  across_nodes(state, landed.data, back.data, c, /*back=*/true);
  // dx_t = sum over the nodes t reached
  ops::combine_rows(back, state.row_of_token_node, {}, dx);
}

}  // namespace moe
