#!/usr/bin/python3
"""Mutated configs never crash, hang or run away: N tiny runs (--train.steps=1), each
with one to three options set to hostile values (0, -1, huge, not numbers, NaN, long,
control bytes, unknown enum values, missing files), under a 60 s timeout and a 3 GiB
address-space limit. Every run must end with exit status 0 (it trained), 2 (bad input
or environment, one line) or 3 (the training diverged); never a signal, a timeout or
an internal error (1).

Usage: config_fuzz.py BUILD_DIR SHARDS_DIR RUNS SEED
Prints the counts as one JSON line; exit status 1 when any run failed.
"""

import concurrent.futures
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

FMNIST = "/usr/share/datasets/fashion-mnist"
LIMIT_BYTES = 3 << 30
TIMEOUT_S = 60

INTS = ["0", "-1", "1", "2", "3", "7", "64", "1000", "65536", "16777217", "2147483647",
        "-2147483648", "2e9", "1.5", "0x10", "abc", "", "99999999999999999999"]
FLOATS = ["0", "-0", "-1", "1e-45", "1e-9", "0.5", "1", "3.5", "1e6", "1e38", "1e400",
          "nan", "inf", "-inf", "abc", ""]
STRINGS = ["", "auto", "x", "garbage", "a" * 5000, "\x1b[31mred\x1b[0m", "é", "/nonexistent/f",
           "/dev/null", "flat", "two_level", "node_dedup", "bilevel", "topk", "ddim", "euler",
           "gelu", "skip", "warn", "stop", "cosine", "wsd", "moe_gpt", "vit_moe", "dit_moe"]
BOOLS = ["true", "false", "1", "0", "maybe", ""]


def option_table(build):
    """[(key, type)] from moe-train --help."""
    text = subprocess.run([f"{build}/moe-train", "--help"], capture_output=True, text=True).stdout
    return re.findall(r"--([a-z_]+\.[a-z_0-9]+)=<(\w+)>", text)


def base_args(family, shards, run_dir):
    common = ["--train.steps=1", "--train.threads=1", "--train.peak_gflops=1",
              f"--run.dir={run_dir}", "--train.eval_batches=1", "--run.save_model=false"]
    if family == "moe_gpt":
        return ["--config", os.path.abspath("configs/moe_gpt_tiny.ini"),
                f"--data.train_path={shards}/fortunes_train.tok",
                f"--data.val_path={shards}/fortunes_val.tok", *common]
    return ["--config", os.path.abspath(f"configs/{family}_tiny.ini"), *common]


def mutate(rng, table):
    out = []
    for _ in range(rng.randint(1, 3)):
        key, kind = rng.choice(table)
        if key in ("run.dir", "train.steps"):
            continue  # one step, in its own temporary directory: the run's frame
        pool = {"int": INTS, "int64": INTS, "uint64": INTS, "float": FLOATS, "double": FLOATS,
                "bool": BOOLS}.get(kind, STRINGS)
        out.append(f"--{key}={rng.choice(pool)}")
    if rng.random() < 0.05:
        out.append(rng.choice(["--train.stepz=3", "--nosuch.key=1", "stray"]))
    return out


def limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_BYTES, LIMIT_BYTES))


def run_one(build, shards, table, seed, index):
    rng = random.Random(seed * 100003 + index)
    family = rng.choices(["moe_gpt", "vit_moe", "dit_moe"], weights=[6, 2, 2])[0]
    # The run starts in a temporary directory of its own, so that a mutated relative
    # path (checkpoint.dir=bilevel) lands there and goes with it, not in the source tree.
    work = tempfile.mkdtemp(prefix="config_fuzz_")
    run_dir = os.path.join(work, "run")
    args = [f"{build}/moe-train", *base_args(family, shards, run_dir), *mutate(rng, table)]
    start = time.monotonic()
    try:
        p = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           timeout=TIMEOUT_S, preexec_fn=limit_memory, cwd=work)
        rc, err = p.returncode, p.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired:
        rc, err = "timeout", ""
    shutil.rmtree(work, ignore_errors=True)
    lines = [l for l in err.splitlines() if l.startswith("moe-train: ") and not l.startswith("moe-train: step")]
    return {"args": args[1:], "rc": rc, "seconds": time.monotonic() - start,
            "last": err.strip().splitlines()[-1][:300] if err.strip() else "",
            "error_lines": len(lines)}


def main():
    build, shards = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    runs, seed = int(sys.argv[3]), int(sys.argv[4])
    table = option_table(build)
    assert len(table) > 90, f"only {len(table)} options parsed from moe-train --help"
    start = time.monotonic()
    # A run mostly waits (MPI start-up): more of them than cores keep the cores busy.
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda i: run_one(build, shards, table, seed, i), range(runs)))
    counts, failures = {}, []
    for r in results:
        counts[str(r["rc"])] = counts.get(str(r["rc"]), 0) + 1
        if r["rc"] not in (0, 2, 3) or (r["rc"] == 2 and r["error_lines"] != 1):
            failures.append(r)
    for f in failures:
        print("FAIL:", json.dumps(f))
    print(json.dumps({"runs": runs, "exit_statuses": counts, "failures": len(failures),
                      "slowest_s": round(max(r["seconds"] for r in results), 2),
                      "seconds": round(time.monotonic() - start, 1)}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
