#!/usr/bin/env bash
# The bad-input contract for the image families and moe-sample: exit status 2, one line
# naming the key or file, nothing written.
set -uo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
require_fashion_mnist
cd "$SOURCE_DIR"
checked=0

# expect_error NAME PATTERN PROGRAM ARGS...: exit 2, one stderr line matching PATTERN,
# and no run directory created.
expect_error() {
  local name=$1 pattern=$2 program=$3; shift 3
  local dir=$tmp/run_$name
  "$BUILD_DIR/$program" "$@" --run.dir="$dir" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  [[ $rc -eq 2 ]] || { cat "$tmp/err"; fail "$name: exit status $rc, expected 2"; }
  [[ $(wc -l <"$tmp/err") -eq 1 ]] || { cat "$tmp/err"; fail "$name: expected one line"; }
  grep -q -- "$pattern" "$tmp/err" || { cat "$tmp/err"; fail "$name: message lacks '$pattern'"; }
  [[ ! -e $dir ]] || fail "$name: $dir was created"
  echo "ok $name: $(cat "$tmp/err")"
  checked=$((checked + 1))
}

vit=(--config configs/vit_moe_tiny.ini --train.steps=2)
dit=(--config configs/dit_moe_tiny.ini --train.steps=2)
images=$FASHION_MNIST/train-images-idx3-ubyte.gz
head -c 1000 "$FASHION_MNIST/t10k-labels-idx1-ubyte.gz" >"$tmp/cut-labels.gz"
expect_error unknown_family "model.family" moe-train "${vit[@]}" --model.family=unet
expect_error images_as_labels "images given as labels" moe-train "${vit[@]}" --data.train_labels="$images"
expect_error label_count "labels for the" moe-train "${vit[@]}" --data.val_labels="$FASHION_MNIST/train-labels-idx1-ubyte.gz"
expect_error truncated_labels "cut-labels.gz" moe-train "${vit[@]}" --data.val_labels="$tmp/cut-labels.gz"
expect_error missing_labels "data.train_labels" moe-train "${dit[@]}" --data.train_labels=
expect_error image_size "model.image_size" moe-train "${vit[@]}" --model.image_size=32 --model.patch_size=8
expect_error patch_size "model.patch_size" moe-train "${vit[@]}" --model.patch_size=5
expect_error few_classes "model.num_classes" moe-train "${dit[@]}" --model.num_classes=5
expect_error bad_pool "model.pool" moe-train "${vit[@]}" --model.pool=max
expect_error bad_objective "diffusion.objective" moe-train "${dit[@]}" --diffusion.objective=score
expect_error sampler_mismatch "diffusion.sampler" moe-train "${dit[@]}" --diffusion.sampler=euler
expect_error bad_activation "moe.expert_act" moe-train "${vit[@]}" --moe.expert_act=relu

# moe-sample: a missing checkpoint, a checkpoint of the wrong family, one of another
# format version (checked before the family)
expect_error sample_missing "nope.h5" moe-sample --checkpoint "$tmp/nope.h5" --out "$tmp/x.png"
"$BUILD_DIR/moe-train" "${vit[@]}" --run.dir="$tmp/vit" >/dev/null 2>&1 || fail "tiny vit run failed"
expect_error sample_family "dit_moe" moe-sample --checkpoint "$tmp/vit/model.h5" --out "$tmp/x.png"
cp "$tmp/vit/model.h5" "$tmp/v1.h5"
/usr/bin/python3 -c "import h5py, numpy as np, sys
with h5py.File(sys.argv[1], 'r+') as f: f.attrs['format_version'] = np.int64(1)" "$tmp/v1.h5"
expect_error sample_version "format version 1 is not supported" \
  moe-sample --checkpoint "$tmp/v1.h5" --out "$tmp/x.png"
[[ ! -e $tmp/x.png ]] || fail "moe-sample wrote a PNG for a bad checkpoint"

# moe-sample checks everything before it samples, and overwrites nothing.
"$BUILD_DIR/moe-train" "${dit[@]}" --train.eval_batches=1 --run.dir="$tmp/dit" >/dev/null 2>&1 \
  || fail "tiny dit run failed"
touch "$tmp/exists.png"
expect_error sample_out_exists "exists.png' exists; not overwriting it" \
  moe-sample --checkpoint "$tmp/dit/model.h5" --out "$tmp/exists.png"
expect_error sample_bad_classifier "--classifier: .* holds a dit_moe model, which does not classify images (families that do: vit_moe)" \
  moe-sample --checkpoint "$tmp/dit/model.h5" --out "$tmp/c.png" --classifier "$tmp/dit/model.h5"
[[ ! -e $tmp/c.png ]] || fail "moe-sample wrote a PNG before rejecting --classifier"
expect_error sample_per_class "--per-class: '2000000000' is not a whole number from 1 to 10000" \
  moe-sample --checkpoint "$tmp/dit/model.h5" --out "$tmp/p.png" --per-class 2000000000
echo "$checked passed, 0 failed"
