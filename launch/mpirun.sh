#!/usr/bin/env bash
# Local mpirun with what this kind of machine needs: root allowed, more ranks than
# cores (--oversubscribe) and yielding idle ranks (busy-polling ranks on 2 cores made
# an 8-rank all-to-all ~16x slower without it). Usage: launch/mpirun.sh -np N cmd ...
set -euo pipefail
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
exec mpirun --oversubscribe --mca mpi_yield_when_idle 1 --bind-to none "$@"
