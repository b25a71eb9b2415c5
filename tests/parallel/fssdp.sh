#!/usr/bin/env bash
# mpi-ranks: 2 4 8
# Sharded sparse experts (parallel.expert_sharding = fssdp, docs/parallelism.md): every
# expert owned by one dp rank, replicas of the busy ones materialised each step, rows
# split over the replicas. The tiny MoE-LM (8 experts, aux-loss-free bias balancing)
# trained 20 steps with it at dp 2, 4 and 8, alone and with parallel.shard_optimizer (and
# shard_optimizer alone at dp 8), logs the one-process losses at every step (relative 1e-5) and ends with the same
# weights (1e-5 absolute: summation order only, as in train_equivalence.sh);
#   - replicas were used: at dp 4 the busiest rank's rows over the mean
#     (experts[].rank_rows_max_over_mean) average below plain ep = 4's;
#   - checkpoints stay logical: the dp-4 run resumed from its step-10 checkpoint is
#     bit-identical, and the checkpoint continues on one process like the one-process run;
#   - the combinations this build refuses are one line, exit 2, nothing written.
set -euo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
cd "$SOURCE_DIR"
common=(--config configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
        --data.val_path="$SHARDS/fortunes_val.tok" --moe.num_experts=8 --optim.lr=0.001
        --moe.bias_balance=true --train.steps=20 --train.log_interval=1
        --train.eval_interval=10 --train.eval_batches=2 --train.threads=1
        --train.peak_gflops=1 --checkpoint.interval=10)
fssdp=(--parallel.expert_sharding=fssdp --parallel.materialize_slots=2)
# expect_error MESSAGE -- ARGS...: mpirun -np 4 stops at start-up, exit 2, naming it
expect_error() {
  local want=$1; shift 2
  local status=0
  "$SOURCE_DIR/launch/mpirun.sh" -np 4 "$BUILD_DIR/moe-train" "${common[@]}" "$@" \
    --run.dir="$tmp/bad" </dev/null >/dev/null 2>"$tmp/err" || status=$?
  [[ $status == 2 ]] || { cat "$tmp/err"; fail "exit status $status, expected 2 ($want)"; }
  grep -q -- "$want" "$tmp/err" || { cat "$tmp/err"; fail "no '$want' in the error"; }
  [[ ! -e $tmp/bad ]] || fail "run.dir written despite the error ($want)"
}

train_dp_ep 1 1 "$tmp/one"
for dp in 2 4 8; do
  train_dp_ep "$dp" 1 "$tmp/f$dp" "${fssdp[@]}"
  compare "$tmp/one" "$tmp/f$dp" "fssdp at dp $dp" --rtol 1e-5 --weights
  train_dp_ep "$dp" 1 "$tmp/f${dp}so" "${fssdp[@]}" --parallel.shard_optimizer=true
  compare "$tmp/one" "$tmp/f${dp}so" "fssdp + shard_optimizer at dp $dp" --rtol 1e-5 --weights
done
train_dp_ep 8 1 "$tmp/so8" --parallel.shard_optimizer=true  # shard_optimizer.sh: dp 2, 4
compare "$tmp/one" "$tmp/so8" "shard_optimizer at dp 8" --rtol 1e-5 --weights

train_dp_ep 4 4 "$tmp/ep4"
/usr/bin/python3 - "$tmp/ep4/metrics.jsonl" "$tmp/f4/metrics.jsonl" <<'PY' || fail "replicas"
import json, sys
def ratios(path):
    return [e["rank_rows_max_over_mean"] for r in map(json.loads, open(path)) if "loss" in r
            for e in r["experts"]]
ep, fs = ratios(sys.argv[1]), ratios(sys.argv[2])
mean = lambda xs: sum(xs) / len(xs)
print(f"busiest rank's rows / mean at dp 4: plain ep {mean(ep):.3f} (max {max(ep):.3f}), "
      f"fssdp {mean(fs):.3f} (max {max(fs):.3f})")
assert mean(fs) < mean(ep), "fssdp did not lower the busiest rank's load"
PY

train_dp_ep 4 1 "$tmp/resume" "${fssdp[@]}" --run.resume="$tmp/f4/checkpoints/step_00000010.h5"
compare "$tmp/f4" "$tmp/resume" "fssdp dp 4 resumed at step 10" --from 10 --weights
train_dp_ep 1 1 "$tmp/to_one" --run.resume="$tmp/f4/checkpoints/step_00000010.h5"
compare "$tmp/one" "$tmp/to_one" "fssdp dp 4 checkpoint on one process" --from 10 \
  --rtol 1e-5 --weights

expect_error "parallel.ep: 2 with parallel.expert_sharding = fssdp" -- "${fssdp[@]}" \
  --parallel.dp=4 --parallel.ep=2
expect_error "parallel.tp, parallel.etp: 1, 2 with" -- "${fssdp[@]}" --parallel.dp=4 \
  --parallel.etp=2
expect_error "moe.dispatcher: two_level with parallel.expert_sharding" -- "${fssdp[@]}" \
  --parallel.dp=4 --moe.dispatcher=two_level
expect_error "train.precision: bf16 with parallel.expert_sharding = fssdp" -- "${fssdp[@]}" \
  --parallel.dp=4 --train.precision=bf16
echo PASS
