#!/usr/bin/env bash
# mpi-ranks: 2
# Slurm for real: a one-node Slurm cluster on this machine (munged with its own key and
# socket, slurmctld and slurmd as root with a generated slurm.conf on free ports:
# proctrack/linuxproc, task/none, select/cons_tres, a partition with
# OverSubscribe=FORCE:4), then
#   1. launch/slurm.sbatch with 2 tasks (srun --mpi=pmix) trains the tiny model to the
#      same losses and weights as mpirun -np 2;
#   2. a job submitted with MOE_REQUEUE=1 --requeue and hit by `scancel --signal=TERM`
#      writes its checkpoint (exit 143), requeues itself, continues with
#      run.resume=auto and ends bit-identical to the uninterrupted run.
# Skipped (exit 77), saying why, where the daemons cannot start (not root, no Slurm).
set -uo pipefail
BUILD_DIR=$1 SOURCE_DIR=$2
source "$SOURCE_DIR/tests/e2e/lib.bash"
skip() { echo "SKIP: $*"; exit 77; }
[[ $(id -u) == 0 ]] || skip "slurmctld and slurmd must run as root here"
for tool in munged slurmctld slurmd sbatch scontrol scancel sinfo srun; do
  command -v "$tool" >/dev/null || skip "$tool is not installed (apt-get install slurm-wlm munge)"
done
tmp=$(mktemp -d)
chmod 755 "$tmp"
export SLURM_CONF=$tmp/slurm.conf
cleanup() {
  scontrol shutdown >/dev/null 2>&1
  for f in "$tmp"/slurmd.pid "$tmp"/slurmctld.pid "$tmp"/munge/munged.pid; do
    [[ -s $f ]] && kill "$(cat "$f")" 2>/dev/null
  done
  sleep 1
  rm -rf "$tmp"
}
trap cleanup EXIT
ensure_shards "$tmp"

# ---- the cluster ----
mkdir -p "$tmp/munge" "$tmp/state" "$tmp/spool" "$tmp/log"
chmod 700 "$tmp/munge"
dd if=/dev/urandom of="$tmp/munge/munge.key" bs=1024 count=1 2>/dev/null
chmod 400 "$tmp/munge/munge.key"
munged -f --socket="$tmp/munge/munge.socket" --key-file="$tmp/munge/munge.key" \
  --log-file="$tmp/log/munged.log" --pid-file="$tmp/munge/munged.pid" \
  --seed-file="$tmp/munge/munged.seed" || skip "munged does not start"
host=$(hostname)
port=$((20000 + RANDOM % 20000))  # two such tests on one machine must not collide
cat >"$SLURM_CONF" <<CONF
ClusterName=moetest
SlurmctldHost=$host
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$tmp/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobRequeue=1
SchedulerType=sched/builtin
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
NodeName=$host CPUs=2 State=UNKNOWN
PartitionName=test Nodes=$host Default=YES OverSubscribe=FORCE:4 MaxTime=INFINITE State=UP
CONF
slurmctld -i || skip "slurmctld does not start: $(tail -3 "$tmp/log/slurmctld.log" 2>/dev/null)"
slurmd || skip "slurmd does not start: $(tail -3 "$tmp/log/slurmd.log" 2>/dev/null)"
for _ in $(seq 60); do
  [[ $(sinfo -h -o %t 2>/dev/null) == idle ]] && break
  sleep 0.5
done
[[ $(sinfo -h -o %t 2>/dev/null) == idle ]] || skip "the node is not idle: $(tail -3 "$tmp/log/slurmd.log")"
echo "ok a one-node Slurm cluster on port $port"

cd "$SOURCE_DIR"
train=(configs/moe_gpt_tiny.ini --data.train_path="$SHARDS/fortunes_train.tok"
       --data.val_path="$SHARDS/fortunes_val.tok" --parallel.dp=2 --train.peak_gflops=1
       --train.eval_interval=0 --train.log_interval=10)
