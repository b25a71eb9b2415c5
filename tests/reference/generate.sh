#!/usr/bin/env bash
# moe-generate on a tiny trained moe_gpt: greedy generation (KV cache) equals the
# float64 PyTorch reference's (full recomputation per token) token for token, for the
# default routing and for renormalised, bias-balanced routing; a checkpoint gives what
# model.h5 gives; a sampled run repeats for a fixed seed and changes with the seed;
# streaming text output, prompts from stdin, and one-line errors with exit status 2.
set -euo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
cd "$SOURCE_DIR"
gen=$BUILD_DIR/moe-generate
printf 'The meaning of life is\nQ: What do you call\nA fool and his money\n' >"$tmp/prompts.txt"
for case in "default|" "bias_renorm|--moe.bias_balance=true --moe.renormalize=true"; do
  name=${case%%|*} extra=${case#*|}
  # shellcheck disable=SC2086
  "$BUILD_DIR/moe-train" --config configs/moe_gpt_tiny.ini --train.steps=60 \
    --data.train_path="$SHARDS/fortunes_train.tok" --data.val_path="$SHARDS/fortunes_val.tok" \
    --train.peak_gflops=100 --run.dir="$tmp/$name" $extra >/dev/null 2>"$tmp/err" \
    || { cat "$tmp/err"; fail "moe-train ($name)"; }
  "$gen" --checkpoint "$tmp/$name/model.h5" --prompts "$tmp/prompts.txt" --temperature 0 \
    --max-new-tokens 48 --jsonl >"$tmp/$name.jsonl" 2>/dev/null || fail "moe-generate ($name)"
  /usr/bin/python3 tests/reference/compare_generate.py "$tmp/$name/model.h5" \
    "$tmp/prompts.txt" "$tmp/$name.jsonl" || fail "greedy generation differs ($name)"
done
model=$tmp/default/model.h5

# The final checkpoint holds the same weights as model.h5.
"$gen" --checkpoint "$tmp/default/checkpoints/step_00000060.h5" --prompts "$tmp/prompts.txt" \
  --temperature 0 --max-new-tokens 48 --jsonl >"$tmp/ckpt.jsonl" 2>/dev/null
cmp "$tmp/ckpt.jsonl" "$tmp/default.jsonl" || fail "checkpoint and model.h5 generate differently"

# Sampling: the same seed repeats the run, another seed changes it.
sample=(--checkpoint "$model" --prompts "$tmp/prompts.txt" --max-new-tokens 64
        --temperature 0.9 --top-k 40 --top-p 0.95 --jsonl)
"$gen" "${sample[@]}" --seed 7 >"$tmp/s7a.jsonl" 2>/dev/null
"$gen" "${sample[@]}" --seed 7 >"$tmp/s7b.jsonl" 2>/dev/null
"$gen" "${sample[@]}" --seed 8 >"$tmp/s8.jsonl" 2>/dev/null
cmp "$tmp/s7a.jsonl" "$tmp/s7b.jsonl" || fail "seed 7 twice gave two different runs"
! cmp -s "$tmp/s7a.jsonl" "$tmp/s8.jsonl" || fail "seeds 7 and 8 gave the same run"
# A prompt's draws depend on its index, not on the other prompts of the batch.
head -n 1 "$tmp/prompts.txt" | "$gen" "${sample[@]/$tmp\/prompts.txt/-}" --seed 7 \
  >"$tmp/s7one.jsonl" 2>/dev/null
cmp "$tmp/s7one.jsonl" <(head -n 1 "$tmp/s7a.jsonl") || fail "prompt 0 alone differs from prompt 0 in a batch"

# Text output: the prompt, then its new bytes, then a line break.
"$gen" --checkpoint "$model" --prompt "The meaning of life is" --temperature 0 \
  --max-new-tokens 48 >"$tmp/text.out" 2>/dev/null
/usr/bin/python3 - "$tmp/text.out" "$tmp/default.jsonl" <<'PY'
import json, sys
text = open(sys.argv[1], "rb").read()
first = json.loads(open(sys.argv[2]).readline())
assert text == b"The meaning of life is" + bytes(first["tokens"]) + b"\n", text
PY

expect_error() {  # expect_error PATTERN ARGS...: exit status 2, one line matching PATTERN
  local pattern=$1; shift
  local status=0
  "$gen" "$@" >/dev/null 2>"$tmp/err" </dev/null || status=$?
  [[ $status == 2 && $(wc -l <"$tmp/err") == 1 ]] || { cat "$tmp/err"; fail "$*: status $status"; }
  grep -q -- "$pattern" "$tmp/err" || fail "$*: message '$(cat "$tmp/err")' lacks '$pattern'"
}
expect_error "--top-p: must be in (0, 1]" --checkpoint "$model" --prompt x --top-p 0
expect_error "--temperature: '-' is not a number" --checkpoint "$model" --prompt x --temperature -
expect_error "--max-new-tokens: must be at least 1" --checkpoint "$model" --prompt x --max-new-tokens 0
expect_error "exactly one of --prompt TEXT and --prompts FILE" --checkpoint "$model"
expect_error "--checkpoint: '$tmp/none.h5' does not exist" --checkpoint "$tmp/none.h5" --prompt x
printf 'a\n\nb\n' >"$tmp/blank.txt"
expect_error "--prompts: line 2 of '$tmp/blank.txt' is empty" --checkpoint "$model" --prompts "$tmp/blank.txt"
echo "not hdf5" >"$tmp/bad.h5"
expect_error "not an HDF5 file" --checkpoint "$tmp/bad.h5" --prompt x
echo "PASS"
