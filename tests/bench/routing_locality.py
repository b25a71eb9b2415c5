#!/usr/bin/python3
"""Inter-node traffic and quality of the routing options on an emulated cluster.

Usage: tests/bench/routing_locality.py [--build build] [--nodes 2] [--per-node 4]
           [--config configs/moe_gpt_tiny.ini] [--experts 8] [--steps 200]
           [--eval-batches 8] [--locality 0.01] [--extra --key=value ...]

Trains the same model the same number of steps on launch/emulated_cluster.sh (N nodes
x G ranks, shared memory inside a node, TCP between nodes; dp = ep = N*G) with
  topk      plain top-K routing (the reference), flat dispatcher
  limited   node-limited top-K, moe.max_nodes_per_token = 1, flat dispatcher
  locality  top-K with the LocMoE locality loss, moe.locality_loss = --locality, flat
  bilevel   SMILE bi-level routing, moe.node_groups = N (one group per node),
            two-level dispatcher (same inter-node bytes as flat)
and reports, per step averaged over the steps after the first five:
  inter-node bytes     the token all-to-all's bytes on inter-node links, all ranks
                       together (comm.ep.job_inter_node_bytes): what this framework's
                       dispatcher sends, one row per (token, expert on another node)
  dedup inter bytes    the rows a dispatcher that sends a token once per destination
                       node (DeepSeek-V3's IB-then-NVLink dispatch, SMILE's two-stage
                       dispatch) would put on inter-node links: tokens x remote nodes
                       per token (routing telemetry) x C x 4 bytes x 4 exchanges per MoE
                       layer (dispatch, combine and their backward passes)
  nodes/token, remote nodes/token, node-local share of assignments (routing telemetry)
and the final validation loss, with the changes relative to topk. Prints a Markdown
table and one JSON line.
"""
import argparse
import configparser
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


def summarise(args, steps, final, width, tokens):
    mean = lambda xs: sum(xs) / len(xs)
    inter = mean([r["comm"]["ep"]["job_inter_node_bytes"] for r in steps])
    total = mean([r["comm"]["ep"]["job_intra_node_bytes"] + r["comm"]["ep"]["job_inter_node_bytes"]
                  for r in steps])
    per_layer = lambda key: mean([sum(l[key] for l in r["experts"]) for r in steps])
    layers = len(steps[0]["experts"])
    remote = per_layer("remote_nodes_per_token")  # summed over layers
    return {"inter_bytes": inter, "ep_bytes": total,
            "dedup_inter_bytes": remote * tokens * width * 4 * 4,
            "nodes_per_token": per_layer("nodes_per_token") / layers,
            "remote_nodes_per_token": remote / layers,
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
    p.add_argument("--extra", nargs="*", default=[])
    args = p.parse_args()
    ini = configparser.ConfigParser(inline_comment_prefixes="#")
    ini.read(os.path.join(ROOT, args.config))
    width = ini.getint("model", "d_model")
    tokens = ini.getint("data", "batch_size") * ini.getint("model", "seq_len")
    variants = [("topk", ["--moe.dispatcher=flat"]),
                ("limited", ["--moe.max_nodes_per_token=1", "--moe.dispatcher=flat"]),
                ("locality", [f"--moe.locality_loss={args.locality}", "--moe.dispatcher=flat"]),
                ("bilevel", ["--moe.routing=bilevel", f"--moe.node_groups={args.nodes}",
                             "--moe.dispatcher=two_level"])]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in variants:
            results[name] = summarise(args, *run(args, name, extra, tmp), width, tokens)
    ref = results["topk"]
    print(f"{args.config}, E = {args.experts}, {args.steps} steps, {args.nodes} nodes x "
          f"{args.per_node} ranks (emulated cluster), per step, all ranks:\n")
    print("| routing | inter-node bytes | vs topk | dedup inter-node bytes | vs topk "
          "| nodes / token | remote nodes / token | node-local share | val loss | vs topk |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        rel = lambda key: (r[key] / ref[key] - 1) * 100
        print(f"| {name} | {r['inter_bytes'] / 1e6:.3f} MB | {rel('inter_bytes'):+.1f}% | "
              f"{r['dedup_inter_bytes'] / 1e6:.3f} MB | {rel('dedup_inter_bytes'):+.1f}% | "
              f"{r['nodes_per_token']:.3f} | {r['remote_nodes_per_token']:.3f} | "
              f"{r['node_local']:.3f} | {r['val_loss']:.4f} | {rel('val_loss'):+.2f}% |")
    print(json.dumps({"config": args.config, "experts": args.experts, "steps": args.steps,
                      "nodes": args.nodes, "per_node": args.per_node, "results": results}))


if __name__ == "__main__":
    main()
