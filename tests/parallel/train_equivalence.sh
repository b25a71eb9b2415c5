#!/usr/bin/env bash
# mpi-ranks: 2 4 8
# Data + expert parallelism changes nothing but speed: the tiny MoE-LM trained 20 steps
# on 1 process and under mpirun with (dp, ep) in (2,1) (2,2) (4,2) (4,4) (8,8) logs the
# same loss at every step (relative 1e-5) and ends with the same weights (2e-5 of each
# tensor's largest entry), in dropless mode and with a capacity that drops tokens. 8 experts so that ep = 8 has one each.
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
common=(--config configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
        --data.val_path="$SHARDS/fortunes_val.tok" --train.steps=20 --train.log_interval=1
        --train.eval_interval=10 --train.eval_batches=2 --train.threads=1
        --train.peak_gflops=1 --moe.num_experts=8 --optim.lr=0.001)

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
val = [json.loads(l) for l in open(f"{ref_dir}/metrics.jsonl")]
val_run = [json.loads(l) for l in open(f"{run_dir}/metrics.jsonl")]
for a, b in zip([r for r in val if "val_loss" in r], [r for r in val_run if "val_loss" in r]):
    assert abs(a["val_loss"] - b["val_loss"]) <= 1e-5 * a["val_loss"], f"{label}: val_loss"
with h5py.File(f"{ref_dir}/model.h5") as fa, h5py.File(f"{run_dir}/model.h5") as fb:
    names = sorted(fa["model"])
    assert names == sorted(fb["model"]), f"{label}: parameter names differ"
    wmax = 0.0
    for n in names:
        a, b = fa["model"][n][...], fb["model"][n][...]
        assert a.shape == b.shape, f"{label}: {n} shape {a.shape} vs {b.shape}"
        wmax = max(wmax, float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) + 1e-12)))
    assert wmax <= 2e-5, f"{label}: final weights differ by {wmax:.3e} (relative to max)"
print(f"{label}: max loss rel diff {worst:.2e}, max weight diff {wmax:.2e} over {len(names)} tensors")
PY
}

# uneven: 6 experts over ep 4 (blocks of 2, 2, 1, 1) with aux-loss-free bias balancing
for mode in dropless capacity uneven; do
  extra=() layouts=("2 1" "2 2" "4 2" "4 4" "8 8")
  [[ $mode == capacity ]] && extra=(--moe.capacity_factor=1.0)
  [[ $mode == uneven ]] && extra=(--moe.num_experts=6 --moe.bias_balance=true) \
    layouts=("4 4" "2 1")
  "$BUILD_DIR/moe-train" "${common[@]}" "${extra[@]}" --run.dir="$tmp/$mode-1" \
    >/dev/null 2>"$tmp/err" || { cat "$tmp/err"; fail "single-process run ($mode)"; }
  if [[ $mode == capacity ]]; then  # the capacity must actually drop tokens
    /usr/bin/python3 -c "
import json, sys
r = [json.loads(l) for l in open('$tmp/$mode-1/metrics.jsonl') if '\"loss\"' in l]
assert any(e['dropped'] > 0 for x in r for e in x['experts']), 'no token was dropped'"
  fi
  for layout in "${layouts[@]}"; do
    read -r dp ep <<<"$layout"
    dir=$tmp/$mode-dp$dp-ep$ep
    "$SOURCE_DIR/launch/mpirun.sh" -np "$dp" "$BUILD_DIR/moe-train" "${common[@]}" "${extra[@]}" \
      --parallel.dp="$dp" --parallel.ep="$ep" --run.dir="$dir" >/dev/null 2>"$tmp/err" \
      || { cat "$tmp/err"; fail "mpirun -np $dp (dp $dp, ep $ep, $mode)"; }
    compare "$tmp/$mode-1" "$dir" "$mode dp=$dp ep=$ep"
  done
done
echo PASS
