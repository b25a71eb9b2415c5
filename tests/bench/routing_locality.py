#!/usr/bin/python3
"""Inter-node traffic and quality of the routing options on an emulated cluster.

Usage: tests/bench/routing_locality.py [--build build] [--nodes 2] [--per-node 4]
           [--config configs/moe_gpt_tiny.ini] [--experts 8] [--steps 200]
           [--eval-batches 8] [--locality 0.01] [--bonus 0.1] [--extra --key=value ...]

Trains the same model the same number of steps on launch/emulated_cluster.sh (N nodes
x G ranks, shared memory inside a node, TCP between nodes; dp = ep = N*G) with
  topk      plain top-K routing (the reference)
  limited   node-limited top-K, moe.max_nodes_per_token = 1
  home      node-limited top-K, M = 1, with moe.own_node_bonus = --bonus (the token's
            own node wins near ties)
  locality  top-K with the LocMoE locality loss, moe.locality_loss = --locality
  bilevel   SMILE bi-level routing, moe.node_groups = N (one group per node)
each once with the flat dispatcher (one row per (token, expert on another node)) and
once with node_dedup (one row per (token, other node), fanned out inside the node),
and reports, per step averaged over the steps after the first five:
  inter-node bytes     the token exchange's bytes on inter-node links, all ranks
                       together (comm.ep.job_inter_node_bytes), for each dispatcher
  nodes/token, remote nodes/token, node-local share of assignments (routing telemetry)
and the final validation loss (the dispatcher changes it only by float rounding), with
the changes relative to topk on the flat dispatcher and to topk on node_dedup. Prints
a Markdown table and one JSON line.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(args, name, extra, tmp):
    ranks = args.nodes * args.per_node
    run_dir = os.path.join(tmp, name)
    cmd = [os.path.join(ROOT, "launch/emulated_cluster.sh"), "-N", str(args.nodes),
           "-G", str(args.per_node), os.path.join(args.build, "moe-train"),
           "--config", args.config, f"--moe.num_experts={args.experts}",
           f"--train.steps={args.steps}", "--train.log_interval=1",
           f"--train.eval_batches={args.eval_batches}", "--train.eval_interval=0",
           "--train.threads=1", "--train.peak_gflops=1", "--run.save_model=false",
           f"--parallel.dp={ranks}", f"--parallel.ep={ranks}", f"--run.dir={run_dir}",
           *args.extra, *extra]
    done = subprocess.run(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
    records = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    steps = [r for r in records if "comm" in r][5:]
    final = json.loads(done.stdout.strip().splitlines()[-1])
    return steps, final


def summarise(steps, final):
    mean = lambda xs: sum(xs) / len(xs)
    per_layer = lambda key: mean([sum(l[key] for l in r["experts"]) for r in steps])
    layers = len(steps[0]["experts"])
    return {"inter_bytes": mean([r["comm"]["ep"]["job_inter_node_bytes"] for r in steps]),
            "intra_bytes": mean([r["comm"]["ep"]["job_intra_node_bytes"] for r in steps]),
            "nodes_per_token": per_layer("nodes_per_token") / layers,
            "remote_nodes_per_token": per_layer("remote_nodes_per_token") / layers,
            "node_local": per_layer("node_local") / layers,
            "val_loss": final["val_loss"], "final_loss": steps[-1]["loss"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--config", default="configs/moe_gpt_tiny.ini")
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--per-node", type=int, default=4)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--locality", type=float, default=0.01)
    p.add_argument("--bonus", type=float, default=0.1)
    p.add_argument("--extra", nargs="*", default=[])
    args = p.parse_args()
    routings = [("topk", []),
                ("limited", ["--moe.max_nodes_per_token=1"]),
                ("home", ["--moe.max_nodes_per_token=1", f"--moe.own_node_bonus={args.bonus}"]),
                ("locality", [f"--moe.locality_loss={args.locality}"]),
                ("bilevel", ["--moe.routing=bilevel", f"--moe.node_groups={args.nodes}"])]
    dispatchers = ["flat", "node_dedup"]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in routings:
            results[name] = {d: summarise(*run(args, f"{name}-{d}", [*extra, f"--moe.dispatcher={d}"],
                                               tmp))
                             for d in dispatchers}
    flat_ref, dedup_ref = results["topk"]["flat"], results["topk"]["node_dedup"]
    pct = lambda x, ref: (x / ref - 1) * 100
    print(f"{args.config}, E = {args.experts}, {args.steps} steps, {args.nodes} nodes x "
          f"{args.per_node} ranks (emulated cluster), per step, all ranks; own-node bonus "
          f"{args.bonus}:\n")
    print("| routing | flat: inter-node bytes | vs topk | node_dedup: inter-node bytes "
          "| vs topk flat | vs topk node_dedup | nodes / token | remote nodes / token "
          "| node-local share | val loss | vs topk |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        f, d = r["flat"], r["node_dedup"]
        print(f"| {name} | {f['inter_bytes'] / 1e6:.3f} MB | "
              f"{pct(f['inter_bytes'], flat_ref['inter_bytes']):+.1f}% | "
              f"{d['inter_bytes'] / 1e6:.3f} MB | {pct(d['inter_bytes'], flat_ref['inter_bytes']):+.1f}% | "
              f"{pct(d['inter_bytes'], dedup_ref['inter_bytes']):+.1f}% | "
              f"{d['nodes_per_token']:.3f} | {d['remote_nodes_per_token']:.3f} | "
              f"{d['node_local']:.3f} | {d['val_loss']:.4f} | "
              f"{pct(d['val_loss'], dedup_ref['val_loss']):+.2f}% |")
    gap = max(abs(r["flat"]["val_loss"] / r["node_dedup"]["val_loss"] - 1) for r in results.values())
    print(f"\nlargest val-loss difference flat vs node_dedup, same routing: {gap:.1e} (relative)")
    print(json.dumps({"config": args.config, "experts": args.experts, "steps": args.steps,
                      "nodes": args.nodes, "per_node": args.per_node, "bonus": args.bonus,
                      "results": results}))


if __name__ == "__main__":
    main()
