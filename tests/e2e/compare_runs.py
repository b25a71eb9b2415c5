#!/usr/bin/python3
"""Compare the training records of two runs (metrics.jsonl) and their final weights.

Usage: compare_runs.py REF_DIR RUN_DIR LABEL [--from STEP] [--rtol X] [--weights]
                       [--weights-atol A] [--stats-rtol S] [--loads-differ F]

Records of steps > STEP (default 0) that carry a loss are compared on every field the
training determines (loss, aux_loss, z_loss, lr, grad_norm, expert loads, validation
metrics), not on timings. --rtol 0 (default) demands bit-identical values; otherwise
losses must agree to relative X (grad norms and aux losses to 10 X, or to --stats-rtol
S). With --weights,
RUN_DIR/model.h5 must equal REF_DIR/model.h5 (exactly, or within --weights-atol, 1e-5
unless given). Expert loads must be identical, or with --loads-differ F differ in at
most a fraction F of a step's assignments (mixed precision: a token near a tie between
two experts may take the other one).
"""

import argparse
import json
import sys

import h5py
import numpy as np

EXACT_KEYS = ("loss", "aux_loss", "z_loss", "lr", "grad_norm")


def records(run_dir, first):
    out = {}
    for line in open(f"{run_dir}/metrics.jsonl"):
        r = json.loads(line)
        if "loss" in r and r["step"] > first:
            assert r["step"] not in out, f"{run_dir}: step {r['step']} logged twice"
            out[r["step"]] = r
    return out


def close(a, b, rtol):
    return a == b if rtol == 0 else abs(a - b) <= rtol * max(abs(a), 1e-12)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("ref")
    p.add_argument("run")
    p.add_argument("label")
    p.add_argument("--from", dest="first", type=int, default=0)
    p.add_argument("--rtol", type=float, default=0.0)
    p.add_argument("--weights", action="store_true")
    p.add_argument("--weights-atol", type=float, default=None)
    p.add_argument("--loads-differ", type=float, default=0.0)
    p.add_argument("--stats-rtol", type=float, default=None)
    # buffers named ...SUFFIX that only one run keeps (the state of an option such as
    # parallel.reshard_interval): compared where both files have them
    p.add_argument("--optional-buffer", action="append", default=[], metavar="SUFFIX")
    a = p.parse_args()
    weights_atol = a.weights_atol if a.weights_atol is not None else (0.0 if a.rtol == 0 else 1e-5)
    worst_loads = 0.0
    ref, run = records(a.ref, a.first), records(a.run, a.first)
    problems = []
    if sorted(ref) != sorted(run):
        problems.append(f"steps differ: {sorted(ref)} vs {sorted(run)}")
    worst = 0.0
    for step in sorted(set(ref) & set(run)):
        x, y = ref[step], run[step]
        for key in EXACT_KEYS + tuple(k for k in x if k.startswith("val_")):
            stats_rtol = a.stats_rtol if a.stats_rtol is not None else 10 * a.rtol
            tol = a.rtol if key in ("loss", "lr") or key.startswith("val_") else stats_rtol
            if key not in y or not close(x[key], y[key], tol):
                problems.append(f"step {step}: {key} {x[key]!r} vs {y.get(key)!r}")
            elif key == "loss":
                worst = max(worst, abs(x[key] - y[key]) / abs(x[key]))
        moved = sum(abs(p - q) for e, f in zip(x["experts"], y["experts"])
                    for p, q in zip(e["tokens"], f["tokens"]))
        total = sum(sum(e["tokens"]) for e in x["experts"])
        shape_differs = [len(e["tokens"]) for e in x["experts"]] != \
            [len(e["tokens"]) for e in y["experts"]]
        share = moved / (2 * total) if total else 0.0  # assignments that changed expert
        worst_loads = max(worst_loads, share)
        if shape_differs or share > a.loads_differ:
            problems.append(f"step {step}: expert loads differ ({share:.2%} of assignments)")
    wmax = 0.0
    if a.weights:
        with h5py.File(f"{a.ref}/model.h5") as fa, h5py.File(f"{a.run}/model.h5") as fb:
            for group in ("model", "buffers"):
                def names(f, other):  # an optional buffer counts where both have it
                    return sorted(n for n in f[group] if n in other[group]
                                  or not n.endswith(tuple(a.optional_buffer)))
                if names(fa, fb) != names(fb, fa):
                    problems.append(f"/{group} names differ")
                    continue
                for n in names(fa, fb):
                    d = float(np.max(np.abs(fa[group][n][...] - fb[group][n][...])))
                    wmax = max(wmax, d)
                    if d > weights_atol:
                        problems.append(f"final /{group}/{n} differs by {d:.3e}")
    for line in problems[:10]:
        print(f"FAIL {a.label}: {line}")
    if problems:
        return 1
    kind = "bit-identical" if a.rtol == 0 else f"max loss rel diff {worst:.2e}"
    extra = f", max weight diff {wmax:.2e}" if a.weights else ""
    if a.loads_differ > 0:
        extra += f", expert loads differ by at most {worst_loads:.2%} of a step's assignments"
    print(f"{a.label}: steps {min(run)}..{max(run)} {kind}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
