#!/usr/bin/python3
"""Fine-tune exported moe_gpt weights in PyTorch (docs/checkpoint-format.md).

    build/moe-ckpt export RUN/checkpoints/step_00000650.h5 --out model.safetensors
    /usr/bin/python3 docs/examples/finetune_pytorch.py model.safetensors \
        --data data/shards/fortunes_val.tok --steps 20

The model is the reference implementation of tests/reference/moe_gpt_ref.py, a
function of a {global name: tensor} dict, so loading the export is a dict of tensors.
Needs torch and numpy (Debian: python3-torch, python3-numpy); uses the `safetensors`
package when it is installed and the small reader below otherwise.
"""

import argparse
import json
import pathlib
import struct
import sys

import numpy as np
import torch

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "reference"))
import moe_gpt_ref as ref  # noqa: E402


def read_safetensors(path):
    """({name: float32 tensor}, metadata) of a safetensors file."""
    try:
        from safetensors import safe_open
    except ImportError:
        safe_open = None
    if safe_open is not None:
        with safe_open(path, framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    raw = pathlib.Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    metadata = header.pop("__metadata__", {})
    data = raw[8 + n:]
    tensors = {}
    for name, entry in header.items():
        assert entry["dtype"] == "F32", f"{name}: dtype {entry['dtype']}"
        begin, end = entry["data_offsets"]
        array = np.frombuffer(data[begin:end], dtype="<f4").reshape(entry["shape"])
        tensors[name] = torch.from_numpy(array.copy())
    return tensors, metadata


def load_moe_gpt(path, dtype=torch.float32):
    """(config, {name: parameter}, {layer: router bias}) of an exported moe_gpt."""
    tensors, metadata = read_safetensors(path)
    assert metadata.get("model_family") == "moe_gpt", metadata.get("model_family")
    cfg, _ = ref.config_from_dict(ref.config_from_ini(metadata["config"]))
    buffers = set(filter(None, metadata.get("buffers", "").split(",")))
    params = {k: v.to(dtype) for k, v in tensors.items() if k not in buffers}
    biases = {int(k.split(".")[1]): tensors[k].to(dtype) for k in buffers
              if k.endswith(".moe.router.bias")}
    return cfg, params, biases


def read_tokens(path):
    """Token ids of a token shard (docs/data-format.md)."""
    raw = pathlib.Path(path).read_bytes()
    magic, version, token_bytes, count, _, _ = struct.unpack("<8sIIQII", raw[:32])
    assert magic == b"MOETOKS\0" and version == 1, path
    dtype = "<u2" if token_bytes == 2 else "<u4"
    return np.frombuffer(raw[32:32 + count * token_bytes], dtype=dtype).astype(np.int64)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("weights", help="an exported .safetensors file")
    parser.add_argument("--data", required=True, help="token shard to fine-tune on")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cfg, params, biases = load_moe_gpt(args.weights)
    for p in params.values():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params.values(), lr=args.lr, betas=(0.9, 0.95),
                                  weight_decay=0.0)
    tokens = torch.from_numpy(read_tokens(args.data))
    gen = torch.Generator().manual_seed(args.seed)
    T = cfg.seq_len
    # One fixed batch, so that the printed loss shows the fitting.
    starts = torch.randint(0, len(tokens) - T - 1, (args.batch,), generator=gen)
    inputs = torch.stack([tokens[s:s + T] for s in starts])
    targets = torch.stack([tokens[s + 1:s + T + 1] for s in starts])
    for step in range(args.steps):
        out = ref.forward(cfg, params, inputs, targets, biases)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        print(json.dumps({"step": step, "loss": float(out.loss), "ce_loss": float(out.ce_loss)}))


if __name__ == "__main__":
    main()
