#!/usr/bin/env bash
# mpi-ranks: 2 4 8
# Data + expert parallelism changes nothing but speed: the tiny MoE-LM trained 20 steps
# on 1 process and under mpirun with (dp, ep) in (2,1) (2,2) (4,2) (4,4) (8,8) logs the
# same loss at every step (relative 1e-5) and ends with the same weights (every entry
# within 1e-5 absolute: a few thousandths of one Adam step of lr 1e-3 to 3e-3, where
# weights are 1e-2 to 1; summation order moves them by ~1e-7 to 1e-6), in dropless mode and with a capacity that drops tokens; the
# tiny ViT-MoE (capacity with Batch Priority Routing) and DiT-MoE configs likewise. 8 experts so that ep = 8 has one each.
# lr 1e-3 rather than the tiny config's 3e-3: at 3e-3 this 32-wide router collapses
# within ten steps (most tokens on two experts, over half dropped at capacity 1) and
# near-ties between experts then flip with the last bit of a sum, on one process too;
# the test is about layouts, not about that chaos.
set -euo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
cd "$SOURCE_DIR"
data=(--data.train_path="$SHARDS/fortunes_train.tok" --data.val_path="$SHARDS/fortunes_val.tok")
common=(--train.steps=20 --train.log_interval=1 --train.eval_interval=10
        --train.eval_batches=2 --train.threads=1 --train.peak_gflops=1)
lm=(--config configs/moe_gpt_tiny.ini "${data[@]}" --moe.num_experts=8 --optim.lr=0.001)

compare() {  # compare REFERENCE_DIR RUN_DIR LABEL
  /usr/bin/python3 - "$1" "$2" "$3" <<'PY'
import json, sys
import h5py, numpy as np
ref_dir, run_dir, label = sys.argv[1:]
def steps(d):
    return [r for r in map(json.loads, open(f"{d}/metrics.jsonl")) if "loss" in r]
ref, run = steps(ref_dir), steps(run_dir)
assert len(ref) == len(run) == 20, (len(ref), len(run))
worst = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(ref, run))
assert worst <= 1e-5, f"{label}: loss differs by relative {worst:.3e}"
for key in ("aux_loss", "grad_norm"):
    d = max(abs(a[key] - b[key]) / max(abs(a[key]), 1e-12) for a, b in zip(ref, run))
    assert d <= 1e-4, f"{label}: {key} differs by relative {d:.3e}"
assert ref[-1]["experts"] == run[-1]["experts"] or all(
    a["tokens"] == b["tokens"] for a, b in zip(ref[-1]["experts"], run[-1]["experts"])), \
    f"{label}: expert loads differ"
evals = [[r for r in map(json.loads, open(f"{d}/metrics.jsonl")) if "loss" not in r
          or any(k.startswith(("val_", "test_")) for k in r)] for d in (ref_dir, run_dir)]
assert len(evals[0]) == len(evals[1]) > 0, f"{label}: evaluation records differ"
for a, b in zip(*evals):
    for key in (k for k in a if k.endswith("loss") and k.startswith(("val_", "test_"))):
        assert abs(a[key] - b[key]) <= 1e-5 * abs(a[key]), f"{label}: {key} {a[key]} vs {b[key]}"
with h5py.File(f"{ref_dir}/model.h5") as fa, h5py.File(f"{run_dir}/model.h5") as fb:
    names = sorted(fa["model"])
    assert names == sorted(fb["model"]), f"{label}: parameter names differ"
    wmax = 0.0
    for n in names:
        a, b = fa["model"][n][...], fb["model"][n][...]
        assert a.shape == b.shape, f"{label}: {n} shape {a.shape} vs {b.shape}"
        diff = float(np.max(np.abs(a - b)))
        assert diff <= 1e-5, f"{label}: final {n} differs by {diff:.3e}"
        wmax = max(wmax, diff)
print(f"{label}: max loss rel diff {worst:.2e}, max weight diff {wmax:.2e} over {len(names)} tensors")
PY
}

# run_case NAME LAYOUTS -- ARGS...: one process, then every "dp ep" layout of LAYOUTS
run_case() {
  local name=$1 layouts=$2; shift 3
  "$BUILD_DIR/moe-train" "${common[@]}" "$@" --run.dir="$tmp/$name-1" \
    >/dev/null 2>"$tmp/err" || { cat "$tmp/err"; fail "single-process run ($name)"; }
  local dp ep dir
  while read -r dp ep; do
    dir=$tmp/$name-dp$dp-ep$ep
    "$SOURCE_DIR/launch/mpirun.sh" -np "$dp" "$BUILD_DIR/moe-train" "${common[@]}" "$@" \
      --parallel.dp="$dp" --parallel.ep="$ep" --run.dir="$dir" </dev/null >/dev/null 2>"$tmp/err" \
      || { cat "$tmp/err"; fail "mpirun -np $dp (dp $dp, ep $ep, $name)"; }
    compare "$tmp/$name-1" "$dir" "$name dp=$dp ep=$ep"
  done < <(tr ',' '\n' <<<"$layouts")
}

# require_drops NAME: the single-process run of case NAME dropped assignments
require_drops() {
  /usr/bin/python3 - "$tmp/$1-1/metrics.jsonl" "$1" <<'PY'
import json, sys
r = [x for x in map(json.loads, open(sys.argv[1])) if "loss" in x]
assert any(e["dropped"] > 0 for x in r for e in x["experts"]), f"{sys.argv[2]}: nothing dropped"
PY
}

all="2 1,2 2,4 2,4 4,8 8"
run_case dropless "$all" -- "${lm[@]}"
run_case capacity "$all" -- "${lm[@]}" --moe.capacity_factor=1.0
require_drops capacity
# 6 experts over ep 4 (blocks of 2, 2, 1, 1) with aux-loss-free bias balancing
run_case uneven "4 4,2 1" -- "${lm[@]}" --moe.num_experts=6 --moe.bias_balance=true
# image families: ViT-MoE routes with a capacity and Batch Priority Routing
run_case vit_moe "2 2,4 2,8 4" -- --config configs/vit_moe_tiny.ini --train.eval_batches=1 \
  --moe.capacity_factor=1.0
require_drops vit_moe
run_case dit_moe "2 2,4 4" -- --config configs/dit_moe_tiny.ini --train.eval_batches=1
echo PASS
