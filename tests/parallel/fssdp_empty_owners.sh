#!/usr/bin/env bash
# mpi-ranks: 4
# Sharded sparse experts where a rank owns no expert of a layer, and re-materialisation
# (docs/parallelism.md). The tiny MoE-LM with 3 experts and two MoE layers trained 12
# steps at dp 4 with parallel.expert_sharding = fssdp: the even blocks leave rank 3
# without experts, and the owners re-planned after step 4 (parallel.reshard_interval)
# leave rank 0 without them (E < R: the first R - E ranks own none);
#   - losses equal the one-process run to relative 1e-5 at every step, the steps after
#     the re-shard included, and the final weights too: with re-sharding, with
#     parallel.shard_optimizer, with the even blocks and no replica slots (rank 3 then
#     computes no row), and with a load window of 3 steps;
#   - a rank's bytes are its exact share: parameters = the dense ones plus 12,288 per
#     expert it owns (3 weights of 32 x 32 floats), the owned experts of every rank adding
#     up to the 6 of the job once; optimizer state = 2 x parameters;
#   - parallel.rematerialize = true gives bit-identical losses and weights; its replica
#     peak is lower on some rank and higher on none (one layer's replicas instead of
#     both), and the job's sparse bytes are 1.5 x at every step without a re-shard (the
#     all-gather, half of them, runs twice);
#   - the dp-4 checkpoint of step 6 (after the re-shard) resumes bit-identically (with
#     re-materialisation) and continues on one process; the one-process checkpoint
#     continues at dp 4 with re-sharding;
#   - the load window's state buffers keep their names (layers.N.moe.experts.
#     load_history_w3_r4), so checkpoints of earlier builds resume;
#   - parallel.rematerialize without fssdp is one line, exit 2.
set -euo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
cd "$SOURCE_DIR"
common=(--config configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
        --data.val_path="$SHARDS/fortunes_val.tok" --model.num_layers=3
        --moe.num_experts=3 --optim.lr=0.001 --moe.bias_balance=true --train.steps=12
        --train.log_interval=1 --train.eval_interval=6 --train.eval_batches=2
        --train.threads=1 --train.peak_gflops=1 --checkpoint.interval=6)
fssdp=(--parallel.expert_sharding=fssdp --parallel.materialize_slots=2)
reshard=("${fssdp[@]}" --parallel.reshard_interval=4)
state=(--optional-buffer=.owner_load --optional-buffer=.window_load
       --optional-buffer=_w3_r4)

train_dp_ep 1 1 "$tmp/one"
train_dp_ep 4 1 "$tmp/r4" "${reshard[@]}"
cp "$tmp/err" "$tmp/r4.err"
compare "$tmp/one" "$tmp/r4" "fssdp + reshard_interval, E 3 at dp 4" --rtol 1e-5 --weights \
  "${state[@]}"
grep "expert owners moved" "$tmp/r4.err" || fail "dp 4: the owners never moved"
grep -qE "moved \(experts per rank\) layer 0: 0 1 1 1" "$tmp/r4.err" ||
  fail "dp 4: rank 0 does not give up its expert"

# exact shares: the owners of the last move (the even blocks 1 1 1 0 before any)
/usr/bin/python3 - "$tmp/one.final" "$tmp/r4.final" "$tmp/r4.err" <<'PY' || fail "shares"
import json, re, sys
final = lambda p: next(json.loads(l) for l in open(p) if l.startswith("{"))
total = final(sys.argv[1])["memory"]["parameter_bytes"][0]
mem = final(sys.argv[2])["memory"]
per_expert, experts = 3 * 32 * 32 * 4, 2 * 3
dense = total - experts * per_expert
owned = [0] * 4
moved = [l for l in open(sys.argv[3]) if "expert owners moved" in l][-1]
for layer in re.findall(r"layer \d+:((?: \d+)+)", moved):
    owned = [o + int(n) for o, n in zip(owned, layer.split())]
print(f"experts owned per rank (both layers): {owned}; parameter bytes {mem['parameter_bytes']}")
assert sum(owned) == experts, owned
assert 0 in owned, owned
assert mem["parameter_bytes"] == [dense + n * per_expert for n in owned], mem
assert mem["optimizer_state_bytes"] == [2 * b for b in mem["parameter_bytes"]], mem
PY

