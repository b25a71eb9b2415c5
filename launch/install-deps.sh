#!/usr/bin/env bash
# Installs the Debian packages the framework builds, runs and tests with (DESIGN.md:
# all dependencies come from Debian packages). Installs only what is missing, so a
# second run costs a dpkg query. Needs root (or sudo) when something is missing.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libopenmpi-dev openmpi-bin                # processes and CPU collectives
  libhdf5-openmpi-dev hdf5-tools            # parallel HDF5 checkpoints, h5dump
  libboost-program-options-dev              # config files and --section.key=value
  libopenblas-openmp-dev                    # CPU GEMM (OpenMP build: one thread pool)
  libdnnl-dev                               # bf16 GEMMs of mixed precision (oneDNN)
  libfmt-dev nlohmann-json3-dev             # formatting, metrics JSON
  libprotobuf-dev protobuf-compiler         # TensorBoard event records (Boost.CRC: CRC-32C)
  zlib1g-dev libpng-dev                     # image data and PNG sample grids
  googletest libgtest-dev libbenchmark-dev  # tests and benchmarks
  fortunes fortunes-min                     # the English text corpus of the main job
  dataset-fashion-mnist                     # IDX images of the image families
  python3 python3-numpy python3-h5py python3-torch  # reference tests, peer benchmark
  python3-pil                               # tests decode the PNG sample grids
  python3-matplotlib                        # moe-report's pictures
  python3-venv python3-requests python3-yaml python3-packaging  # launch/python-env.sh
  python3-pip unzip                         # launch/fetch-cudnn-frontend.sh (CUDA builds)
  iproute2 util-linux                       # ip netns, unshare: the emulated cluster
  slurm-wlm munge                           # a one-node Slurm cluster in the Slurm test
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
