#!/usr/bin/env bash
# A checkpoint is readable without our code: h5py (and h5dump) finds every field that
# docs/checkpoint-format.md documents (and nothing else), with the documented types and
# checksums; the weights exported by moe-ckpt (safetensors and HDF5) equal the
# checkpoint's and, loaded into the PyTorch reference model (tests/reference), give the
# loss the trainer logged for the same batch; the fine-tuning example of the docs runs
# on them and lowers the loss.
set -euo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
cd "$SOURCE_DIR"
args=(--config configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
      --data.val_path="$SHARDS/fortunes_val.tok" --moe.bias_balance=true --train.steps=12
      --train.log_interval=1 --train.eval_batches=1 --train.threads=1 --train.peak_gflops=1)
"$BUILD_DIR/moe-train" "${args[@]}" --checkpoint.interval=10 --run.dir="$tmp/run" \
  >/dev/null 2>"$tmp/err" || { cat "$tmp/err"; fail "training"; }
ckpt=$tmp/run/checkpoints/step_00000010.h5
"$BUILD_DIR/tests/dump_batch" "$tmp/batch.h5" 10 "${args[@]}"
"$BUILD_DIR/moe-ckpt" export "$ckpt" --out "$tmp/w.safetensors" >/dev/null
"$BUILD_DIR/moe-ckpt" export "$ckpt" --out "$tmp/w.h5" >/dev/null
/usr/bin/python3 tests/reference/check_checkpoint.py docs/checkpoint-format.md "$ckpt" \
  "$tmp/run/model.h5" "$tmp/w.h5" "$tmp/w.safetensors" "$tmp/batch.h5" \
  "$tmp/run/metrics.jsonl" 10 || fail "checkpoint fields or exported weights"

# h5dump (hdf5-tools) reads it too.
h5dump -a /trainer/step "$ckpt" | grep -q "(0): 10" || fail "h5dump does not read /trainer@step"
h5dump -d /model/embed.weight "$ckpt" >/dev/null || fail "h5dump does not read /model/embed.weight"

# The documented fine-tuning example, as a user would run it.
/usr/bin/python3 docs/examples/finetune_pytorch.py "$tmp/w.safetensors" \
  --data "$SHARDS/fortunes_val.tok" --steps 8 >"$tmp/finetune.jsonl" || fail "the example"
/usr/bin/python3 - "$tmp/finetune.jsonl" <<'PY'
import json, sys
losses = [json.loads(line)["loss"] for line in open(sys.argv[1])]
assert len(losses) == 8 and losses[-1] < losses[0] - 0.05, losses
print(f"fine-tuning example: loss {losses[0]:.4f} -> {losses[-1]:.4f}")
PY
echo PASS
