#!/usr/bin/env bash
# mpi-ranks: 4
# Mixed precision keeps the layout invariance (docs/precision.md): the tiny MoE-LM in
# bf16 at (dp, ep) = (4, 2) and (dp, tp, ep) = (2, 2, 2) logs the loss of the one-process
# bf16 run at every step to relative 1e-5, with bf16 rows on the wire too
# (moe.a2a_dtype = bf16), and a bf16 checkpoint written on one process resumes on
# (4, 2). The rounding points are the same on every layout: on (4, 2), whose forward
# sums nothing across ranks, the first step is bit-identical. What differs is fp32
# summation order (the data-parallel gradient sum, tp's partial sums), and bf16 rounding
# turns a last-bit difference of an fp32 value into one bf16 ulp (2^-8) of that value
# where it lies at a rounding boundary, about once in 2^16 roundings; hence, beyond the
# loss: aux losses and gradient norms to 1e-3, final weights to 6e-4 = 2 lr (fp32: 1e-5;
# an Adam step moves a weight whose gradient is near zero by up to lr, whatever the
# gradient's last bits, and two such steps of 20 may go opposite ways; measured 3.2e-4
# at (2, 2, 2) with the bf16 attention core), and a token near a tie between two experts may take the other
# one (loads within 1% of a step's assignments). lr 3e-4 keeps this tiny router away from the collapse into
# near-ties that lr 1e-3 reaches within ten steps in bf16 (train_equivalence.sh).
set -euo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
cd "$SOURCE_DIR"
common=(--train.steps=20 --train.log_interval=1 --train.eval_interval=10
        --train.eval_batches=1 --train.threads=1 --train.peak_gflops=1 --train.precision=bf16)
lm=(--config configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
    --data.val_path="$SHARDS/fortunes_val.tok" --moe.num_experts=8 --optim.lr=0.0003)
compare_options=(--weights-atol 6e-4 --stats-rtol 1e-3 --loads-differ 0.01)

compare_layouts bf16 "4 1 2,2 2 2" "" -- "${lm[@]}"
compare_layouts bf16_wire "4 1 2,2 2 2" "" -- "${lm[@]}" --moe.a2a_dtype=bf16
/usr/bin/python3 - "$tmp" <<'PY'
import json, sys
tmp = sys.argv[1]
def first_loss(run):
    return next(r for r in map(json.loads, open(f"{tmp}/{run}/metrics.jsonl")) if "loss" in r)["loss"]
for name in ("bf16", "bf16_wire"):
    a, b = first_loss(f"{name}-1"), first_loss(f"{name}-dp4-tp1-ep2-etp1")
    assert a == b, f"{name}: step 1 differs on (4, 2): {a!r} vs {b!r}"
print("step 1 bit-identical on (dp, ep) = (4, 2), bf16 and bf16 wire")
PY

# Reshard: the one-process bf16 run's checkpoint of step 10, resumed on (4, 2).
"$BUILD_DIR/moe-train" "${common[@]}" "${lm[@]}" --checkpoint.interval=10 \
  --run.dir="$tmp/one" >/dev/null 2>"$tmp/err" || { cat "$tmp/err"; fail "one-process run"; }
"$SOURCE_DIR/launch/mpirun.sh" -np 4 "$BUILD_DIR/moe-train" "${common[@]}" "${lm[@]}" \
  --parallel.dp=4 --parallel.ep=2 --run.resume="$tmp/one/checkpoints/step_00000010.h5" \
  --run.dir="$tmp/resharded" </dev/null >/dev/null 2>"$tmp/err" \
  || { cat "$tmp/err"; fail "resume on (4, 2)"; }
/usr/bin/python3 tests/e2e/compare_runs.py "$tmp/one" "$tmp/resharded" \
  "bf16 checkpoint of 1 process resumed on (4, 2)" --from 10 --rtol 1e-5 --weights \
  "${compare_options[@]}" || fail "bf16 resharded resume"
echo PASS
