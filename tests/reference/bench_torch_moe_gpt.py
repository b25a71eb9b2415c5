#!/usr/bin/python3
"""PyTorch peer benchmark: training steps of the MoE language model in float32 eager.

The model is the one of moe_gpt_ref.py (the reference the C++ trainer is checked
against), run the way a PyTorch user would train it: float32, eager mode, tokens sorted
by expert and each expert applied to its rows (index_select / index_add_), autograd,
global-norm clipping and torch.optim.AdamW (weight decay on matrices only). With
--autocast the forward runs under torch.autocast("cpu", dtype=torch.bfloat16), PyTorch's
mixed precision (bf16 matrix products through oneDNN, float32 weights and optimizer;
bf16 needs no loss scaling). Prints one JSON line. Run with Debian's python (CPU
PyTorch 1.13):

  /usr/bin/python3 tests/reference/bench_torch_moe_gpt.py --layers 6 --d-model 256 \
      --heads 16 --experts 16 --top-k 2 --expert-ffn 256 --shared 1 --shared-ffn 256 \
      --dense-layers 1 --dense-ffn 768 --seq-len 256 --batch 16 --vocab 256 --steps 5 \
      --threads 2

glibc malloc hands tensors of more than a few hundred KiB back to the kernel when they
are freed, so every new activation page-faults (on this VM a 1 MiB elementwise op took
360 us instead of 30 us). The remedy PyTorch's CPU tuning guides give is a caching
allocator (jemalloc/tcmalloc via LD_PRELOAD); none is installed here, so the benchmark
does the equivalent with mallopt (keep freed memory, never mmap per tensor) unless
--system-malloc is given.

With PyTorch 2 (e.g. from PyPI in a virtual environment) --sdpa computes the attention
core with torch.nn.functional.scaled_dot_product_attention (is_causal=True: PyTorch's
fused CPU flash attention) instead of the reference's explicit scores and softmax, and
--fused-adamw uses AdamW(fused=True) (PyTorch >= 2.4 on CPU): what a PyTorch 2 user would
write. The model and its numbers are otherwise the same.

On a GPU (--device cuda; PyTorch 2 built with CUDA) the same program is the GPU peer of
tests/gpu/moe_gpt_gpu_vs_torch.py: --autocast then means torch.autocast("cuda",
dtype=torch.bfloat16), --compile wraps the loss in torch.compile, and --grouped-mm runs
the routed experts as three torch._grouped_mm calls over all experts (bf16, dropless
only; the way torchtitan runs them) instead of one product per expert, so a step needs
no device-to-host read of the routing counts. --config FILE takes the model from an INI
config of ours. Step times are taken after torch.cuda.synchronize().

FLOPs use the usual estimate 6 * (matmul parameters a token touches) + 12 * L * T * C
(attention scores and values, forward and backward, without the causal halving).
"""

import argparse
import ctypes
import dataclasses
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_gpt_ref as ref  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", help="take the model options from this INI config (the "
                                     "options below then only override what it leaves out)")
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--experts", type=int, default=16)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--expert-ffn", type=int, default=256)
    p.add_argument("--shared", type=int, default=1)
    p.add_argument("--shared-ffn", type=int, default=256)
    p.add_argument("--dense-layers", type=int, default=1)
    p.add_argument("--dense-ffn", type=int, default=768)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--capacity-factor", type=float, default=0.0, help="<= 0: dropless")
    p.add_argument("--renormalize", action="store_true")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--autocast", action="store_true",
                   help="forward under torch.autocast('cpu', dtype=torch.bfloat16)")
    p.add_argument("--sdpa", action="store_true",
                   help="attention core by F.scaled_dot_product_attention (PyTorch >= 2.0)")
    p.add_argument("--per-expert-gather", action="store_true",
                   help="the reference's MoE as written (a gather and an index_add_ per "
                        "expert) instead of one gather and one index_add_ for all")
    p.add_argument("--fused-adamw", action="store_true",
                   help="torch.optim.AdamW(fused=True) (PyTorch >= 2.4)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--compile", action="store_true", help="torch.compile the loss")
    p.add_argument("--grouped-mm", action="store_true",
                   help="routed experts by torch._grouped_mm (bf16 autocast, dropless)")
    p.add_argument("--peak-tflops", type=float, default=0.0,
                   help="the device's dense peak for the MFU figure (0: no MFU)")
    p.add_argument("--system-malloc", action="store_true",
                   help="leave glibc malloc's mmap/trim thresholds at their defaults")
    return p.parse_args()


def keep_freed_memory():
    """glibc: serve every allocation from the heap and never trim it back to the kernel."""
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # <malloc.h>
    ok = libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, 1 << 30)
    return bool(ok and libc.mallopt(m_top_pad, 64 << 20))


