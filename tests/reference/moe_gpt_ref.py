"""Independent PyTorch implementation of the MoE language model of docs/architecture.md.

Written from the spec, not from the C++ code: torch autograd supplies the gradients,
so a C++ backward that agrees with it to float rounding is right. One module serves
two users (run with Debian's /usr/bin/python3: torch 1.13, numpy, h5py):

- compare_moe_gpt.py runs it in float64 as the reference for the C++ trainer;
- bench_torch_moe_gpt.py runs it in float32 as the PyTorch peer benchmark.

The model is a function of a dict of parameters keyed by global name (the names and
shapes of the spec's parameter table), so loading an HDF5 state dict is a dict lookup.
Shape letters follow the glossary: B batch, T sequence, N = B*T tokens, C width,
H heads, D head width, V vocabulary, E experts, K top-k, F expert width.
"""

import configparser
import dataclasses
import math

import torch
import torch.nn.functional as F


@dataclasses.dataclass
class ModelConfig:
    """The model.* and moe.* options that define the network (framework/config/config.h)."""

    vocab_size: int = 256
    seq_len: int = 64
    num_layers: int = 2
    d_model: int = 64
    num_heads: int = 4
    dense_layers: int = 1
    dense_ffn: int = 128
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    init_std: float = 0.02
    num_experts: int = 4
    top_k: int = 2
    expert_ffn: int = 64
    num_shared: int = 1
    shared_ffn: int = 64
    capacity_factor: float = 0.0
    renormalize: bool = False
    aux_loss: float = 0.01
    z_loss: float = 0.001
    bias_balance: bool = False

    @property
    def head_dim(self):
        return self.d_model // self.num_heads

    def is_moe(self, layer):
        return layer >= self.dense_layers

    def capacity(self, n_tokens):
        """C_e = ceil(cf * N * K / E), or None when dropless (cf <= 0).

        cf is a float32 option in the C++ config, so it is rounded to float32 first and
        the product is formed in double: ceil(1.1 * 10) must see float32(1.1), not 1.1.
        """
        cf = float(torch.tensor(self.capacity_factor, dtype=torch.float32))
        if cf <= 0:
            return None
        return math.ceil(cf * n_tokens * self.top_k / self.num_experts)


# Config keys as the C++ side names them ("section.key") -> ModelConfig field.
CONFIG_KEYS = {
    "model.vocab_size": "vocab_size",
    "model.seq_len": "seq_len",
    "model.num_layers": "num_layers",
    "model.d_model": "d_model",
    "model.num_heads": "num_heads",
    "model.dense_layers": "dense_layers",
    "model.dense_ffn": "dense_ffn",
    "model.rope_theta": "rope_theta",
    "model.norm_eps": "norm_eps",
    "model.init_std": "init_std",
    "moe.num_experts": "num_experts",
    "moe.top_k": "top_k",
    "moe.expert_ffn": "expert_ffn",
    "moe.num_shared": "num_shared",
    "moe.shared_ffn": "shared_ffn",
    "moe.capacity_factor": "capacity_factor",
    "moe.renormalize": "renormalize",
    "moe.aux_loss": "aux_loss",
    "moe.z_loss": "z_loss",
    "moe.bias_balance": "bias_balance",
}


def _convert(value, kind):
    if isinstance(value, bytes):
        value = value.decode()
    if kind is bool:
        if isinstance(value, str):
            text = value.strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"not a boolean: {value!r}")
        return bool(value)
    if kind is int:
        as_float = float(value)
        if as_float != int(as_float):
            raise ValueError(f"not an integer: {value!r}")
        return int(as_float)
    return float(value)


def config_from_dict(values):
    """ModelConfig from {"model.d_model": 64, ...}; values may be numbers or strings.

    Returns (config, keys that were absent and took the config.h default).
    """
    cfg = ModelConfig()
    kinds = {f.name: f.type for f in dataclasses.fields(ModelConfig)}
    kind_of = {"int": int, "float": float, "bool": bool}
    defaulted = []
    for key, field in CONFIG_KEYS.items():
        if key not in values:
            defaulted.append(key)
            continue
        kind = kinds[field]
        kind = kind_of.get(kind, kind) if isinstance(kind, str) else kind
        try:
            setattr(cfg, field, _convert(values[key], kind))
        except ValueError as err:
            raise ValueError(f"config key {key}: {err}") from None
    return cfg, defaulted


def config_from_ini(text):
    """{"section.key": "value"} from INI text (the resolved config the trainer prints)."""
    parser = configparser.ConfigParser(inline_comment_prefixes=("#", ";"))
    parser.read_string(text)
    return {f"{s}.{k}": v for s in parser.sections() for k, v in parser[s].items()}


# ---------------------------------------------------------------------------------------
# Parameters


