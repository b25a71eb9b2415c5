#!/usr/bin/env bash
# The C++ MoE language model against the independent float64 PyTorch reference
# (tests/reference/moe_gpt_ref.py): same weights and batch, same loss to relative 1e-5
# and same gradients, for dropless routing, renormalised weights with capacity
# dropping, and shared-expert-free aux-loss-free biased routing.
set -euo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
cd "$SOURCE_DIR"
common=(--config configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
        --data.val_path="$SHARDS/fortunes_val.tok" --data.batch_size=4 --model.seq_len=16)
cases=(
  "dropless|"
  "capacity_renorm|--moe.capacity_factor=1.0 --moe.renormalize=true"
  "bias_noshared|--moe.bias_balance=true --moe.num_shared=0 --moe.top_k=1 --model.dense_layers=0"
)
passed=0
for case in "${cases[@]}"; do
  name=${case%%|*} extra=${case#*|}
  # shellcheck disable=SC2086
  "$BUILD_DIR/tests/dump_moe_gpt" "$tmp/$name.h5" 20 "${common[@]}" $extra
  /usr/bin/python3 tests/reference/compare_moe_gpt.py "$tmp/$name.h5" || fail "$name"
  passed=$((passed + 1))
done
echo "$passed passed, 0 failed"
