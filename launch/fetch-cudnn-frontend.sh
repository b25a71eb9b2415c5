#!/usr/bin/env bash
# Prints the include directory of cuDNN's C++ frontend (header-only; the GPU attention
# of framework/kernels/cuda/attention_sdpa.cpp), fetching the pinned release once from
# its PyPI wheel (nvidia-cudnn-frontend) into ${MOE_DEPS_DIR:-~/.cache/moe}. CMake runs
# it when the CUDA backend is on. Exit status 1 (and nothing on stdout) when the wheel
# cannot be fetched, e.g. offline: the build then goes on without the fused attention.
set -euo pipefail
version=1.32.0
base=${MOE_DEPS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moe}
dir=$base/cudnn-frontend-$version
if [[ ! -f $dir/include/cudnn_frontend.h ]]; then
  mkdir -p "$base"
  exec 9>"$dir.lock"
  flock 9
  if [[ ! -f $dir/include/cudnn_frontend.h ]]; then
    tmp=$(mktemp -d "$base/cudnn-frontend.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    /usr/bin/python3 -m pip download --disable-pip-version-check --no-input -q --no-deps \
      --only-binary=:all: -d "$tmp" "nvidia-cudnn-frontend==$version" >&2 || exit 1
    unzip -q "$tmp"/nvidia_cudnn_frontend-*.whl 'include/*' -d "$tmp/unpacked" || exit 1
    rm -rf "$dir" && mkdir -p "$dir" && mv "$tmp/unpacked/include" "$dir/include"
  fi
fi
echo "$dir/include"
