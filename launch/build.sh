#!/usr/bin/env bash
# Configures and builds the framework (Release) into ${MOE_BUILD_DIR:-build}.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${MOE_BUILD_DIR:-$root/build}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release ${MOE_CMAKE_ARGS:-} >/dev/null
# Build chatter goes to stderr: stdout stays for the programs run after the build.
cmake --build "$build" -j "$(nproc)" >&2
