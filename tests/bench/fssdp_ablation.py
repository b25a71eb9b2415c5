#!/usr/bin/python3
"""Ablations of sharded sparse experts (parallel.expert_sharding = fssdp) on N ranks.

Usage: tests/bench/fssdp_ablation.py [--build build] [--np 8] [--experts 16]
                                     [--layers 3] [--steps 20] [--skews 1.2,0]
                                     [--slots 2] [--reshard 5]

For each router skew (moe.router_skew: a Zipf(s) bias of the expert logits; 0 is the
plain router) trains the tiny MoE-LM (configs/moe_gpt_tiny.ini with --layers blocks, the
first dense: --layers - 1 MoE layers) under launch/mpirun.sh -np N, dp = N, one thread
per rank, in five layouts:

    plain ep            parallel.ep = N (the experts in even blocks, no replicas)
    sharding only       fssdp, materialize_slots = 0, reshard_interval = --reshard
                        (owners re-planned from the loads, no replicas)
    materialisation     fssdp, reshard_interval = 0 (the even owners), --slots slots
    both                fssdp, --slots slots and reshard_interval = --reshard
    both + remat        the same with parallel.rematerialize = true

and reports from the records (metrics.jsonl and the final record):
    rows max/mean   experts[].rank_rows_max_over_mean: the busiest rank's rows over the
                    mean, averaged over the steps and the MoE layers
    a2a B/step      comm.ep job bytes (intra + inter node; all ranks), mean over steps
    sparse B/step   comm.sparse job bytes: replicas' weights out, gradients back, and
                    the moves of re-planned owners
    replica B       memory.replica_bytes, the largest rank's peak
    AdamW B/rank    memory.optimizer_state_bytes, smallest and largest rank
    ms/step         step_ms, median over the steps after the first 2
    loss            the last step's

Times are indicative only where N ranks share fewer cores. Prints a Markdown table and
one JSON line.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def layouts(np_, slots, reshard):
    fssdp = ["--parallel.expert_sharding=fssdp"]
    return [
        ("plain ep", [f"--parallel.ep={np_}"]),
        ("sharding only", fssdp + ["--parallel.materialize_slots=0",
                                   f"--parallel.reshard_interval={reshard}"]),
        ("materialisation only", fssdp + [f"--parallel.materialize_slots={slots}"]),
        ("both", fssdp + [f"--parallel.materialize_slots={slots}",
                          f"--parallel.reshard_interval={reshard}"]),
        ("both + rematerialize", fssdp + [f"--parallel.materialize_slots={slots}",
                                          f"--parallel.reshard_interval={reshard}",
                                          "--parallel.rematerialize=true"]),
    ]


def job_bytes(comm, group):
    g = comm.get(group)
    return 0.0 if g is None else g["job_intra_node_bytes"] + g["job_inter_node_bytes"]


def summarise(run_dir, final):
    steps = [r for r in map(json.loads, open(os.path.join(run_dir, "metrics.jsonl")))
             if "loss" in r]
    rows = [e["rank_rows_max_over_mean"] for r in steps for e in r["experts"]]
    mem = final["memory"]
    return {
        "rows_max_over_mean": statistics.mean(rows),
        "a2a_bytes": statistics.mean(job_bytes(r["comm"], "ep") for r in steps),
        "sparse_bytes": statistics.mean(job_bytes(r["comm"], "sparse") for r in steps),
        "replica_bytes": max(mem["replica_bytes"]),
        "adamw_bytes": [min(mem["optimizer_state_bytes"]), max(mem["optimizer_state_bytes"])],
        "ms_per_step": statistics.median(r["step_ms"] for r in steps[2:]),
        "loss": steps[-1]["loss"],
    }


def train(args, skew, extra, run_dir):
    cmd = [os.path.join(ROOT, "launch/mpirun.sh"), "-np", str(args.np),
           os.path.join(args.build, "moe-train"), "--config",
           os.path.join(ROOT, "configs/moe_gpt_tiny.ini"), f"--model.num_layers={args.layers}",
           f"--moe.num_experts={args.experts}", f"--moe.router_skew={skew}",
           f"--train.steps={args.steps}", "--train.log_interval=1", "--train.threads=1",
           f"--train.eval_interval={args.steps}", "--train.eval_batches=1",
           f"--parallel.dp={args.np}", f"--run.dir={run_dir}", "--run.save_model=false",
           "--checkpoint.interval=0"] + args.data + extra
    out = subprocess.run(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True,
                         text=True)
    if out.returncode != 0:
        sys.exit(f"moe-train failed ({out.returncode}): {' '.join(cmd)}\n{out.stderr}")
    return next(json.loads(l) for l in out.stdout.splitlines() if l.startswith("{"))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--np", type=int, default=8)
    p.add_argument("--experts", type=int, default=16)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--skews", default="1.2,0")
    p.add_argument("--slots", type=int, default=2)
    p.add_argument("--reshard", type=int, default=5)
    args = p.parse_args()
    shards = os.path.join(ROOT, "data/shards")
    args.data = []
    with tempfile.TemporaryDirectory() as tmp:
        if not os.path.exists(os.path.join(shards, "fortunes_train.tok")):
            shards = os.path.join(tmp, "shards")
            subprocess.run([sys.executable, os.path.join(ROOT, "data/prepare_fortunes.py"),
                            "--out", shards], check=True, stdout=subprocess.DEVNULL)
        args.data = [f"--data.train_path={shards}/fortunes_train.tok",
                     f"--data.val_path={shards}/fortunes_val.tok"]
        results = []
        for skew in [float(s) for s in args.skews.split(",")]:
            for name, extra in layouts(args.np, args.slots, args.reshard):
                run_dir = os.path.join(tmp, f"run{len(results)}")
                final = train(args, skew, extra, run_dir)
                results.append({"skew": skew, "layout": name, **summarise(run_dir, final)})
    print(f"{args.np} ranks, {args.experts} experts, {args.layers - 1} MoE layers, "
          f"{args.steps} steps")
    print("| skew | layout | rows max/mean | a2a B/step | sparse B/step | replica B (peak) "
          "| AdamW B/rank (min-max) | ms/step | loss |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        lo, hi = r["adamw_bytes"]
        print(f"| {r['skew']:g} | {r['layout']} | {r['rows_max_over_mean']:.3f} | "
              f"{r['a2a_bytes']:,.0f} | {r['sparse_bytes']:,.0f} | {r['replica_bytes']:,} | "
              f"{lo:,}-{hi:,} | {r['ms_per_step']:.1f} | {r['loss']:.4f} |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
