#!/usr/bin/python3
"""Compare the C++ MoE language model with the float64 PyTorch reference.

Usage (Debian's python: torch 1.13, numpy, h5py):
  /usr/bin/python3 tests/reference/compare_moe_gpt.py FILE.h5
  /usr/bin/python3 tests/reference/compare_moe_gpt.py --selftest [--out FILE.h5]

FILE layout (all paths absolute in the HDF5 file):
  /config                   group; one attribute per option, named "section.key"
                            ("model.d_model", "moe.top_k", ...), numeric or string
                            ("true"/"false" or 0/1 for booleans). An attribute "ini"
                            holding INI text is read first; individual attributes win.
                            Absent keys take the framework/config/config.h defaults
                            (and are listed on stdout).
  /model/<name>             every parameter, float32 (any float), logical shape
  /buffers/<l>.moe.router.bias   optional (E,) selection bias of MoE layer l, i.e.
                            /buffers/layers.{l}.moe.router.bias; zeros when absent
  /batch/inputs             (B, T) integer token ids
  /batch/targets            (B, T) integer next-token ids
  /result/loss              scalar: mean CE + sum over MoE layers of (aux + z)
  /result/ce_loss           scalar: the mean CE alone
  /result/aux_loss, /result/z_loss   optional scalars: sums over MoE layers
  /result/expert_counts     optional (MoE layers, E) integer: selected assignments per
                            expert before capacity dropping, in layer order
  /grads/<name>             d loss / d parameter for every parameter, logical shape

Exit status: 0 agree, 1 disagree, 2 unusable file or arguments.
"""

import argparse
import math
import os
import sys
import tempfile

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_gpt_ref as ref  # noqa: E402

# Tolerances, C++ in float32 against this reference in float64.
#
# Loss: sums of N*V exponentials and N logsumexps; float32 rounding (u = 2^-24 = 6e-8)
# grows like sqrt(n) u, ~1e-6 relative at most for test sizes, so 1e-5 has a margin.
# The aux and z terms are small next to the CE, so a wrong formula there may hide in the
# total: the optional /result/aux_loss and /result/z_loss get the same relative check.
LOSS_RTOL = 1e-5
# Gradients: each parameter gradient is the end of a chain of ~4 GEMMs per layer over
# L layers, the weight gradients summing N = B*T rows. Float32 GEMMs give relative
# errors ~ sqrt(n) u ~ 1e-6 per product for n ~ 1e2..1e4, and chaining ~4L of them
# (plus the softmax/RMSNorm backward cancellations, which can amplify by the condition
# of the layer, ~10) puts ||g_cpp - g_ref|| / ||g_ref|| around 1e-6..1e-5. 1e-4 is an
# order of magnitude above that, while a real bug (a missing term, a wrong index, a
# dropped token that was not dropped) changes the gradient by >= 1e-2 relative. The
# error is norm-wise per parameter, so individual near-zero entries cannot dominate.
GRAD_RTOL = 1e-4
# Selection scores closer than this are ambiguous between float32 and float64.
NEAR_TIE = 1e-6


class FileError(Exception):
    """The file cannot be used: exit status 2."""


def read_config(f, path):
    if "config" not in f:
        raise FileError(f"{path}: no group /config")
    attrs = f["config"].attrs
    values = {}
    if "ini" in attrs:
        text = attrs["ini"]
        values.update(ref.config_from_ini(text.decode() if isinstance(text, bytes) else str(text)))
    for key, value in attrs.items():
        if key != "ini":
            values[key] = value.item() if hasattr(value, "item") else value
    family = values.get("model.family", "moe_gpt")
    family = family.decode() if isinstance(family, bytes) else str(family)
    if family != "moe_gpt":
        raise FileError(f"{path}: model.family is {family}, this reference is moe_gpt")
    try:
        return ref.config_from_dict(values)
    except ValueError as err:
        raise FileError(f"{path}: /config: {err}") from None


def read_dataset(f, path, name, shape=None):
    if name not in f or not isinstance(f[name], h5py.Dataset):
        raise FileError(f"{path}: no dataset {name}")
    data = f[name][()]
    if shape is not None and tuple(np.shape(data)) != tuple(shape):
        raise FileError(f"{path}: dataset {name} has shape {tuple(np.shape(data))}, "
                        f"expected {tuple(shape)}")
    return data


