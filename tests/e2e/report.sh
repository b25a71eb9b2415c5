#!/usr/bin/env bash
# moe-report draws the pictures of a run (one process, and two ranks on two emulated
# nodes, whose inter-node bytes are not zero) and the comparison of several runs: every
# promised PNG exists, decodes, and is not blank; bad input gets one line and exit
# status 2 and writes nothing.
set -euo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
cd "$SOURCE_DIR"
common=(--config configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
        --data.val_path="$SHARDS/fortunes_val.tok" --train.steps=30 --train.log_interval=2
        --train.eval_interval=10 --train.peak_gflops=100 --run.tensorboard=false)
"$BUILD_DIR/moe-train" "${common[@]}" --run.dir="$tmp/one" >/dev/null 2>"$tmp/err" \
  || { cat "$tmp/err"; fail "moe-train"; }
launch/mpirun.sh -np 2 "$BUILD_DIR/moe-train" "${common[@]}" --parallel.dp=2 --parallel.ep=2 \
  --parallel.ranks_per_node=1 --run.dir="$tmp/two" </dev/null >/dev/null 2>"$tmp/err" \
  || { cat "$tmp/err"; fail "mpirun moe-train"; }

"$BUILD_DIR/moe-report" "$tmp/one" >"$tmp/one.txt" || fail "moe-report one run"
"$BUILD_DIR/moe-report" "$tmp/two" --out "$tmp/two-report" >"$tmp/two.txt" || fail "moe-report two"
"$BUILD_DIR/moe-report" "$tmp/one" "$tmp/two" --out "$tmp/compare" >"$tmp/compare.txt" \
  || fail "moe-report compare"
/usr/bin/python3 - "$tmp" <<'PY'
import json, os, sys
import numpy as np
from PIL import Image
tmp = sys.argv[1]
single = ["curves", "throughput", "expert_load", "expert_load_final", "expert_balance",
          "communication"]
want = {"one.txt": [f"{tmp}/one/report/{n}.png" for n in single],
        "two.txt": [f"{tmp}/two-report/{n}.png" for n in single],
        "compare.txt": [f"{tmp}/compare/compare.png"]}
for listing, paths in want.items():
    printed = open(f"{tmp}/{listing}").read().split()
    assert printed == paths, (printed, paths)
    for path in paths:
        image = np.asarray(Image.open(path).convert("L"), dtype=float)
        assert image.shape[0] > 300 and image.shape[1] > 600, (path, image.shape)
        assert image.std() > 10, f"{path} looks blank"
# The two-rank run crossed its two nodes: its communication picture has data to show.
record = [json.loads(l) for l in open(f"{tmp}/two/metrics.jsonl") if '"loss"' in l][-1]
assert record["comm"]["ep"]["job_inter_node_bytes"] > 0, record["comm"]["ep"]
print("moe-report: 13 pictures, all decoded and non-blank")
PY

expect_error() {  # expect_error PATTERN ARGS...: exit status 2, one line matching PATTERN
  local pattern=$1; shift
  local status=0
  "$BUILD_DIR/moe-report" "$@" >/dev/null 2>"$tmp/err" || status=$?
  [[ $status == 2 && $(wc -l <"$tmp/err") == 1 ]] || { cat "$tmp/err"; fail "$*: status $status"; }
  grep -q -- "$pattern" "$tmp/err" || fail "$*: message '$(cat "$tmp/err")' lacks '$pattern'"
}
expect_error "$tmp/none: no metrics.jsonl" "$tmp/none"
expect_error "--out: required with several run directories" "$tmp/one" "$tmp/two"
touch "$tmp/file"
expect_error "--out: '$tmp/file' exists and is not a directory" "$tmp/one" --out "$tmp/file"
expect_error "unrecognized arguments: --bogus" "$tmp/one" --bogus
mkdir "$tmp/torn" && echo '{"step": 1, "loss": 2.0}' >"$tmp/torn/metrics.jsonl"
echo 'not json' >>"$tmp/torn/metrics.jsonl"
expect_error "metrics.jsonl: line 2 is not JSON" "$tmp/torn"
[[ ! -e $tmp/none && ! -e $tmp/torn/report ]] || fail "a rejected report wrote files"
echo "PASS"