def flops_per_token(cfg):
    C, L, T = cfg.d_model, cfg.num_layers, cfg.seq_len
    matmul_params = cfg.vocab_size * C  # lm_head; the embedding is a lookup
    for l in range(L):
        matmul_params += 4 * C * C
        if cfg.is_moe(l):
            matmul_params += cfg.num_experts * C  # router
            matmul_params += cfg.top_k * 3 * C * cfg.expert_ffn
            matmul_params += 3 * C * cfg.num_shared * cfg.shared_ffn
        else:
            matmul_params += 3 * C * cfg.dense_ffn
    return 6 * matmul_params + 12 * L * T * C


def moe_ffn_one_gather(u, params, prefix, routing, cfg):
    """moe_gpt_ref.moe_ffn with one gather of all kept rows, split per expert, and one
    index_add_ of the concatenated outputs: the same sums in the same order, but the
    backward makes one (N, C) scatter instead of one per expert (E x N x C of zeros and
    index_add that dominate the per-expert gather's backward)."""
    t_kept, w_kept, per_expert = ref.sorted_assignments(routing, cfg)
    w_gate = params[prefix + "experts.w_gate"].unbind(0)
    w_up = params[prefix + "experts.w_up"].unbind(0)
    w_down = params[prefix + "experts.w_down"].unbind(0)
    rows = u.index_select(0, t_kept).split(per_expert)
    outs = [ref.swiglu(x, w_gate[e], w_up[e], w_down[e]) for e, x in enumerate(rows) if len(x)]
    out = torch.cat(outs) * w_kept[:, None]
    y = torch.zeros_like(u).index_add_(0, t_kept, out.to(u.dtype))
    if cfg.num_shared > 0:
        y = y + ref.swiglu(u, params[prefix + "shared.w_gate"], params[prefix + "shared.w_up"],
                           params[prefix + "shared.w_down"])
    return y


def moe_ffn_grouped_mm(u, params, prefix, routing, cfg):
    """moe_ffn_one_gather with each projection of all routed experts as one grouped
    product (torch._grouped_mm over the rows sorted by expert, offsets on the device):
    no per-expert loop and no read of the counts by the host. bf16 operands; dropless."""
    N, K = routing.experts.shape
    E = cfg.num_experts
    flat = routing.experts.reshape(-1)
    order = torch.sort(flat, stable=True).indices  # token order within an expert
    t_sorted = order // K
    w_sorted = routing.weights.reshape(-1)[order]
    offs = torch.cumsum(torch.bincount(flat, minlength=E), 0).to(torch.int32)
    x = u.index_select(0, t_sorted).to(torch.bfloat16)

    def grouped(a, w):  # w (E, F, C): rows of a times w[e]^T per group
        return torch._grouped_mm(a, w.to(torch.bfloat16).transpose(-2, -1), offs=offs)

    h = torch.nn.functional.silu(grouped(x, params[prefix + "experts.w_gate"])) * \
        grouped(x, params[prefix + "experts.w_up"])
    out = grouped(h, params[prefix + "experts.w_down"]) * w_sorted[:, None]
    y = torch.zeros_like(u).index_add_(0, t_sorted, out.to(u.dtype))
    if cfg.num_shared > 0:
        y = y + ref.swiglu(u, params[prefix + "shared.w_gate"], params[prefix + "shared.w_up"],
                           params[prefix + "shared.w_down"])
    return y


def ini_model(path):
    """({ModelConfig field: value} named by an INI config of ours, its data.batch_size or
    None)."""
    with open(path) as f:
        ini = ref.config_from_ini(f.read())
    values = {}
    for field in dataclasses.fields(ref.ModelConfig):
        for section in ("model", "moe"):
            text = ini.get(f"{section}.{field.name}")
            if text is None:
                continue
            kind = type(field.default)
            values[field.name] = (text.lower() in ("1", "true", "yes", "on")
                                  if kind is bool else kind(text))
    batch = ini.get("data.batch_size")
    return values, (int(batch) if batch is not None else None)


def model_config(args):
    """The model of the options, overridden by what --config's INI file names."""
    values = {"vocab_size": args.vocab, "seq_len": args.seq_len, "num_layers": args.layers,
              "d_model": args.d_model, "num_heads": args.heads,
              "dense_layers": args.dense_layers, "dense_ffn": args.dense_ffn,
              "num_experts": args.experts, "top_k": args.top_k,
              "expert_ffn": args.expert_ffn, "num_shared": args.shared,
              "shared_ffn": args.shared_ffn, "capacity_factor": args.capacity_factor,
              "renormalize": args.renormalize}
    if args.config:
        named, batch = ini_model(args.config)
        values.update(named)
        args.batch = batch or args.batch
    return ref.ModelConfig(**values)


