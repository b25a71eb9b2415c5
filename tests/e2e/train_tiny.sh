#!/usr/bin/env bash
# The tiny config trains end to end: the loss falls, metrics.jsonl has the contract's
# fields, config.ini is the resolved config and loads again, the final line is JSON
# with validation metrics.
set -euo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
cd "$SOURCE_DIR"
data=(--data.train_path="$SHARDS/fortunes_train.tok" --data.val_path="$SHARDS/fortunes_val.tok")
"$BUILD_DIR/moe-train" --config configs/moe_gpt_tiny.ini "${data[@]}" \
  --run.dir="$tmp/run" --train.steps=60 --train.log_interval=1 >"$tmp/out.txt" 2>"$tmp/err.txt" \
  || { cat "$tmp/err.txt"; fail "moe-train exited $?"; }
/usr/bin/python3 - "$tmp/run/metrics.jsonl" "$tmp/out.txt" <<'PY'
import json, math, sys
records = [json.loads(line) for line in open(sys.argv[1])]
steps = [r for r in records if "loss" in r]
assert len(steps) == 60, f"expected 60 step records, got {len(steps)}"
for key in ("step", "loss", "lr", "grad_norm", "tokens_per_s", "mfu", "experts"):
    assert key in steps[-1], f"metrics.jsonl lacks '{key}'"
assert all(math.isfinite(r["loss"]) for r in steps)
first = sum(r["loss"] for r in steps[:5]) / 5
last = sum(r["loss"] for r in steps[-5:]) / 5
print(f"loss first5 {first:.4f} last5 {last:.4f}")
assert last < first - 0.5, "the loss did not fall by at least 0.5 nats"
layer = steps[-1]["experts"][0]
assert len(layer["tokens"]) == 4 and layer["max_over_mean"] >= 1.0
final = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
assert "val_loss" in final and "val_bpb" in final, final
assert abs(final["val_bpb"] - final["val_loss"] / math.log(2)) < 1e-6
PY
# The resolved config reproduces the run's settings.
"$BUILD_DIR/moe-train" --config "$tmp/run/config.ini" --run.dir="$tmp/run2" --train.steps=2 \
  >/dev/null 2>"$tmp/err2.txt" || { cat "$tmp/err2.txt"; fail "resolved config.ini does not load"; }
cmp <(grep -v '^dir' "$tmp/run/config.ini" | grep -v '^steps') \
    <(grep -v '^dir' "$tmp/run2/config.ini" | grep -v '^steps') || fail "config.ini round trip differs"
echo "PASS"
