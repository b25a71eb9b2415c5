#!/usr/bin/python3
"""moe-report: pictures of training runs from their metrics.jsonl (docs/metrics.md).

usage: moe-report RUN_DIR [RUN_DIR ...] [--out DIR]

One run directory: writes into --out (default RUN_DIR/report/)
  curves.png             training loss with the validation (or test) metrics, the
                         learning rate, the gradient norm, the router losses
  throughput.png         tokens/s and MFU; the time of a step split by phase
  expert_load.png        per MoE layer, the share of each expert's assignments at each
                         logged step (heatmap, expert x step); a collapsing router shows
                         as a bright band
  expert_load_final.png  layer x expert: the shares over the last tenth of the run
  expert_balance.png     per MoE layer, max/mean load, dropped and node-local shares
  communication.png      bytes per step over intra- and inter-node links per group
                         (ep, dp, edp, tp, etp), summed over all ranks; time in
                         communication per step
Several run directories: writes compare.png into --out (required), their training and
validation curves, tokens/s and MFU overlaid, one colour per run.

Needs Debian's python3-matplotlib. Exit status: 0 done, 2 bad input (one line naming it).
"""

import argparse
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

GROUPS = ("ep", "dp", "edp", "tp", "etp")
PHASES = ("forward", "backward", "grad_sync", "optimizer")
MIB = 1024.0 * 1024.0


class UserError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit status 2, like the other tools
        raise UserError(message)


def load_run(path):
    """(step records, evaluation records) of a run directory's metrics.jsonl."""
    metrics = os.path.join(path, "metrics.jsonl")
    if not os.path.isfile(metrics):
        raise UserError(f"{path}: no metrics.jsonl (not a run directory of moe-train?)")
    records = []
    with open(metrics) as f:
        for number, line in enumerate(f, 1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if line.endswith("\n"):  # a killed run may leave a torn last line
                    raise UserError(f"{metrics}: line {number} is not JSON") from None
    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if any(k in r for k in eval_keys(r))]
    if not steps and not evals:
        raise UserError(f"{metrics}: no records yet")
    return steps, evals


def eval_keys(record):
    """The evaluation metrics of a record (val_loss, val_bpb, test_accuracy, ...)."""
    return [k for k in record if k.startswith(("val_", "test_")) and k != "test_images"]


def series(records, *keys):
    """(steps, values) of the records that hold the nested field keys[0][keys[1]]..."""
    xs, ys = [], []
    for r in records:
        v = r
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            xs.append(r["step"])
            ys.append(v)
    return np.array(xs), np.array(ys, dtype=float)


def finish(fig, path, title):
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curves(steps, evals, out, name):
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    ax = axes[0][0]
    ax.plot(*series(steps, "loss"), label="training loss", lw=1.2)
    for key in sorted({k for r in evals for k in eval_keys(r)}):
        if key.endswith("_loss"):
            ax.plot(*series(evals, key), "o-", label=key.replace("_", " "), ms=4)
    ax.set(xlabel="step", ylabel="cross-entropy (nats)", title="loss")
    ax.legend()
    ax = axes[0][1]
    other = sorted({k for r in evals for k in eval_keys(r) if not k.endswith("_loss")})
    for key in other:
        ax.plot(*series(evals, key), "o-", label=key.replace("_", " "), ms=4)
    if other:
        ax.legend()
    ylabel = {"val_bpb": "bits per byte", "test_accuracy": "top-1 accuracy"}
    ax.set(xlabel="step", ylabel=" / ".join(ylabel.get(k, k) for k in other) or "(none)",
           title="evaluation")
    panels = ((axes[0][2], "lr", "learning rate", "learning rate", "tab:green"),
              (axes[1][0], "grad_norm", "global L2 norm", "gradient norm (before clipping)",
               "tab:red"),
              (axes[1][1], "aux_loss", "sum over MoE layers", "balance (aux) loss", "tab:purple"),
              (axes[1][2], "z_loss", "sum over MoE layers", "router z-loss", "tab:brown"))
    for ax, key, ylabel, title, colour in panels:
        ax.plot(*series(steps, key), color=colour)
        ax.set(xlabel="step", ylabel=ylabel, title=title)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    return finish(fig, os.path.join(out, "curves.png"), f"{name}: training curves")


