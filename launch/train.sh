#!/usr/bin/env bash
# The main job, from a fresh machine: install dependencies, build, prepare the
# fortunes token shards, and train configs/moe_gpt_small.ini (about 10-15 minutes on
# 2 cores). Extra arguments go to moe-train, e.g. --train.steps=100.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${MOE_BUILD_DIR:-$root/build}
bash "$root/launch/install-deps.sh"
bash "$root/launch/build.sh"
cd "$root"
if [[ ! -f data/shards/fortunes_train.tok || ! -f data/shards/fortunes_val.tok ]]; then
  /usr/bin/python3 data/prepare_fortunes.py --out data/shards
fi
exec "$build/moe-train" --config configs/moe_gpt_small.ini "$@"
