#!/usr/bin/python3
"""Weak scaling of data + expert parallel training: volumes and time shares per rank count.

Usage: tests/bench/weak_scaling.py [--build build] [--config configs/moe_gpt_tiny.ini]
                                   [--nps 1,2,4,8] [--experts 8] [--batch-per-rank B]
                                   [--steps 30] [--skip 5] [--threads 1] [--repeats 1]

Runs moe-train under launch/mpirun.sh at each np with dp = np, ep = min(np, experts) and
the global batch scaled with np (batch-per-rank sequences on every rank: weak scaling)
and one compute thread per rank (so every rank does the same work the same way),
a few steps, and averages the per-step records of metrics.jsonl after the first
`--skip` steps (start-up, first-touch of buffers). Per np it reports tokens/s, step
ms, communication ms and its share of the step (time inside collectives, waiting for
slower ranks included), compute ms (step less communication), the all-to-all bytes
per rank per step (ep group) next to the analytic figure for uniform routing, the dp
bytes next to the analytic gradient all-reduce, and edp bytes.

Analytic all-to-all rows per rank per step, uniform routing (docs/benchmarks.md):
    L_moe * (N_local * K) * (ep-1)/ep * C * 4 bytes * 4 exchanges
(dispatch, combine, and the two backward exchanges; N_local = batch-per-rank * T
tokens). The measured ep bytes also hold the counts exchange of each dispatch
(E - E_local(self) int64 per layer) and the grad-norm all-reduce (a few bytes).
The bytes are rank 0's (it writes the metrics). With uneven expert loads rank 0's share
differs from the uniform figure, so a second column uses the measured loads: with P0
the share of assignments routed to rank 0's experts (from the records' global expert
loads), rank 0 sends N_local*K*(1-P0) rows in dispatch and gets back (ep-1)*N_local*K*P0
rows to return in combine (assuming every rank routes like the global mix), so
    L_moe-sum of N_local*K*((1-P0) + (ep-1)*P0) * C * 4 bytes * 2 (forward, backward).
Analytic dense-gradient all-reduce per rank per step (ring): 2 (dp-1)/dp * 4 bytes *
replicated parameters; the measured dp bytes also hold the routing statistics
(all-gathered choice counts) and loss reductions.

On a machine with fewer cores than ranks (2 cores here: np 4 and 8 oversubscribe) the
ranks share cores, so tokens/s cannot grow with np: read the volumes and the time
shares, not speedups; --repeats N runs every np N times and reports the median of each
figure (the volumes are the same in every run: the data and the routing depend on the
seed only). Prints a table and one JSON line.
"""
import argparse
import configparser
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLOAT_BYTES = 4


def resolved_config(run_dir):
    ini = configparser.ConfigParser()
    ini.read(os.path.join(run_dir, "config.ini"))
    return ini


def expert_block(num_experts, ep, rank):
    """Experts held by ep rank `rank` (placement.h: contiguous, the first E % ep get one more)."""
    return num_experts // ep + (1 if rank < num_experts % ep else 0)


def analytic(ini, np_, ep, local_params):
    """Expected bytes per rank per step: all-to-all rows (uniform routing), dense grads."""
    m, moe = ini["model"], ini["moe"]
    width, f = int(m["d_model"]), int(moe["expert_ffn"])
    experts, top_k = int(moe["num_experts"]), int(moe["top_k"])
    moe_layers = int(m["num_layers"]) - int(m["dense_layers"])
    local_tokens = int(ini["data"]["batch_size"]) // np_ * int(m["seq_len"])
    a2a = moe_layers * local_tokens * top_k * (ep - 1) / ep * width * FLOAT_BYTES * 4
    mats = 3 if moe.get("expert_act", "swiglu") == "swiglu" else 2
    expert_params_rank0 = moe_layers * expert_block(experts, ep, 0) * mats * width * f
    replicated = local_params - expert_params_rank0
    grads = 2 * (np_ - 1) / np_ * FLOAT_BYTES * replicated  # dp = np
    return a2a, grads, replicated


def a2a_bytes_from_loads(ini, np_, ep, record):
    """Rank 0's expected all-to-all bytes of one step given the step's global expert loads."""
    m, moe = ini["model"], ini["moe"]
    width, top_k = int(m["d_model"]), int(moe["top_k"])
    local_tokens = int(ini["data"]["batch_size"]) // np_ * int(m["seq_len"])
    rank0_experts = expert_block(int(moe["num_experts"]), ep, 0)
    total = 0.0
    for layer in record["experts"]:
        p0 = sum(layer["tokens"][:rank0_experts]) / sum(layer["tokens"])
        rows = local_tokens * top_k * ((1 - p0) + (ep - 1) * p0) if ep > 1 else 0
        total += rows * width * FLOAT_BYTES * 2
    return total


def mean(values):
    return sum(values) / len(values) if values else float("nan")


