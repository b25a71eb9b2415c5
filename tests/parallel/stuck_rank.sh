#!/usr/bin/env bash
# mpi-ranks: 4
# A stuck rank never hangs the job silently: in a 4-rank job (dp 4, ep 2) the test
# stops rank 2 with SIGSTOP in the middle of training; with parallel.timeout_s=20 the
# waiting ranks' watchdog ends the job within 40 s with exit status 4 and one line
# naming the collective and rank 2 as not responding.
set -uo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d)
mp=
cleanup() { [[ -n $mp ]] && kill -9 "$mp" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
ensure_shards "$tmp"
cd "$SOURCE_DIR"
"$SOURCE_DIR/launch/mpirun.sh" -np 4 "$BUILD_DIR/moe-train" --config configs/moe_gpt_tiny.ini \
  --data.train_path="$SHARDS/fortunes_train.tok" --data.val_path="$SHARDS/fortunes_val.tok" \
  --train.steps=1000000 --train.threads=1 --train.peak_gflops=1 --train.eval_interval=0 \
  --train.log_interval=10 --parallel.dp=4 --parallel.ep=2 --parallel.timeout_s=20 \
  --run.dir="$tmp/run" </dev/null >/dev/null 2>"$tmp/err" &
mp=$!
for _ in $(seq 600); do
  [[ $(wc -l <"$tmp/run/metrics.jsonl" 2>/dev/null || echo 0) -ge 3 ]] && break
  sleep 0.1
done
victim=
for child in $(ps -o pid= --ppid "$mp"); do  # the ranks are mpirun's children
  rank=$(tr '\0' '\n' <"/proc/$child/environ" 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
  [[ $rank == 2 ]] && victim=$child
done
[[ -n $victim ]] || { cat "$tmp/err"; fail "rank 2 not found"; }
kill -STOP "$victim"
start=$SECONDS
wait "$mp"
rc=$?
mp=
elapsed=$((SECONDS - start))
cat "$tmp/err" >&2
[[ $rc == 4 ]] || fail "exit status $rc, expected 4"
(( elapsed <= 40 )) || fail "took ${elapsed}s to end the job (timeout 20 s)"
[[ $(grep -c "watchdog: " "$tmp/err") == 1 ]] || fail "expected one watchdog line"
grep -q "watchdog: waited .* in [a-z_]* over [a-z.]* (call [0-9]*, step [0-9]*.*parallel.timeout_s = 20" "$tmp/err" \
  || fail "the line does not name the collective, group and step"
grep -q "rank 2 (not responding for .*: stopped or gone" "$tmp/err" || fail "rank 2 not named"
echo "PASS (stuck rank 2 ended the job in ${elapsed}s, exit 4)"
