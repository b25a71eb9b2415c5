#!/usr/bin/env bash
# mpi-ranks: 4 8
# Expert-tensor parallelism (docs/parallelism.md) changes where the expert FLOPs run,
# not what is trained. Against the single-process run, 20 steps each (tests/e2e/
# compare_runs.py: losses to relative 1e-5 at every step, grad norms and aux losses to
# 1e-4, identical expert loads, final weights within 1e-5):
#   - the tiny MoE-LM (8 experts), dropless and with a capacity that drops tokens, at
#     (dp, ep, etp) = (4, 2, 2) [edp 1], (2, 1, 2), (8, 4, 2), (4, 1, 4) and (8, 2, 2)
#     [edp 2];
#   - the tiny ViT-MoE (capacity + Batch Priority Routing) and DiT-MoE likewise;
#   - every etp run moved bytes on its etp group (etp was really in use);
#   - a bad etp (not folding into the ranks, not dividing moe.expert_ffn) is one line
#     naming the option and exit status 2;
#   - checkpoints stay logical: step 10 of the (4, 2, 2) run resumed at (4, 4, 1) and on
#     one process, and step 10 of the single-process run resumed at (4, 2, 2), continue
#     like the uninterrupted single-process run.
# lr 1e-3 for the MoE-LM as in train_equivalence.sh (its router collapses at 3e-3).
set -euo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
cd "$SOURCE_DIR"
common=(--train.steps=20 --train.log_interval=1 --train.eval_interval=10
        --train.threads=1 --train.peak_gflops=1)
lm=(--config configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
    --data.val_path="$SHARDS/fortunes_val.tok" --moe.num_experts=8 --optim.lr=0.001
    --train.eval_batches=2)
vit=(--config configs/vit_moe_tiny.ini --train.eval_batches=1 --moe.capacity_factor=1.0)
dit=(--config configs/dit_moe_tiny.ini --train.eval_batches=1)

compare() { /usr/bin/python3 tests/e2e/compare_runs.py "$@" || fail "$3"; }

# train "DP EP ETP" RUN_DIR ARGS...: one process when DP is 1, else mpirun -np DP
train() {
  local dp ep etp dir=$2
  read -r dp ep etp <<<"$1"
  shift 2
  if [[ $dp == 1 ]]; then
    "$BUILD_DIR/moe-train" "${common[@]}" "$@" --run.dir="$dir" >/dev/null 2>"$tmp/err"
  else
    "$SOURCE_DIR/launch/mpirun.sh" -np "$dp" "$BUILD_DIR/moe-train" "${common[@]}" "$@" \
      --parallel.dp="$dp" --parallel.ep="$ep" --parallel.etp="$etp" --run.dir="$dir" \
      </dev/null >/dev/null 2>"$tmp/err"
  fi || { cat "$tmp/err"; fail "(dp $dp, ep $ep, etp $etp): moe-train $*"; }
}

# etp_bytes RUN_DIR: every step moved bytes on the etp group
etp_bytes() {
  /usr/bin/python3 - "$1/metrics.jsonl" <<'PY' || fail "$1: no bytes on the etp group"
import json, sys
r = [x for x in map(json.loads, open(sys.argv[1])) if "loss" in x]
assert r and all(x["comm"]["etp"]["bytes"] > 0 for x in r)
PY
}

# run_case NAME "DP EP ETP,..." ARGS...: one process, then every layout
run_case() {
  local name=$1 layouts=$2 layout dir
  shift 2
  train "1 1 1" "$tmp/$name-1" "$@"
  while read -r layout; do
    dir=$tmp/$name-${layout// /-}
    train "$layout" "$dir" "$@"
    etp_bytes "$dir"
    compare "$tmp/$name-1" "$dir" "$name (dp ep etp) = ($layout)" --rtol 1e-5 --weights
  done < <(tr ',' '\n' <<<"$layouts")
}

# require_drops NAME: the single-process run of case NAME dropped assignments
require_drops() {
  /usr/bin/python3 - "$tmp/$1-1/metrics.jsonl" "$1" <<'PY'
import json, sys
r = [x for x in map(json.loads, open(sys.argv[1])) if "loss" in x]
assert any(e["dropped"] > 0 for x in r for e in x["experts"]), f"{sys.argv[2]}: nothing dropped"
PY
}

# a layout etp cannot fold into, or an expert width it cannot split: one line naming
# the option, exit status 2, no run.dir
for bad in "--parallel.etp=2|parallel.ep \* parallel.etp: 2 must divide parallel.dp \* parallel.tp = 1" \
           "--moe.expert_ffn=30 --parallel.dp=4 --parallel.etp=4|moe.expert_ffn: 30 must be divisible by parallel.etp = 4"; do
  rc=0
  # shellcheck disable=SC2086  # the options are words
  "$BUILD_DIR/moe-train" "${common[@]}" "${lm[@]}" ${bad%%|*} --run.dir="$tmp/bad" \
    >/dev/null 2>"$tmp/err" || rc=$?
  [[ $rc -eq 2 && $(wc -l <"$tmp/err") -eq 1 ]] && grep -q "${bad#*|}" "$tmp/err" &&
    [[ ! -e $tmp/bad ]] || { cat "$tmp/err"; fail "${bad%%|*}: exit $rc"; }
done

lm_layouts="4 2 2,2 1 2,8 4 2,4 1 4,8 2 2"
run_case dropless "$lm_layouts" "${lm[@]}" --checkpoint.interval=10
run_case capacity "4 2 2,2 1 2,8 4 2" "${lm[@]}" --moe.capacity_factor=1.0
require_drops capacity
run_case vit_moe "4 2 2,2 1 2,8 4 2" "${vit[@]}"
require_drops vit_moe
run_case dit_moe "4 2 2,2 1 2,8 4 2" "${dit[@]}"

# logical checkpoints: etp 2 -> etp 1 and one process, one process -> etp 2
one=$tmp/dropless-1
from_etp=$tmp/dropless-4-2-2/checkpoints/step_00000010.h5
for layout in "4 4 1" "1 1 1"; do
  dir=$tmp/resume-${layout// /-}
  train "$layout" "$dir" "${lm[@]}" --run.resume="$from_etp"
  compare "$one" "$dir" "saved at (4, 2, 2), resumed at ($layout)" --from 10 --rtol 1e-5 --weights
done
train "4 2 2" "$tmp/resume-etp" "${lm[@]}" --run.resume="$one/checkpoints/step_00000010.h5"
etp_bytes "$tmp/resume-etp"
compare "$one" "$tmp/resume-etp" "saved on one process, resumed at (4, 2, 2)" --from 10 \
  --rtol 1e-5 --weights
echo PASS