def sdpa_attention(x, w_qkv, w_out, num_heads, cos, sin):
    """moe_gpt_ref.attention with the core by scaled_dot_product_attention."""
    B, T, C = x.shape
    D = C // num_heads
    qkv = x @ w_qkv.reshape(-1, C).t()  # (B, T, 3C)
    q, k, v = (t.reshape(B, T, num_heads, D).transpose(1, 2) for t in qkv.split(C, dim=-1))
    q, k = ref.apply_rotary(q, cos, sin), ref.apply_rotary(k, cos, sin)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    return out.transpose(1, 2).reshape(B, T, C) @ w_out.t()


def main():
    args = parse_args()
    if args.sdpa:
        ref.attention = sdpa_attention
    if not args.per_expert_gather:
        ref.moe_ffn = moe_ffn_one_gather
    cfg = model_config(args)
    if args.grouped_mm:
        if not (args.autocast and cfg.capacity_factor <= 0):
            sys.exit("bench_torch_moe_gpt.py: --grouped-mm needs --autocast and a dropless model")
        ref.moe_ffn = moe_ffn_grouped_mm
    on_gpu = args.device == "cuda"
    if on_gpu and not torch.cuda.is_available():
        sys.exit("bench_torch_moe_gpt.py: --device cuda: this PyTorch sees no GPU")
    ref.MEASURE_MARGIN = False  # a host read per MoE layer that training does not need
    malloc = "system" if args.system_malloc else ("kept" if keep_freed_memory() else "system")
    torch.set_num_threads(args.threads)
    params = ref.init_params(cfg, torch.float32, args.seed)  # on the CPU: its generator
    params = {n: t.to(args.device).requires_grad_(True) for n, t in params.items()}
    if on_gpu:
        torch.set_default_device("cuda")  # the tables and masks the model makes
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    loss_of = lambda inputs, targets: ref.forward(cfg, params, inputs, targets).loss  # noqa: E731
    if args.compile:
        loss_of = torch.compile(loss_of)
    decay = [t for t in params.values() if t.dim() >= 2]
    no_decay = [t for t in params.values() if t.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
                                  **({"fused": True} if args.fused_adamw else
                                     {"foreach": False}))  # 1.13's CPU default; faster here
    gen = torch.Generator().manual_seed(args.seed + 1)

    times = {"forward_s": 0.0, "backward_s": 0.0, "optimizer_s": 0.0}
    losses = []
    cpu_s = 0.0
    for step in range(args.warmup + args.steps):
        tokens = torch.randint(0, cfg.vocab_size, (args.batch, cfg.seq_len + 1), generator=gen,
                               device="cpu").to(args.device)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        sync()
        c0 = time.process_time()
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.autocast):
            loss = loss_of(inputs, targets)
        sync()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
        optimizer.step()
        sync()
        t3 = time.perf_counter()
        if step >= args.warmup:
            times["forward_s"] += t1 - t0
            times["backward_s"] += t2 - t1
            times["optimizer_s"] += t3 - t2
            losses.append(loss.item())
            cpu_s += time.process_time() - c0

    total = sum(times.values())
    tokens = args.steps * args.batch * cfg.seq_len
    result = {
        "framework": f"pytorch-{torch.__version__}-{args.device}-"
                     + ("compile-" if args.compile else "eager-")
                     + ("bf16-autocast" if args.autocast else "fp32")
                     + ("-grouped-mm" if args.grouped_mm else "")
                     + ("-sdpa" if args.sdpa else "") + ("-fused-adamw" if args.fused_adamw else "")
                     + ("-per-expert-gather" if args.per_expert_gather else ""),
        "threads": args.threads,
        "malloc": malloc,
        "config": {**dataclasses.asdict(cfg), "batch": args.batch},
        "params": sum(t.numel() for t in params.values()),
        "steps": args.steps,
        "device": torch.cuda.get_device_name() if on_gpu else "cpu",
        "tokens_per_step": args.batch * cfg.seq_len,
        "step_s": total / args.steps,
        "tokens_per_s": tokens / total,
        "gflops_per_s": flops_per_token(cfg) * tokens / total / 1e9,
        "mfu": (flops_per_token(cfg) * tokens / total / (args.peak_tflops * 1e12)
                if args.peak_tflops > 0 else None),
        **{k: v / args.steps for k, v in times.items()},
        # CPU seconds of this process per wall second and thread: well below 1 when
        # other processes compete for the cores (then tokens_per_s is pessimistic).
        "cpu_busy": cpu_s / (total * args.threads),
        "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None,
        "loss_first": losses[0],
        "loss_last": losses[-1],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