def read_params(f, path, group, cfg, dtype):
    """{name: tensor} of every parameter the config implies, from <group>/<name>."""
    params = {}
    for name, (shape, _) in ref.param_specs(cfg).items():
        data = read_dataset(f, path, f"/{group}/{name}", shape)
        params[name] = torch.from_numpy(np.asarray(data, dtype=np.float64)).to(dtype)
    extra = sorted(set(f[group].keys()) - set(params)) if group in f else []
    if extra:
        print(f"warning: /{group} holds datasets the config does not define: {', '.join(extra)}")
    return params


def read_biases(f, path, cfg):
    biases = {}
    for l in range(cfg.num_layers):
        name = f"/buffers/layers.{l}.moe.router.bias"
        if cfg.is_moe(l) and name in f:
            data = read_dataset(f, path, name, (cfg.num_experts,))
            biases[l] = torch.from_numpy(np.asarray(data, dtype=np.float64))
    return biases


def reference(cfg, params, inputs, targets, biases):
    """Float64 loss parts and gradients of the total loss."""
    leaves = {n: t.detach().to(torch.float64).clone().requires_grad_(True)
              for n, t in params.items()}
    out = ref.forward(cfg, leaves, inputs, targets, biases)
    out.loss.backward()
    grads = {n: t.grad if t.grad is not None else torch.zeros_like(t) for n, t in leaves.items()}
    return out, grads


