#!/usr/bin/env bash
# Checkpoints of one process (docs/checkpoint-format.md):
#   - checkpoint.interval / checkpoint.keep / checkpoint.dir: the files and `latest`;
#   - run.resume=PATH continues bit-identically (every logged step and the final
#     weights equal the uninterrupted run's), run.resume=auto continues the run of its
#     run.dir (metrics.jsonl then reads as the uninterrupted run's) and starts fresh
#     when there is no checkpoint yet;
#   - run.init_from loads weights and router biases only (checkpoint or weights file);
#   - bad checkpoints: exit status 2, one line, nothing written or overwritten;
#   - moe-ckpt info / verify / export and their errors.
set -uo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
cd "$SOURCE_DIR"
compare() { /usr/bin/python3 tests/e2e/compare_runs.py "$@" || fail "$3"; }
common=(--config configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
        --data.val_path="$SHARDS/fortunes_val.tok" --train.steps=20 --train.log_interval=1
        --train.eval_interval=10 --train.eval_batches=2 --train.threads=1
        --train.peak_gflops=1 --moe.bias_balance=true)
train() {  # train RUN_DIR ARGS...
  local dir=$1; shift
  "$BUILD_DIR/moe-train" "${common[@]}" --run.dir="$dir" "$@" >"$tmp/out" 2>"$tmp/err" \
    || { cat "$tmp/err"; fail "moe-train --run.dir=$dir $*"; }
}

# The uninterrupted run: checkpoints every 5 steps, the newest 2 kept.
train "$tmp/a" --checkpoint.interval=5 --checkpoint.keep=2
[[ $(ls "$tmp/a/checkpoints") == $'latest\nstep_00000015.h5\nstep_00000020.h5' ]] \
  || fail "retention: $(ls "$tmp/a/checkpoints" | tr '\n' ' ')"
[[ $(cat "$tmp/a/checkpoints/latest") == step_00000020.h5 ]] || fail "latest"
train "$tmp/dir_run" --checkpoint.interval=10 --checkpoint.dir="$tmp/elsewhere"
[[ -f $tmp/elsewhere/step_00000010.h5 && ! -e $tmp/dir_run/checkpoints ]] || fail "checkpoint.dir"

# Resume from a path into a new run directory: steps 16..20 and the final weights.
train "$tmp/b" --run.resume="$tmp/a/checkpoints/step_00000015.h5"
grep -q "resumed from .*step_00000015.h5 at step 15" "$tmp/err" || fail "no resume line"
compare "$tmp/a" "$tmp/b" "resume from step 15" --from 15 --weights

# Resuming the last checkpoint of a finished run trains nothing and still reports.
train "$tmp/g" --run.resume="$tmp/a/checkpoints/step_00000020.h5"
tail -n 1 "$tmp/out" | grep -q '"val_loss"' || fail "resume at the last step: $(tail -n 1 "$tmp/out")"

# resume=auto in the run's own directory after a crash at step 17: the pointer still
# names step 15, metrics.jsonl has records up to 17 and the checkpoint of step 20 does
# not exist yet. The continued metrics.jsonl is the uninterrupted run's.
cp -r "$tmp/a" "$tmp/c"
rm "$tmp/c/checkpoints/step_00000020.h5" "$tmp/c/model.h5"
echo step_00000015.h5 >"$tmp/c/checkpoints/latest"
head -n 18 "$tmp/a/metrics.jsonl" >"$tmp/c/metrics.jsonl"  # eval at 0, steps 1..17
train "$tmp/c" --checkpoint.interval=5 --checkpoint.keep=2 --run.resume=auto
compare "$tmp/a" "$tmp/c" "resume=auto after a crash" --weights
[[ $(wc -l <"$tmp/c/metrics.jsonl") == $(wc -l <"$tmp/a/metrics.jsonl") ]] \
  || fail "metrics.jsonl of the resumed run has $(wc -l <"$tmp/c/metrics.jsonl") lines"

# resume=auto with no checkpoint yet is a fresh start.
train "$tmp/d" --run.resume=auto
grep -q "no checkpoint in .*starting fresh" "$tmp/err" || fail "auto without a checkpoint"
compare "$tmp/a" "$tmp/d" "resume=auto, fresh start" --weights

