#!/usr/bin/env bash
# mpi-ranks: 4 8
# Checkpoints under mpirun (docs/checkpoint-format.md): the tiny MoE-LM with 8 experts
# and aux-loss-free bias balancing, 20 steps, a checkpoint every 5 or 10.
#   - exact resume on the same layout: resuming at step 10 under (dp, ep) = (4, 4) and
#     (4, 2) (expert blocks replicated over edp = 2, one replica writes) logs steps
#     11..20 bit-identical to the uninterrupted run and ends with identical weights;
#   - reshard: the (4, 4) checkpoint of step 10 resumed at (2, 1), (8, 8) and on one
#     process continues like the uninterrupted single-process run: losses to relative
#     1e-5, final weights to 1e-5 (the tolerance of train_equivalence.sh: the layouts
#     differ only in summation order);
#   - crash safety: the (4, 4) job killed (SIGKILL, every rank) in the middle of writing
#     step 10 (test hook MOE_TEST_CHECKPOINT_PAUSE) leaves `latest` on step 5, which
#     verifies, and run.resume=auto finishes bit-identical to the uninterrupted run.
set -uo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d)
# The processes whose parent is $1: mpirun's ranks (from /proc: procps may be missing).
children_of() {
  local f rest ppid
  for f in /proc/[0-9]*/stat; do
    rest=$(cat "$f" 2>/dev/null) || continue
    rest=${rest##*) }  # after "pid (command) ": state ppid ...
    read -r _ ppid _ <<<"$rest"
    if [[ $ppid == "$1" ]]; then f=${f#/proc/}; echo "${f%/stat}"; fi
  done
}
job=
cleanup() { [[ -n $job ]] && kill -9 $(children_of "$job") "$job" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
ensure_shards "$tmp"
cd "$SOURCE_DIR"
common=(--config configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
        --data.val_path="$SHARDS/fortunes_val.tok" --moe.num_experts=8 --optim.lr=0.001
        --moe.bias_balance=true --train.steps=20 --train.log_interval=1
        --train.eval_interval=10 --train.eval_batches=2 --train.threads=1
        --train.peak_gflops=1)

train_dp_ep 1 1 "$tmp/one" --checkpoint.interval=10
train_dp_ep 4 4 "$tmp/p44" --checkpoint.interval=5 --checkpoint.keep=4
train_dp_ep 4 2 "$tmp/p42" --checkpoint.interval=10
for layout in "4 4" "4 2"; do
  read -r dp ep <<<"$layout"
  train_dp_ep "$dp" "$ep" "$tmp/resume$dp$ep" --run.resume="$tmp/p$dp$ep/checkpoints/step_00000010.h5"
  compare "$tmp/p$dp$ep" "$tmp/resume$dp$ep" "resume at step 10, dp $dp ep $ep" --from 10 --weights
done

ck44=$tmp/p44/checkpoints/step_00000010.h5
for layout in "2 1" "8 8" "1 1"; do
  read -r dp ep <<<"$layout"
  train_dp_ep "$dp" "$ep" "$tmp/reshard$dp$ep" --run.resume="$ck44"
  grep -q "written by dp 4 tp 1 ep 4 on 4 ranks" "$tmp/err" || fail "reshard: no resume line"
  compare "$tmp/one" "$tmp/reshard$dp$ep" "saved at (4, 4), resumed at ($dp, $ep)" \
    --from 10 --rtol 1e-5 --weights
done

# Kill every rank of a (4, 4) job while it writes step 10.
MOE_TEST_CHECKPOINT_PAUSE=10:120 "$SOURCE_DIR/launch/mpirun.sh" -np 4 "$BUILD_DIR/moe-train" \
  "${common[@]}" --parallel.dp=4 --parallel.ep=4 --checkpoint.interval=5 \
  --run.dir="$tmp/crash" </dev/null >/dev/null 2>"$tmp/crash.err" &
job=$!
for _ in $(seq 1200); do
  grep -q "test hook: pausing" "$tmp/crash.err" 2>/dev/null && break
  kill -0 "$job" 2>/dev/null || { cat "$tmp/crash.err"; fail "the job ended before the hook"; }
  sleep 0.1
done
grep -q "test hook: pausing" "$tmp/crash.err" || fail "the test hook never paused"
ranks=$(children_of "$job")
kill -9 $ranks "$job"
ranks=$(wc -w <<<"$ranks")
wait "$job" 2>/dev/null
job=
ck=$tmp/crash/checkpoints
[[ $(cat "$ck/latest") == step_00000005.h5 && ! -e $ck/step_00000010.h5 ]] \
  || fail "after the kill: latest '$(cat "$ck/latest")', $(ls "$ck" | tr '\n' ' ')"
"$BUILD_DIR/moe-ckpt" verify "$ck/step_00000005.h5" >/dev/null || fail "step 5 is damaged"
echo "killed $ranks ranks and mpirun mid-write: latest -> step_00000005.h5, which verifies"
train_dp_ep 4 4 "$tmp/crash" --checkpoint.interval=5 --run.resume=auto
compare "$tmp/p44" "$tmp/crash" "(4, 4) resumed after SIGKILL" --weights
echo PASS