def run_np(args, np_, tmp):
    ep = min(np_, args.experts) if args.experts else np_
    run_dir = os.path.join(tmp, f"np{np_}")
    cmd = [os.path.join(ROOT, "launch", "mpirun.sh"), "-np", str(np_),
           os.path.join(args.build, "moe-train"), "--config", args.config,
           f"--parallel.dp={np_}", f"--parallel.ep={ep}",
           f"--data.batch_size={args.batch_per_rank * np_}",
           f"--train.steps={args.steps}", "--train.log_interval=1",
           "--train.eval_interval=0", "--train.eval_batches=1",
           f"--train.threads={args.threads}", "--train.peak_gflops=1",
           f"--run.dir={run_dir}", "--run.overwrite=true", "--run.save_model=false"]
    if args.experts:
        cmd.append(f"--moe.num_experts={args.experts}")
    done = subprocess.run(["nice", "-n", "5"] + cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"weak_scaling: np {np_} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    params = re.search(r"moe-train: (\d+) parameters", done.stderr)
    if not params:
        sys.exit(f"weak_scaling: no parameter count in the output of np {np_}")
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [r for r in map(json.loads, f) if "comm" in r and r["step"] > args.skip]
    if not records:
        sys.exit(f"weak_scaling: np {np_}: no step records after --skip {args.skip}")
    ini = resolved_config(run_dir)
    a2a_expected, grads_expected, replicated = analytic(ini, np_, ep, int(params.group(1)))
    step_ms = mean([r["step_ms"] for r in records])
    comm_ms = mean([r["comm"]["total_ms"] for r in records])
    return {
        "np": np_, "dp": np_, "ep": ep, "global_batch": args.batch_per_rank * np_,
        "tokens_per_s": mean([r["tokens_per_s"] for r in records]),
        "step_ms": step_ms,
        "comm_ms": comm_ms,
        "comm_share": comm_ms / step_ms,
        "compute_ms": mean([r["comm"]["compute_ms"] for r in records]),
        "ep_ms": mean([r["comm"]["ep"]["ms"] for r in records]),
        "dp_ms": mean([r["comm"]["dp"]["ms"] for r in records]),
        "edp_ms": mean([r["comm"]["edp"]["ms"] for r in records]),
        "a2a_bytes": mean([r["comm"]["ep"]["bytes"] for r in records]),
        "a2a_bytes_expected": a2a_expected,
        "a2a_bytes_expected_measured_load": mean([a2a_bytes_from_loads(ini, np_, ep, r)
                                                  for r in records]),
        "dp_bytes": mean([r["comm"]["dp"]["bytes"] for r in records]),
        "grad_allreduce_bytes_expected": grads_expected,
        "edp_bytes": mean([r["comm"]["edp"]["bytes"] for r in records]),
        "replicated_params": replicated,
        "steps_averaged": len(records),
    }


def median_row(runs):
    """Median over repeated runs of one np, figure by figure."""
    out = {}
    for key, first in runs[0].items():
        if isinstance(first, float):
            values = sorted(r[key] for r in runs)
            mid = len(values) // 2
            out[key] = values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])
        else:
            out[key] = first
    return out


def print_table(rows, config):
    print(f"weak scaling of {config}: dp = np, ep = min(np, experts), batch per rank fixed")
    print("(ranks beyond the core count share cores: compare volumes and shares, not speed)")
    head = ("np", "ep", "batch", "tok/s", "step ms", "comm ms", "comm %", "compute ms",
            "a2a KB", "a2a KB exp", "exp @load", "dp KB", "grad KB exp", "edp KB")
    print(" | ".join(f"{h:>10}" for h in head))
    for r in rows:
        cells = (r["np"], r["ep"], r["global_batch"], f"{r['tokens_per_s']:.0f}",
                 f"{r['step_ms']:.1f}", f"{r['comm_ms']:.1f}", f"{100 * r['comm_share']:.0f}",
                 f"{r['compute_ms']:.1f}", f"{r['a2a_bytes'] / 1024:.1f}",
                 f"{r['a2a_bytes_expected'] / 1024:.1f}",
                 f"{r['a2a_bytes_expected_measured_load'] / 1024:.1f}",
                 f"{r['dp_bytes'] / 1024:.1f}",
                 f"{r['grad_allreduce_bytes_expected'] / 1024:.1f}",
                 f"{r['edp_bytes'] / 1024:.1f}")
        print(" | ".join(f"{c:>10}" for c in cells))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--config", default="configs/moe_gpt_tiny.ini")
    p.add_argument("--nps", default="1,2,4,8", help="comma-separated rank counts")
    p.add_argument("--experts", type=int, default=8,
                   help="moe.num_experts override (0 = the config's)")
    p.add_argument("--batch-per-rank", type=int, default=0,
                   help="sequences per rank (0 = the config's batch_size)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--skip", type=int, default=5, help="first steps left out of the means")
    p.add_argument("--repeats", type=int, default=1, help="runs per np; medians reported")
    p.add_argument("--threads", type=int, default=1,
                   help="train.threads, the same on every rank (0 = cores / ranks)")
    args = p.parse_args()
    if args.skip >= args.steps:
        p.error("--skip must be smaller than --steps")
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.batch_per_rank == 0:
        ini = configparser.ConfigParser()
        ini.read(os.path.join(ROOT, args.config))
        args.batch_per_rank = int(ini["data"]["batch_size"])
    with tempfile.TemporaryDirectory() as tmp:
        rows = [median_row([run_np(args, int(n), tmp) for _ in range(args.repeats)])
                for n in args.nps.split(",")]
    print_table(rows, args.config)
    print(json.dumps({"bench": "weak_scaling", "config": args.config, "experts": args.experts,
                      "batch_per_rank": args.batch_per_rank, "steps": args.steps,
                      "skip": args.skip, "repeats": args.repeats, "cores": os.cpu_count(),
                      "note": "ranks beyond the core count share cores: "
                              "volumes and shares, not speedups",
                      "rows": [{k: (round(v, 4) if isinstance(v, float) else v)
                                for k, v in r.items()} for r in rows]}))


if __name__ == "__main__":
    main()
