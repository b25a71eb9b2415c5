#include "framework/moe/load_window.h"

#include <algorithm>

#include "framework/core/error.h"

namespace moe {

namespace {

std::string history_name(const std::string& prefix, int steps, int ranks) {
  return prefix + ".load_history_w" + std::to_string(steps) + "_r" + std::to_string(ranks);
}

}  // namespace

LoadWindow::LoadWindow(ParamStore& store, const std::string& experts_prefix, int steps,
                       int ranks, int64_t experts)
    : history_(store.add_buffer(history_name(experts_prefix, steps, ranks),
                                Shape{(steps - 1) * ranks * experts})),
      size_(ranks * experts) {
  MOE_CHECK(steps >= 2 && ranks >= 1 && experts >= 1, "load window of ", steps, " steps over ",
            ranks, " ranks and ", experts, " experts");
  history_.optional = true;
}

std::span<const int64_t> LoadWindow::counts(const RoutingPlan& plan) const {
  std::span<const int64_t> all = plan.group_counts_after;
  if (all.empty()) all = plan.counts_after;  // one rank: its counts are the group's
  MOE_CHECK(static_cast<int64_t>(all.size()) == size_, "load window: ", all.size(),
            " counts, expected ", size_);
  return all;
}

std::vector<int64_t> LoadWindow::with(const RoutingPlan& now) const {
  const std::span<const int64_t> step = counts(now);
  std::vector<int64_t> sum(step.begin(), step.end());
  const std::span<const float> past(history_.value.data(),
                                    static_cast<size_t>(history_.shape.numel()));
  for (size_t i = 0; i < past.size(); ++i)  // whole numbers of rows, exact in fp32
    sum[i % static_cast<size_t>(size_)] += static_cast<int64_t>(past[i]);
  return sum;
}

void LoadWindow::push(const RoutingPlan& step) {
  const std::span<const int64_t> now = counts(step);
  std::span<float> past = history_.values();
  std::copy(past.begin() + size_, past.end(), past.begin());  // drop the oldest step
  std::transform(now.begin(), now.end(), past.end() - size_,
                 [](int64_t n) { return static_cast<float>(n); });
}

}  // namespace moe