# init_from: weights and router biases only, fresh optimizer and schedule. A weights
# file (model.h5) and the checkpoint of the same step give the same run.
train "$tmp/e1" --train.steps=3 --run.init_from="$tmp/a/model.h5"
train "$tmp/e2" --train.steps=3 --run.init_from="$tmp/a/checkpoints/step_00000020.h5"
compare "$tmp/e1" "$tmp/e2" "init_from model.h5 = init_from checkpoint"
/usr/bin/python3 - "$tmp/a/metrics.jsonl" "$tmp/e1/metrics.jsonl" <<'PY' || fail "init_from"
import json, sys
a, e = ([r for r in map(json.loads, open(p)) if "loss" in r] for p in sys.argv[1:])
assert e[0]["loss"] < a[0]["loss"] - 0.5, (e[0]["loss"], a[0]["loss"])  # trained weights
assert e[0]["lr"] == a[0]["lr"], "the schedule did not start afresh"    # warmup step 1
PY
echo "ok: retention, checkpoint.dir, resume by path and auto (bit-identical), init_from"

# ---- bad checkpoints ----
ck=$tmp/a/checkpoints/step_00000020.h5
# mutate SRC DST PYTHON: copy SRC to DST, run PYTHON with f = h5py.File(DST, "r+"), then
# reseal the attributes checksum (tests/reference/h5_attrs.py), so that the reader sees
# the changed value itself rather than a failed checksum.
mutate() {
  cp "$1" "$2"
  /usr/bin/python3 -c "import sys; sys.path.insert(0, '$SOURCE_DIR/tests/reference')
import h5py, numpy as np, h5_attrs
f = h5py.File('$2', 'r+')
$3
if f.id.valid and f.mode == 'r+': h5_attrs.seal(f)
f.close()"
}
cp "$ck" "$tmp/short.h5"; truncate -s 200000 "$tmp/short.h5"
/usr/bin/python3 -c "import h5py; h5py.File('$tmp/foreign.h5', 'w')['model/x'] = [1.0]"
mutate "$ck" "$tmp/v1.h5" "f.attrs['format_version'] = np.int64(1)"
mutate "$ck" "$tmp/family.h5" "f.attrs['model_family'] = np.bytes_('vit_moe')"
mutate "$ck" "$tmp/flipped.h5" "
ds = f['optim/layers.1.moe.experts.w_up/exp_avg']
off = ds.id.get_offset()
f.close()
raw = open('$tmp/flipped.h5', 'r+b'); raw.seek(off + 64); raw.write(b'\x12\x34'); raw.close()
f = h5py.File('$tmp/flipped.h5', 'r')"

checked=0
expect_error() {  # NAME PATTERN ARGS...: exit 2, one line matching PATTERN, no run.dir
  local name=$1 pattern=$2; shift 2
  local dir=$tmp/bad_$name
  "$BUILD_DIR/moe-train" "${common[@]}" --run.dir="$dir" "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  [[ $rc -eq 2 ]] || { cat "$tmp/err"; fail "$name: exit status $rc, expected 2"; }
  [[ $(wc -l <"$tmp/err") -eq 1 ]] || { cat "$tmp/err"; fail "$name: expected one line"; }
  grep -q -- "$pattern" "$tmp/err" || { cat "$tmp/err"; fail "$name: message lacks '$pattern'"; }
  [[ ! -e $dir ]] || fail "$name: $dir was created"
  echo "ok $name: $(cat "$tmp/err")"
  checked=$((checked + 1))
}
expect_error missing "run.resume: file .* does not exist" --run.resume="$tmp/none.h5"
expect_error missing_init "run.init_from: file .* does not exist" --run.init_from="$tmp/none.h5"
expect_error truncated "truncated file" --run.resume="$tmp/short.h5"
expect_error truncated_init "truncated file" --run.init_from="$tmp/short.h5"
expect_error foreign "not a moe checkpoint" --run.resume="$tmp/foreign.h5"
expect_error wrong_version "format version 1 is not supported (this build reads version 3)" \
  --run.resume="$tmp/v1.h5"
