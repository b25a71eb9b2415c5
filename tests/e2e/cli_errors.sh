#!/usr/bin/env bash
# The bad-input contract of moe-train: each class of bad input gets exit status 2 and
# one line naming the key, file or value, and nothing is written or overwritten.
set -uo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
cd "$SOURCE_DIR"
base=(--config configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
      --data.val_path="$SHARDS/fortunes_val.tok" --train.steps=2)
checked=0

# expect_error NAME PATTERN ARGS...: exit 2, a single stderr line matching PATTERN,
# and no run directory created.
expect_error() {
  local name=$1 pattern=$2; shift 2
  local dir=$tmp/run_$name
  "$BUILD_DIR/moe-train" "$@" --run.dir="$dir" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  [[ $rc -eq 2 ]] || { cat "$tmp/err"; fail "$name: exit status $rc, expected 2"; }
  [[ $(wc -l <"$tmp/err") -eq 1 ]] || { cat "$tmp/err"; fail "$name: expected one line"; }
  grep -q -- "$pattern" "$tmp/err" || { cat "$tmp/err"; fail "$name: message lacks '$pattern'"; }
  [[ ! -e $dir ]] || fail "$name: $dir was created"
  echo "ok $name: $(cat "$tmp/err")"
  checked=$((checked + 1))
}

printf '[model]\nd_model = 32\nwidth = 3\n' >"$tmp/unknown.ini"
printf '[model\nd_model = 32\n' >"$tmp/syntax.ini"
expect_error unknown_key_file "model.width" --config "$tmp/unknown.ini"
expect_error syntax_error_file "syntax.ini" --config "$tmp/syntax.ini"
expect_error unknown_key_cli "model.widht" "${base[@]}" --model.widht=3
expect_error bad_integer "train.steps" "${base[@]}" --train.steps=abc
expect_error bad_float "optim.lr" "${base[@]}" --optim.lr=fast
expect_error negative_size "model.d_model" "${base[@]}" --model.d_model=-4
expect_error top_k_over_experts "moe.top_k" "${base[@]}" --moe.top_k=9
expect_error heads_divide_width "model.num_heads" "${base[@]}" --model.num_heads=5
expect_error bad_schedule "optim.schedule" "${base[@]}" --optim.schedule=linearish
expect_error missing_config "nope.ini" --config "$tmp/nope.ini"
expect_error missing_data "data.train_path" "${base[@]}" --data.train_path="$tmp/none.tok"
printf 'not a token shard at all, just text that is long enough.......' >"$tmp/foreign.tok"
expect_error foreign_data "foreign.tok" "${base[@]}" --data.train_path="$tmp/foreign.tok"
# run.device: a bad name, and cuda without the backend or without a visible GPU, are
# refused by name before anything is written; so is (with the backend) a layout cuda
# does not train yet, by its option.
expect_error bad_device "run.device" "${base[@]}" --run.device=gpu
if ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  expect_error cuda_device "run.device: cuda" "${base[@]}" --run.device=cuda
fi
if grep -q '^MOE_WITH_CUDA:BOOL=ON' "$BUILD_DIR/CMakeCache.txt"; then
  expect_error cuda_bf16_wire "moe.a2a_dtype: bf16" "${base[@]}" --run.device=cuda \
    --moe.a2a_dtype=bf16
fi
expect_error share_gpus_on_cpu "run.share_gpus" "${base[@]}" --run.share_gpus=true

# An existing run is never overwritten without run.overwrite=true.
mkdir -p "$tmp/taken"; echo '{"step": 1}' >"$tmp/taken/metrics.jsonl"
"$BUILD_DIR/moe-train" "${base[@]}" --run.dir="$tmp/taken" >"$tmp/out" 2>"$tmp/err"
rc=$?
[[ $rc -eq 2 ]] || { cat "$tmp/err"; fail "existing run: exit status $rc, expected 2"; }
grep -q "run.dir" "$tmp/err" || fail "existing run: message does not name run.dir"
[[ $(cat "$tmp/taken/metrics.jsonl") == '{"step": 1}' ]] || fail "existing run was overwritten"
checked=$((checked + 1))
echo "$checked passed, 0 failed"
