#!/usr/bin/env bash
# mpi-ranks: 4 8
# The node-deduplicating dispatcher changes the route of the token exchange, not the
# model: training with moe.dispatcher = node_dedup logs the losses of flat (relative
# 1e-5; the sums over a token's nodes add the same terms in another order) on emulated
# nodes (parallel.ranks_per_node) under plain mpirun: (ranks, ranks per node) in (4, 2),
# (8, 4), (8, 2), dropless and with a capacity, with ep < dp (8 ranks, ep 4: two ep
# groups of 2 nodes x 2), node-limited and bi-level routing, and the image families.
# Its inter-node bytes per step are what the routing telemetry predicts (per MoE layer
# and exchange one row per (token, other node reached), plus the routing records, the
# dweights, the counts and the gradient norm's all-reduce); with node-limited and
# bi-level routing about half of flat's. An ep group that does not fill its nodes evenly
# is a user error (exit 2).
set -euo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
cd "$SOURCE_DIR"
common=(--train.steps=12 --train.log_interval=1 --train.eval_interval=0
        --train.eval_batches=1 --train.threads=1 --train.peak_gflops=1 --run.save_model=false)
lm=(--config configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
    --data.val_path="$SHARDS/fortunes_val.tok" --moe.num_experts=8 --optim.lr=0.001)

# run_case NAME NP G [EP] -- ARGS...: flat and node_dedup with dp = NP, ep = EP (default
# NP), G ranks per node
run_case() {
  local name=$1 np=$2 g=$3 ep=$2
  if [[ $4 != -- ]]; then ep=$4; shift; fi
  shift 4
  train_per_dispatcher "$name" "$np" "$g" "$ep" "flat node_dedup" -- "$@"
  /usr/bin/python3 - "$tmp/$name-flat" "$tmp/$name-node_dedup" "$name" "$np" "$g" "$ep" <<'PY'
import configparser, json, sys
flat_dir, dedup_dir, label = sys.argv[1:4]
ranks, per_node, ep = map(int, sys.argv[4:])
def records(d):
    return [r for r in map(json.loads, open(f"{d}/metrics.jsonl"))]
flat, dedup = records(flat_dir), records(dedup_dir)
assert len(flat) == len(dedup) > 0, (len(flat), len(dedup))
worst = 0.0
for a, b in zip(flat, dedup):
    for key in (k for k in a if k.endswith("loss")):
        d = abs(a[key] - b[key]) / max(abs(a[key]), 1e-12)
        worst = max(worst, d)
        assert d <= 1e-5, f"{label}: step {a['step']} {key} {a[key]} vs {b[key]}"

ini = configparser.ConfigParser()
ini.read(f"{dedup_dir}/config.ini")
width = ini.getint("model", "d_model")
top_k = ini.getint("moe", "top_k")
dropless = ini.getfloat("moe", "capacity_factor") <= 0
nodes = ep // per_node  # nodes of an ep group
steps = [(a, b) for a, b in zip(flat, dedup) if "comm" in a]
for a, b in steps:
    got = b["comm"]["ep"]["job_inter_node_bytes"]
    if not dropless:
        continue  # the telemetry counts assignments before dropping
    # the ep group's other traffic: the gradient norm's all-reduce of one double, a ring
    # crossing each of the group's node boundaries once
    expected = (ranks // ep) * nodes * (2 * (ep - 1) * 8 // ep) if nodes > 1 else 0.0
    for layer in b["experts"]:
        tokens = sum(layer["tokens"]) / top_k  # tokens of the global batch
        rows = tokens * layer["remote_nodes_per_token"]
        pairs = tokens * top_k * (1 - layer["node_local"])
        # 4 row exchanges; records [count, (expert, weight)...]; dweights; 2 int64 counts
        # from every rank to each other node of its ep group
        expected += rows * width * 4 * 4 + (rows + 2 * pairs) * 4 + pairs * 4 \
            + ranks * (nodes - 1) * 16
    assert abs(got - expected) <= 1e-6 * expected + 0.5, \
        f"{label}: step {b['step']} inter-node bytes {got}, routing predicts {expected}"
ratio = sum(b["comm"]["ep"]["job_inter_node_bytes"] for _, b in steps) / \
    sum(a["comm"]["ep"]["job_inter_node_bytes"] for a, _ in steps)
# one node per token: half the rows of flat's (two experts each) cross, plus the records
if "limited" in label or "bilevel" in label:
    assert ratio < 0.6, f"{label}: node_dedup / flat inter-node bytes {ratio:.3f}"
print(f"{label}: max loss rel diff {worst:.1e}; inter-node bytes node_dedup / flat {ratio:.3f}")
PY
}

run_case lm-4x2 4 2 -- "${lm[@]}"
run_case lm-8x4-capacity 8 4 -- "${lm[@]}" --moe.capacity_factor=1.0
run_case lm-8x2 8 2 -- "${lm[@]}" --moe.top_k=3
run_case lm-8x2-ep4 8 2 4 -- "${lm[@]}"
run_case lm-8x4-limited 8 4 -- "${lm[@]}" --moe.max_nodes_per_token=1
run_case lm-8x4-bilevel 8 4 -- "${lm[@]}" --moe.routing=bilevel --moe.node_groups=2
run_case vit_moe-4x2 4 2 -- --config configs/vit_moe_tiny.ini --moe.capacity_factor=1.0
run_case dit_moe-4x2 4 2 -- --config configs/dit_moe_tiny.ini

# an ep group that does not fill its nodes evenly (6 ranks, 2 per node, ep 3): one line
# naming the option, exit status 2, no run directory
status=0
"$SOURCE_DIR/launch/mpirun.sh" -np 6 "$BUILD_DIR/moe-train" "${common[@]}" "${lm[@]}" \
  --data.batch_size=12 --parallel.dp=6 --parallel.ep=3 --parallel.ranks_per_node=2 \
  --moe.dispatcher=node_dedup --run.dir="$tmp/uneven" </dev/null >/dev/null 2>"$tmp/err" \
  || status=$?
[[ $status == 2 ]] || { cat "$tmp/err"; fail "uneven ep group: exit status $status, not 2"; }
grep -q "moe.dispatcher: node_dedup needs every ep group placed node by node" "$tmp/err" \
  || { cat "$tmp/err"; fail "uneven ep group: no error naming moe.dispatcher"; }
[[ ! -e $tmp/uneven ]] || fail "uneven ep group: the run directory was written"
echo PASS
