#!/usr/bin/env bash
# Crash safety: a process killed (SIGKILL) in the middle of writing a checkpoint leaves
# the previous checkpoint intact and `latest` pointing at it, and run.resume=auto then
# finishes the run exactly as if nothing had happened. The kill lands at a controlled
# point: the test hook MOE_TEST_CHECKPOINT_PAUSE=10 (docs/checkpoint-format.md) pauses
# the save of step 10 with its model tensors written and its optimizer state not.
set -uo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d)
pid=
cleanup() { [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
ensure_shards "$tmp"
cd "$SOURCE_DIR"
common=(--config configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
        --data.val_path="$SHARDS/fortunes_val.tok" --train.steps=20 --train.log_interval=1
        --train.eval_batches=1 --train.threads=1 --train.peak_gflops=1
        --checkpoint.interval=5)

"$BUILD_DIR/moe-train" "${common[@]}" --run.dir="$tmp/ref" >/dev/null 2>"$tmp/err" \
  || { cat "$tmp/err"; fail "the uninterrupted run"; }

MOE_TEST_CHECKPOINT_PAUSE=10:120 "$BUILD_DIR/moe-train" "${common[@]}" --run.dir="$tmp/run" \
  >/dev/null 2>"$tmp/crash.err" &
pid=$!
for _ in $(seq 600); do
  grep -q "test hook: pausing" "$tmp/crash.err" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/crash.err"; fail "moe-train ended before the hook"; }
  sleep 0.1
done
grep -q "test hook: pausing" "$tmp/crash.err" || fail "the test hook never paused"
ck=$tmp/run/checkpoints
[[ -s $ck/step_00000010.h5.tmp ]] || fail "no partial step_00000010.h5.tmp while paused"
kill -9 "$pid"
wait "$pid" 2>/dev/null
pid=

[[ $(cat "$ck/latest") == step_00000005.h5 ]] || fail "latest is '$(cat "$ck/latest")'"
[[ ! -e $ck/step_00000010.h5 ]] || fail "a partial step_00000010.h5 carries the final name"
"$BUILD_DIR/moe-ckpt" verify "$ck/step_00000005.h5" || fail "the previous checkpoint is damaged"
echo "killed mid-write: latest -> step_00000005.h5, which verifies"

"$BUILD_DIR/moe-train" "${common[@]}" --run.dir="$tmp/run" --run.resume=auto \
  >/dev/null 2>"$tmp/err" || { cat "$tmp/err"; fail "resume=auto after the kill"; }
grep -q "at step 5 " "$tmp/err" || fail "did not resume at step 5"
[[ ! -e $ck/step_00000010.h5.tmp ]] || fail "the partial file was not cleaned up"
/usr/bin/python3 tests/e2e/compare_runs.py "$tmp/ref" "$tmp/run" "resumed after SIGKILL" \
  --weights || fail "the resumed run differs from the uninterrupted one"
echo PASS
