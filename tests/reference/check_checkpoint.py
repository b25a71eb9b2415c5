#!/usr/bin/python3
"""A checkpoint read by h5py alone, against docs/checkpoint-format.md; exported weights
against the PyTorch reference model.

Usage: check_checkpoint.py DOC CHECKPOINT WEIGHTS_H5 EXPORT_H5 EXPORT_SAFETENSORS BATCH_H5
                           METRICS_JSONL STEP

- every field the document's table lists is in CHECKPOINT with its type, and nothing
  else is; WEIGHTS_H5 (model.h5) and EXPORT_H5 hold the "both" fields only;
- every checksum matches the documented formula (numpy), and so does the attributes
  checksum (h5_attrs.py); optimizer states have their parameter's shape, the trainer
  fields agree with STEP;
- the exported tensors equal the checkpoint's, and the safetensors export, loaded by
  docs/examples/finetune_pytorch.py into tests/reference/moe_gpt_ref.py (float64),
  gives on BATCH (the batch of step STEP) the cross-entropy, aux and z losses that
  the C++ trainer logged for that batch (metrics record STEP + 1) to relative 1e-5.
"""

import importlib.util
import json
import pathlib
import re
import sys

import h5py
import numpy as np
import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import h5_attrs  # noqa: E402
import moe_gpt_ref as ref  # noqa: E402

LOSS_RTOL = 1e-5  # float32 C++ against the float64 reference, as in compare_moe_gpt.py
AUX_RTOL = 1e-4   # aux and z are small sums of probabilities: a little looser


def doc_fields(doc):
    """[(field, type, where)] from the table of the document's "Layout" section."""
    fields = []
    for line in pathlib.Path(doc).read_text().splitlines():
        m = re.match(r"\| `(/[^`]*)` \| ([^|]+) \| (both|checkpoint) \|", line)
        if m:
            fields.append((m.group(1), m.group(2).strip(), m.group(3)))
    assert len(fields) >= 30, f"{doc}: only {len(fields)} fields found in the table"
    return fields


