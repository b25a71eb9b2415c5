#!/usr/bin/env bash
# mpi-ranks: 2 4
# The sharded optimizer (parallel.shard_optimizer, docs/parallelism.md) changes where
# the AdamW state lives, not the training: the tiny MoE-LM (8 experts, aux-loss-free
# bias balancing) trained 20 steps with it under (dp, ep) = (2, 1), (4, 1), (4, 2) and
# (4, 1) with etp 2 logs the one-process losses at every step (relative 1e-5) and ends
# with the same weights (1e-5 absolute: summation order only, as in train_equivalence.sh);
#   - each rank's AdamW state, as allocated, is exactly its analytic slices: for a
#     tensor of m elements replicated over n ranks, rank q keeps
#     floor((q+1) m / n) - floor(q m / n) elements of each moment (1/n of the total);
#   - the experts records' per-rank rows add up to the global batch's assignments;
#   - checkpoints stay logical: the (2, 1) run resumed from its step-10 checkpoint logs
#     steps 11..20 bit-identical to the uninterrupted run with identical weights; the
#     (4, 1) checkpoint resumed on one process without sharding, and the one-process
#     checkpoint resumed at (2, 1) with sharding, continue like the one-process run.
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
# state_bytes RUN_DIR RANKS: every rank's AdamW bytes equal its analytic slices
state_bytes() {
  /usr/bin/python3 - "$1" "$2" <<'PY'
import json, sys
import h5py
run_dir, n = sys.argv[1], int(sys.argv[2])
final = json.loads(open(f"{run_dir}.final").read().strip().splitlines()[-1])
got = final["memory"]["optimizer_state_bytes"]
with h5py.File(f"{run_dir}/model.h5") as f:
    sizes = [f["model"][k].size for k in f["model"]]
want = [sum(8 * ((q + 1) * m // n - q * m // n) for m in sizes) for q in range(n)]
assert got == want, f"{run_dir}: AdamW bytes per rank {got}, analytic {want}"
total = 8 * sum(sizes)
print(f"dp {n}: AdamW state per rank {got} bytes = {max(got) / total:.4f} of {total}")
PY
}

train_dp_ep 1 1 "$tmp/one"
for layout in "2 1" "4 1" "4 2"; do
  read -r dp ep <<<"$layout"
  train_dp_ep "$dp" "$ep" "$tmp/so$dp$ep" --parallel.shard_optimizer=true
  compare "$tmp/one" "$tmp/so$dp$ep" "shard_optimizer at ($dp, $ep)" --rtol 1e-5 --weights
done
# expert blocks split over etp 2 inside dp 4: their moments sharded over edp all the same
train_dp_ep 4 1 "$tmp/so_etp" --parallel.shard_optimizer=true --parallel.etp=2
compare "$tmp/one" "$tmp/so_etp" "shard_optimizer at (4, 1), etp 2" --rtol 1e-5 --weights
state_bytes "$tmp/so21" 2 || fail "optimizer state bytes at dp 2"
# the per-rank rows of the expert records (docs/metrics.md) add up to the global batch's
# assignments (dropless, etp 1) at every logged step
/usr/bin/python3 - "$tmp/so42/metrics.jsonl" 4 <<'PY' || fail "rank rows at (4, 2)"
import json, sys
ranks = int(sys.argv[2])
for r in (x for x in map(json.loads, open(sys.argv[1])) if "loss" in x):
    for e in r["experts"]:
        assert e["rank_rows_mean"] * ranks == sum(e["tokens"]), (r["step"], e)
        assert e["rank_rows_max"] >= e["rank_rows_mean"] > 0, (r["step"], e)
print("(4, 2): rank rows add up to the assignments; last max/mean",
      [round(e["rank_rows_max_over_mean"], 3) for e in r["experts"]])
PY
state_bytes "$tmp/so41" 4 || fail "optimizer state bytes at dp 4"

train_dp_ep 2 1 "$tmp/resume" --parallel.shard_optimizer=true \
  --run.resume="$tmp/so21/checkpoints/step_00000010.h5"
compare "$tmp/so21" "$tmp/resume" "sharded (2, 1) resumed at step 10" --from 10 --weights
train_dp_ep 1 1 "$tmp/to_one" --run.resume="$tmp/so41/checkpoints/step_00000010.h5"
compare "$tmp/one" "$tmp/to_one" "sharded (4, 1) resumed on one process" --from 10 \
  --rtol 1e-5 --weights
train_dp_ep 2 1 "$tmp/from_one" --parallel.shard_optimizer=true \
  --run.resume="$tmp/one/checkpoints/step_00000010.h5"
compare "$tmp/one" "$tmp/from_one" "one process resumed sharded at (2, 1)" --from 10 \
  --rtol 1e-5 --weights
echo PASS
