#!/usr/bin/env bash
# mpi-ranks: 2 4
# Re-planned owners of sharded sparse experts (parallel.reshard_interval,
# docs/parallelism.md): every 4 steps each MoE layer's owners are planned again from the
# loads of those steps, and the experts whose owner changes move with their weights and
# AdamW moments. The tiny MoE-LM (8 experts) trained 20 steps with it at dp 2 and 4 (and
# at dp 4 with parallel.shard_optimizer) logs the one-process losses at every step
# (relative 1e-5), the steps right after a re-shard (5, 9, 13, 17) included, and ends
# with the same weights;
#   - owners moved (the final record's ownership.moves > 0);
#   - on two emulated nodes (parallel.ranks_per_node = 2) rows prefer a replica on their
#     node (the busiest rank's rows change), with the same losses;
#   - dp 4 reads a load window of 3 steps for its replica plan (parallel.load_window), and
#     its busiest rank's rows differ from the plan of the step's counts alone;
#   - the memory record counts the replicas: at dp 4 every rank's peak is a whole number of
#     experts (3 weights of 32 x 32 floats, values and gradients: 24,576 bytes each) within
#     the 2 slots of the one MoE layer, and some rank used one;
#   - checkpoints stay logical across a re-shard: the dp-4 run resumed from its step-10
#     checkpoint (written after the re-shards of steps 4 and 8) is bit-identical, and the
#     checkpoint continues on one process and on plain dp 2 x ep 2 like the one-process
#     run; a checkpoint without ownership state (the one-process run's) starts the even
#     blocks and continues at dp 4 with re-sharding;
#   - reshard_interval or load_window without fssdp, or out of range, and a negative
#     moe.router_skew are one line, exit 2.
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
reshard=(--parallel.expert_sharding=fssdp --parallel.materialize_slots=2
         --parallel.reshard_interval=4)
# the ownership state buffers are the re-sharding runs' own (model.h5 keeps them)
state=(--optional-buffer=.owner_load --optional-buffer=.window_load
       --optional-buffer=_w3_r4)
# moves DIR: the final record's ownership.moves
moves() {
  /usr/bin/python3 -c 'import json, sys
final = next(json.loads(l) for l in open(sys.argv[1]) if l.startswith("{"))
print(final["ownership"]["moves"])' "$1.final"
}
expect_error() {  # expect_error MESSAGE -- ARGS...: exit 2 at start-up, naming it
  local want=$1; shift 2
  local status=0
  "$SOURCE_DIR/launch/mpirun.sh" -np 2 "$BUILD_DIR/moe-train" "${common[@]}" "$@" \
    --parallel.dp=2 --run.dir="$tmp/bad" </dev/null >/dev/null 2>"$tmp/err" || status=$?
  [[ $status == 2 ]] || { cat "$tmp/err"; fail "exit status $status, expected 2 ($want)"; }
  grep -q -- "$want" "$tmp/err" || { cat "$tmp/err"; fail "no '$want' in the error"; }
  [[ ! -e $tmp/bad ]] || fail "run.dir written despite the error ($want)"
}

train_dp_ep 1 1 "$tmp/one"
# dp 4 also reads a load window of 3 steps (parallel.load_window) for its replicas
for dp in 2 4; do
  window=(); [[ $dp == 4 ]] && window=(--parallel.load_window=3)
  train_dp_ep "$dp" 1 "$tmp/r$dp" "${reshard[@]}" "${window[@]}"
  compare "$tmp/one" "$tmp/r$dp" "fssdp + reshard_interval at dp $dp" --rtol 1e-5 --weights \
    "${state[@]}"
  cp "$tmp/err" "$tmp/r$dp.err"
  grep "expert owners moved" "$tmp/r$dp.err" | head -3
  n=$(moves "$tmp/r$dp")
  echo "dp $dp: owners moved $n times (layer re-plans that changed the owners)"
  [[ $n -gt 0 ]] || fail "dp $dp: no re-shard moved any owner"
done

train_dp_ep 4 1 "$tmp/r4so" "${reshard[@]}" --parallel.shard_optimizer=true
compare "$tmp/one" "$tmp/r4so" "fssdp + reshard_interval + shard_optimizer at dp 4" \
  --rtol 1e-5 --weights "${state[@]}"

