#!/usr/bin/env bash
# A run never touches another run's files (docs/failure-behaviour.md):
#   - two runs started on one run.dir: the second is refused (exit 2, one line) and the
#     first finishes untouched;
#   - a second run.dir sharing the first one's checkpoint.dir is refused (OWNER);
#   - a run.dir holding checkpoints or model.h5 but no metrics.jsonl is refused without
#     run.resume / run.overwrite; run.overwrite starts over;
#   - run.resume=auto with step files but no `latest` is refused, naming the newest
#     complete checkpoint to pass as run.resume;
#   - an unwritable checkpoint.dir is refused before step 0 (exit 2), and nothing of
#     the run is left behind.
set -uo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d)
pid=
cleanup() {
  [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null
  umount "$tmp/ro/ckpt" 2>/dev/null
  chmod -R u+w "$tmp" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
ensure_shards "$tmp"
cd "$SOURCE_DIR"
common=(--config configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
        --data.val_path="$SHARDS/fortunes_val.tok" --train.threads=1 --train.peak_gflops=1
        --train.eval_interval=0 --train.log_interval=5)

refused() {  # NAME PATTERN ARGS...: exit 2 with one line matching PATTERN
  local name=$1 pattern=$2; shift 2
  "$BUILD_DIR/moe-train" "${common[@]}" "$@" >/dev/null 2>"$tmp/err"
  local rc=$?
  [[ $rc == 2 ]] || { cat "$tmp/err"; fail "$name: exit status $rc, expected 2"; }
  [[ $(wc -l <"$tmp/err") == 1 ]] || { cat "$tmp/err"; fail "$name: expected one line"; }
  grep -q -- "$pattern" "$tmp/err" || { cat "$tmp/err"; fail "$name: message lacks '$pattern'"; }
  echo "ok $name: $(cat "$tmp/err")"
}

# ---- two runs at once on one run.dir ----
"$BUILD_DIR/moe-train" "${common[@]}" --train.steps=100000 --run.dir="$tmp/a" \
  >/dev/null 2>"$tmp/a.err" &
pid=$!
for _ in $(seq 600); do [[ -s $tmp/a/metrics.jsonl ]] && break; sleep 0.05; done
[[ -s $tmp/a/metrics.jsonl ]] || { cat "$tmp/a.err"; fail "the first run did not start"; }
refused concurrent "run.dir: '$tmp/a' is in use by another run (pid $pid" \
  --train.steps=10 --run.dir="$tmp/a" --run.resume=auto
refused concurrent_overwrite "is in use by another run" --train.steps=10 --run.dir="$tmp/a" \
  --run.overwrite=true
kill -0 "$pid" || fail "the first run died"
kill -TERM "$pid"; wait "$pid"; pid=
/usr/bin/python3 -c "
import json, sys
steps = [json.loads(l)['step'] for l in open('$tmp/a/metrics.jsonl')]
assert steps == sorted(set(steps)), 'metrics.jsonl was written by two runs'" \
  || fail "metrics.jsonl of the first run is damaged"

# ---- a checkpoint.dir shared by two run.dirs ----
"$BUILD_DIR/moe-train" "${common[@]}" --train.steps=4 --run.dir="$tmp/b" \
  --checkpoint.dir="$tmp/shared" >/dev/null 2>&1 || fail "run b"
refused shared_checkpoint_dir "checkpoint.dir: '$tmp/shared' holds the checkpoints of the run in" \
  --train.steps=4 --run.dir="$tmp/c" --checkpoint.dir="$tmp/shared" --run.resume=auto
refused shared_checkpoint_dir_overwrite "holds the checkpoints of the run in" \
  --train.steps=4 --run.dir="$tmp/c" --checkpoint.dir="$tmp/shared" --run.overwrite=true
[[ $(cat "$tmp/shared/latest") == step_00000004.h5 ]] || fail "the shared checkpoints were touched"
[[ ! -e $tmp/c ]] || fail "the refused run left $tmp/c behind"

# ---- artefacts without metrics.jsonl ----
mkdir -p "$tmp/d"; cp -r "$tmp/b/model.h5" "$tmp/d/"
refused artefact_model "already holds a run ($tmp/d/model.h5)" --train.steps=4 --run.dir="$tmp/d"
mkdir -p "$tmp/e/checkpoints"; cp "$tmp/shared/step_00000004.h5" "$tmp/e/checkpoints/"
refused artefact_checkpoint "already holds a run ($tmp/e/checkpoints/step_00000004.h5)" \
  --train.steps=4 --run.dir="$tmp/e"
"$BUILD_DIR/moe-train" "${common[@]}" --train.steps=4 --run.dir="$tmp/d" --run.overwrite=true \
  >/dev/null 2>&1 || fail "run.overwrite=true"
echo "ok overwrite: starts over"

# ---- resume=auto with step files but no latest ----
mkdir -p "$tmp/g/checkpoints"
cp "$tmp/shared/step_00000004.h5" "$tmp/g/checkpoints/"
cp "$tmp/shared/step_00000004.h5" "$tmp/g/checkpoints/step_00000008.h5"
truncate -s 1000 "$tmp/g/checkpoints/step_00000008.h5"  # damaged: not the one to name
refused missing_latest "pass --run.resume=$tmp/g/checkpoints/step_00000004.h5 to continue from it" \
  --train.steps=10 --run.dir="$tmp/g" --run.resume=auto
"$BUILD_DIR/moe-train" "${common[@]}" --train.steps=10 --run.dir="$tmp/g" \
  --run.resume="$tmp/g/checkpoints/step_00000004.h5" >/dev/null 2>"$tmp/err" \
  || { cat "$tmp/err"; fail "resume from the named file"; }

# ---- an unwritable checkpoint.dir: refused before step 0 ----
# Root writes anywhere: as root the directory is a read-only bind mount (or, where
# mounts are not permitted, the run is an unprivileged user's); otherwise chmod does.
mkdir -p "$tmp/ro/ckpt" "$tmp/ro/run"
as_user=()
readonly_dir=
if [[ $(id -u) != 0 ]]; then
  chmod 555 "$tmp/ro/ckpt"; readonly_dir=chmod
elif mount --bind "$tmp/ro/ckpt" "$tmp/ro/ckpt" 2>/dev/null; then
  if mount -o remount,bind,ro "$tmp/ro/ckpt" 2>/dev/null; then
    readonly_dir=mount
  else
    umount "$tmp/ro/ckpt"
  fi
fi
if [[ -z $readonly_dir ]] && setpriv --reuid=65534 --regid=65534 --clear-groups \
     test -x "$BUILD_DIR/moe-train" -a -r configs/moe_gpt_tiny.ini -a -r "$SHARDS/fortunes_train.tok" 2>/dev/null; then
  chmod 755 "$tmp" "$tmp/ro"; chmod 555 "$tmp/ro/ckpt"; chown 65534:65534 "$tmp/ro/run"
  as_user=(setpriv --reuid=65534 --regid=65534 --clear-groups)
  readonly_dir=setpriv
fi
if [[ -z $readonly_dir ]]; then
  echo "skipped read-only checkpoint.dir: root here may neither mount nor run as an unprivileged user"
else
  "${as_user[@]}" "$BUILD_DIR/moe-train" "${common[@]}" --train.steps=4 --run.dir="$tmp/ro/run/x" \
    --checkpoint.dir="$tmp/ro/ckpt" >/dev/null 2>"$tmp/err"
  rc=$?
  [[ $readonly_dir == mount ]] && umount "$tmp/ro/ckpt"
  [[ $rc == 2 ]] || { cat "$tmp/err"; fail "read-only checkpoint.dir: exit status $rc, expected 2"; }
  grep -q "checkpoint.dir: " "$tmp/err" || { cat "$tmp/err"; fail "read-only: the line names no checkpoint.dir"; }
  [[ $(wc -l <"$tmp/err") == 1 ]] || { cat "$tmp/err"; fail "read-only: expected one line"; }
  grep -q "^step" "$tmp/err" && fail "read-only: the run trained"
  [[ ! -e $tmp/ro/run/x ]] || fail "read-only: the refused run left its run.dir behind"
  echo "ok read-only checkpoint.dir ($readonly_dir): $(cat "$tmp/err")"
fi
echo PASS
