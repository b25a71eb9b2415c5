#!/usr/bin/python3
"""Throughput of moe-train against PyTorch eager on the same model, in one run.

Usage: tests/bench/moe_gpt_vs_torch.py [--build build] [--config configs/moe_gpt_small.ini]
                                        [--rounds 3] [--steps 8] [--threads 2]
                                        [--torch2-python VENV/bin/python]

Four programs alternate in every round (ours fp32, ours bf16, PyTorch fp32, PyTorch with
torch.autocast("cpu", dtype=torch.bfloat16)), so that drift of a shared machine hits
all alike, and the report gives the median tokens/s of each, the ratios the goals are
stated in, our MFU against the measured GEMM peak of each precision, and where our step
time goes. The PyTorch peer is tests/reference/bench_torch_moe_gpt.py: the reference
model with a sort-by-expert MoE and torch.optim.AdamW, on the same thread count.

Debian's PyTorch is 1.13. With --torch2-python (the python of a virtual environment
holding PyTorch 2 from PyPI, docs/benchmarks.md) two more programs join every round:
PyTorch 2 in fp32 and under bf16 autocast, both with scaled_dot_product_attention and
the fused AdamW (bench_torch_moe_gpt.py --sdpa --fused-adamw), and the ratios against
them are reported too.
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


def run_ours(args, run_dir, precision):
    steps = args.steps
    cmd = [os.path.join(args.build, "moe-train"), "--config", args.config,
           f"--train.steps={steps}", "--train.log_interval=2", "--train.eval_batches=1",
           f"--train.threads={args.threads}", f"--train.precision={precision}",
           f"--run.dir={run_dir}", "--run.overwrite=true"]
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


def run_torch(args, ini, autocast, torch2=False):
    m, e = ini["model"], ini["moe"]
    python = args.torch2_python if torch2 else "/usr/bin/python3"
    cmd = [python, os.path.join(ROOT, "tests/reference/bench_torch_moe_gpt.py"),
           "--layers", m["num_layers"], "--d-model", m["d_model"], "--heads", m["num_heads"],
           "--experts", e["num_experts"], "--top-k", e["top_k"],
           "--expert-ffn", e["expert_ffn"], "--shared", e["num_shared"],
           "--shared-ffn", e["shared_ffn"], "--dense-layers", m["dense_layers"],
           "--dense-ffn", m["dense_ffn"], "--seq-len", m["seq_len"],
           "--batch", ini["data"]["batch_size"], "--vocab", m["vocab_size"],
           "--capacity-factor", e.get("capacity_factor", "0"),
           "--steps", str(max(2, args.steps // 2)), "--warmup", "1",
           "--threads", str(args.threads)] + (["--autocast"] if autocast else []) \
        + (["--sdpa", "--fused-adamw"] if torch2 else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


VARIANTS = (("ours_fp32", lambda a, ini, d: run_ours(a, d, "fp32")),
            ("ours_bf16", lambda a, ini, d: run_ours(a, d, "bf16")),
            ("pytorch_fp32", lambda a, ini, d: run_torch(a, ini, False)),
            ("pytorch_bf16_autocast", lambda a, ini, d: run_torch(a, ini, True)))
TORCH2 = (("pytorch2_fp32", lambda a, ini, d: run_torch(a, ini, False, torch2=True)),
          ("pytorch2_bf16_autocast", lambda a, ini, d: run_torch(a, ini, True, torch2=True)))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--config", default="configs/moe_gpt_small.ini")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--torch2-python", help="python of an environment with PyTorch 2")
    args = p.parse_args()
    variants = VARIANTS + (TORCH2 if args.torch2_python else ())
    ini = configparser.ConfigParser(inline_comment_prefixes=("#",))
    ini.read(os.path.join(ROOT, args.config))
    runs = {name: [] for name, _ in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, run in variants:
                runs[name].append(run(args, ini, os.path.join(tmp, f"{name}{r}")))
            print(f"round {r}: " + ", ".join(f"{name} {runs[name][-1]['tokens_per_s']:.0f}"
                                             for name, _ in variants) + " tok/s",
                  file=sys.stderr)
    tps = {name: statistics.median(x["tokens_per_s"] for x in runs[name]) for name in runs}
    ratio = lambda a, b: round(tps[a] / tps[b], 2)
    best = {name: max(runs[name], key=lambda o: o["tokens_per_s"])
            for name in ("ours_fp32", "ours_bf16")}
    print(json.dumps({
        "config": args.config, "threads": args.threads, "rounds": args.rounds,
        "tokens_per_s": {name: round(v, 1) for name, v in tps.items()},
        "per_round": {name: [round(x["tokens_per_s"]) for x in runs[name]] for name in runs},
        "ratios": {"ours_bf16/pytorch_fp32": ratio("ours_bf16", "pytorch_fp32"),
                   "ours_bf16/pytorch_bf16_autocast": ratio("ours_bf16", "pytorch_bf16_autocast"),
                   "ours_bf16/ours_fp32": ratio("ours_bf16", "ours_fp32"),
                   "ours_fp32/pytorch_fp32": ratio("ours_fp32", "pytorch_fp32"),
                   "pytorch_bf16_autocast/pytorch_fp32":
                       ratio("pytorch_bf16_autocast", "pytorch_fp32"),
                   **({"ours_bf16/pytorch2_fp32": ratio("ours_bf16", "pytorch2_fp32"),
                       "ours_bf16/pytorch2_bf16_autocast":
                           ratio("ours_bf16", "pytorch2_bf16_autocast"),
                       "ours_fp32/pytorch2_fp32": ratio("ours_fp32", "pytorch2_fp32")}
                      if args.torch2_python else {})},
        "ours_mfu": {name: round(statistics.median(x["mfu"] for x in runs[name]), 4)
                     for name in best},
        "ours_step_ms": {name: {k: round(v, 1) for k, v in b["time_ms"].items()}
                         for name, b in best.items()},
        "ours_component_ms": {name: {k: round(v, 1) for k, v in b["component_ms"].items()}
                              for name, b in best.items()},
        "pytorch_step_s": {name: {k: round(runs[name][-1][k], 3)
                                  for k in ("forward_s", "backward_s", "optimizer_s")}
                           for name in runs if name.startswith("pytorch")},
        "pytorch_cpu_busy": {name: round(statistics.median(x["cpu_busy"] for x in runs[name]), 2)
                             for name in runs if name.startswith("pytorch")},
        "pytorch_framework": {name: runs[name][-1]["framework"]
                              for name in runs if name.startswith("pytorch")},
    }))


if __name__ == "__main__":
    main()
