#!/usr/bin/env bash
# The C++ DiT-MoE against the independent float64 PyTorch reference
# (tests/reference/image_ref.py): same weights and batch (noisy images, timesteps,
# labels with the null class, targets), same loss to relative 1e-5 and same gradients,
# for the DDPM and the rectified-flow objective and both position embeddings.
set -euo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
require_fashion_mnist
cd "$SOURCE_DIR"
common=(--config configs/dit_moe_tiny.ini --data.batch_size=4 --optim.lr=0.01)
cases=(
  "ddpm_sincos|"
  "flow_learned_every2_capacity|--diffusion.objective=rectified_flow --diffusion.sampler=euler --model.pos_embed=learned --model.moe_every=2 --model.dense_ffn=24 --moe.capacity_factor=1.0"
)
passed=0
for case in "${cases[@]}"; do
  name=${case%%|*} extra=${case#*|}
  # shellcheck disable=SC2086
  "$BUILD_DIR/tests/dump_image_model" "$tmp/$name.h5" 30 "${common[@]}" $extra
  /usr/bin/python3 tests/reference/compare_image_model.py "$tmp/$name.h5" || fail "$name"
  passed=$((passed + 1))
done
echo "$passed passed, 0 failed"
