#!/usr/bin/env bash
# mpi-ranks: 4
# A failure on one rank ends the whole job quickly with its message and a non-zero
# exit, never a hang:
#   - rank 2 alone finds a truncated token shard (it runs in a directory where the
#     config's relative data path points at a broken file): exit 2, "[rank 2]" and the
#     file named, within seconds, nothing written;
#   - rank 1 alone gets a different config (an extra override): the mismatch is
#     detected at start-up on every rank.
set -euo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
mkdir -p "$tmp/good/data" "$tmp/bad/data"
cp "$SHARDS"/fortunes_{train,val}.tok "$tmp/good/data/"
cp "$SHARDS/fortunes_val.tok" "$tmp/bad/data/"
head -c 1000 "$SHARDS/fortunes_train.tok" >"$tmp/bad/data/fortunes_train.tok"  # truncated

train=("$BUILD_DIR/moe-train" --config "$SOURCE_DIR/configs/moe_gpt_tiny.ini"
       --data.train_path=data/fortunes_train.tok --data.val_path=data/fortunes_val.tok
       --train.steps=5 --train.threads=1 --parallel.dp=4 --parallel.ep=2)
mpirun=("$SOURCE_DIR/launch/mpirun.sh")

# MPMD: ranks 0, 1 and 3 in good/, rank 2 in bad/
start=$SECONDS
set +e
timeout 120 "${mpirun[@]}" -np 2 --wdir "$tmp/good" "${train[@]}" --run.dir="$tmp/run1" : \
  -np 1 --wdir "$tmp/bad" "${train[@]}" --run.dir="$tmp/run1" : \
  -np 1 --wdir "$tmp/good" "${train[@]}" --run.dir="$tmp/run1" >"$tmp/out1" 2>"$tmp/err1"
rc=$?
set -e
elapsed=$((SECONDS - start))
cat "$tmp/err1" >&2
[[ $rc != 124 ]] || fail "the job hung (killed by timeout after 120 s)"
[[ $rc == 2 ]] || fail "exit status $rc, expected 2 (bad input)"
grep -q "\[rank 2\] moe-train: .*fortunes_train.tok" "$tmp/err1" || fail "no message from rank 2 naming the file"
(( elapsed < 60 )) || fail "took ${elapsed}s to end the job"
[[ ! -e $tmp/run1 ]] || fail "run.dir was written although the job failed at start-up"

# rank 1 alone with a different learning rate
set +e
timeout 120 "${mpirun[@]}" -np 1 --wdir "$tmp/good" "${train[@]}" --run.dir="$tmp/run2" : \
  -np 1 --wdir "$tmp/good" "${train[@]}" --run.dir="$tmp/run2" --optim.lr=0.5 : \
  -np 2 --wdir "$tmp/good" "${train[@]}" --run.dir="$tmp/run2" >"$tmp/out2" 2>"$tmp/err2"
rc=$?
set -e
cat "$tmp/err2" >&2
[[ $rc != 124 ]] || fail "the job hung on mismatched configs"
[[ $rc == 2 ]] || fail "exit status $rc on mismatched configs, expected 2"
grep -q "config differs between ranks" "$tmp/err2" || fail "mismatch not reported"
[[ ! -e $tmp/run2 ]] || fail "run.dir was written although the configs differ"
echo "PASS (failure on rank 2 ended the job in ${elapsed}s)"
