#!/usr/bin/env bash
# The reference itself: its fast MoE equals a naive token-by-token one, float64
# autograd equals finite differences, and the comparison catches injected errors.
set -euo pipefail
SOURCE_DIR=$2
/usr/bin/python3 "$SOURCE_DIR/tests/reference/compare_moe_gpt.py" --selftest
