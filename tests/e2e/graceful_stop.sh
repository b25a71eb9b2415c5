#!/usr/bin/env bash
# SIGTERM / SIGINT (what Slurm sends before a time limit, Ctrl-C): the run finishes the
# step it is in, writes a checkpoint, prints one line and exits 143 / 130; resumed with
# run.resume=auto it ends exactly as an uninterrupted run (metrics and weights
# bit-identical). A second signal ends the process at once. With
# checkpoint.on_signal=false no checkpoint is written.
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
        --data.val_path="$SHARDS/fortunes_val.tok" --train.steps=400 --train.log_interval=1
        --train.threads=1 --train.peak_gflops=1 --train.eval_interval=0 --checkpoint.interval=1000)

"$BUILD_DIR/moe-train" "${common[@]}" --run.dir="$tmp/ref" >/dev/null 2>"$tmp/err" \
  || { cat "$tmp/err"; fail "the uninterrupted run"; }

# Signal $2 once the run has logged step $3; sets rc and the stderr file $tmp/$1.err.
interrupt() {
  local name=$1 signal=$2 after=$3; shift 3
  "$BUILD_DIR/moe-train" "${common[@]}" --run.dir="$tmp/$name" "$@" >/dev/null 2>"$tmp/$name.err" &
  pid=$!
  for _ in $(seq 600); do
    [[ $(wc -l <"$tmp/$name/metrics.jsonl" 2>/dev/null || echo 0) -ge $after ]] && break
    sleep 0.05
  done
  kill "-$signal" "$pid"
  wait "$pid"
  rc=$?
  pid=
}

interrupt term TERM 20
[[ $rc == 143 ]] || { cat "$tmp/term.err"; fail "SIGTERM: exit status $rc, expected 143"; }
line=$(grep "moe-train: stopped by SIGTERM after step" "$tmp/term.err") || { cat "$tmp/term.err"; fail "no stop line"; }
[[ $line =~ after\ step\ ([0-9]+)\ of ]] || fail "stop line: $line"
stopped=${BASH_REMATCH[1]}
(( stopped < 400 )) || fail "SIGTERM was not honoured before the end"
[[ $(cat "$tmp/term/checkpoints/latest") == $(printf 'step_%08d.h5' "$stopped") ]] \
  || fail "latest is not the checkpoint of step $stopped"
"$BUILD_DIR/moe-train" "${common[@]}" --run.dir="$tmp/term" --run.resume=auto >/dev/null \
  2>"$tmp/err" || { cat "$tmp/err"; fail "resume after SIGTERM"; }
/usr/bin/python3 tests/e2e/compare_runs.py "$tmp/ref" "$tmp/term" "resumed after SIGTERM" \
  --weights || fail "the resumed run differs from the uninterrupted one"
echo "ok SIGTERM after step $stopped: checkpoint, exit 143, resumed bit-identically"

interrupt int INT 20
[[ $rc == 130 ]] || { cat "$tmp/int.err"; fail "SIGINT: exit status $rc, expected 130"; }
grep -q "stopped by SIGINT after step" "$tmp/int.err" || fail "SIGINT: no stop line"
echo "ok SIGINT: exit 130"

interrupt off TERM 20 --checkpoint.on_signal=false
[[ $rc == 143 ]] || { cat "$tmp/off.err"; fail "on_signal=false: exit status $rc"; }
[[ ! -e $tmp/off/checkpoints/latest ]] || fail "on_signal=false wrote a checkpoint"
grep -q "no checkpoint written" "$tmp/off.err" || fail "on_signal=false: the line does not say so"
echo "ok checkpoint.on_signal=false: exit 143, no checkpoint"

# Two signals at once: the second one ends the process by the signal itself.
/usr/bin/python3 - "$BUILD_DIR/moe-train" "$tmp/twice" "${common[@]}" <<'PY' || fail "second signal"
import os, signal, subprocess, sys, time
exe, run_dir, args = sys.argv[1], sys.argv[2], sys.argv[3:]
# Steps of a second or so, so that the second signal lands inside the step the first
# one lets finish (two signals sent at once would merge into one).
p = subprocess.Popen([exe, *args, "--run.dir=" + run_dir, "--train.steps=100000",
                      "--data.batch_size=1024", "--model.seq_len=128"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
while not os.path.exists(run_dir + "/metrics.jsonl"):
    time.sleep(0.05)
p.send_signal(signal.SIGTERM)
time.sleep(0.1)
p.send_signal(signal.SIGTERM)
rc = p.wait(timeout=60)
assert rc == -signal.SIGTERM, f"exit {rc}: expected death by SIGTERM"
PY
echo "ok a second SIGTERM ends the process at once"
echo PASS