def rel_err(a, b):
    """|a - b| / |b| norm-wise; 0 when both are exactly 0."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    diff, norm = np.linalg.norm(a - b), np.linalg.norm(b)
    if norm == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return float(diff / norm)


def compare(path, verbose=True):
    """Returns (ok, report dict). Raises FileError when the file is unusable."""
    say = print if verbose else (lambda *a, **k: None)
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise FileError(f"{path}: cannot open as HDF5 ({err})") from None
    with f:
        cfg, defaulted = read_config(f, path)
        params = read_params(f, path, "model", cfg, torch.float64)
        biases = read_biases(f, path, cfg)
        inputs = read_dataset(f, path, "/batch/inputs")
        targets = read_dataset(f, path, "/batch/targets", np.shape(inputs))
        if np.ndim(inputs) != 2:
            raise FileError(f"{path}: /batch/inputs must be (B, T), got {np.shape(inputs)}")
        loss_cpp = float(read_dataset(f, path, "/result/loss", ()))
        ce_cpp = float(read_dataset(f, path, "/result/ce_loss", ()))
        optional = {k: float(f[f"/result/{k}"][()]) for k in ("aux_loss", "z_loss")
                    if f"/result/{k}" in f}
        counts_cpp = f["/result/expert_counts"][()] if "/result/expert_counts" in f else None
        if "grads" not in f:
            raise FileError(f"{path}: no group /grads")
        grads_cpp = {n: f[f"/grads/{n}"][()] for n in params if n in f["grads"]}
        missing = [n for n in params if n not in grads_cpp]

    B, T = np.shape(inputs)
    say(f"config: L={cfg.num_layers} C={cfg.d_model} H={cfg.num_heads} V={cfg.vocab_size} "
        f"dense_layers={cfg.dense_layers} E={cfg.num_experts} K={cfg.top_k} "
        f"F={cfg.expert_ffn} shared={cfg.num_shared}x{cfg.shared_ffn} "
        f"cf={cfg.capacity_factor} renormalize={cfg.renormalize} aux={cfg.aux_loss} "
        f"z={cfg.z_loss} biases={len(biases)}; batch B={B} T={T}")
    if defaulted:
        say(f"note: keys absent from /config, config.h defaults used: {', '.join(defaulted)}")
    out, grads_ref = reference(cfg, params, torch.from_numpy(np.asarray(inputs, np.int64)),
                               torch.from_numpy(np.asarray(targets, np.int64)), biases)

    ok = True
    report = {}
    rows = [("loss", loss_cpp, out.loss), ("ce_loss", ce_cpp, out.ce_loss)]
    parts = {"aux_loss": out.aux_loss, "z_loss": out.z_loss}
    rows += [(k, v, parts[k]) for k, v in optional.items()]
    for name, cpp, ref_value in rows:
        err = rel_err(cpp, float(ref_value))
        report[name] = err
        bad = not err <= LOSS_RTOL
        ok &= not bad
        say(f"{name:9s} cpp {cpp:.9g}  ref {float(ref_value):.9g}  rel err {err:.2e}"
            f"{'  FAIL' if bad else ''}")

    margin = min((r.margin for r in out.routings.values()), default=math.inf)
    dropped = sum(int((~r.kept).sum()) for r in out.routings.values())
    say(f"routing: {dropped} assignments dropped by capacity; "
        f"smallest selection margin {margin:.2e}")
    if margin < NEAR_TIE:
        say(f"warning: near-tie in expert selection (< {NEAR_TIE:g}): float32 and float64 may "
            "choose differently; prefer another seed/batch for this comparison")
    if counts_cpp is not None:
        counts_ref = np.stack([r.counts.numpy() for _, r in sorted(out.routings.items())]) \
            if out.routings else np.zeros((0, cfg.num_experts))
        same = (np.shape(counts_cpp) == np.shape(counts_ref)
                and np.array_equal(counts_cpp, counts_ref))
        ok &= bool(same)
        say(f"expert counts {'agree' if same else 'DIFFER: routing chose other experts'}")
        if not same:
            say(f"  cpp {np.asarray(counts_cpp).tolist()}\n  ref {counts_ref.tolist()}")

    errors = {}
    for name, g_ref in grads_ref.items():
        if name in grads_cpp:
            g_cpp = grads_cpp[name]
            if tuple(np.shape(g_cpp)) != tuple(g_ref.shape):
                errors[name] = math.inf
                say(f"grad {name}: shape {np.shape(g_cpp)}, expected {tuple(g_ref.shape)}")
            else:
                errors[name] = rel_err(g_cpp, g_ref.numpy())
    if missing:
        ok = False
        say(f"FAIL: /grads lacks {len(missing)} parameters: {', '.join(missing)}")
    worst = sorted(errors.items(), key=lambda kv: -kv[1])
    for name, err in worst[:5]:
        say(f"  grad rel err {err:.2e}  {name}")
    max_name, max_err = worst[0] if worst else ("-", 0.0)
    report["grad"] = max_err
    grad_bad = not max_err <= GRAD_RTOL
    ok &= not grad_bad
    say(f"max grad rel err {max_err:.2e} ({max_name}) over {len(errors)} parameters"
        f"{'  FAIL' if grad_bad else ''}")
    say(f"{'PASS' if ok else 'FAIL'} (loss rtol {LOSS_RTOL:g}, grad rtol {GRAD_RTOL:g})")
    return ok, report


# ---------------------------------------------------------------------------------------
# Self-test: the reference against a naive per-token MoE, and the file round trip.


def tiny_config(**overrides):
    cfg = ref.ModelConfig(vocab_size=13, seq_len=8, num_layers=3, d_model=16, num_heads=2,
                          dense_layers=1, dense_ffn=24, num_experts=5, top_k=2, expert_ffn=12,
                          num_shared=1, shared_ffn=10, capacity_factor=0.0)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def random_params(cfg, seed, dtype=torch.float64):
    """Spec init but with std 0.3 and non-trivial norm weights, so every path matters."""
    gen = torch.Generator().manual_seed(seed)
    params = {}
    for name, (shape, std) in ref.param_specs(cfg).items():
        noise = torch.randn(shape, generator=gen, dtype=torch.float64)
        params[name] = (1.0 + 0.1 * noise if std == 0.0 else 0.3 * noise).to(dtype)
    return params


def check_moe_layer_against_naive(cfg, seed, bias=None, zero_router=False):
    """Vectorised routing + MoE FFN == per-token loops of the spec, values and gradients."""
    params = random_params(cfg, seed)
    prefix = f"layers.{cfg.dense_layers}.moe."
    w_router = params[prefix + "router.weight"]
    if zero_router:
        w_router = torch.zeros_like(w_router)
    gen = torch.Generator().manual_seed(seed + 1)
    u = torch.randn(12, cfg.d_model, generator=gen, dtype=torch.float64)
    r = torch.randn(12, cfg.d_model, generator=gen, dtype=torch.float64)
    results = []
    for naive in (False, True):
        leaves = {n: t.clone().requires_grad_(True) for n, t in params.items()}
        w = w_router.clone().requires_grad_(True)
        x = u.clone().requires_grad_(True)
        if naive:
            y, kept = ref.moe_ffn_naive(x, leaves, prefix, w, bias, cfg)
        else:
            routing = ref.route(x, w, bias, cfg)
            y = ref.moe_ffn(x, leaves, prefix, routing, cfg)
            N, K = routing.experts.shape
            kept = sorted((t, k, int(routing.experts[t, k])) for t in range(N) for k in range(K)
                          if routing.kept[t, k])
        (y * r).sum().backward()
        grads = [x.grad, w.grad] + [leaves[prefix + n].grad for n in
                                    ("experts.w_gate", "experts.w_up", "experts.w_down")]
        results.append((y.detach(), kept, grads))
    (y0, kept0, g0), (y1, kept1, g1) = results
    assert kept0 == kept1, f"kept assignments differ:\n{kept0}\n{kept1}"
    assert torch.allclose(y0, y1, rtol=1e-12, atol=1e-13), "MoE outputs differ"
    for a, b in zip(g0, g1):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12), "MoE gradients differ"
    return kept0


def selftest_layer_rules():
    cfg = tiny_config()
    check_moe_layer_against_naive(cfg, seed=1)  # dropless, raw weights
    cfg_cap = tiny_config(capacity_factor=0.7, renormalize=True)
    kept = check_moe_layer_against_naive(cfg_cap, seed=2)
    assert len(kept) < 12 * cfg_cap.top_k, "capacity 0.7 should drop assignments"
    bias = torch.tensor([0.0, 0.05, -0.02, 0.1, 0.0], dtype=torch.float64)
    check_moe_layer_against_naive(tiny_config(capacity_factor=1.0, bias_balance=True), 3, bias)

    # Exact ties (a zero router gives every expert p = 1/E): the lowest indices win,
    # first choice 0, second 1; with capacity 1.0 expert 0 takes the first
    # ceil(N*K/E) = 5 tokens' first choices, expert 1 their second choices, rest dropped.
    cfg_tie = tiny_config(capacity_factor=1.0)
    kept = check_moe_layer_against_naive(cfg_tie, seed=4, zero_router=True)
    assert kept == sorted([(t, 0, 0) for t in range(5)] + [(t, 1, 1) for t in range(5)]), kept
    u = torch.randn(12, cfg_tie.d_model, dtype=torch.float64)
    routing = ref.route(u, torch.zeros(cfg_tie.num_experts, cfg_tie.d_model, dtype=torch.float64),
                        None, cfg_tie)
    assert routing.experts.tolist() == [[0, 1]] * 12
    # Aux loss: f = (1/2, 1/2, 0, 0, 0), P = 1/E -> alpha * E * (1/E) = alpha.
    assert abs(float(routing.aux_loss) - cfg_tie.aux_loss) < 1e-15
    # z-loss at zero logits: c_z * (log E)^2.
    assert abs(float(routing.z_loss) - cfg_tie.z_loss * math.log(5) ** 2) < 1e-15
    # Capacity uses float32(cf): ceil(1.1f * 10) = 12, not 11.
    assert tiny_config(capacity_factor=1.1, top_k=1, num_experts=1).capacity(10) == 12
    print("selftest: routing rules and vectorised MoE == naive per-token MoE: ok")


def selftest_finite_difference():
    """Autograd of the whole float64 model against central differences (a sanity check)."""
    cfg = tiny_config(capacity_factor=1.0, renormalize=True)
    params = random_params(cfg, seed=5)
    gen = torch.Generator().manual_seed(6)
    inputs = torch.randint(0, cfg.vocab_size, (2, 6), generator=gen)
    targets = torch.randint(0, cfg.vocab_size, (2, 6), generator=gen)
    _, grads = reference(cfg, params, inputs, targets, {})
    h = 1e-6
    for name in ("layers.1.moe.router.weight", "layers.2.moe.experts.w_down", "embed.weight",
                 "layers.0.attn.w_qkv", "final_norm.weight"):
        flat = params[name].view(-1)
        for i in (0, flat.numel() // 2, flat.numel() - 1):
            saved = float(flat[i])
            flat[i] = saved + h
            plus = float(ref.forward(cfg, params, inputs, targets).loss)
            flat[i] = saved - h
            minus = float(ref.forward(cfg, params, inputs, targets).loss)
            flat[i] = saved
            numeric = (plus - minus) / (2 * h)
            analytic = float(grads[name].view(-1)[i])
            assert abs(numeric - analytic) <= 1e-6 + 1e-5 * abs(analytic), \
                (name, i, numeric, analytic)
    print("selftest: float64 autograd == finite differences: ok")


def write_case(path, cfg, params32, inputs, targets, biases, loss, ce, grads, extra=None):
    """A file in the layout of this script's docstring."""
    with h5py.File(path, "w") as f:
        conf = f.create_group("config")
        for key, field in ref.CONFIG_KEYS.items():
            value = getattr(cfg, field)
            conf.attrs[key] = ("true" if value else "false") if isinstance(value, bool) else value
        for name, t in params32.items():
            f[f"/model/{name}"] = t.numpy().astype(np.float32)
        for l, b in biases.items():
            f[f"/buffers/layers.{l}.moe.router.bias"] = b.numpy().astype(np.float32)
        f["/batch/inputs"] = inputs.numpy().astype(np.int32)
        f["/batch/targets"] = targets.numpy().astype(np.int32)
        f["/result/loss"] = np.float64(loss)
        f["/result/ce_loss"] = np.float64(ce)
        for name, g in grads.items():
            f[f"/grads/{name}"] = g.numpy()
        for name, value in (extra or {}).items():
            f[name] = value


