#!/usr/bin/env bash
# Mixed precision end to end (train.precision = bf16, docs/precision.md):
#   - the tiny configs of all three families train in bf16 with falling loss, the
#     start-up line names the bf16 GEMM, and the tiny MoE-LM ends within 2% of the
#     validation loss of the same run in fp32;
#   - a bf16 run resumes bit-identically (every logged step and the final weights), and
#     its checkpoints hold fp32 tensors, the same names and shapes as an fp32 run's;
#   - with oneDNN's ISA lowered below bf16 (a CPU without bf16 instructions) it trains
#     the same way after one warning line;
#   - bad precision options: one line naming the key, exit status 2, nothing written.
set -euo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
require_fashion_mnist
cd "$SOURCE_DIR"
lm=(--config configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
    --data.val_path="$SHARDS/fortunes_val.tok")
train() {  # train RUN_DIR ARGS...
  local dir=$1; shift
  train_run "$dir" --train.log_interval=1 --train.threads=2 "$@"
}

train "$tmp/lm" "${lm[@]}" --train.steps=60 --train.precision=bf16
train "$tmp/lm32" "${lm[@]}" --train.steps=60
grep -q "bf16 GEMM oneDNN" "$tmp/lm.err" || fail "no bf16 GEMM in the start-up line: $(cat "$tmp/lm.err")"
train "$tmp/vit_moe" --config configs/vit_moe_tiny.ini --train.precision=bf16
train "$tmp/dit_moe" --config configs/dit_moe_tiny.ini --train.precision=bf16
/usr/bin/python3 - "$tmp" <<'PY'
import json, math, sys
tmp = sys.argv[1]
for run, drop in (("lm", 0.5), ("vit_moe", 0.25), ("dit_moe", 0.2)):
    steps = [r for r in map(json.loads, open(f"{tmp}/{run}/metrics.jsonl")) if "loss" in r]
    assert len(steps) == 60 and all(math.isfinite(r["loss"]) for r in steps), run
    first = sum(r["loss"] for r in steps[:5]) / 5
    last = sum(r["loss"] for r in steps[-5:]) / 5
    print(f"bf16 {run}: loss first5 {first:.4f} last5 {last:.4f}")
    assert last < first - drop, f"{run}: the bf16 loss did not fall by {drop}"
    final = json.loads(open(f"{tmp}/{run}.out").read().strip().splitlines()[-1])
    assert final["precision"] == "bf16", final
bf16, fp32 = (json.loads(open(f"{tmp}/{r}.out").read().strip().splitlines()[-1])
              for r in ("lm", "lm32"))
gap = abs(bf16["val_loss"] - fp32["val_loss"]) / fp32["val_loss"]
print(f"tiny MoE-LM val_loss bf16 {bf16['val_loss']:.4f} fp32 {fp32['val_loss']:.4f} ({gap:.2%})")
assert gap < 0.02, "bf16 validation loss more than 2% from fp32"
PY

# Resume: the uninterrupted bf16 run against one resumed at step 10, bit for bit.
resume=(--train.steps=20 --train.eval_interval=10 --train.precision=bf16 --moe.bias_balance=true)
train "$tmp/a" "${lm[@]}" "${resume[@]}" --checkpoint.interval=5
train "$tmp/b" "${lm[@]}" "${resume[@]}" --run.resume="$tmp/a/checkpoints/step_00000010.h5"
/usr/bin/python3 tests/e2e/compare_runs.py "$tmp/a" "$tmp/b" "bf16 resume from step 10" \
  --from 10 --weights || fail "bf16 resume is not bit-identical"
/usr/bin/python3 - "$tmp/a/checkpoints/step_00000020.h5" "$tmp/lm32/model.h5" <<'PY'
import sys
import h5py
with h5py.File(sys.argv[1]) as ckpt, h5py.File(sys.argv[2]) as fp32:
    names = sorted(ckpt["model"])
    assert names == sorted(fp32["model"]), "bf16 checkpoint names differ from fp32"
    for n in names:
        assert ckpt["model"][n].dtype == "float32", f"{n}: {ckpt['model'][n].dtype}"
        assert ckpt["model"][n].shape == fp32["model"][n].shape, n
print(f"bf16 checkpoint: {len(names)} float32 tensors")
PY

# No bf16 instructions: one warning, and the run trains as before.
export ONEDNN_MAX_CPU_ISA=AVX2
train "$tmp/noisa" "${lm[@]}" "${resume[@]}"
unset ONEDNN_MAX_CPU_ISA
[[ $(grep -c "warning: no bf16 instructions" "$tmp/noisa.err") == 1 ]] \
  || fail "expected one warning line: $(cat "$tmp/noisa.err")"
grep -q "converted to fp32" "$tmp/noisa.err" || fail "the fallback GEMM is not named"
/usr/bin/python3 - "$tmp/noisa/metrics.jsonl" "$tmp/a/metrics.jsonl" <<'PY'
import json, sys
runs = [[r for r in map(json.loads, open(p)) if "loss" in r] for p in sys.argv[1:]]
worst = max(abs(a["loss"] - b["loss"]) / b["loss"] for a, b in zip(*runs))
print(f"fallback GEMM vs oneDNN bf16: max loss rel diff {worst:.2e} over 20 steps")
assert worst < 1e-3, worst
PY

# Bad input: exit status 2, one line naming the key, no run directory.
expect_user_error() {  # expect_user_error KEY ARGS...
  local key=$1; shift
  set +e
  "$BUILD_DIR/moe-train" "${lm[@]}" --run.dir="$tmp/bad" "$@" >/dev/null 2>"$tmp/bad.err"
  local status=$?
  set -e
  [[ $status == 2 ]] || fail "$*: exit status $status"
  [[ $(wc -l <"$tmp/bad.err") == 1 ]] || fail "$*: $(cat "$tmp/bad.err")"
  grep -q "$key" "$tmp/bad.err" || fail "$*: the message does not name $key"
  [[ ! -e $tmp/bad ]] || fail "$*: wrote $tmp/bad"
}
expect_user_error train.precision --train.precision=fp16
expect_user_error moe.a2a_dtype --moe.a2a_dtype=bf16
echo PASS
