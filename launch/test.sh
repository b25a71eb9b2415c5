#!/usr/bin/env bash
# The whole test suite, from a fresh machine: install dependencies, build from
# scratch in ${MOE_BUILD_DIR:-build}, prepare the data the end-to-end tests use, run
# every CTest entry (unit, end-to-end, reference against PyTorch).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${MOE_BUILD_DIR:-$root/build}
bash "$root/launch/install-deps.sh"
bash "$root/launch/build.sh"
cd "$root"
if [[ ! -f data/shards/fortunes_train.tok || ! -f data/shards/fortunes_val.tok ]]; then
  /usr/bin/python3 data/prepare_fortunes.py --out data/shards
fi
# The pinned PyPI packages some tests use (transformers, tensorboard), made once and
# cached, before the tests start so that none of them waits for the download.
bash "$root/launch/python-env.sh" >/dev/null
cd "$build"
ctest --output-on-failure -j "$(nproc)" "$@"
