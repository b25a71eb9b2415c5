#!/usr/bin/env bash
# The tiny image configs train end to end on Fashion-MNIST: the ViT-MoE and DiT-MoE
# losses fall, the final lines carry each family's metrics, model.h5 is written; then
# moe-sample turns the DiT into a PNG grid (one row per class) that a PNG decoder
# (PIL) reads back with the right size, classifies the samples with the ViT and writes
# per-step expert statistics.
set -euo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
require_fashion_mnist
cd "$SOURCE_DIR"
for family in vit_moe dit_moe; do
  "$BUILD_DIR/moe-train" --config "configs/${family}_tiny.ini" --run.dir="$tmp/$family" \
    --train.log_interval=1 >"$tmp/$family.out" 2>"$tmp/$family.err" \
    || { cat "$tmp/$family.err"; fail "moe-train $family exited $?"; }
  [[ -f $tmp/$family/model.h5 ]] || fail "$family: no model.h5"
done
/usr/bin/python3 - "$tmp" <<'PY'
import json, math, sys
tmp = sys.argv[1]
for family, key, drop in (("vit_moe", "test_accuracy", 0.25), ("dit_moe", "val_loss", 0.2)):
    steps = [json.loads(l) for l in open(f"{tmp}/{family}/metrics.jsonl")]
    assert len(steps) == 60, f"{family}: {len(steps)} records"
    assert all(math.isfinite(r["loss"]) for r in steps)
    for field in ("step", "loss", "lr", "grad_norm", "tokens_per_s", "mfu", "experts"):
        assert field in steps[-1], f"{family}: metrics.jsonl lacks {field}"
    first = sum(r["loss"] for r in steps[:5]) / 5
    last = sum(r["loss"] for r in steps[-5:]) / 5
    print(f"{family}: loss first5 {first:.4f} last5 {last:.4f}")
    assert last < first - drop, f"{family}: the loss did not fall by {drop}"
    final = json.loads(open(f"{tmp}/{family}.out").read().strip().splitlines()[-1])
    assert final["final"] and key in final, final
    if family == "vit_moe":
        assert final["test_images"] == 256 and final[key] > 0.2, final
PY
"$BUILD_DIR/moe-sample" --checkpoint "$tmp/dit_moe/model.h5" --out "$tmp/grid.png" \
  --per-class 3 --classifier "$tmp/vit_moe/model.h5" --stats "$tmp/stats.json" \
  --diffusion.sample_steps=4 --diffusion.guidance=2 >"$tmp/sample.out" 2>"$tmp/sample.err" \
  || { cat "$tmp/sample.err"; fail "moe-sample exited $?"; }
/usr/bin/python3 - "$tmp" <<'PY'
import json, sys
from PIL import Image
tmp = sys.argv[1]
result = json.loads(open(f"{tmp}/sample.out").read().strip().splitlines()[-1])
image = Image.open(f"{tmp}/grid.png")
# 10 rows (classes) x 3 columns of 28x28 tiles with 2-pixel gaps
assert image.size == (3 * 28 + 4 * 2, 10 * 28 + 11 * 2), image.size
assert image.mode == "L", image.mode
assert (result["width"], result["height"]) == image.size
assert result["samples"] == 30 and result["steps"] == 4
assert 0.0 <= result["class_consistency"] <= 1.0 and len(result["per_class"]) == 10
stats = json.loads(open(f"{tmp}/stats.json").read())
assert stats["timesteps"] == [750, 500, 250, 0], stats["timesteps"]
assert len(stats["counts"]) == 4 and len(stats["counts"][0]) == len(stats["layers"]) == 2
# every sampling step routes 2 x 30 images (conditional + null class) x 16 tokens, top-2
assert all(sum(layer) == 2 * 30 * 16 * 2 for step in stats["counts"] for layer in step)
print("grid", image.size, "class consistency", result["class_consistency"])
PY
echo "PASS"
