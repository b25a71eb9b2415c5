#!/usr/bin/env bash
# mpi-ranks: 2 4
# Sequence parallelism (parallel.sequence_parallel) changes nothing but memory and which
# collectives run: the tiny MoE-LM, ViT-MoE and DiT-MoE trained 20 steps on one process
# and under mpirun with sequence parallelism at (dp, tp, ep) in (1, 2, 1), (2, 2, 2) and
# (1, 4, 4) log the same loss at every step (relative 1e-5), the same aux losses, grad
# norms, expert loads and validation losses, and end with the same weights (1e-5
# absolute; tests/e2e/compare_runs.py). The language model and the ViT route with a
# capacity that drops assignments, so the admission order over the dp x tp ranks'
# distinct rows is tested; the norm, router and embedding gradients come from each tp
# rank's rows only and must be summed over tp. Also the configuration errors.
set -euo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
cd "$SOURCE_DIR"
common=(--train.steps=20 --train.log_interval=1 --train.eval_interval=10
        --train.eval_batches=1 --train.threads=1 --train.peak_gflops=1)
lm=(--config configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
    --data.val_path="$SHARDS/fortunes_val.tok" --moe.num_experts=8 --optim.lr=0.001
    --moe.capacity_factor=1.0)

# expect_error MESSAGE -- ARGS...: the job stops at start-up, exit 2, one line naming it
expect_error() {
  local want=$1; shift 2
  local status=0
  "$SOURCE_DIR/launch/mpirun.sh" -np 2 "$BUILD_DIR/moe-train" "${common[@]}" "$@" \
    --run.dir="$tmp/bad" </dev/null >/dev/null 2>"$tmp/err" || status=$?
  [[ $status == 2 ]] || { cat "$tmp/err"; fail "exit status $status, expected 2 ($want)"; }
  grep -q -- "$want" "$tmp/err" || { cat "$tmp/err"; fail "no '$want' in the error"; }
  [[ ! -e $tmp/bad ]] || fail "run.dir written despite the error ($want)"
}

layouts="1 2 1,2 2 2,1 4 4" sp=--parallel.sequence_parallel=true
compare_layouts moe_gpt "$layouts" "$sp" -- "${lm[@]}"
compare_layouts vit_moe "$layouts" "$sp" -- --config configs/vit_moe_tiny.ini \
  --moe.capacity_factor=1.0
compare_layouts dit_moe "$layouts" "$sp" -- --config configs/dit_moe_tiny.ini
# 3 images per dp rank cannot be split over tp 2 (DiT keeps whole images per rank)
expect_error "data.batch_size: 3 gives 3 images per dp rank" -- \
  --config configs/dit_moe_tiny.ini --data.batch_size=3 --parallel.tp=2 \
  --parallel.sequence_parallel=true
echo PASS
