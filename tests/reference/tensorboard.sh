#!/usr/bin/env bash
# TensorBoard output (run.tensorboard) read back by TensorBoard's own reader: every
# scalar of metrics.jsonl is a scalar of the events file at its step with the same
# float32 value (tags by the rule of framework/train/tensorboard.h), every per-expert
# token count a histogram bin, every record passes the reader's CRC-32C checks; a run
# resumed from a checkpoint reads as one run (as metrics.jsonl); dit_moe logs a sample
# grid at each evaluation, the same on 4 ranks (dp, tp with sequence parallelism, ep) as
# on one; run.tensorboard=false writes nothing; a run.dir/tb that is not a directory is a
# one-line error.
set -euo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
require_fashion_mnist
python=$(bash "$SOURCE_DIR/launch/python-env.sh")
cd "$SOURCE_DIR"
train() {
  "$BUILD_DIR/moe-train" "$@" --train.peak_gflops=100 >/dev/null 2>"$tmp/err" \
    || { cat "$tmp/err"; fail "moe-train $*"; }
}
gpt=(--config configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
     --data.val_path="$SHARDS/fortunes_val.tok" --train.steps=20 --train.log_interval=2
     --train.eval_interval=10 --checkpoint.interval=10)
train "${gpt[@]}" --run.dir="$tmp/gpt"
"$python" tests/reference/check_tensorboard.py "$tmp/gpt" || fail "moe_gpt run"

# Resumed at step 10: the first run's records after 10 give way to the second's.
cp -r "$tmp/gpt" "$tmp/resumed"
train "${gpt[@]}" --run.dir="$tmp/resumed" --train.log_interval=5 \
  --run.resume="$tmp/resumed/checkpoints/step_00000010.h5"
[[ $(ls "$tmp/resumed/tb" | wc -l) == 2 ]] || fail "a resumed run adds one events file"
"$python" tests/reference/check_tensorboard.py "$tmp/resumed" || fail "resumed run"

dit=(--config configs/dit_moe_tiny.ini --train.steps=10 --train.log_interval=5
     --train.eval_interval=5 --train.eval_batches=1 --train.threads=1)
train "${dit[@]}" --run.dir="$tmp/dit"
"$python" tests/reference/check_tensorboard.py "$tmp/dit" --images 3 || fail "dit_moe run"
# The grid is drawn by every rank together: dp x tp with sequence parallelism x ep
# draws the single process's grid.
"$SOURCE_DIR/launch/mpirun.sh" -np 4 "$BUILD_DIR/moe-train" "${dit[@]}" --parallel.dp=2 \
  --parallel.tp=2 --parallel.ep=2 --parallel.sequence_parallel=true --train.peak_gflops=100 \
  --run.dir="$tmp/dit4" </dev/null >/dev/null 2>"$tmp/err" || { cat "$tmp/err"; fail "mpirun dit"; }
"$python" tests/reference/check_tensorboard.py "$tmp/dit4" --images 3 \
  --same-images-as "$tmp/dit" || fail "dit_moe run on 4 ranks"

train "${gpt[@]}" --train.steps=2 --run.tensorboard=false --run.dir="$tmp/off"
[[ ! -e $tmp/off/tb ]] || fail "run.tensorboard=false wrote $tmp/off/tb"

mkdir "$tmp/bad" && touch "$tmp/bad/tb"
status=0
"$BUILD_DIR/moe-train" "${gpt[@]}" --run.dir="$tmp/bad" >/dev/null 2>"$tmp/err" || status=$?
[[ $status == 2 && $(wc -l <"$tmp/err") == 1 ]] || { cat "$tmp/err"; fail "tb file: status $status"; }
grep -q "run.tensorboard: '.*/tb' exists and is not a directory" "$tmp/err" || fail "message: $(cat "$tmp/err")"
[[ $(ls "$tmp/bad") == tb ]] || fail "the rejected run wrote into its run.dir"
echo "PASS"