expect_error wrong_family "holds a vit_moe model, but model.family is moe_gpt" --run.resume="$tmp/family.h5"
expect_error wrong_model "parameter layers.2.* is missing" --run.resume="$ck" --model.num_layers=3
expect_error shape_mismatch \
  "parameter layers.1.moe.experts.w_gate has shape (4, 32, 32) in the checkpoint, the model expects (4, 48, 32)" \
  --run.resume="$ck" --moe.expert_ffn=48
expect_error corrupted "exp_avg fails its checksum" --run.resume="$tmp/flipped.h5"
expect_error weights_file "a weights file" --run.resume="$tmp/a/model.h5"

# resume=auto into a run whose latest checkpoint is damaged: nothing is touched.
cp -r "$tmp/a" "$tmp/f"; cp "$tmp/flipped.h5" "$tmp/f/checkpoints/step_00000020.h5"
(cd "$tmp/f" && find . -type f -exec md5sum {} + | sort) >"$tmp/f.before"
"$BUILD_DIR/moe-train" "${common[@]}" --run.dir="$tmp/f" --run.resume=auto >/dev/null 2>"$tmp/err"
rc=$?
[[ $rc -eq 2 && $(wc -l <"$tmp/err") -eq 1 ]] || { cat "$tmp/err"; fail "damaged latest: exit $rc"; }
(cd "$tmp/f" && find . -type f -exec md5sum {} + | sort) | cmp -s - "$tmp/f.before" \
  || fail "damaged latest: the run directory was changed"
checked=$((checked + 1))
echo "ok damaged_latest: $(cat "$tmp/err")"

# ---- moe-ckpt ----
"$BUILD_DIR/moe-ckpt" info "$ck" --json >"$tmp/info.json" || fail "moe-ckpt info"
/usr/bin/python3 - "$tmp/info.json" <<'PY' || fail "moe-ckpt info --json"
import json, sys
i = json.load(open(sys.argv[1]))
assert i["format"] == "moe-checkpoint" and i["format_version"] == 3 and i["step"] == 20, i
assert i["model_family"] == "moe_gpt" and i["layout"]["world_size"] == 1
assert i["tensors"]["layers.1.moe.experts.w_up"] == {"shape": [4, 32, 32], "shard": "expert-column"}
assert "layers.1.moe.router.bias" in i["buffers"] and "[model]" in i["config"]
PY
"$BUILD_DIR/moe-ckpt" info "$ck" | grep -q "step  *20" || fail "moe-ckpt info"
"$BUILD_DIR/moe-ckpt" verify "$ck" | grep -q ": ok (moe-checkpoint version 3, " || fail "verify"
"$BUILD_DIR/moe-ckpt" verify "$tmp/a/model.h5" >/dev/null || fail "verify model.h5"
expect_ckpt_error() {  # NAME PATTERN ARGS...
  local name=$1 pattern=$2; shift 2
  "$BUILD_DIR/moe-ckpt" "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  [[ $rc -eq 2 && $(wc -l <"$tmp/err") -eq 1 ]] || { cat "$tmp/err"; fail "moe-ckpt $name: exit $rc"; }
  grep -q -- "$pattern" "$tmp/err" || { cat "$tmp/err"; fail "moe-ckpt $name: lacks '$pattern'"; }
  echo "ok moe-ckpt $name: $(cat "$tmp/err")"
  checked=$((checked + 1))
}
expect_ckpt_error verify_corrupted "exp_avg fails its checksum" verify "$tmp/flipped.h5"
expect_ckpt_error verify_truncated "truncated file" verify "$tmp/short.h5"
expect_ckpt_error verify_foreign "not a moe checkpoint" verify "$tmp/foreign.h5"
expect_ckpt_error verify_missing "no such file" verify "$tmp/none.h5"
expect_ckpt_error verify_version "format version 1" verify "$tmp/v1.h5"
expect_ckpt_error bad_command "not a command" frobnicate "$ck"
touch "$tmp/exists.safetensors"
expect_ckpt_error export_overwrite "exists; not overwriting" export "$ck" --out "$tmp/exists.safetensors"
[[ ! -s $tmp/exists.safetensors ]] || fail "export overwrote a file"
echo "$checked passed, 0 failed"
