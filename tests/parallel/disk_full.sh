#!/usr/bin/env bash
# mpi-ranks: 2
# A full disk during a checkpoint (docs/failure-behaviour.md): the checkpoint.dir is a
# small tmpfs that the test fills while the save of step 10 is paused between the model
# and the optimizer state (MOE_TEST_CHECKPOINT_PAUSE). Then
#   - checkpoint.on_error=stop (default), 1 and 2 ranks: exit 2 with one line from
#     moe-train, no process ends by a signal, the partial .tmp file is gone and
#     `latest` still names the checkpoint of step 5, which verifies;
#   - checkpoint.on_error=warn: the run warns, trains on and writes the next checkpoint
#     once the space is back (the test frees it), and ends with exit 0.
# Skipped (exit 77) where the test cannot mount a tmpfs.
set -uo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d)
pid=
cleanup() {
  [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null
  umount "$tmp/disk" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$tmp/disk"
if ! mount -t tmpfs -o size=1800k tmpfs "$tmp/disk" 2>/dev/null; then
  echo "SKIP: cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)"
  exit 77
fi
ensure_shards "$tmp"
cd "$SOURCE_DIR"
common=(--config configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
        --data.val_path="$SHARDS/fortunes_val.tok" --train.steps=20 --train.log_interval=5
        --train.threads=1 --train.peak_gflops=1 --train.eval_interval=0
        --checkpoint.interval=5 --checkpoint.keep=5)

# full_at_pause NAME NP FREE_AFTER ARGS...: the run with the disk filled during the
# pause; FREE_AFTER=1 frees the disk again once the run has warned. Sets rc.
full_at_pause() {
  local name=$1 np=$2 free_after=$3; shift 3
  rm -rf "${tmp:?}/disk/"*
  local launch=()
  (( np > 1 )) && launch=("$SOURCE_DIR/launch/mpirun.sh" -np "$np")
  MOE_TEST_CHECKPOINT_PAUSE=10:3 "${launch[@]}" "$BUILD_DIR/moe-train" "${common[@]}" \
    --parallel.dp="$np" --run.dir="$tmp/$name" --checkpoint.dir="$tmp/disk/$name" "$@" \
    </dev/null >/dev/null 2>"$tmp/$name.err" &
  pid=$!
  for _ in $(seq 600); do grep -q "test hook: pausing" "$tmp/$name.err" && break; sleep 0.05; done
  grep -q "test hook: pausing" "$tmp/$name.err" || { cat "$tmp/$name.err"; fail "$name: no pause"; }
  dd if=/dev/zero of="$tmp/disk/filler" bs=4k 2>/dev/null
  if [[ $free_after == 1 ]]; then
    for _ in $(seq 600); do grep -q "warning: checkpoint of step 10" "$tmp/$name.err" && break; sleep 0.05; done
    rm -f "$tmp/disk/filler"
  fi
  wait "$pid"
  rc=$?
  pid=
}

for np in 1 2; do
  full_at_pause stop$np "$np" 0
  ck=$tmp/disk/stop$np
  (( rc < 128 )) || { cat "$tmp/stop$np.err"; fail "$np rank(s): ended by a signal ($rc)"; }
  [[ $rc == 2 ]] || { cat "$tmp/stop$np.err"; fail "$np rank(s): exit status $rc, expected 2"; }
  grep -q "Segmentation\|signal" "$tmp/stop$np.err" && { cat "$tmp/stop$np.err"; fail "$np rank(s): a crash"; }
  [[ $(grep "moe-train: " "$tmp/stop$np.err" | grep -vc "test hook\|parameters (") == 1 ]] \
    || { cat "$tmp/stop$np.err"; fail "$np rank(s): expected one error line"; }
  grep -q "moe-train: $ck/step_00000010.h5: cannot write" "$tmp/stop$np.err" \
    || { cat "$tmp/stop$np.err"; fail "$np rank(s): the line does not name the file"; }
  [[ ! -e $ck/step_00000010.h5.tmp && ! -e $ck/step_00000010.h5 ]] || fail "$np rank(s): a partial file is left"
  [[ $(cat "$ck/latest") == step_00000005.h5 ]] || fail "$np rank(s): latest moved"
  rm -f "$tmp/disk/filler"
  "$BUILD_DIR/moe-ckpt" verify "$ck/step_00000005.h5" >/dev/null || fail "$np rank(s): step 5 damaged"
  echo "ok full disk, $np rank(s): $(grep 'moe-train: .*cannot write' "$tmp/stop$np.err")"
done

full_at_pause warn 1 1 --checkpoint.on_error=warn
[[ $rc == 0 ]] || { cat "$tmp/warn.err"; fail "warn: exit status $rc, expected 0"; }
grep -q "warning: checkpoint of step 10 not written" "$tmp/warn.err" || fail "warn: no warning"
[[ $(cat "$tmp/disk/warn/latest") == step_00000020.h5 ]] || fail "warn: the later checkpoints were not written"
[[ ! -e $tmp/disk/warn/step_00000010.h5 ]] || fail "warn: step 10 exists"
echo "ok warn: trained on, later checkpoints written"
echo PASS
