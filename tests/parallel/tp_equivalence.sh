#!/usr/bin/env bash
# mpi-ranks: 2 4 8
# Tensor parallelism changes nothing but speed: the tiny MoE-LM, ViT-MoE and DiT-MoE
# trained 20 steps on one process and under mpirun with (dp, tp, ep) in (1, 2, 1),
# (2, 2, 2) and (1, 4, 4) log the same loss at every step (relative 1e-5), the same
# aux losses and gradient norms (relative 1e-4), the same expert loads and validation
# losses, and end with the same weights (1e-5 absolute; tests/e2e/compare_runs.py).
# The language model routes with a capacity that drops tokens, so the tp ranks'
# admission order is tested too, and once more on a vocabulary of 259 that tp 4 splits
# into 65 + 65 + 65 + 64 (a padded last block). With tp > 1 the tp ranks hold the same
# tokens and each dispatches only its 1/tp share (the EtpDispatcher's tp hook): were a
# token sent twice, its expert gradients would come out tp times too large and the
# weights would drift from the single-process ones within a step. The last layout,
# (4, 2, 2) with etp 2 on 8 ranks, folds the experts as edp 2 x ep 2 x etp 2.
set -euo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
cd "$SOURCE_DIR"
common=(--train.steps=20 --train.log_interval=1 --train.eval_interval=10
        --train.eval_batches=1 --train.threads=1 --train.peak_gflops=1)
# lr 1e-3 as in train_equivalence.sh: the router stays away from near-ties.
lm=(--config configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
    --data.val_path="$SHARDS/fortunes_val.tok" --moe.num_experts=8 --optim.lr=0.001
    --moe.capacity_factor=1.0)

# require_drops NAME: the single-process run of case NAME dropped assignments
require_drops() {
  /usr/bin/python3 - "$tmp/$1-1/metrics.jsonl" "$1" <<'PY'
import json, sys
r = [x for x in map(json.loads, open(sys.argv[1])) if "loss" in x]
assert any(e["dropped"] > 0 for x in r for e in x["experts"]), f"{sys.argv[2]}: nothing dropped"
PY
}

layouts="1 2 1,2 2 2,1 4 4,4 2 2 2"
compare_layouts moe_gpt "$layouts" "" -- "${lm[@]}"
require_drops moe_gpt
compare_layouts vocab259 "1 4 4" "" -- "${lm[@]}" --model.vocab_size=259
compare_layouts vit_moe "$layouts" "" -- --config configs/vit_moe_tiny.ini \
  --moe.capacity_factor=1.0
require_drops vit_moe
compare_layouts dit_moe "$layouts" "" -- --config configs/dit_moe_tiny.ini
echo PASS
