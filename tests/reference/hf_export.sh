#!/usr/bin/env bash
# moe-ckpt export --format hf: transformers (pinned, launch/python-env.sh) loads the
# directory with AutoModelForCausalLM as Qwen2MoeForCausalLM and its logits on a batch
# equal ours to 1e-4 relative, for a dense-first model with a shared expert and for one
# with renormalised top-k, no shared expert and an MoE first layer; AutoTokenizer loads
# the byte-level tokenizer; transformers' greedy generate() picks moe-generate's tokens;
# the fine-tuning example of docs/examples runs on the export. Options without an exact
# Qwen2-MoE counterpart, other families and an existing --out are refused with one line
# and exit status 2, writing nothing.
set -euo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
require_fashion_mnist
python=$(bash "$SOURCE_DIR/launch/python-env.sh")
cd "$SOURCE_DIR"
train() {  # train NAME STEPS ARGS...
  local name=$1 steps=$2; shift 2
  "$BUILD_DIR/moe-train" --config configs/moe_gpt_tiny.ini --train.steps="$steps" \
    --data.train_path="$SHARDS/fortunes_train.tok" --data.val_path="$SHARDS/fortunes_val.tok" \
    --train.peak_gflops=100 --run.tensorboard=false --run.dir="$tmp/$name" "$@" \
    >/dev/null 2>"$tmp/err" || { cat "$tmp/err"; fail "moe-train ($name)"; }
}
# Four validation sequences of 32 tokens as the batch.
/usr/bin/python3 - "$SHARDS/fortunes_val.tok" >"$tmp/batch.txt" <<'PY'
import struct, sys
raw = open(sys.argv[1], "rb").read()
width = struct.unpack("<I", raw[12:16])[0]
ids = struct.unpack(f"<{2000}{'H' if width == 2 else 'I'}", raw[32:32 + 2000 * width])
for b in range(4):
    print(" ".join(map(str, ids[b * 500:b * 500 + 32])))
PY
printf 'The meaning of life is\nQ: What do you call\n' >"$tmp/prompts.txt"
train base 60
train renorm 30 --moe.renormalize=true --moe.num_shared=0 --model.dense_layers=0 --moe.top_k=1
for name in base renorm; do
  "$BUILD_DIR/moe-ckpt" export "$tmp/$name/model.h5" --format hf --out "$tmp/$name-hf" \
    >/dev/null 2>"$tmp/err" || { cat "$tmp/err"; fail "export ($name)"; }
  "$BUILD_DIR/tests/dump_logits" "$tmp/$name/model.h5" "$tmp/batch.txt" "$tmp/$name.f32"
  "$BUILD_DIR/moe-generate" --checkpoint "$tmp/$name/model.h5" --prompts "$tmp/prompts.txt" \
    --temperature 0 --max-new-tokens 24 --jsonl >"$tmp/$name.jsonl" 2>/dev/null
  "$python" tests/reference/compare_hf.py "$tmp/$name-hf" "$tmp/batch.txt" "$tmp/$name.f32" \
    "$tmp/$name.jsonl" "$tmp/prompts.txt" || fail "transformers disagrees ($name)"
done
# A checkpoint exports like model.h5.
"$BUILD_DIR/moe-ckpt" export "$tmp/base/checkpoints/step_00000060.h5" --format hf \
  --out "$tmp/ckpt-hf" >/dev/null
cmp "$tmp/ckpt-hf/config.json" "$tmp/base-hf/config.json" || fail "config.json of the checkpoint differs"

"$python" docs/examples/finetune_hf.py "$tmp/base-hf" --text /usr/share/games/fortunes/science \
  --steps 20 --out "$tmp/tuned" >"$tmp/tune.out" 2>&1 || { cat "$tmp/tune.out"; fail "finetune_hf.py"; }
grep -q "held-out loss" "$tmp/tune.out" && [[ -f $tmp/tuned/model.safetensors ]] \
  || { cat "$tmp/tune.out"; fail "finetune_hf.py did not report and save"; }
tail -n 2 "$tmp/tune.out"

# With capacity, the export succeeds and says the exported model is dropless.
train capacity 1 --moe.capacity_factor=1.25
"$BUILD_DIR/moe-ckpt" export "$tmp/capacity/model.h5" --format hf --out "$tmp/capacity-hf" \
  >/dev/null 2>"$tmp/err" || { cat "$tmp/err"; fail "export with capacity"; }
grep -q "note: moe.capacity_factor = 1.25.* dropless" "$tmp/err" || fail "no dropless note: $(cat "$tmp/err")"

refuse() {  # refuse PATTERN MODEL OUT: exit 2, one line matching PATTERN, nothing at OUT
  local status=0
  "$BUILD_DIR/moe-ckpt" export "$2" --format hf --out "$3" >/dev/null 2>"$tmp/err" || status=$?
  [[ $status == 2 && $(wc -l <"$tmp/err") == 1 ]] || { cat "$tmp/err"; fail "$2: status $status"; }
  grep -q -- "$1" "$tmp/err" || fail "message '$(cat "$tmp/err")' lacks '$1'"
}
train bias 2 --moe.bias_balance=true
refuse "moe.bias_balance = true" "$tmp/bias/model.h5" "$tmp/bias-hf"
train gelu 1 --moe.expert_act=gelu
refuse "moe.expert_act = gelu" "$tmp/gelu/model.h5" "$tmp/gelu-hf"
"$BUILD_DIR/moe-train" --config configs/dit_moe_tiny.ini --train.steps=1 --train.peak_gflops=100 \
  --run.dir="$tmp/dit" >/dev/null 2>&1 || fail "moe-train (dit)"
refuse "holds a dit_moe model; only moe_gpt" "$tmp/dit/model.h5" "$tmp/dit-hf"
refuse "--out: '$tmp/base-hf' exists; not overwriting it" "$tmp/base/model.h5" "$tmp/base-hf"
for out in bias-hf gelu-hf dit-hf; do [[ ! -e $tmp/$out ]] || fail "a refused export wrote $out"; done
[[ -z $(find "$tmp" -maxdepth 1 -name '*.tmp-*') ]] || fail "a temporary export directory was left"
echo "PASS"
