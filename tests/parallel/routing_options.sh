#!/usr/bin/env bash
# mpi-ranks: 4
# Routing options end to end (tiny MoE-LM, 8 experts, top-2):
#   - bi-level routing (moe.routing = bilevel, 2 node groups): losses finite and the
#     training loss falls on one process; under mpirun (dp = ep = 4 on 2 emulated nodes
#     of 2, two-level dispatcher) it logs the single-process losses (relative 1e-5): the
#     groups are a model property, so the layout changes nothing;
#   - the image families train a few steps with each option (finite losses);
#   - moe.dispatcher = auto logs its choice and the cost model's prediction, and follows
#     config link figures (slow inter-node latency: two_level; fast: flat);
#   - node-limited routing (M = 1) and the locality loss run on the same 2 x 2 layout
#     with finite losses; with M = 1 every token reaches exactly one node (telemetry
#     from the routing plans of the global batch), plain top-2 reaches more.
set -euo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
cd "$SOURCE_DIR"
args=(--config configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
      --data.val_path="$SHARDS/fortunes_val.tok" --moe.num_experts=8 --optim.lr=0.001
      --train.steps=20 --train.log_interval=1 --train.eval_interval=10
      --train.eval_batches=2 --train.threads=1 --train.peak_gflops=1 --run.save_model=false)
bilevel=(--moe.routing=bilevel --moe.node_groups=2)
layout=(--parallel.dp=4 --parallel.ep=4 --parallel.ranks_per_node=2)

train() {  # train DIR ARGS...: one process
  local dir=$1; shift
  "$BUILD_DIR/moe-train" "${args[@]}" "$@" --run.dir="$dir" >/dev/null 2>"$tmp/err" ||
    { cat "$tmp/err"; fail "moe-train $*"; }
}
train_4() {  # train_4 DIR ARGS...: 4 ranks, 2 emulated nodes
  local dir=$1; shift
  "$SOURCE_DIR/launch/mpirun.sh" -np 4 "$BUILD_DIR/moe-train" "${args[@]}" "${layout[@]}" "$@" \
    --run.dir="$dir" </dev/null >/dev/null 2>"$tmp/err" || { cat "$tmp/err"; fail "mpirun $*"; }
}

train "$tmp/bilevel-1" "${bilevel[@]}"
train_4 "$tmp/bilevel-4" "${bilevel[@]}" --moe.dispatcher=two_level
train_4 "$tmp/topk" --moe.dispatcher=two_level
train_4 "$tmp/limited" --moe.max_nodes_per_token=1
train_4 "$tmp/locality" --moe.locality_loss=0.05

for family in vit_moe dit_moe; do  # 4 experts: 2 groups of 2, one per rank
  for option in "--moe.routing=bilevel --moe.node_groups=2 --moe.dispatcher=two_level" \
                "--moe.max_nodes_per_token=1" "--moe.locality_loss=0.1"; do
    # shellcheck disable=SC2086
    "$SOURCE_DIR/launch/mpirun.sh" -np 4 "$BUILD_DIR/moe-train" --config "configs/${family}_tiny.ini" \
      --train.steps=3 --train.eval_batches=1 --train.threads=1 --train.peak_gflops=1 \
      --run.save_model=false "${layout[@]}" $option --run.dir="$tmp/$family-${option%% *}" \
      </dev/null 2>"$tmp/err" | tail -1 >"$tmp/final" || { cat "$tmp/err"; fail "$family $option"; }
    /usr/bin/python3 -c 'import json, math, sys; r = json.load(open(sys.argv[1]))
assert all(math.isfinite(v) for k, v in r.items() if k.endswith("loss")), r' "$tmp/final" ||
      fail "$family $option: losses not finite"
  done
done

auto_choice() {  # auto_choice INTER_LATENCY_US: the dispatcher auto picks
  "$SOURCE_DIR/launch/mpirun.sh" -np 4 "$BUILD_DIR/moe-train" "${args[@]}" "${layout[@]}" \
    --train.steps=2 --moe.dispatcher=auto --parallel.inter_latency_us="$1" \
    --parallel.inter_bandwidth_gbs=50 --parallel.intra_latency_us=1 \
    --parallel.intra_bandwidth_gbs=100 --run.dir="$tmp/auto-$1" </dev/null \
    2>"$tmp/err" | tail -1 | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["dispatcher"])'
  grep -q "moe.dispatcher=auto: .*predicted per exchange: flat .* ms, two-level .* ms" "$tmp/err" ||
    { cat "$tmp/err"; fail "auto: no choice logged"; }
}
[[ $(auto_choice 1000) == two_level ]] || fail "auto with 1 ms inter-node latency"
[[ $(auto_choice 0.001) == flat ]] || fail "auto with 1 ns inter-node latency"

/usr/bin/python3 - "$tmp" <<'PY'
import json, math, sys
tmp = sys.argv[1]
def steps(name):
    return [r for r in map(json.loads, open(f"{tmp}/{name}/metrics.jsonl")) if "loss" in r]
for name in ("bilevel-1", "bilevel-4", "topk", "limited", "locality"):
    for r in steps(name):
        for k in ("loss", "aux_loss", "z_loss", "grad_norm"):
            assert math.isfinite(r[k]), f"{name}: step {r['step']} {k} = {r[k]}"
one = steps("bilevel-1")
first, last = sum(r["loss"] for r in one[:3]) / 3, sum(r["loss"] for r in one[-3:]) / 3
assert last < first - 0.1, f"bilevel: loss did not fall ({first:.4f} -> {last:.4f})"
for a, b in zip(one, steps("bilevel-4")):
    d = abs(a["loss"] - b["loss"]) / a["loss"]
    assert d <= 1e-5, f"bilevel: step {a['step']} loss {a['loss']} vs {b['loss']} on 4 ranks"
reach = lambda name: max(l["nodes_per_token"] for r in steps(name) for l in r["experts"])
assert reach("limited") == 1.0, f"node-limited: {reach('limited')} nodes per token"
assert reach("bilevel-4") == 1.0, f"bilevel: {reach('bilevel-4')} nodes per token"
assert reach("topk") > 1.0, f"top-2: {reach('topk')} nodes per token"
assert all(r["experts"][0]["locality_loss"] > 0 for r in steps("locality"))
print(f"bilevel loss {first:.3f} -> {last:.3f}, 4 ranks equal; nodes per token: "
      f"top-2 {reach('topk'):.3f}, node-limited {reach('limited'):.3f}")
PY
echo PASS
