#!/usr/bin/python3
"""Tensor-parallel communication volume and memory per rank, measured against the count.

Usage: tests/bench/tp_comm.py [--build build] [--config configs/moe_gpt_tiny.ini]
                              [--tps 1,2,4] [--steps 4] [--skip 1] [--sp]
                              [-- moe-train overrides]

Runs moe-train under launch/mpirun.sh with dp = 1, tp = ep = t for each t, a few steps,
and reads rank 0's per-step bytes of the tp group (metrics.jsonl, comm.tp.bytes: the
per-rank share of a ring all-reduce, 2 (t-1)/t of the buffer) and its parameter count
(the "moe-train: N parameters" line). Analytic counts, X = B*T*C*4 bytes:

  Megatron   4 L all-reduces of X per step (2 per layer forward: attention and FFN
             outputs; 2 backward: their input gradients)
  this model the Megatron count, plus 2 (embedding forward, LM head backward), less 2
             per MoE layer without shared experts (its routed experts do not use tp),
             plus the vocabulary-parallel loss (max of B*T floats, then 2*B*T floats)
             and the grad-norm all-reduce (8 bytes); every all-reduce of Y bytes sends
             2 (t-1)/t * Y per rank.

Activations per layer and rank (floats kept for backward by the code, dense layer):
replicated 5 N C (layer input, two norm outputs, mid and output residual) and split
(4 N C + B H T^2 + 3 N F) / t (q, k, v, the attention output, the attention
probabilities, the SwiGLU gate, up and hidden), N = B*T. Prints a markdown table.

--sp turns on parallel.sequence_parallel: every all-reduce of a tp block becomes a
reduce-scatter plus an all-gather of the same ring bytes, the embedding's all-reduce a
reduce-scatter (forward) and an all-gather (backward), and the LM head's backward
all-reduce an all-gather (forward) and a reduce-scatter (backward), so the analytic
bytes are the same. The replicated activations become 5 N C / t, plus the 2 N C the
column-parallel entries keep of their gathered inputs for backward.
"""
import argparse
import configparser
import json
import os
import re
import subprocess
import sys
import tempfile


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--build", default="build")
    p.add_argument("--config", default="configs/moe_gpt_tiny.ini")
    p.add_argument("--tps", default="1,2,4")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--skip", type=int, default=1)
    p.add_argument("--sp", action="store_true", help="parallel.sequence_parallel=true")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    ini = configparser.ConfigParser()
    ini.read(a.config)
    cfg = {f"{s}.{k}": v for s in ini.sections() for k, v in ini[s].items()}
    for o in a.overrides:
        k, v = o.lstrip("-").split("=", 1)
        cfg[k] = v
    B, T = int(cfg["data.batch_size"]), int(cfg["model.seq_len"])
    C, H, F = int(cfg["model.d_model"]), int(cfg["model.num_heads"]), int(cfg["model.dense_ffn"])
    L, dense = int(cfg["model.num_layers"]), int(cfg.get("model.dense_layers", "1"))
    shared = int(cfg.get("moe.num_shared", "0")) > 0
    N, X = B * T, B * T * C * 4
    rows = []
    for t in map(int, a.tps.split(",")):
        with tempfile.TemporaryDirectory() as d:
            cmd = ["launch/mpirun.sh", "-np", str(t), f"{a.build}/moe-train", "--config",
                   a.config, f"--parallel.tp={t}", f"--parallel.ep={t}",
                   f"--train.steps={a.steps}", "--train.log_interval=1",
                   "--train.eval_interval=0", "--train.threads=1", "--train.peak_gflops=1",
                   "--run.save_model=false", f"--run.dir={d}/run"] + a.overrides
            if a.sp:
                cmd.append("--parallel.sequence_parallel=true")
            out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(out.stderr)
            params = int(re.search(r"moe-train: (\d+) parameters", out.stderr).group(1))
            recs = [json.loads(x) for x in open(f"{d}/run/metrics.jsonl")]
            recs = [r for r in recs if "loss" in r][a.skip:]
            measured = sum(r["comm"]["tp"]["bytes"] for r in recs) / len(recs)
        ring = 2 * (t - 1) / t
        megatron = ring * 4 * L * X
        moe_layers = L - dense
        n_act = 4 * L + 2 - (0 if shared else 2 * moe_layers)
        expected = ring * (n_act * X + 3 * N * 4 + 8)
        replicated = 5 * N * C / t + 2 * N * C if a.sp and t > 1 else 5 * N * C
        act = 4 * (replicated + (4 * N * C + B * H * T * T + 3 * N * F) / t)
        rows.append((t, measured, expected, megatron, params * 4, act))
    print(f"| tp | tp bytes/step (rank 0) | analytic, this model | Megatron 4L x B*T*C | "
          f"parameters/rank | activations/dense layer/rank |")
    print("|---|---|---|---|---|---|")
    for t, m, e, mg, pb, act in rows:
        print(f"| {t} | {m:,.0f} | {e:,.0f} | {mg:,.0f} | {pb / 2**20:.3f} MiB | "
              f"{act / 2**20:.3f} MiB |")
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