def plot_throughput(steps, out, name):
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(11, 10), sharex=True)
    top.plot(*series(steps, "tokens_per_s"), color="tab:blue")
    top.set(ylabel="tokens per second", title="throughput (global batch)")
    x, mfu = series(steps, "mfu")
    middle.plot(x, mfu * 100, color="tab:orange")
    middle.set(ylabel="MFU (%)", title="model FLOPs utilisation (of the measured peak)")
    parts = [series(steps, "time_ms", phase) for phase in PHASES]
    if len(parts[0][0]):
        bottom.stackplot(parts[0][0], *[p[1] for p in parts],
                         labels=[p.replace("_", " ") for p in PHASES], alpha=0.85)
        total = sum(p[1] for p in parts)
        bottom.set_ylim(0, 1.3 * float(total.max()))  # room for the legend
        bottom.legend(loc="upper center", ncol=len(PHASES))
    bottom.set(xlabel="step", ylabel="milliseconds per step (rank 0)",
               title="time of a step by phase")
    return finish(fig, os.path.join(out, "throughput.png"), f"{name}: speed")


def expert_shares(steps):
    """{layer: (steps, shares (experts, steps))}: each expert's share of its layer's
    assignments at each logged step."""
    layers = {}
    for r in steps:
        for entry in r.get("experts", []):
            tokens = np.array(entry["tokens"], dtype=float)
            total = tokens.sum()
            layers.setdefault(entry["layer"], ([], []))
            layers[entry["layer"]][0].append(r["step"])
            layers[entry["layer"]][1].append(tokens / total if total > 0 else tokens)
    return {l: (np.array(s), np.array(v).T) for l, (s, v) in sorted(layers.items())}


def plot_expert_load(steps, out, name):
    shares = expert_shares(steps)
    if not shares:
        return []
    n = len(shares)
    fig, axes = plt.subplots(n, 1, figsize=(12, 1.2 + 2.2 * n), squeeze=False)
    vmax = max(float(v.max()) for _, v in shares.values())
    for ax, (layer, (x, v)) in zip(axes[:, 0], shares.items()):
        experts = v.shape[0]
        # One column per logged step, edges halfway between steps.
        edges = np.concatenate(([x[0] - 0.5 * (x[1] - x[0]) if len(x) > 1 else x[0] - 0.5],
                                (x[1:] + x[:-1]) / 2,
                                [x[-1] + 0.5 * (x[-1] - x[-2]) if len(x) > 1 else x[-1] + 0.5]))
        image = ax.pcolormesh(edges, np.arange(experts + 1) - 0.5, v, cmap="viridis",
                              vmin=0.0, vmax=vmax, shading="flat")
        ax.set(xlabel="step", ylabel="expert", title=f"layer {layer}: share of assignments "
               f"(balanced = {1 / experts:.3f})")
        ax.yaxis.get_major_locator().set_params(integer=True)
        fig.colorbar(image, ax=ax, label="share of the layer's assignments")
    paths = [finish(fig, os.path.join(out, "expert_load.png"),
                    f"{name}: expert load over training")]

    # layer x expert over the last tenth of the logged steps
    layers = list(shares)
    experts = max(v.shape[0] for _, v in shares.values())
    grid = np.full((len(layers), experts), np.nan)
    for i, layer in enumerate(layers):
        _, v = shares[layer]
        tail = max(1, math.ceil(v.shape[1] / 10))
        grid[i, :v.shape[0]] = v[:, -tail:].mean(axis=1)
    fig, ax = plt.subplots(figsize=(max(8, 0.4 * experts + 3), 2.5 + 0.5 * len(layers)))
    image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0, interpolation="nearest")
    ax.set(xlabel="expert", ylabel="MoE layer", yticks=range(len(layers)), yticklabels=layers,
           title=f"share of assignments over the last {tail} logged step(s) "
           f"(balanced = {1 / experts:.3f})")
    ax.xaxis.get_major_locator().set_params(integer=True)
    if experts <= 16:  # few enough cells to print their values
        for (i, e), value in np.ndenumerate(grid):
            ax.text(e, i, f"{value:.2f}", ha="center", va="center", color="w", fontsize=9)
    fig.colorbar(image, ax=ax, label="share of assignments")
    paths.append(finish(fig, os.path.join(out, "expert_load_final.png"),
                        f"{name}: expert load at the end"))
    return paths


