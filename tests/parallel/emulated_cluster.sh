#!/usr/bin/env bash
# mpi-ranks: 4
# The emulated cluster (launch/emulated_cluster.sh): 2 nodes x 2 ranks on this machine,
# shared memory inside a node, TCP on a private loopback between nodes. Checks that
#   - the topology is discovered from MPI (2 nodes x 2 ranks, no override);
#   - the two-level all-to-all tests pass over the real inter-node transport;
#   - training with the flat and the two-level dispatcher gives the losses of a plain
#     one-node mpirun, and the telemetry sees inter-node bytes only on the cluster.
# Skipped (exit 77, with the reason) where namespaces cannot be created.
set -euo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
emu=$SOURCE_DIR/launch/emulated_cluster.sh
if ! reason=$("$emu" --check 2>&1); then
  echo "SKIP: $reason"
  exit 77
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
cd "$SOURCE_DIR"

GTEST_COLOR=no "$emu" -N 2 -G 2 "$BUILD_DIR/tests/parallel_test_two_level" </dev/null \
  >"$tmp/gtest" 2>&1 || { cat "$tmp/gtest"; fail "two-level tests on the emulated cluster"; }

args=(--config configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
      --data.val_path="$SHARDS/fortunes_val.tok" --moe.num_experts=8 --optim.lr=0.001
      --train.steps=8 --train.log_interval=1 --train.eval_interval=4 --train.eval_batches=1
      --train.threads=1 --train.peak_gflops=1 --run.save_model=false
      --parallel.dp=4 --parallel.ep=4)
"$SOURCE_DIR/launch/mpirun.sh" -np 4 "$BUILD_DIR/moe-train" "${args[@]}" \
  --moe.dispatcher=flat --run.dir="$tmp/one-node" </dev/null >/dev/null 2>"$tmp/err" ||
  { cat "$tmp/err"; fail "plain mpirun"; }
for d in flat two_level; do
  "$emu" -N 2 -G 2 "$BUILD_DIR/moe-train" "${args[@]}" --moe.dispatcher=$d \
    --run.dir="$tmp/$d" </dev/null >/dev/null 2>"$tmp/err-$d" ||
    { cat "$tmp/err-$d"; fail "emulated cluster, $d"; }
  grep -q "topology: 2 nodes x 2 ranks (MPI shared memory); ep group: 2 nodes x 2 ranks" \
    "$tmp/err-$d" || { cat "$tmp/err-$d"; fail "$d: topology not discovered as 2 x 2"; }
done
/usr/bin/python3 - "$tmp" <<'PY'
import json, sys
tmp = sys.argv[1]
runs = {d: list(map(json.loads, open(f"{tmp}/{d}/metrics.jsonl")))
        for d in ("one-node", "flat", "two_level")}
ref = runs["one-node"]
for d in ("flat", "two_level"):
    assert len(runs[d]) == len(ref)
    for a, b in zip(ref, runs[d]):
        for k in (k for k in a if k.endswith("loss")):
            assert abs(a[k] - b[k]) <= 1e-5 * abs(a[k]), f"{d}: step {a['step']} {k}"
steps = lambda d: [r["comm"]["ep"] for r in runs[d] if "comm" in r]
assert all(s["inter_node_bytes"] == 0 for s in steps("one-node")), "one node, inter bytes"
assert all(s["inter_node_bytes"] > 0 for s in steps("flat")), "no inter-node bytes seen"
flat_msgs = sum(s["inter_node_messages"] for s in steps("flat"))
two_msgs = sum(s["inter_node_messages"] for s in steps("two_level"))
assert two_msgs < flat_msgs, (two_msgs, flat_msgs)
print(f"emulated 2x2: losses equal one-node mpirun; rank 0 inter-node messages/step "
      f"flat {flat_msgs / len(steps('flat')):.0f}, two-level {two_msgs / len(steps('flat')):.0f}")
PY
echo PASS
