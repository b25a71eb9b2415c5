#!/usr/bin/env bash
# mpi-ranks: 4 8
# The shared-memory dispatcher (moe.dispatcher = shm) moves the same rows into the same
# order as flat and sums them in the same order, so training is bit-identical to flat:
# losses, aux losses, grad norms, expert loads and final weights (tests/e2e/
# compare_runs.py, rtol 0) over 12 steps for the tiny MoE-LM at (dp, ep) = (4, 4), with a
# capacity at (4, 2), under expert-tensor parallelism (4, 2, etp 2), tensor parallelism
# (dp 2, tp 2, ep 2), bf16 mixed precision at (4, 4), two ep groups of 4 in 8 ranks, and
# for ViT-MoE (capacity) and DiT-MoE; the runs moved expert rows between ranks (ep bytes
# in the telemetry); moe.a2a_dtype = bf16 with shm is one line naming the option and exit
# status 2, with nothing written; and the room in /dev/shm is checked (below).
set -euo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
cd "$SOURCE_DIR"
common=(--train.steps=12 --train.log_interval=1 --train.eval_interval=6
        --train.eval_batches=1 --train.threads=1 --train.peak_gflops=1)
lm=(--config configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
    --data.val_path="$SHARDS/fortunes_val.tok" --moe.num_experts=8 --optim.lr=0.001)

# run_case NAME NP "OPTIONS" -- ARGS...: flat and shm under mpirun -np NP, bit-identical
run_case() {
  local name=$1 np=$2 options=$3 d
  shift 4
  local -a layout
  read -r -a layout <<<"$options"
  for d in flat shm; do
    "$SOURCE_DIR/launch/mpirun.sh" -np "$np" "$BUILD_DIR/moe-train" "${common[@]}" "$@" \
      "${layout[@]}" --moe.dispatcher="$d" --run.dir="$tmp/$name-$d" </dev/null \
      >/dev/null 2>"$tmp/err" || { cat "$tmp/err"; fail "$name: mpirun -np $np with $d"; }
  done
  compare "$tmp/$name-flat" "$tmp/$name-shm" "$name: shm vs flat" --weights
  /usr/bin/python3 - "$tmp/$name-shm/metrics.jsonl" <<'PY' || fail "$name: no ep bytes"
import json, sys
r = [x for x in map(json.loads, open(sys.argv[1])) if "comm" in x]
assert r and all(x["comm"]["ep"]["bytes"] > 0 for x in r)
PY
}

run_case lm-4 4 "--parallel.dp=4 --parallel.ep=4" -- "${lm[@]}"
run_case lm-4-ep2-capacity 4 "--parallel.dp=4 --parallel.ep=2" -- "${lm[@]}" \
  --moe.capacity_factor=1.0
run_case lm-etp 4 "--parallel.dp=4 --parallel.ep=2 --parallel.etp=2" -- "${lm[@]}"
run_case lm-tp 4 "--parallel.dp=2 --parallel.tp=2 --parallel.ep=2" -- "${lm[@]}"
run_case lm-bf16 4 "--parallel.dp=4 --parallel.ep=4" -- "${lm[@]}" --train.precision=bf16
run_case lm-8-ep4 8 "--parallel.dp=8 --parallel.ep=4" -- "${lm[@]}"
run_case vit_moe 4 "--parallel.dp=4 --parallel.ep=2" -- --config configs/vit_moe_tiny.ini \
  --moe.capacity_factor=1.0
run_case dit_moe 4 "--parallel.dp=4 --parallel.ep=4" -- --config configs/dit_moe_tiny.ini

# bad input: one line naming the option, exit 2, nothing written
set +e
"$BUILD_DIR/moe-train" "${common[@]}" "${lm[@]}" --train.precision=bf16 --moe.dispatcher=shm \
  --moe.a2a_dtype=bf16 --run.dir="$tmp/bad" >/dev/null 2>"$tmp/err"
status=$?
set -e
[[ $status == 2 && $(wc -l <"$tmp/err") == 1 ]] && grep -q "moe.a2a_dtype" "$tmp/err" ||
  { cat "$tmp/err"; fail "shm with a bf16 wire: status $status"; }
[[ ! -e $tmp/bad ]] || fail "shm with a bf16 wire wrote $tmp/bad"
# Room in /dev/shm (a private mount namespace with a small tmpfs there; skipped where
# namespaces are not permitted): auto keeps to flat when the windows would not fit, and an
# explicit shm whose window does not fit stops with one line and exit 2 (not SIGBUS).
small=(--config configs/moe_gpt_small.ini --data.train_path="$SHARDS/fortunes_train.tok"
       --data.val_path="$SHARDS/fortunes_val.tok" --train.steps=1 --train.threads=1
       --train.eval_interval=0 --train.peak_gflops=1 --run.save_model=false
       --parallel.dp=2 --parallel.ep=2)
if unshare -m true 2>/dev/null; then
  # shellcheck disable=SC2016
  unshare -m bash -c 'mount -t tmpfs -o size=64m tmpfs /dev/shm && "$@"' _ \
    "$SOURCE_DIR/launch/mpirun.sh" -np 2 "$BUILD_DIR/moe-train" "${small[@]}" \
    --run.dir="$tmp/room-auto" </dev/null >/dev/null 2>"$tmp/err" || { cat "$tmp/err"; fail "auto, 64 MiB"; }
  grep -q "moe.dispatcher=auto: flat (/dev/shm has .* MiB free" "$tmp/err" ||
    { cat "$tmp/err"; fail "auto with 64 MiB of /dev/shm did not keep to flat"; }
  set +e
  # shellcheck disable=SC2016
  unshare -m bash -c 'mount -t tmpfs -o size=16m tmpfs /dev/shm && "$@"' _ \
    "$SOURCE_DIR/launch/mpirun.sh" -np 2 "$BUILD_DIR/moe-train" "${small[@]}" \
    --moe.dispatcher=shm --run.dir="$tmp/room-shm" </dev/null >/dev/null 2>"$tmp/err"
  status=$?
  set -e
  [[ $status == 2 ]] && grep -q "moe.dispatcher: shm needs .* MiB in /dev/shm" "$tmp/err" ||
    { cat "$tmp/err"; fail "shm with 16 MiB of /dev/shm: status $status"; }
else
  echo "no mount namespaces here: the /dev/shm room checks are skipped"
fi
echo PASS
