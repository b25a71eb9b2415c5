#!/usr/bin/env bash
# Bad bytes never crash a reader, and never change what it loads unnoticed: random
# single-bit flips of a tiny checkpoint and of its weights file (five in six in the
# metadata: object headers, attributes, the config text, shard strings, heaps), each
# checked the way `moe-ckpt verify` checks (tests/e2e/checkpoint_fuzz.cpp). Every flip
# must be detected (exit 2) or harmless (exit 0 with the loaded content unchanged);
# no signal, no hang, no internal error. Then the commands themselves, moe-ckpt
# verify / info / export and moe-train --run.resume, on a sample of the flipped files:
# exit 0 or 2, never a signal.
set -uo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
cd "$SOURCE_DIR"
run=(--config configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
     --data.val_path="$SHARDS/fortunes_val.tok" --train.threads=1 --train.peak_gflops=1
     --model.d_model=16 --model.num_heads=2 --model.dense_ffn=32 --moe.expert_ffn=16
     --moe.shared_ffn=16 --train.eval_tokens=0)
"$BUILD_DIR/moe-train" "${run[@]}" --train.steps=2 --run.dir="$tmp/run" >/dev/null 2>"$tmp/err" \
  || { cat "$tmp/err"; fail "the tiny run"; }
ckpt=$tmp/run/checkpoints/step_00000002.h5

"$BUILD_DIR/tests/checkpoint_fuzz" "$ckpt" 2000 17 | tee "$tmp/ckpt.json" || fail "checkpoint fuzz"
"$BUILD_DIR/tests/checkpoint_fuzz" "$tmp/run/model.h5" 300 18 | tee "$tmp/weights.json" \
  || fail "weights file fuzz"

# The commands on flipped files: exit 0 or 2, never a signal (1 = an internal error).
/usr/bin/python3 - "$BUILD_DIR" "$ckpt" "$tmp" "${run[@]}" <<'PY' || fail "commands on flipped files"
import random, subprocess, sys
build, ckpt, tmp, run = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
data = open(ckpt, "rb").read()
rng = random.Random(5)
counts, bad = {}, []
for i in range(20):
    d = bytearray(data)
    at = rng.randrange(len(d)) if i % 2 else rng.randrange(min(len(d), 40000))
    d[at] ^= 1 << rng.randrange(8)
    path = f"{tmp}/flip.h5"
    open(path, "wb").write(d)
    commands = [[f"{build}/moe-ckpt", "verify", path], [f"{build}/moe-ckpt", "info", path],
                [f"{build}/moe-ckpt", "export", path, "--out", f"{tmp}/x{i}.safetensors"]]
    if i % 3 == 0:
        commands.append([f"{build}/moe-train", *run, "--train.steps=3",
                         f"--run.dir={tmp}/resume{i}", f"--run.resume={path}"])
    for cmd in commands:
        rc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            timeout=120).returncode
        counts[rc] = counts.get(rc, 0) + 1
        if rc not in (0, 2):
            bad.append((at, cmd[1] if "moe-ckpt" in cmd[0] else "moe-train", rc))
print("command exit statuses:", dict(sorted(counts.items())))
for b in bad:
    print("FAIL: byte %d: %s exit %d" % b)
sys.exit(1 if bad else 0)
PY
echo PASS
