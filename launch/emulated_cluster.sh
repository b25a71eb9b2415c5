#!/usr/bin/env bash
# An emulated multi-node cluster on one machine, with real Open MPI: N "nodes" of G
# ranks each, where ranks of one node talk over shared memory and ranks of different
# nodes over TCP, as on a real cluster (docs/parallelism.md, "The emulated cluster").
#
#   launch/emulated_cluster.sh -N 2 -G 4 build/moe-train --config X.ini --parallel.dp=8 ...
#   launch/emulated_cluster.sh --check        # exit 0 when it can run here, else 77
#
# How: mpirun is given hosts moe-node0:G, moe-node1:G, ... and a remote-shell agent
# (--mca plm_rsh_agent) that starts each node's daemon (orted) here, in its own UTS
# namespace (`unshare --uts`) with the node's hostname. Open MPI decides locality by
# host name, so the ranks under one daemon share memory (vader) and the others are
# reachable only over the TCP BTL, restricted to the loopback interface. The whole job
# runs in a private network namespace that this script creates (`ip netns add`) and
# removes on exit, so no other traffic shares that loopback; where `ip netns` is not
# permitted it falls back to an anonymous one (`unshare --net`).
#
# Needs root (or CAP_SYS_ADMIN) for the namespaces. Everything else is as in
# launch/mpirun.sh: root allowed, oversubscription, yielding idle ranks, no binding.
# Environment: MOE_EMU_VERBOSE=1 prints the mpirun command line.
set -euo pipefail

usage() {
  echo "usage: $0 -N NODES -G RANKS_PER_NODE [--] COMMAND ARGS..." >&2
  echo "       $0 --check" >&2
  exit 2
}

# Can this machine create the namespaces? (UTS for the host names, network for TCP.)
namespaces_available() {
  command -v unshare >/dev/null && command -v mpirun >/dev/null &&
    unshare --uts true 2>/dev/null && unshare --net true 2>/dev/null
}

if [[ ${1:-} == --check ]]; then
  if namespaces_available; then exit 0; fi
  echo "emulated cluster unavailable: 'unshare --uts' / 'unshare --net' are not permitted" \
       "here (needs root or CAP_SYS_ADMIN) or mpirun is missing" >&2
  exit 77
fi

nodes=0 per_node=0
while [[ $# -gt 0 ]]; do
  case $1 in
    -N) nodes=$2; shift 2 ;;
    -G) per_node=$2; shift 2 ;;
    --) shift; break ;;
    -*) usage ;;
    *) break ;;
  esac
done
[[ $nodes -ge 1 && $per_node -ge 1 && $# -ge 1 ]] || usage
namespaces_available || { "$0" --check; exit 77; }

work=$(mktemp -d /tmp/moe-emu.XXXXXX)
netns=""
cleanup() {
  [[ -n $netns ]] && ip netns del "$netns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The remote-shell agent: mpirun calls it as `agent HOST COMMAND-LINE` (as it would
# ssh); the daemon runs here under the host's name.
cat >"$work/agent" <<'AGENT'
#!/bin/sh
host=$1; shift
exec unshare --uts sh -c 'hostname "$0" && eval "$1"' "$host" "$*"
AGENT
chmod +x "$work/agent"

hosts=""
for ((n = 0; n < nodes; n++)); do hosts+="${hosts:+,}moe-node$n:$per_node"; done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cmd=(mpirun -np $((nodes * per_node)) --host "$hosts" --map-by slot
     --mca plm_rsh_agent "$work/agent"
     --mca btl self,vader,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo
     --oversubscribe --mca mpi_yield_when_idle 1 --bind-to none "$@")
[[ ${MOE_EMU_VERBOSE:-0} == 1 ]] && echo "emulated cluster: ${cmd[*]}" >&2

# A named private network namespace, else an anonymous one; loopback up in either.
name=moe-emu-$$
if command -v ip >/dev/null && ip netns add "$name" 2>/dev/null; then
  netns=$name
  ip netns exec "$netns" ip link set lo up
  set +e
  ip netns exec "$netns" "${cmd[@]}"
  rc=$?
  set -e
else
  set +e
  unshare --net sh -c 'ip link set lo up 2>/dev/null || ifconfig lo up; exec "$@"' sh "${cmd[@]}"
  rc=$?
  set -e
fi
exit $rc