def checksum(x):
    """The documented checksum, as docs/checkpoint-format.md writes it."""
    k = np.arange(x.size, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    k += np.ascontiguousarray(x, dtype="<f4").reshape(-1).view("<u4").astype(np.uint64)
    for shift, mul in ((33, 0xFF51AFD7ED558CCD), (33, 0xC4CEB9FE1A85EC53), (33, None)):
        k ^= k >> np.uint64(shift)
        if mul:
            k *= np.uint64(mul)
    return int(k.sum(dtype=np.uint64))


def type_ok(value, kind):
    if kind == "string":  # fixed-length UTF-8: h5py returns bytes
        return isinstance(value, bytes) and value.decode("utf-8") is not None
    if kind == "int64":
        return isinstance(value, np.integer) and value.dtype == np.int64
    if kind == "uint64":
        return isinstance(value, np.integer) and value.dtype == np.uint64
    if kind == "float64":
        return isinstance(value, np.floating) and value.dtype == np.float64
    raise AssertionError(f"unknown attribute type {kind}")


def expand(field, names, buffers):
    if "<name>" in field:
        return [field.replace("<name>", n) for n in names]
    if "<buffer>" in field:
        return [field.replace("<buffer>", b) for b in buffers]
    return [field]


def check_file(path, fields, kind):
    """Every documented field of a `kind` file ("checkpoint" or "weights") and nothing else."""
    problems = []
    with h5py.File(path, "r") as f:
        names = list(f["model"])
        buffers = list(f["buffers"]) if "buffers" in f else []
        documented = set()
        for field, ftype, where in fields:
            wanted = where == "both" or kind == "checkpoint"
            for concrete in expand(field, names, buffers):
                obj, _, attr = concrete.partition("@")
                documented.add(concrete)
                present = obj in f and (not attr or attr in f[obj].attrs)
                if not wanted:
                    if present and attr:
                        problems.append(f"{path}: {concrete} is in a {kind} file")
                    continue
                if not present:
                    problems.append(f"{path}: {concrete} is missing")
                elif attr:
                    if not type_ok(f[obj].attrs[attr], ftype):
                        problems.append(f"{path}: {concrete} is {f[obj].attrs[attr]!r}, not {ftype}")
                elif ftype == "float32 dataset":
                    if not isinstance(f[obj], h5py.Dataset) or f[obj].dtype != np.float32:
                        problems.append(f"{path}: {concrete} is not a float32 dataset")
        # nothing undocumented: every dataset and attribute is a table entry
        def visit(name, obj):
            full = "/" + name
            if isinstance(obj, h5py.Dataset) and full not in documented:
                problems.append(f"{path}: undocumented dataset {full}")
            for a in obj.attrs:
                if f"{full}@{a}" not in documented:
                    problems.append(f"{path}: undocumented attribute {full}@{a}")
        for a in f.attrs:
            if f"/@{a}" not in documented:
                problems.append(f"{path}: undocumented attribute /@{a}")
        f.visititems(visit)
        # checksums and shapes
        def check_sums(name, obj):
            if isinstance(obj, h5py.Dataset):
                if int(obj.attrs["checksum"]) != checksum(obj[...]):
                    problems.append(f"{path}: /{name} fails the documented checksum")
        f.visititems(check_sums)
        if kind == "checkpoint":
            for n in names:
                for state in ("exp_avg", "exp_avg_sq"):
                    if f[f"optim/{n}/{state}"].shape != f[f"model/{n}"].shape:
                        problems.append(f"{path}: optim/{n}/{state} has another shape")
        expected_format = b"moe-checkpoint" if kind == "checkpoint" else b"moe-weights"
        if f.attrs["format"] != expected_format:
            problems.append(f"{path}: format {f.attrs['format']}, expected {expected_format}")
        if int(f.attrs[h5_attrs.NAME]) != h5_attrs.checksum(f):
            problems.append(f"{path}: /@{h5_attrs.NAME} is not the documented checksum")
    return problems


def load_example():
    spec = importlib.util.spec_from_file_location(
        "finetune_pytorch", HERE.parents[1] / "docs" / "examples" / "finetune_pytorch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    doc, ckpt, weights, export_h5, export_st, batch, metrics, step = sys.argv[1:]
    step = int(step)
    fields = doc_fields(doc)
    problems = check_file(ckpt, fields, "checkpoint")
    problems += check_file(weights, fields, "weights")
    problems += check_file(export_h5, fields, "weights")
    with h5py.File(ckpt, "r") as f:
        trainer = f["trainer"].attrs
        if not (trainer["step"] == trainer["data_position"] == trainer["rng_counter"] == step):
            problems.append(f"{ckpt}: trainer step fields {dict(trainer)} are not {step}")
        if f["optim"].attrs["step"] != step:
            problems.append(f"{ckpt}: /optim@step is {f['optim'].attrs['step']}")
        model = {n: f["model"][n][...] for n in f["model"]}
        bufs = {n: f["buffers"][n][...] for n in f["buffers"]}

    example = load_example()
    tensors, metadata = example.read_safetensors(export_st)
    if metadata.get("step") != str(step) or metadata.get("format") != "moe-weights":
        problems.append(f"{export_st}: metadata {metadata.get('format')} step {metadata.get('step')}")
    with h5py.File(export_h5, "r") as f:
        for n, v in {**model, **bufs}.items():
            group = "model" if n in model else "buffers"
            if not np.array_equal(f[group][n][...], v) or not np.array_equal(tensors[n].numpy(), v):
                problems.append(f"export of {n} differs from the checkpoint")
    if set(tensors) != set(model) | set(bufs):
        problems.append(f"{export_st}: tensors {sorted(set(tensors) ^ (set(model) | set(bufs)))}")

    cfg, params, biases = example.load_moe_gpt(export_st, dtype=torch.float64)
    if cfg.bias_balance and not any(float(b.abs().max()) > 0 for b in biases.values()):
        problems.append("the router biases of a bias_balance run are all zero")
    with h5py.File(batch, "r") as f:
        inputs = torch.from_numpy(f["batch/inputs"][...].astype(np.int64))
        targets = torch.from_numpy(f["batch/targets"][...].astype(np.int64))
    out = ref.forward(cfg, params, inputs, targets, biases)
    logged = [r for r in map(json.loads, open(metrics)) if r.get("step") == step + 1 and "loss" in r]
    assert len(logged) == 1, f"{metrics}: no record of step {step + 1}"
    for key, value, rtol in (("loss", out.ce_loss, LOSS_RTOL), ("aux_loss", out.aux_loss, AUX_RTOL),
                             ("z_loss", out.z_loss, AUX_RTOL)):
        want = logged[0][key]
        rel = abs(float(value) - want) / max(abs(want), 1e-12)
        print(f"{key}: reference {float(value):.9g}, trainer {want:.9g}, relative {rel:.2e}")
        if rel > rtol:
            problems.append(f"{key} of the exported weights differs by relative {rel:.2e}")
    for p in problems:
        print("FAIL:", p)
    print(f"{len(fields)} documented fields checked; {'FAIL' if problems else 'PASS'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
