#!/usr/bin/python3
"""Compare the C++ ViT-MoE or DiT-MoE with the float64 PyTorch reference (image_ref.py).

Usage: /usr/bin/python3 tests/reference/compare_image_model.py FILE.h5
FILE is written by tests/reference/dump_image_model.cpp: /config (attribute ini),
/model/<name>, /grads/<name>, /batch/*, /result/{loss, ce_loss, aux_loss, z_loss,
expert_counts}. Exit status: 0 agree, 1 disagree, 2 unusable file.

Tolerances as in compare_moe_gpt.py: float32 C++ against float64 here, relative 1e-5 on
the loss parts and 1e-4 norm-wise on every parameter gradient.
"""

import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import image_ref as ref  # noqa: E402

LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-4
NEAR_TIE = 1e-6


def main(path):
    with h5py.File(path, "r") as f:
        ini = f["config"].attrs["ini"]
        cfg = ref.config_from_ini(ini.decode() if isinstance(ini, bytes) else str(ini))
        params = {n: torch.tensor(np.asarray(d[()], dtype=np.float64), requires_grad=True)
                  for n, d in f["model"].items()}
        grads = {n: np.asarray(d[()], dtype=np.float64) for n, d in f["grads"].items()}
        batch = {n: np.asarray(d[()]) for n, d in f["batch"].items()}
        result = {n: np.asarray(d[()]) for n, d in f["result"].items()}
    as64 = lambda a: torch.from_numpy(a.astype(np.float64))  # noqa: E731
    labels = torch.from_numpy(batch["labels"].astype(np.int64))
    if cfg.family == "vit_moe":
        out = ref.vit_forward(cfg, params, as64(batch["images"]), labels)
    elif cfg.family == "dit_moe":
        out = ref.dit_forward(cfg, params, as64(batch["x_t"]), as64(batch["t"]), labels,
                              as64(batch["target"]))
    else:
        print(f"{path}: model.family {cfg.family} is not an image family")
        return 2
    out.loss.backward()
    failures = []
    print(f"{cfg.family}: smallest top-K selection margin {out.margin:.3g}")
    if out.margin < NEAR_TIE:
        print("warning: a near-tie in the routing may flip between float32 and float64")
    for name, value in (("loss", out.loss), ("ce_loss", out.main_loss),
                        ("aux_loss", out.aux_loss), ("z_loss", out.z_loss)):
        want, got = float(value), float(result[name])
        rel = abs(got - want) / max(abs(want), 1e-30)
        print(f"{name:9s} C++ {got:.8g} reference {want:.8g} rel {rel:.2e}")
        if rel > LOSS_RTOL and not (name != "loss" and abs(want) < 1e-12):
            failures.append(f"{name}: relative error {rel:.2e} > {LOSS_RTOL}")
    counts = np.stack([c.numpy() for c in out.counts]) if out.counts else np.zeros((0,))
    if not np.array_equal(counts, result["expert_counts"]):
        failures.append(f"expert counts differ:\n{result['expert_counts']}\nvs\n{counts}")
    if set(grads) != set(params):
        failures.append(f"parameter sets differ: {sorted(set(grads) ^ set(params))}")
    worst = 0.0
    for name, p in sorted(params.items()):
        g_ref = p.grad.numpy() if p.grad is not None else np.zeros(p.shape)
        diff = np.linalg.norm(grads[name] - g_ref)
        rel = diff / max(np.linalg.norm(g_ref), 1e-12)
        worst = max(worst, rel)
        if rel > GRAD_RTOL and diff > 1e-9:
            failures.append(f"grad {name}: relative error {rel:.2e} > {GRAD_RTOL}")
    print(f"{len(params)} parameter gradients, worst relative error {worst:.2e}")
    for f in failures:
        print("FAIL " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
