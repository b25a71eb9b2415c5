#!/usr/bin/env bash
# launch/gpu-bundle.sh [BUILD_DIR] [OUT.tar.xz]: a self-contained, relocatable bundle
# of a CUDA build for a GPU node that has the CUDA runtime but none of our Debian
# packages (docs/gpu.md#bundle). It holds the tools, the gpu tests and benchmark, the
# shared libraries they load apart from the C library and CUDA's (OpenMPI with its
# plugins, orted and help files, parallel HDF5, Boost, OpenBLAS, fmt, libpng, protobuf,
# ...), every ELF file's RUNPATH pointing into the bundle ($ORIGIN), plus configs/,
# data/shards/, tests/gpu/run.sh with the PyTorch comparison and tests/gpu/train_gpu.sh
# it runs (and the helpers they borrow), and env.sh. Use on the node:
#   tar xJf moe-gpu-bundle.tar.xz && cd moe-bundle && source env.sh && bash tests/gpu/run.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
out=$(realpath -m "${2:-$build/moe-gpu-bundle.tar.xz}")
command -v patchelf >/dev/null ||
  { echo "gpu-bundle: needs patchelf (apt-get install patchelf)"; exit 2; }
[[ -x $build/tests/gpu_test_cuda_kernels ]] ||
  { echo "gpu-bundle: $build has no gpu tests: build it with -DMOE_WITH_CUDA=ON first"; exit 2; }

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
b=$work/moe-bundle
ompi=/usr/lib/x86_64-linux-gnu/openmpi
plugins=lib/x86_64-linux-gnu/openmpi/lib/openmpi3  # Open MPI's pkglibdir under its prefix
mkdir -p "$b/bin" "$b/lib" "$b/$plugins" "$b/share" "$b/etc" "$b/tests/gpu" "$b/data"

for tool in moe-train moe-bench moe-ckpt; do cp "$build/$tool" "$b/bin/"; done
cp "$build"/tests/gpu_test_* "$build/tests/gpu_bench_kernels" "$build/tests/test_device_index" \
  "$build/tests/test_collective_plan" "$b/bin/"
# mpirun is Open MPI's orterun; orted starts the ranks (and a singleton's runtime).
cp /usr/bin/orterun "$b/bin/mpirun"
cp /usr/bin/orted "$b/bin/"
cp -r "$ompi/lib/openmpi3/." "$b/$plugins/"
cp -r /usr/share/openmpi "$b/share/"
cp -r /etc/openmpi/. "$b/etc/"
cp -r "$root/configs" "$b/"
cp -r "$root/data/shards" "$b/data/"
cp "$root/tests/gpu/run.sh" "$root/tests/gpu/train_gpu.sh" "$root/tests/gpu/moe_gpt_gpu_vs_torch.py" \
  "$b/tests/gpu/"
mkdir -p "$b/tests/e2e" "$b/tests/reference"  # what train_gpu.sh and the comparison borrow
cp "$root/tests/e2e/lib.bash" "$root/tests/e2e/compare_runs.py" "$b/tests/e2e/"
cp "$root"/tests/reference/{bench_torch_moe_gpt,moe_gpt_ref}.py "$b/tests/reference/"

# Libraries every ELF file loads, except the C library's and the CUDA driver, runtime
# and libraries (the node has its own CUDA 13).
is_system() {
  case $(basename "$1") in
    ld-linux*|libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|libresolv.so*) return 0 ;;
    libutil.so*) return 0 ;;
    libcuda.so*|libcudart*|libcublas*|libcudnn*|libnccl*|libnvidia*|libnvrtc*) return 0 ;;
  esac
  return 1
}
elves=("$b"/bin/* "$b/$plugins"/*.so)
dropped=()
for f in "${elves[@]}"; do
  if ldd "$f" | grep -q 'not found'; then
    # an Open MPI plugin for a fabric this machine lacks (UCX, verbs, ...): never selected
    if [[ $f == "$b/$plugins"/* ]]; then dropped+=("$(basename "$f")"); rm "$f"; continue; fi
  fi
  while read -r lib; do
    is_system "$lib" || [[ -e $b/lib/$(basename "$lib") ]] || cp -L "$lib" "$b/lib/"
  done < <(ldd "$f" | awk '$3 ~ /^\// {print $3}')
done
[[ ${#dropped[@]} -eq 0 ]] ||
  echo "gpu-bundle: left out ${#dropped[@]} Open MPI plugins whose libraries are missing here"

# RUNPATHs: tools -> ../lib (then the usual CUDA places), libraries -> themselves,
# plugins -> the bundle's lib/.
cuda_dirs='/usr/local/cuda/lib64:/usr/local/cuda/lib'
for f in "$b"/bin/*; do patchelf --set-rpath "\$ORIGIN/../lib:$cuda_dirs" "$f"; done
for f in "$b"/lib/*.so*; do chmod u+w "$f"; patchelf --set-rpath '$ORIGIN' "$f"; done
for f in "$b/$plugins"/*.so; do patchelf --set-rpath '$ORIGIN/../../../..' "$f"; done

cat >"$b/env.sh" <<'EOF'
# source env.sh: the bundle's tools first on PATH, its Open MPI relocated here.
MOE_BUNDLE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MOE_BUNDLE PATH="$MOE_BUNDLE/bin:$PATH" OPAL_PREFIX="$MOE_BUNDLE"
export OPAL_SYSCONFDIR="$MOE_BUNDLE/etc" OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# cuDNN 9 (the fused attention): the node's own, from its CUDA folders or, where it has
# none there, from its PyTorch's wheel (nvidia-cudnn-cu*).
if ! ls /usr/local/cuda/lib64/libcudnn.so.9 /usr/local/cuda/lib/libcudnn.so.9 >/dev/null 2>&1; then
  cudnn=$(python3 -c 'import nvidia.cudnn as c, os; print(os.path.join(list(c.__path__)[0], "lib"))' 2>/dev/null || true)
  if [[ -n $cudnn && -d $cudnn ]]; then
    export LD_LIBRARY_PATH="$cudnn${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
fi
EOF

# xz: half of gzip's size (oneDNN and OpenBLAS are most of the bundle)
XZ_OPT=-6 tar cJf "$out" -C "$work" moe-bundle
echo "gpu-bundle: $out ($(du -m "$out" | cut -f1) MiB; $(du -sm "$b" | cut -f1) MiB unpacked)"