# the window changes the replica plan: without it dp 4 computes other rows per rank
train_dp_ep 4 1 "$tmp/r4now" "${reshard[@]}"
/usr/bin/python3 - "$tmp/r4/metrics.jsonl" "$tmp/r4now/metrics.jsonl" <<'PY' || fail "window"
import json, sys
def busiest(path):
    return [e["rank_rows_max"] for r in map(json.loads, open(path)) if "loss" in r
            for e in r["experts"]]
window, now = busiest(sys.argv[1]), busiest(sys.argv[2])
steps = sum(a != b for a, b in zip(window, now))
print(f"load window 3 vs this step's counts: busiest rank's rows differ at {steps} of "
      f"{len(now)} steps")
assert steps > 0, "the load window did not change the replica plan"
PY
/usr/bin/python3 - "$tmp/r4.final" <<'PY' || fail "replica bytes"
import json, sys
final = next(json.loads(l) for l in open(sys.argv[1]) if l.startswith("{"))
got = final["memory"]["replica_bytes"]
per_expert = 3 * 32 * 32 * 2 * 4
print(f"replica bytes per rank at dp 4 (peak): {got}")
assert all(b % per_expert == 0 and b <= 2 * per_expert for b in got), got
assert max(got) > 0, got
PY
# two emulated nodes of 2 ranks: rows prefer replicas on their node (other rows per rank
# than on one node), the same losses
train_dp_ep 4 1 "$tmp/nodes" "${reshard[@]}" --parallel.ranks_per_node=2
compare "$tmp/one" "$tmp/nodes" "fssdp + reshard_interval at dp 4 on 2 nodes" --rtol 1e-5 \
  --weights "${state[@]}"
/usr/bin/python3 - "$tmp/nodes/metrics.jsonl" "$tmp/r4now/metrics.jsonl" <<'PY' || fail "nodes"
import json, sys
def busiest(path):
    return [e["rank_rows_max"] for r in map(json.loads, open(path)) if "loss" in r
            for e in r["experts"]]
steps = sum(a != b for a, b in zip(busiest(sys.argv[1]), busiest(sys.argv[2])))
print(f"2 nodes vs 1: busiest rank's rows differ at {steps} of 20 steps")
assert steps > 0, "the nodes did not change the row split"
PY

ckpt=$tmp/r4/checkpoints/step_00000010.h5
# the checkpoint comes after a re-shard that moved owners
grep -qE "step [48]: expert owners moved" "$tmp/r4.err" || fail "dp 4: no move before step 10"
train_dp_ep 4 1 "$tmp/resume" "${reshard[@]}" --parallel.load_window=3 \
  --run.resume="$ckpt"
compare "$tmp/r4" "$tmp/resume" "re-sharded dp 4 resumed at step 10" --from 10 --weights \
  "${state[@]}"
train_dp_ep 1 1 "$tmp/to_one" --run.resume="$ckpt"
compare "$tmp/one" "$tmp/to_one" "re-sharded checkpoint on one process" --from 10 \
  --rtol 1e-5 --weights "${state[@]}"
train_dp_ep 2 2 "$tmp/to_ep" --run.resume="$ckpt"
compare "$tmp/one" "$tmp/to_ep" "re-sharded checkpoint on dp 2 x ep 2" --from 10 \
  --rtol 1e-5 --weights "${state[@]}"
train_dp_ep 4 1 "$tmp/from_one" "${reshard[@]}" \
  --run.resume="$tmp/one/checkpoints/step_00000010.h5"
compare "$tmp/one" "$tmp/from_one" "one-process checkpoint at dp 4 with re-sharding" \
  --from 10 --rtol 1e-5 --weights "${state[@]}"

expect_error "parallel.reshard_interval: 4 needs parallel.expert_sharding = fssdp" -- \
  --parallel.reshard_interval=4
expect_error "parallel.reshard_interval" -- --parallel.expert_sharding=fssdp \
  --parallel.reshard_interval=-1
expect_error "parallel.load_window: 3 needs parallel.expert_sharding = fssdp" -- \
  --parallel.load_window=3
expect_error "parallel.load_window: 0 must be > 0" -- --parallel.expert_sharding=fssdp \
  --parallel.load_window=0
expect_error "moe.router_skew: -1 must be >= 0" -- --moe.router_skew=-1
echo PASS