# re-materialisation: the same bits, fewer replica bytes held, the all-gather twice
train_dp_ep 4 1 "$tmp/remat" "${reshard[@]}" --parallel.rematerialize=true
compare "$tmp/r4" "$tmp/remat" "parallel.rematerialize at dp 4" --weights
/usr/bin/python3 - "$tmp/r4" "$tmp/remat" <<'PY' || fail "rematerialize"
import json, sys
def run(d):
    final = next(json.loads(l) for l in open(d + ".final") if l.startswith("{"))
    sparse = [r["comm"]["sparse"] for r in map(json.loads, open(d + "/metrics.jsonl"))
              if "loss" in r and "comm" in r]
    return (final["memory"]["replica_bytes"],
            [s["job_intra_node_bytes"] + s["job_inter_node_bytes"] for s in sparse])
(held, moved), (held_r, moved_r) = run(sys.argv[1]), run(sys.argv[2])
print(f"replica bytes per rank (peak): {held} -> {held_r} with rematerialize")
print(f"job sparse bytes per step: {moved[:6]} -> {moved_r[:6]} ...")
assert all(r <= h for r, h in zip(held_r, held)) and held_r != held, (held, held_r)
# steps 4, 8, 12 also move re-sharded owners on the sparse group
steps = [i for i in range(12) if (i + 1) % 4 != 0]
assert len(moved) == 12 and all(2 * moved_r[i] == 3 * moved[i] for i in steps), moved_r
assert sum(moved) > 0, moved
PY

train_dp_ep 4 1 "$tmp/so" "${reshard[@]}" --parallel.shard_optimizer=true
compare "$tmp/one" "$tmp/so" "fssdp + reshard_interval + shard_optimizer, E 3 at dp 4" \
  --rtol 1e-5 --weights "${state[@]}"
train_dp_ep 4 1 "$tmp/even" "${fssdp[@]}" --parallel.materialize_slots=0
compare "$tmp/one" "$tmp/even" "fssdp, even blocks, no slots, E 3 at dp 4" --rtol 1e-5 \
  --weights

# checkpoints: written after the re-shard, read on the same layout and on one process
ckpt=$tmp/r4/checkpoints/step_00000006.h5
train_dp_ep 4 1 "$tmp/resume" "${reshard[@]}" --parallel.rematerialize=true \
  --run.resume="$ckpt"
compare "$tmp/r4" "$tmp/resume" "E 3 at dp 4 resumed at step 6" --from 6 --weights \
  "${state[@]}"
train_dp_ep 1 1 "$tmp/to_one" --run.resume="$ckpt"
compare "$tmp/one" "$tmp/to_one" "E 3 dp-4 checkpoint on one process" --from 6 \
  --rtol 1e-5 --weights "${state[@]}"
train_dp_ep 4 1 "$tmp/from_one" "${reshard[@]}" \
  --run.resume="$tmp/one/checkpoints/step_00000006.h5"
compare "$tmp/one" "$tmp/from_one" "one-process checkpoint at dp 4, E 3, re-sharding" \
  --from 6 --rtol 1e-5 --weights "${state[@]}"

# the load window: the MoE assembly names its buffers as before
train_dp_ep 4 1 "$tmp/w3" "${reshard[@]}" --parallel.load_window=3
compare "$tmp/one" "$tmp/w3" "fssdp + load_window 3, E 3 at dp 4" --rtol 1e-5 --weights \
  "${state[@]}"
/usr/bin/python3 - "$tmp/w3/checkpoints/step_00000006.h5" <<'PY' || fail "window names"
import h5py, sys
with h5py.File(sys.argv[1], "r") as f:
    names = sorted(n for n in f["buffers"] if "load_history" in n)
print(f"load window buffers: {names}")
assert names == ["layers.1.moe.experts.load_history_w3_r4",
                 "layers.2.moe.experts.load_history_w3_r4"], names
PY

status=0
"$SOURCE_DIR/launch/mpirun.sh" -np 2 "$BUILD_DIR/moe-train" "${common[@]}" --parallel.dp=2 \
  --parallel.rematerialize=true --run.dir="$tmp/bad" </dev/null >/dev/null 2>"$tmp/err" ||
  status=$?
[[ $status == 2 ]] || { cat "$tmp/err"; fail "rematerialize without fssdp: exit $status"; }
grep -q "parallel.rematerialize: true needs parallel.expert_sharding = fssdp" "$tmp/err" ||
  { cat "$tmp/err"; fail "rematerialize without fssdp: no clear line"; }
[[ ! -e $tmp/bad ]] || fail "run.dir written despite the error"
echo PASS
