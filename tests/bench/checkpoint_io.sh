#!/usr/bin/env bash
# Checkpoint write/read throughput of configs/moe_gpt_small.ini at 1 rank and at 4 ranks
# (dp = ep = 4; collective and independent MPI-IO writes), next to the raw speed of the same bytes written and read with plain
# write()/read() in the same run (tests/bench/bench_checkpoint.cpp says what each
# figure times). Usage: tests/bench/checkpoint_io.sh [BUILD_DIR] [DIR] [REPEATS]
# DIR (default runs/bench_checkpoint) must be on the file system to measure.
set -euo pipefail
BUILD_DIR=${1:-build} DIR=${2:-runs/bench_checkpoint} REPEATS=${3:-5}
cd "$(dirname "$0")/../.."
bench=("$BUILD_DIR/tests/bench_checkpoint" --dir="$DIR" --repeats="$REPEATS"
       --config configs/moe_gpt_small.ini)
echo "1 rank:"
"${bench[@]}"
echo "4 ranks (dp 4, ep 4), collective writes:"
launch/mpirun.sh -np 4 "${bench[@]}" --parallel.dp=4 --parallel.ep=4 </dev/null
echo "4 ranks (dp 4, ep 4), independent writes:"
launch/mpirun.sh -np 4 "${bench[@]}" --parallel.dp=4 --parallel.ep=4 \
  --checkpoint.collective_io=false </dev/null
