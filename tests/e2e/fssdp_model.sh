#!/usr/bin/env bash
# `moe-bench fssdp-model` (the projection of plain ep vs fssdp): one process without
# mpirun, one table row per (skew, GPUs), the model's shape in the figures (no skew: the
# same time; skew: fssdp ahead), and bad input: exit 2 with one line naming the flag.
set -uo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

"$BUILD_DIR/moe-bench" fssdp-model --ranks=8,64,1024 --skew=0,1.2 >"$tmp/out" 2>"$tmp/err" ||
  { cat "$tmp/err"; fail "fssdp-model exited $?"; }
[[ $(grep -c '^| [0-9]' "$tmp/out") -eq 6 ]] || { cat "$tmp/out"; fail "expected 6 rows"; }
# column 14 is ep / fssdp ("1.00x")
awk -F'|' '/^\| 0\.0 /  { if ($14 + 0 != 1) exit 1 }
           /^\| 1\.2 / { if ($14 + 0 <= 1) exit 1 }' "$tmp/out" ||
  { cat "$tmp/out"; fail "ep / fssdp: 1 without skew, > 1 with it"; }
echo "ok table: $(grep -c '^| [0-9]' "$tmp/out") rows"

expect_error() {
  local name=$1 pattern=$2; shift 2
  "$BUILD_DIR/moe-bench" fssdp-model "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  [[ $rc -eq 2 ]] || { cat "$tmp/err"; fail "$name: exit status $rc, expected 2"; }
  [[ $(wc -l <"$tmp/err") -eq 1 ]] || { cat "$tmp/err"; fail "$name: expected one line"; }
  grep -q -- "$pattern" "$tmp/err" || { cat "$tmp/err"; fail "$name: message lacks '$pattern'"; }
  echo "ok $name: $(cat "$tmp/err")"
}
expect_error partial_node "--ranks" --ranks=8,12
expect_error negative_skew "--skew" --skew=-1
expect_error bad_slots "--slots" --slots=x
expect_error top_k_over_experts "--top-k" --ranks=8 --top-k=100
expect_error unknown_flag "--bogus" --bogus=1
