#!/usr/bin/env bash
# A diverging run never costs the good checkpoints (docs/failure-behaviour.md):
#   - stop (default): --optim.lr=1e6 diverges within a few steps; the run stops at the
#     first non-finite step with exit status 3 and one line naming the step and the
#     quantity; `latest` still names the last good checkpoint, every checkpoint verifies,
#     none was removed or written after it, and the run resumes from it; after a
#     transient NaN (one bad step) the resumed run equals the uninterrupted one;
#   - a NaN loss on one rank of a 2-rank job (the test hook MOE_TEST_NONFINITE_STEP)
#     stops both ranks at that very step;
#   - skip: the same NaN step is skipped and counted (skipped_steps in metrics.jsonl),
#     the run finishes with exit 0; a run that keeps diverging stops after
#     train.max_skipped_steps skipped steps in a row (exit 3).
set -uo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
cd "$SOURCE_DIR"
common=(--config configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
        --data.val_path="$SHARDS/fortunes_val.tok" --train.log_interval=1
        --train.threads=1 --train.peak_gflops=1 --train.eval_interval=0)

# ---- stop: a real divergence ----
"$BUILD_DIR/moe-train" "${common[@]}" --train.steps=30 --optim.lr=1e6 --optim.warmup_steps=0 \
  --checkpoint.interval=1 --checkpoint.keep=2 --run.dir="$tmp/div" >/dev/null 2>"$tmp/err"
rc=$?
cat "$tmp/err"
[[ $rc == 3 ]] || fail "diverging run: exit status $rc, expected 3"
line=$(grep "moe-train: step " "$tmp/err") || fail "no line naming the step"
[[ $line =~ step\ ([0-9]+):\ the\ (loss|gradient\ norm) ]] || fail "the line names no step and quantity: $line"
bad=${BASH_REMATCH[1]}
ck=$tmp/div/checkpoints
good=$(printf 'step_%08d.h5' $((bad - 1)))
[[ $(cat "$ck/latest") == "$good" ]] || fail "latest is $(cat "$ck/latest"), expected $good"
[[ $line == *"$ck/$good, is untouched"* ]] || fail "the line does not name the last checkpoint"
for f in "$ck"/step_*.h5; do
  "$BUILD_DIR/moe-ckpt" verify "$f" >/dev/null || fail "$f does not verify"
done
[[ ! -e $ck/$(printf 'step_%08d.h5' "$bad") ]] || fail "a checkpoint of the bad step was written"
[[ ! -e $tmp/div/model.h5 ]] || fail "model.h5 was written from diverged weights"
[[ $(ls "$ck"/step_*.h5 | wc -l) == 2 ]] || fail "checkpoint.keep=2 not honoured"
"$BUILD_DIR/moe-train" "${common[@]}" --train.steps=30 --optim.lr=1e6 --optim.warmup_steps=0 \
  --checkpoint.interval=1 --checkpoint.keep=2 --run.dir="$tmp/div" --run.resume=auto \
  >/dev/null 2>"$tmp/err2"
rc=$?
grep -q "resumed from $ck/$good at step $((bad - 1))" "$tmp/err2" || { cat "$tmp/err2"; fail "did not resume from $good"; }
[[ $rc == 3 ]] || { cat "$tmp/err2"; fail "the resumed divergence: exit $rc, expected 3 again"; }
echo "ok stop: step $bad stopped the run (exit 3); $good intact and resumable"

# A transient NaN (one bad batch, the test hook) in stop mode: the run resumed from the
# last checkpoint without it ends exactly as the uninterrupted run.
"$BUILD_DIR/moe-train" "${common[@]}" --train.steps=12 --checkpoint.interval=4 \
  --run.dir="$tmp/ref" >/dev/null 2>&1 || fail "the uninterrupted run"
MOE_TEST_NONFINITE_STEP=7 "$BUILD_DIR/moe-train" "${common[@]}" --train.steps=12 \
  --checkpoint.interval=4 --run.dir="$tmp/hook" >/dev/null 2>"$tmp/err"
rc=$?
[[ $rc == 3 ]] || { cat "$tmp/err"; fail "NaN at step 7: exit $rc, expected 3"; }
[[ $(cat "$tmp/hook/checkpoints/latest") == step_00000004.h5 ]] || fail "NaN at step 7: latest moved"
"$BUILD_DIR/moe-train" "${common[@]}" --train.steps=12 --checkpoint.interval=4 \
  --run.dir="$tmp/hook" --run.resume=auto >/dev/null 2>"$tmp/err" || { cat "$tmp/err"; fail "resume"; }
/usr/bin/python3 tests/e2e/compare_runs.py "$tmp/ref" "$tmp/hook" "resumed after a NaN step" \
  --weights || fail "the resumed run differs from the uninterrupted one"
echo "ok stop at a NaN step 7, resumed from step 4: bit-identical to the uninterrupted run"

# ---- one rank's NaN stops every rank at that step ----
MOE_TEST_NONFINITE_STEP=4 "$SOURCE_DIR/launch/mpirun.sh" -np 2 "$BUILD_DIR/moe-train" "${common[@]}" \
  --train.steps=10 --parallel.dp=2 --checkpoint.interval=2 --run.dir="$tmp/two" </dev/null >/dev/null 2>"$tmp/err"
rc=$?
[[ $rc == 3 ]] || { cat "$tmp/err"; fail "2-rank NaN: exit status $rc, expected 3"; }
grep -q "moe-train: step 4: the loss is not finite" "$tmp/err" || { cat "$tmp/err"; fail "2-rank NaN: no line for step 4"; }
[[ $(grep -c "moe-train: step 4" "$tmp/err") == 1 ]] || fail "2-rank NaN: the line is printed more than once"
[[ $(cat "$tmp/two/checkpoints/latest") == step_00000002.h5 ]] || fail "2-rank NaN: latest moved"
echo "ok 2 ranks: a NaN loss on rank 1 at step 4 stopped both ranks there"

# ---- skip ----
MOE_TEST_NONFINITE_STEP=4 "$BUILD_DIR/moe-train" "${common[@]}" --train.steps=8 \
  --train.on_nonfinite=skip --run.dir="$tmp/skip" >/dev/null 2>"$tmp/err" \
  || { cat "$tmp/err"; fail "skip: the run failed"; }
grep -q "step 4: the loss is not finite: update skipped" "$tmp/err" || { cat "$tmp/err"; fail "skip: no note"; }
/usr/bin/python3 - "$tmp/skip/metrics.jsonl" <<'PY' || fail "skip: metrics"
import json, sys
r = {x["step"]: x for x in map(json.loads, open(sys.argv[1])) if "loss" in x}
assert [r[s]["skipped_steps"] for s in range(1, 9)] == [0, 0, 0, 1, 1, 1, 1, 1], r
PY
"$BUILD_DIR/moe-train" "${common[@]}" --train.steps=30 --optim.lr=1e6 --optim.warmup_steps=0 \
  --train.on_nonfinite=skip --train.max_skipped_steps=3 --run.dir="$tmp/skip3" >/dev/null 2>"$tmp/err"
rc=$?
[[ $rc == 3 ]] || { cat "$tmp/err"; fail "skip x3: exit status $rc, expected 3"; }
grep -q "the 3th step in a row (train.max_skipped_steps = 3)" "$tmp/err" || { cat "$tmp/err"; fail "skip x3: message"; }
echo "ok skip: step 4 skipped and counted; 3 skipped steps in a row stop the run"
echo PASS