def param_specs(cfg):
    """{global name: (logical shape, init std)} exactly as the spec's parameter table.

    Init std 0 means "ones" (norm weights).
    """
    C, V, L = cfg.d_model, cfg.vocab_size, cfg.num_layers
    E, Fe = cfg.num_experts, cfg.expert_ffn
    std, out_std = cfg.init_std, cfg.init_std / math.sqrt(2 * L)
    specs = {"embed.weight": ((V, C), std)}
    for l in range(L):
        p = f"layers.{l}."
        specs[p + "attn_norm.weight"] = ((C,), 0.0)
        specs[p + "attn.w_qkv"] = ((3, C, C), std)
        specs[p + "attn.w_out"] = ((C, C), out_std)
        specs[p + "ffn_norm.weight"] = ((C,), 0.0)
        if not cfg.is_moe(l):
            specs[p + "mlp.w_gate"] = ((cfg.dense_ffn, C), std)
            specs[p + "mlp.w_up"] = ((cfg.dense_ffn, C), std)
            specs[p + "mlp.w_down"] = ((C, cfg.dense_ffn), out_std)
            continue
        specs[p + "moe.router.weight"] = ((E, C), std)
        specs[p + "moe.experts.w_gate"] = ((E, Fe, C), std)
        specs[p + "moe.experts.w_up"] = ((E, Fe, C), std)
        specs[p + "moe.experts.w_down"] = ((E, C, Fe), out_std)
        if cfg.num_shared > 0:
            Fs = cfg.num_shared * cfg.shared_ffn
            specs[p + "moe.shared.w_gate"] = ((Fs, C), std)
            specs[p + "moe.shared.w_up"] = ((Fs, C), std)
            specs[p + "moe.shared.w_down"] = ((C, Fs), out_std)
    specs["final_norm.weight"] = ((C,), 0.0)
    specs["lm_head.weight"] = ((V, C), std)
    return specs


def init_params(cfg, dtype=torch.float32, seed=0):
    """Random parameters with the spec's init (torch RNG, not the C++ Philox stream)."""
    gen = torch.Generator().manual_seed(seed)
    params = {}
    for name, (shape, std) in param_specs(cfg).items():
        if std == 0.0:
            params[name] = torch.ones(shape, dtype=dtype)
        else:
            params[name] = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype) * std
    return params


def router_bias_names(cfg):
    """Names of the (E,) selection biases of aux-loss-free balancing, one per MoE layer."""
    return [f"layers.{l}.moe.router.bias" for l in range(cfg.num_layers) if cfg.is_moe(l)]


# ---------------------------------------------------------------------------------------
# Layers


def rms_norm(x, weight, eps):
    """y = x / sqrt(mean(x^2) + eps) * w over the last dim."""
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight


def rotary_tables(T, D, theta, dtype):
    """cos, sin of angle[t, i] = t * theta^(-2i/D), i < D/2: each (T, D/2), in float64 first."""
    i = torch.arange(D // 2, dtype=torch.float64)
    inv_freq = theta ** (-2.0 * i / D)
    angle = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return angle.cos().to(dtype), angle.sin().to(dtype)


def apply_rotary(x, cos, sin):
    """Rotate-half form on (B, H, T, D), for i < D/2:
    (x_i, x_{i+D/2}) -> (x_i cos - x_{i+D/2} sin, x_{i+D/2} cos + x_i sin)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def attention(x, w_qkv, w_out, num_heads, cos, sin):
    """Causal multi-head attention with rotary q, k; x (B, T, C) -> (B, T, C)."""
    B, T, C = x.shape
    D = C // num_heads
    # w_qkv (3, C, C): q, k, v, each H heads of D rows
    qkv = x @ w_qkv.reshape(-1, C).t()  # (B, T, 3C)
    q, k, v = (t.reshape(B, T, num_heads, D).transpose(1, 2) for t in qkv.split(C, dim=-1))
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(D)  # (B, H, T, T)
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)
    probs = scores.masked_fill(causal, float("-inf")).softmax(dim=-1)
    out = (probs @ v).transpose(1, 2).reshape(B, T, C)  # heads concatenated
    return out @ w_out.t()


def swiglu(u, w_gate, w_up, w_down):
    """FFN(u) = W_down (silu(W_gate u) * W_up u); u (N, C)."""
    return (F.silu(u @ w_gate.t()) * (u @ w_up.t())) @ w_down.t()


# ---------------------------------------------------------------------------------------
# Routing and the MoE FFN


# Whether route() measures the selection margin (a sort and a device-to-host read per
# MoE layer): the comparisons need it, a throughput benchmark on a GPU does not.
MEASURE_MARGIN = True


@dataclasses.dataclass
class Routing:
    experts: torch.Tensor  # (N, K) int64, choice k of token t, in choice order
    weights: torch.Tensor  # (N, K) combine weights (differentiable)
    kept: torch.Tensor  # (N, K) bool, False where capacity dropped the assignment
    counts: torch.Tensor  # (E,) selected assignments per expert, before dropping
    aux_loss: torch.Tensor  # scalar, alpha * E * sum_e f_e P_e
    z_loss: torch.Tensor  # scalar, c_z * mean_t logsumexp(logits_t)^2
    margin: float  # smallest gap between the K-th and (K+1)-th selection score (inf:
    #               not measured)


def select_top_k(scores, k):
    """Indices (N, K) of the k largest scores per row, largest first, ties to the lower index.

    A stable sort of the negated scores keeps equal scores in index order, so the
    result does not depend on torch.topk's unspecified tie-breaking.
    """
    order = torch.sort(-scores, dim=-1, stable=True).indices
    return order[:, :k]


def capacity_mask(experts, num_experts, capacity):
    """(N, K) bool: which assignments fit under a capacity of `capacity` per expert.

    GShard priority: all first choices in token order, then all second choices, ...
    The j-th assignment to an expert in that order is kept iff j < capacity.
    """
    N, K = experts.shape
    if capacity is None:
        return torch.ones(N, K, dtype=torch.bool)
    in_priority = experts.t().reshape(-1)  # (K*N,) k-major, then token order
    one_hot = F.one_hot(in_priority, num_experts)  # (K*N, E)
    rank_in_expert = (one_hot.cumsum(dim=0) * one_hot).sum(dim=-1) - 1  # (K*N,)
    return (rank_in_expert < capacity).reshape(K, N).t()


def route(u, w_router, bias, cfg):
    """Top-K softmax routing of u (N, C) with router weight (E, C); bias (E,) or None."""
    N = u.shape[0]
    E, K = cfg.num_experts, cfg.top_k
    logits = u @ w_router.t()  # (N, E)
    p = logits.softmax(dim=-1)
    scores = p.detach() if bias is None else p.detach() + bias.to(p.dtype)
    experts = select_top_k(scores, K)  # (N, K), piecewise constant: no gradient
    p_chosen = p.gather(1, experts)
    weights = p_chosen / p_chosen.sum(dim=-1, keepdim=True) if cfg.renormalize else p_chosen
    kept = capacity_mask(experts, E, cfg.capacity(N))

    counts = torch.bincount(experts.reshape(-1), minlength=E)  # before dropping
    f = counts.to(p.dtype) / (N * K)  # constant
    P = p.mean(dim=0)
    aux = cfg.aux_loss * E * (f * P).sum()
    z = cfg.z_loss * torch.logsumexp(logits, dim=-1).pow(2).mean()

    margin = math.inf
    if K < E and MEASURE_MARGIN:
        top = torch.sort(scores, dim=-1, descending=True).values
        margin = float((top[:, K - 1] - top[:, K]).min())
    return Routing(experts, weights, kept, counts, aux, z, margin)


def sorted_assignments(routing, cfg):
    """The kept assignments sorted by expert (token order within an expert): their tokens
    and weights, and the number of them per expert."""
    N, K = routing.experts.shape
    token = torch.arange(N)[:, None].expand(N, K)
    e_kept = routing.experts[routing.kept]
    t_kept = token[routing.kept]
    w_kept = routing.weights[routing.kept]
    order = torch.sort(e_kept, stable=True).indices
    e_kept, t_kept, w_kept = e_kept[order], t_kept[order], w_kept[order]
    per_expert = torch.bincount(e_kept, minlength=cfg.num_experts).tolist()
    return t_kept, w_kept, per_expert


def moe_ffn(u, params, prefix, routing, cfg):
    """y = sum over kept choices of w * Expert_e(u) + Shared(u); u (N, C).

    Kept assignments are sorted by expert (token order within an expert, as the
    dispatch buffer of the spec); each expert runs on its rows and the weighted results
    are scattered back with index_add. Dropped assignments contribute nothing.
    """
    t_kept, w_kept, per_expert = sorted_assignments(routing, cfg)

    # unbind: one (F, C) view per expert whose backward stacks the E gradients at once.
    w_gate = params[prefix + "experts.w_gate"].unbind(0)
    w_up = params[prefix + "experts.w_up"].unbind(0)
    w_down = params[prefix + "experts.w_down"].unbind(0)
    y = torch.zeros_like(u)
    start = 0
    for e, count in enumerate(per_expert):
        if count == 0:
            continue
        rows = t_kept[start:start + count]
        out = swiglu(u.index_select(0, rows), w_gate[e], w_up[e], w_down[e])
        # .to: under torch.autocast the expert output is bf16 and y float32 (a no-op
        # otherwise)
        y.index_add_(0, rows, (out * w_kept[start:start + count, None]).to(y.dtype))
        start += count
    if cfg.num_shared > 0:
        y = y + swiglu(u, params[prefix + "shared.w_gate"], params[prefix + "shared.w_up"],
                       params[prefix + "shared.w_down"])
    return y


# ---------------------------------------------------------------------------------------
# The model


@dataclasses.dataclass
class Output:
    loss: torch.Tensor  # mean CE + sum over MoE layers of (aux + z)
    ce_loss: torch.Tensor
    aux_loss: torch.Tensor  # sum over MoE layers of L_aux
    z_loss: torch.Tensor  # sum over MoE layers of L_z
    routings: dict  # layer -> Routing


def forward(cfg, params, inputs, targets, biases=None):
    """Loss of the batch. inputs, targets (B, T) integer; params {name: tensor}.

    biases: {layer: (E,) selection bias} for aux-loss-free balancing (absent = zeros).
    """
    B, T = inputs.shape
    logits, aux_total, z_total, routings = logits_and_routing(cfg, params, inputs, biases)
    ce = F.cross_entropy(logits.reshape(B * T, cfg.vocab_size), targets.reshape(-1).long())
    return Output(ce + aux_total + z_total, ce, aux_total, z_total, routings)


def logits_and_routing(cfg, params, inputs, biases=None):
    """(logits (B, T, V), sum of L_aux, sum of L_z, {layer: Routing}) of inputs (B, T)."""
    B, T = inputs.shape
    C, dtype = cfg.d_model, params["embed.weight"].dtype
    cos, sin = rotary_tables(T, cfg.head_dim, cfg.rope_theta, dtype)
    h = F.embedding(inputs.long(), params["embed.weight"])  # (B, T, C)
    zero = torch.zeros((), dtype=dtype)
    aux_total, z_total, routings = zero, zero, {}
    for l in range(cfg.num_layers):
        p = f"layers.{l}."
        x = rms_norm(h, params[p + "attn_norm.weight"], cfg.norm_eps)
        h = h + attention(x, params[p + "attn.w_qkv"], params[p + "attn.w_out"],
                          cfg.num_heads, cos, sin)
        u = rms_norm(h, params[p + "ffn_norm.weight"], cfg.norm_eps).reshape(B * T, C)
        if not cfg.is_moe(l):
            y = swiglu(u, params[p + "mlp.w_gate"], params[p + "mlp.w_up"],
                       params[p + "mlp.w_down"])
        else:
            bias = None if biases is None else biases.get(l)
            routing = route(u, params[p + "moe.router.weight"], bias, cfg)
            y = moe_ffn(u, params, p + "moe.", routing, cfg)
            aux_total = aux_total + routing.aux_loss
            z_total = z_total + routing.z_loss
            routings[l] = routing
        h = h + y.reshape(B, T, C)
    logits = rms_norm(h, params["final_norm.weight"], cfg.norm_eps) @ params["lm_head.weight"].t()
    return logits, aux_total, z_total, routings


# ---------------------------------------------------------------------------------------
# A deliberately naive MoE layer, token by token, to test the vectorised one against.


def moe_ffn_naive(u, params, prefix, w_router, bias, cfg):
    """Per-token loops that read like the spec; returns (y, kept list of (t, k, e))."""
    N, E, K = u.shape[0], cfg.num_experts, cfg.top_k
    logits = u @ w_router.t()
    p = logits.softmax(dim=-1)
    choices = []
    for t in range(N):
        score = [float(p[t, e]) + (0.0 if bias is None else float(bias[e])) for e in range(E)]
        ranked = sorted(range(E), key=lambda e: (-score[e], e))  # ties: lower index first
        choices.append(ranked[:K])
    capacity = cfg.capacity(N)
    load = [0] * E
    kept = set()
    for k in range(K):  # GShard priority: choice rank first, then token order
        for t in range(N):
            e = choices[t][k]
            if capacity is None or load[e] < capacity:
                load[e] += 1
                kept.add((t, k))
    rows = []
    for t in range(N):
        chosen = p[t, choices[t]]
        total = chosen.sum()
        y_t = torch.zeros_like(u[t])
        for k, e in enumerate(choices[t]):
            if (t, k) not in kept:
                continue
            w = chosen[k] / total if cfg.renormalize else chosen[k]
            y_t = y_t + w * swiglu(u[t:t + 1], params[prefix + "experts.w_gate"][e],
                                   params[prefix + "experts.w_up"][e],
                                   params[prefix + "experts.w_down"][e])[0]
        rows.append(y_t)
    y = torch.stack(rows)
    if cfg.num_shared > 0:
        y = y + swiglu(u, params[prefix + "shared.w_gate"], params[prefix + "shared.w_up"],
                       params[prefix + "shared.w_down"])
    return y, sorted((t, k, choices[t][k]) for (t, k) in kept)