def selftest_file(out_path):
    cfg = tiny_config(num_layers=3, capacity_factor=0.8, renormalize=False, bias_balance=True)
    params32 = {n: t.to(torch.float32) for n, t in random_params(cfg, seed=7).items()}
    gen = torch.Generator().manual_seed(8)
    inputs = torch.randint(0, cfg.vocab_size, (3, 7), generator=gen, dtype=torch.int32)
    targets = torch.randint(0, cfg.vocab_size, (3, 7), generator=gen, dtype=torch.int32)
    biases = {l: (0.01 * torch.randn(cfg.num_experts, generator=gen)).to(torch.float32).double()
              for l in range(cfg.num_layers) if cfg.is_moe(l)}
    out, grads = reference(cfg, params32, inputs.long(), targets.long(), biases)
    counts = np.stack([r.counts.numpy() for _, r in sorted(out.routings.items())])
    extra = {"/result/aux_loss": float(out.aux_loss), "/result/z_loss": float(out.z_loss),
             "/result/expert_counts": counts.astype(np.int32)}
    write_case(out_path, cfg, params32, inputs, targets, biases, float(out.loss),
               float(out.ce_loss), grads, extra)
    ok, report = compare(out_path)
    assert ok and report["grad"] < 1e-12 and report["loss"] < 1e-14, report

    # The comparison must fail on small but real differences.
    bad_path = out_path + ".bad.h5"
    try:
        for what, mutate in (
                ("gradient off by 1e-3", lambda g, l: g.update(
                    {"layers.2.moe.experts.w_up": g["layers.2.moe.experts.w_up"] * (1 + 1e-3)})),
                ("loss off by 1e-4", lambda g, l: l.update(loss=l["loss"] * (1 + 1e-4))),
                ("one gradient missing", lambda g, l: g.pop("layers.1.moe.router.weight"))):
            g = dict(grads)
            losses = {"loss": float(out.loss)}
            mutate(g, losses)
            write_case(bad_path, cfg, params32, inputs, targets, biases, losses["loss"],
                       float(out.ce_loss), g, extra)
            ok, _ = compare(bad_path, verbose=False)
            assert not ok, f"comparison did not catch: {what}"
        # Without the biases the routing changes: counts (and so the comparison) differ.
        write_case(bad_path, cfg, params32, inputs, targets, {}, float(out.loss),
                   float(out.ce_loss), grads, extra)
        ok, _ = compare(bad_path, verbose=False)
        assert not ok, "comparison did not catch a routing difference"
    finally:
        if os.path.exists(bad_path):
            os.remove(bad_path)
    print("selftest: file round trip passes, perturbed files fail: ok")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file", nargs="?", help="HDF5 file written by the C++ harness")
    parser.add_argument("--selftest", action="store_true",
                        help="check the reference and this script without the C++ side")
    parser.add_argument("--out", help="with --selftest: keep the generated file here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.selftest:
        selftest_layer_rules()
        selftest_finite_difference()
        if args.out:
            selftest_file(args.out)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                selftest_file(os.path.join(tmp, "selftest.h5"))
        print("selftest PASS")
        return 0
    if not args.file:
        parser.print_usage(sys.stderr)
        return 2
    try:
        ok, _ = compare(args.file)
    except FileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
