#!/usr/bin/python3
"""Throughput of moe-train against PyTorch eager on the same model, in one run.

Usage: tests/bench/moe_gpt_vs_torch.py [--build build] [--config configs/moe_gpt_small.ini]
                                        [--rounds 2] [--steps 8] [--threads 2]

Alternates the two programs (ours, PyTorch, ours, PyTorch, ...) so that drift of
a shared machine hits both alike, and reports the median tokens/s of each, their
ratio, our MFU against the measured SGEMM peak, and where our step time goes.
The PyTorch peer is tests/reference/bench_torch_moe_gpt.py: the reference model
in float32 with a sort-by-expert MoE and torch.optim.AdamW.
"""
import argparse
import configparser
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_ours(args, run_dir):
    steps = args.steps
    cmd = [os.path.join(args.build, "moe-train"), "--config", args.config,
           f"--train.steps={steps}", "--train.log_interval=2", "--train.eval_batches=1",
           f"--train.threads={args.threads}", f"--run.dir={run_dir}", "--run.overwrite=true"]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    records = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    steps = [r for r in records if "loss" in r]  # not the step-0 validation record
    timed = steps[1:]  # the first interval holds the warm-up step
    mean = lambda key: statistics.fmean(r[key] for r in timed)
    return {
        "tokens_per_s": mean("tokens_per_s"),
        "mfu": mean("mfu"),
        "step_ms": mean("step_ms"),
        "time_ms": {k: statistics.fmean(r["time_ms"][k] for r in timed)
                    for k in timed[0]["time_ms"]},
        "component_ms": {k: statistics.fmean(r["component_ms"][k] for r in timed)
                         for k in timed[0]["component_ms"]},
    }


def run_torch(args, ini):
    m, e = ini["model"], ini["moe"]
    cmd = ["/usr/bin/python3", os.path.join(ROOT, "tests/reference/bench_torch_moe_gpt.py"),
           "--layers", m["num_layers"], "--d-model", m["d_model"], "--heads", m["num_heads"],
           "--experts", e["num_experts"], "--top-k", e["top_k"],
           "--expert-ffn", e["expert_ffn"], "--shared", e["num_shared"],
           "--shared-ffn", e["shared_ffn"], "--dense-layers", m["dense_layers"],
           "--dense-ffn", m["dense_ffn"], "--seq-len", m["seq_len"],
           "--batch", ini["data"]["batch_size"], "--vocab", m["vocab_size"],
           "--capacity-factor", e.get("capacity_factor", "0"),
           "--steps", str(max(2, args.steps // 2)), "--warmup", "1",
           "--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--config", default="configs/moe_gpt_small.ini")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    ini = configparser.ConfigParser(inline_comment_prefixes=("#",))
    ini.read(os.path.join(ROOT, args.config))
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            ours.append(run_ours(args, os.path.join(tmp, f"run{r}")))
            theirs.append(run_torch(args, ini))
            print(f"round {r}: ours {ours[-1]['tokens_per_s']:.0f} tok/s, "
                  f"pytorch {theirs[-1]['tokens_per_s']:.0f} tok/s", file=sys.stderr)
    ours_tps = statistics.median(o["tokens_per_s"] for o in ours)
    torch_tps = statistics.median(t["tokens_per_s"] for t in theirs)
    best = max(ours, key=lambda o: o["tokens_per_s"])
    print(json.dumps({
        "config": args.config, "threads": args.threads, "rounds": args.rounds,
        "ours_tokens_per_s": round(ours_tps, 1),
        "pytorch_tokens_per_s": round(torch_tps, 1),
        "ratio": round(ours_tps / torch_tps, 2),
        "ours_mfu": round(statistics.median(o["mfu"] for o in ours), 4),
        "ours_step_ms": {k: round(v, 1) for k, v in best["time_ms"].items()},
        "ours_component_ms": {k: round(v, 1) for k, v in best["component_ms"].items()},
        "pytorch_step_s": {k: round(theirs[-1][k], 3)
                           for k in ("forward_s", "backward_s", "optimizer_s")},
    }))


if __name__ == "__main__":
    main()
