#!/usr/bin/python3
"""Where a training step's time goes, by kind of work, from a perf profile.

Usage: tests/bench/profile_breakdown.py [--build build] [--config configs/moe_gpt_small.ini]
                                        [--steps 6]
Needs `perf` (Debian: linux-perf). Samples moe-train with `perf record` and groups
the self time of every symbol into: GEMM (OpenBLAS kernels and packing), attention
kernels, routing (router softmax/top-k, permute/combine, plan), elementwise and
norms, loss, optimizer, thread synchronisation (OpenMP waiting), start-up (weight
initialisation), kernel/other. Prints one JSON line of percentages.
"""
import argparse
import json
import os
import re
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CATEGORIES = [  # first match wins
    ("gemm", r"sgemm|sgemv|blas|gemm_"),
    ("attention", r"attention|row_times_transposed|softmax_row|key_grads|weighted_rows|"
                  r"head_forward|head_backward|dscore|rope"),
    ("routing", r"topk|permute_rows|combine_rows|routing|router|dispatch|build_routing_plan|"
                r"aux_loss|z_loss|softmax_forward|softmax_backward"),
    ("optimizer", r"adamw|sum_squares|scale_grads|clip"),
    ("loss", r"cross_entropy"),
    ("elementwise_norm", r"swiglu|silu|gelu|rmsnorm|layernorm|axpy|add|embedding|memset|memmove|memcpy"),
    ("startup", r"normal_at|philox|__cos|__ieee754_log|__sin|initialize"),
    ("sync", r"libgomp|GOMP|sched_yield|__schedule|futex"),
]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--config", default="configs/moe_gpt_small.ini")
    p.add_argument("--steps", type=int, default=6)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        subprocess.run(["perf", "record", "-q", "-o", data, os.path.join(args.build, "moe-train"),
                        "--config", args.config, f"--train.steps={args.steps}",
                        f"--train.log_interval={args.steps}", "--train.eval_batches=1",
                        f"--run.dir={tmp}/run", "--train.peak_gflops=90"],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        report = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio",
                                 "--sort", "dso,symbol"], capture_output=True, text=True,
                                check=True).stdout
    shares = {name: 0.0 for name, _ in CATEGORIES}
    shares["other"] = 0.0
    for line in report.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+\[.\]\s+(.*)", line)
        if not m:
            continue
        pct, dso, symbol = float(m.group(1)), m.group(2), m.group(3)
        text = dso + " " + symbol
        for name, pattern in CATEGORIES:
            if re.search(pattern, text, re.IGNORECASE):
                shares[name] += pct
                break
        else:
            shares["other"] += pct
    print(json.dumps({k: round(v, 1) for k, v in shares.items()}))


if __name__ == "__main__":
    main()
