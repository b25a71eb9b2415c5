#!/usr/bin/python3
"""Greedy generation of moe-generate against the float64 PyTorch reference.

Usage (Debian's python: torch 1.13, numpy, h5py):
  /usr/bin/python3 tests/reference/compare_generate.py MODEL.h5 PROMPTS.txt OUT.jsonl

MODEL.h5 is the weights file (or checkpoint) moe-generate read, PROMPTS.txt its prompts
(one per line), OUT.jsonl its --jsonl output of a greedy run (--temperature 0). The
reference recomputes the whole sequence for every new token (no cache) with
tests/reference/moe_gpt_ref.py in float64 and takes the argmax of the last position;
every generated token must be the same. Inference is dropless, so the reference runs
with capacity_factor 0 whatever the training config said.

Exit status: 0 equal, 1 a token differs.
"""

import json
import os
import sys

import h5py
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_gpt_ref as ref  # noqa: E402


def load(path):
    """(config, {name: float64 parameter}, {layer: float64 router bias}) of a model file."""
    with h5py.File(path, "r") as f:
        ini = f["config"].attrs["ini"]
        cfg, _ = ref.config_from_dict(ref.config_from_ini(ini.decode() if isinstance(ini, bytes) else ini))
        params = {k: torch.from_numpy(f["model"][k][()]).double() for k in f["model"]}
        biases = {}
        for k in f.get("buffers", {}):
            if k.endswith(".moe.router.bias"):
                biases[int(k.split(".")[1])] = torch.from_numpy(f["buffers"][k][()]).double()
    cfg.capacity_factor = 0.0  # dropless inference
    return cfg, params, biases


def main():
    model, prompts_path, out_path = sys.argv[1:4]
    cfg, params, biases = load(model)
    prompts = open(prompts_path, "rb").read().split(b"\n")
    records = [json.loads(line) for line in open(out_path)]
    assert len(records) == len([p for p in prompts if p]), (len(records), prompts)
    compared = 0
    smallest_gap = float("inf")
    for record in records:
        tokens = list(prompts[record["index"]])
        for step, got in enumerate(record["tokens"]):
            with torch.no_grad():
                logits = ref.logits_and_routing(cfg, params, torch.tensor([tokens]), biases)[0]
            last = logits[0, -1]
            want = int(last.argmax())
            top2 = torch.topk(last, 2).values
            smallest_gap = min(smallest_gap, float(top2[0] - top2[1]))
            if got != want:
                print(f"prompt {record['index']} step {step}: moe-generate chose {got}, "
                      f"the reference {want} (logits {float(last[got]):.6f} vs "
                      f"{float(last[want]):.6f})")
                return 1
            tokens.append(got)
            compared += 1
    print(f"{compared} greedy tokens of {len(records)} prompts equal the float64 reference "
          f"(smallest top-2 logit gap {smallest_gap:.2e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
