#!/usr/bin/env bash
# 320 mutated tiny configs (tests/e2e/config_fuzz.py): exit 0, 2 or 3 only, one line for
# bad input, no signal, no timeout, within a 3 GiB address-space limit.
set -uo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ensure_shards "$tmp"
require_fashion_mnist
cd "$SOURCE_DIR"
/usr/bin/python3 tests/e2e/config_fuzz.py "$BUILD_DIR" "$SHARDS" 320 11 || fail "config fuzz"
echo PASS
