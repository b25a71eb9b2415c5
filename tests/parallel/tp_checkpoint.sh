#!/usr/bin/env bash
# mpi-ranks: 2 4
# Checkpoints stay logical under tensor parallelism: the tiny MoE-LM (8 experts,
# aux-loss-free bias balancing, a vocabulary of 259 that tp 2 and 4 do not divide evenly)
# trained 20 steps at (dp, tp, ep) = (1, 2, 2) with a checkpoint at step 10, then
# resumed from that checkpoint on one process and at (1, 4, 4): steps 11..20 match the
# uninterrupted single-process run (losses to relative 1e-5, final weights to 1e-5
# absolute, as in tp_equivalence.sh), and the written tensors have their logical shapes
# (attn.w_qkv (3, C, C), embed.weight and lm_head.weight (259, C)).
set -euo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
cd "$SOURCE_DIR"
common=(--config configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
        --data.val_path="$SHARDS/fortunes_val.tok" --moe.num_experts=8 --optim.lr=0.001
        --moe.bias_balance=true --model.vocab_size=259 --train.steps=20
        --train.log_interval=1 --train.eval_interval=10 --train.eval_batches=1
        --train.threads=1 --train.peak_gflops=1)
# train TP EP RUN_DIR ARGS...: dp 1; one process when TP is 1
train() {
  local tp=$1 ep=$2 dir=$3; shift 3
  if [[ $tp == 1 ]]; then
    "$BUILD_DIR/moe-train" "${common[@]}" --run.dir="$dir" "$@" >/dev/null 2>"$tmp/err"
  else
    "$SOURCE_DIR/launch/mpirun.sh" -np "$tp" "$BUILD_DIR/moe-train" "${common[@]}" \
      --parallel.tp="$tp" --parallel.ep="$ep" --run.dir="$dir" "$@" </dev/null >/dev/null \
      2>"$tmp/err"
  fi || { cat "$tmp/err"; fail "tp $tp ep $ep: moe-train $*"; }
}

train 1 1 "$tmp/one"
train 2 2 "$tmp/tp2" --checkpoint.interval=10
ck=$tmp/tp2/checkpoints/step_00000010.h5
/usr/bin/python3 - "$ck" <<'PY' || fail "checkpoint of tp 2: shapes"
import sys
import h5py
with h5py.File(sys.argv[1]) as f:
    m = f["model"]
    shapes = {n: m[n].shape for n in ("layers.0.attn.w_qkv", "embed.weight", "lm_head.weight",
                                      "layers.0.mlp.w_down")}
    want = {"layers.0.attn.w_qkv": (3, 32, 32), "embed.weight": (259, 32),
            "lm_head.weight": (259, 32), "layers.0.mlp.w_down": (32, 64)}
    assert shapes == want, shapes
    assert m["lm_head.weight"].attrs["shard"] == b"vocab" or \
        m["lm_head.weight"].attrs["shard"] == "vocab", m["lm_head.weight"].attrs["shard"]
PY
for layout in "1 1" "4 4"; do
  read -r tp ep <<<"$layout"
  train "$tp" "$ep" "$tmp/resume$tp" --run.resume="$ck"
  grep -q "written by dp 1 tp 2 ep 2 on 2 ranks" "$tmp/err" || fail "tp $tp: no resume line"
  /usr/bin/python3 tests/e2e/compare_runs.py "$tmp/one" "$tmp/resume$tp" \
    "saved at tp 2, resumed at tp $tp ep $ep" --from 10 --rtol 1e-5 --weights \
    || fail "resume at tp $tp"
done
echo PASS
