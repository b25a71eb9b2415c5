#!/usr/bin/env bash
# Training with run.device = cuda on one GPU (docs/gpu.md, "Training on the GPU"):
#   - the tiny configs of the three families train 20 steps in fp32 on the GPU, and every
#     step's loss matches the CPU run's to 1e-4 relative (grad norms and aux losses to
#     1e-3, expert loads within 1% of a step's assignments: a token at a near-tie may
#     take the other expert; weights are not compared: AdamW's normalised step turns the
#     rounding of a near-zero gradient into a step of lr);
#   - a GPU run resumed from its step-10 checkpoint repeats the uninterrupted GPU run bit
#     for bit (every logged step and the final weights);
#   - the GPU's checkpoint loads on the CPU: resumed there, the run follows the GPU's
#     losses to 1e-4 relative;
#   - on a node with two GPUs, dp = 2 (NCCL gradient buckets) follows the one-GPU run's
#     losses to 1e-4 relative;
#   - train.precision = bf16 with run.device = cuda is refused: one line naming the key,
#     exit status 2, nothing written.
# Skipped (exit 77, CTest's skip code) when nvidia-smi lists no GPU, unless
# MOE_GPU_REQUIRED=1 (tests/gpu/run.sh), which makes that a failure. Needs the e2e
# tests' Python (numpy, h5py) and Fashion-MNIST, like tests/e2e.
set -euo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
if ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  [[ ${MOE_GPU_REQUIRED:-0} == 1 ]] && fail "MOE_GPU_REQUIRED=1 but nvidia-smi lists no GPU"
  echo "SKIPPED: no NVIDIA GPU visible (nvidia-smi -L)"
  exit 77
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
require_fashion_mnist
cd "$SOURCE_DIR"
lm=(--config configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
    --data.val_path="$SHARDS/fortunes_val.tok")
train() {  # train RUN_DIR ARGS...
  local dir=$1; shift
  "$BUILD_DIR/moe-train" --run.dir="$dir" --train.steps=20 --train.log_interval=1 "$@" \
    >"$dir.out" 2>"$dir.err" \
    || { cat "$dir.err"; fail "moe-train --run.dir=$dir $*"; }
}
compare() { /usr/bin/python3 tests/e2e/compare_runs.py "$@" || fail "$3"; }

# fp32 on the GPU against the CPU, each family
for family in moe_gpt vit_moe dit_moe; do
  args=(--config "configs/${family}_tiny.ini")
  [[ $family == moe_gpt ]] && args=("${lm[@]}")
  train "$tmp/$family-cpu" "${args[@]}"
  train "$tmp/$family-gpu" "${args[@]}" --run.device=cuda
  grep -q "device cuda:" "$tmp/$family-gpu.err" ||
    fail "$family: no GPU in the start-up line: $(head -3 "$tmp/$family-gpu.err")"
  compare "$tmp/$family-cpu" "$tmp/$family-gpu" "$family fp32 GPU vs CPU" --rtol 1e-4 \
    --loads-differ 0.01
done

# Resume on the GPU, bit for bit; the GPU's checkpoint continued on the CPU
ckpt=(--checkpoint.interval=10 --train.eval_interval=10 --moe.bias_balance=true)
train "$tmp/a" "${lm[@]}" "${ckpt[@]}" --run.device=cuda
train "$tmp/b" "${lm[@]}" "${ckpt[@]}" --run.device=cuda \
  --run.resume="$tmp/a/checkpoints/step_00000010.h5"
compare "$tmp/a" "$tmp/b" "GPU resume from step 10" --from 10 --weights
train "$tmp/c" "${lm[@]}" "${ckpt[@]}" --run.resume="$tmp/a/checkpoints/step_00000010.h5"
compare "$tmp/a" "$tmp/c" "the GPU's step-10 checkpoint continued on the CPU" --from 10 \
  --rtol 1e-4 --loads-differ 0.01

# Data parallelism over two GPUs (the NCCL gradient buckets), where the node has two: the
# same losses as the one-GPU run to 1e-4 relative
if (( $(nvidia-smi -L | grep -c '^GPU ') >= 2 )); then
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe \
    --bind-to none -np 2 "$BUILD_DIR/moe-train" "${lm[@]}" --run.device=cuda \
    --parallel.dp=2 --run.dir="$tmp/dp2" --train.steps=20 --train.log_interval=1 \
    </dev/null >"$tmp/dp2.out" 2>"$tmp/dp2.err" || { cat "$tmp/dp2.err"; fail "dp=2 on two GPUs"; }
  compare "$tmp/moe_gpt-gpu" "$tmp/dp2" "moe_gpt dp=2 on two GPUs vs one" --rtol 1e-4 \
    --loads-differ 0.01
else
  echo "dp=2 on two GPUs: skipped (this node has one GPU)"
fi

# Not wired yet: refused before anything is written
set +e
"$BUILD_DIR/moe-train" "${lm[@]}" --run.dir="$tmp/bf16" --run.device=cuda \
  --train.precision=bf16 >/dev/null 2>"$tmp/bf16.err"
status=$?
set -e
[[ $status == 2 ]] || fail "bf16 on the GPU: exit status $status, expected 2"
[[ $(wc -l <"$tmp/bf16.err") == 1 ]] && grep -q "train.precision: bf16" "$tmp/bf16.err" ||
  fail "bf16 on the GPU: $(cat "$tmp/bf16.err")"
[[ ! -e $tmp/bf16 ]] || fail "bf16 on the GPU: $tmp/bf16 was written"
echo "train_gpu: all checks passed"
