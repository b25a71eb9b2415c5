#!/usr/bin/env bash
# The C++ ViT-MoE against the independent float64 PyTorch reference
# (tests/reference/image_ref.py): same weights and batch, same loss to relative 1e-5 and
# same gradients, over the layout and routing options.
set -euo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
require_fashion_mnist
cd "$SOURCE_DIR"
common=(--config configs/vit_moe_tiny.ini --data.batch_size=6)
cases=(
  "cls_gelu_capacity_bpr|"
  "gap_sincos_swiglu_renorm_dropless|--model.pool=gap --model.pos_embed=sincos --moe.expert_act=swiglu --moe.capacity_factor=0 --moe.batch_priority=false --moe.renormalize=true"
  "dense_first_top1_noshared|--model.dense_layers=1 --model.moe_every=1 --moe.num_shared=0 --moe.top_k=1"
)
passed=0
for case in "${cases[@]}"; do
  name=${case%%|*} extra=${case#*|}
  # shellcheck disable=SC2086
  "$BUILD_DIR/tests/dump_image_model" "$tmp/$name.h5" 20 "${common[@]}" $extra
  /usr/bin/python3 tests/reference/compare_image_model.py "$tmp/$name.h5" || fail "$name"
  passed=$((passed + 1))
done
echo "$passed passed, 0 failed"