job=(--nodes=1 --ntasks=2 --ntasks-per-node=2 --cpus-per-task=1 --time=10)

# ---- 1. the same run as mpirun ----
"$SOURCE_DIR/launch/mpirun.sh" -np 2 "$BUILD_DIR/moe-train" --config "${train[@]}" --train.steps=40 \
  --train.threads=1 --run.dir="$tmp/mpirun" </dev/null >/dev/null 2>"$tmp/err" \
  || { cat "$tmp/err"; fail "mpirun"; }
MOE_BUILD_DIR=$BUILD_DIR sbatch --wait "${job[@]}" --output="$tmp/job1.out" launch/slurm.sbatch \
  "${train[@]}" --train.steps=40 --run.dir="$tmp/slurm" >/dev/null \
  || { cat "$tmp/job1.out"; fail "the Slurm job failed"; }
/usr/bin/python3 tests/e2e/compare_runs.py "$tmp/mpirun" "$tmp/slurm" "srun vs mpirun" --weights \
  || { cat "$tmp/job1.out"; fail "srun and mpirun runs differ"; }
echo "ok sbatch launch/slurm.sbatch, 2 tasks: the mpirun run exactly"

# ---- 2. preempted, requeued, resumed ----
"$SOURCE_DIR/launch/mpirun.sh" -np 2 "$BUILD_DIR/moe-train" --config "${train[@]}" --train.steps=300 \
  --train.threads=1 --run.dir="$tmp/ref" </dev/null >/dev/null 2>"$tmp/err" \
  || { cat "$tmp/err"; fail "the uninterrupted run"; }
id=$(MOE_BUILD_DIR=$BUILD_DIR sbatch --parsable --requeue --export=ALL,MOE_REQUEUE=1 "${job[@]}" \
     --output="$tmp/job2.out" --open-mode=append launch/slurm.sbatch "${train[@]}" \
     --train.steps=300 --run.dir="$tmp/preempted")
for _ in $(seq 600); do
  [[ $(wc -l <"$tmp/preempted/metrics.jsonl" 2>/dev/null || echo 0) -ge 3 ]] && break
  sleep 0.1
done
start=$SECONDS
scancel --signal=TERM "$id"
state() { scontrol show job "$id" | grep -o "JobState=[A-Z_]*" | cut -d= -f2; }
restarts() { scontrol show job "$id" | grep -o "Restarts=[0-9]*" | cut -d= -f2; }
for _ in $(seq 600); do
  [[ $(restarts) -ge 1 && $(state) == PENDING ]] && break
  sleep 0.2
done
[[ $(restarts) -ge 1 ]] || { cat "$tmp/job2.out"; fail "the job was not requeued"; }
# A requeued job waits for its begin time (a couple of minutes); the operator here
# does not, once slurmd has cleaned up after the stopped step.
sleep 5
scontrol update JobId="$id" StartTime=now >/dev/null 2>&1
for _ in $(seq 900); do
  [[ $(state) == COMPLETED || $(state) == FAILED ]] && break
  sleep 0.2
done
[[ $(state) == COMPLETED ]] || { cat "$tmp/job2.out"; fail "job $id ended $(state)"; }
grep -q "stopped by SIGTERM after step" "$tmp/job2.out" || { cat "$tmp/job2.out"; fail "no stop line"; }
grep -q "requeueing job $id" "$tmp/job2.out" || { cat "$tmp/job2.out"; fail "no requeue"; }
grep -q "resumed from .* at step" "$tmp/job2.out" || { cat "$tmp/job2.out"; fail "no resume"; }
/usr/bin/python3 tests/e2e/compare_runs.py "$tmp/ref" "$tmp/preempted" "preempted and requeued" \
  --weights || { cat "$tmp/job2.out"; fail "the requeued job differs from the uninterrupted run"; }
echo "ok scancel --signal=TERM: $(grep -o 'stopped by SIGTERM after step [0-9]*' "$tmp/job2.out"), requeued," \
     "resumed and finished bit-identical in $((SECONDS - start)) s"
echo PASS