def plot_expert_balance(steps, out, name):
    layers = sorted({e["layer"] for r in steps for e in r.get("experts", [])})
    if not layers:
        return []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    fields = (("max_over_mean", "max / mean tokens per expert", "imbalance (1 = balanced)", 1.0),
              ("dropped", "share of assignments dropped", "dropped by capacity", 0.0),
              ("node_local", "share of assignments on the token's node", "node-local", 0.0))
    for ax, (field, ylabel, title, floor) in zip(axes, fields):
        for layer in layers:
            x, y = [], []
            for r in steps:
                for e in r.get("experts", []):
                    if e["layer"] == layer and field in e:
                        x.append(r["step"])
                        y.append(e[field])
            ax.plot(x, y, label=f"layer {layer}")
        ax.set(xlabel="step", ylabel=ylabel, title=title)
        # From the best value up: a flat line at 0 dropped or at 1 node-local is not noise.
        top = max([line.get_ydata().max() for line in ax.get_lines() if len(line.get_ydata())],
                  default=floor)
        ax.set_ylim(floor, max(floor + 0.05, 1.1 * top if field != "node_local" else 1.05))
        ax.legend()
    return [finish(fig, os.path.join(out, "expert_balance.png"), f"{name}: expert balance")]


def plot_communication(steps, out, name):
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    fields = (("job_intra_node_bytes", "intra-node links"),
              ("job_inter_node_bytes", "inter-node links"))
    largest = max([series(steps, "comm", g, f)[1].max(initial=0) for g in GROUPS
                   for f, _ in fields], default=0)
    unit, scale = next((u, x) for u, x in (("GiB", 1024 * MIB), ("MiB", MIB), ("KiB", 1024.0),
                                           ("bytes", 1.0)) if largest >= x or x == 1.0)
    for ax, (field, title) in zip(axes, fields):
        for group in GROUPS:
            x, y = series(steps, "comm", group, field)
            if len(y) and y.max() > 0:
                ax.plot(x, y / scale, label=group)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(title="process group")
        else:
            ax.text(0.5, 0.5, "no traffic", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylim(bottom=0)
        ax.set(xlabel="step", ylabel=f"{unit} per step, all ranks", title=title)
    ax = axes[2]
    for group in GROUPS:
        x, y = series(steps, "comm", group, "ms")
        if len(y) and y.max() > 0:
            ax.plot(x, y, label=group)
    x, y = series(steps, "comm", "compute_ms")
    ax.plot(x, y, color="k", ls="--", label="compute (step - communication)")
    ax.set(xlabel="step", ylabel="milliseconds per step (rank 0)", title="time")
    ax.legend()
    return finish(fig, os.path.join(out, "communication.png"), f"{name}: communication")


def plot_compare(runs, out):
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, (steps, evals)) in enumerate(runs.items()):
        c = colours[i % len(colours)]
        axes[0][0].plot(*series(steps, "loss"), color=c, label=name, lw=1.2)
        for key in sorted({k for r in evals for k in eval_keys(r) if k.endswith("_loss")}):
            axes[0][1].plot(*series(evals, key), "o-", color=c, ms=4,
                            label=f"{name}: {key.replace('_', ' ')}")
        axes[1][0].plot(*series(steps, "tokens_per_s"), color=c, label=name)
        x, mfu = series(steps, "mfu")
        axes[1][1].plot(x, mfu * 100, color=c, label=name)
    labels = (("training loss", "cross-entropy (nats)"),
              ("evaluation loss", "validation / test loss"),
              ("throughput", "tokens per second"), ("MFU", "% of the measured peak"))
    for ax, (title, ylabel) in zip(axes.flat, labels):
        ax.set(xlabel="step", ylabel=ylabel, title=title)
        ax.legend(fontsize="small")
    return finish(fig, os.path.join(out, "compare.png"), f"{len(runs)} runs compared")


def run_names(paths):
    """Short distinct labels: the directory names (the full paths when those repeat)."""
    names = [os.path.basename(os.path.normpath(p)) for p in paths]
    return names if len(set(names)) == len(names) else [os.path.normpath(p) for p in paths]


def main(argv):
    parser = Parser(prog="moe-report", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--out", help="output directory (default RUN_DIR/report)")
    args = parser.parse_args(argv)
    if len(args.runs) > 1 and not args.out:
        raise UserError("--out: required with several run directories")
    out = args.out or os.path.join(args.runs[0], "report")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out: '{out}' exists and is not a directory")
    loaded = {name: load_run(path) for name, path in zip(run_names(args.runs), args.runs)}
    os.makedirs(out, exist_ok=True)
    if len(loaded) > 1:
        written = [plot_compare(loaded, out)]
    else:
        (name, (steps, evals)), = loaded.items()
        written = [plot_curves(steps, evals, out, name)]
        if steps:
            written.append(plot_throughput(steps, out, name))
            written += plot_expert_load(steps, out, name)
            written += plot_expert_balance(steps, out, name)
            written.append(plot_communication(steps, out, name))
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except UserError as e:
        print(f"moe-report: {e}", file=sys.stderr)
        sys.exit(2)
