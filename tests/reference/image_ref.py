"""Independent PyTorch implementations of ViT-MoE and DiT-MoE (docs/image-models.md).

Written from the spec, not from the C++ code: convolutions do the patch embedding,
torch autograd supplies the gradients, and the MoE layer (top-K routing, capacity with
GShard or Batch Priority admission, SwiGLU or GELU experts, shared expert, Switch aux
loss and z-loss) is re-implemented here with plain loops over tokens. Run in float64
by compare_image_model.py with Debian's /usr/bin/python3 (torch 1.13, numpy, h5py).

Shape letters: B images, P patches, T tokens, C width, H heads, E experts, K top-k.
"""

import configparser
import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F


@dataclasses.dataclass
class Config:
    """The model.*, moe.* options that define the networks (framework/config/config.h)."""

    family: str = "vit_moe"
    num_layers: int = 2
    d_model: int = 64
    num_heads: int = 4
    dense_layers: int = 1
    moe_every: int = 1
    dense_ffn: int = 128
    norm_eps: float = 1e-6
    image_size: int = 28
    image_channels: int = 1
    patch_size: int = 4
    num_classes: int = 10
    pool: str = "cls"
    pos_embed: str = "auto"
    num_experts: int = 4
    top_k: int = 2
    expert_ffn: int = 64
    num_shared: int = 1
    shared_ffn: int = 64
    capacity_factor: float = 0.0
    renormalize: bool = False
    batch_priority: bool = False
    expert_act: str = "swiglu"
    aux_loss: float = 0.01
    z_loss: float = 0.001

    def is_moe(self, layer):
        return layer >= self.dense_layers and (layer - self.dense_layers + 1) % self.moe_every == 0

    @property
    def grid(self):
        return self.image_size // self.patch_size

    def learned_pos(self):
        return self.pos_embed == "learned" or (self.pos_embed == "auto" and self.family == "vit_moe")

    def capacity(self, n_tokens):
        """ceil(cf * N * K / E) with cf rounded to float32 as in the C++ config; None = dropless."""
        cf = float(np.float32(self.capacity_factor))
        if cf <= 0:
            return None
        return math.ceil(cf * n_tokens * self.top_k / self.num_experts * (1 - 1e-7))


def config_from_ini(text):
    parser = configparser.ConfigParser(inline_comment_prefixes=("#", ";"))
    parser.read_string(text)
    values = {f"{s}.{k}": v for s in parser.sections() for k, v in parser[s].items()}
    cfg = Config()
    for field in dataclasses.fields(Config):
        key = next((k for k in (f"model.{field.name}", f"moe.{field.name}") if k in values), None)
        if key is None:
            continue
        text_value = values[key]
        kind = field.type if not isinstance(field.type, str) else eval(field.type)  # noqa: S307
        if kind is bool:
            value = text_value.strip().lower() in ("1", "true", "yes", "on")
        else:
            value = kind(text_value)
        setattr(cfg, field.name, value)
    return cfg


# ---------------------------------------------------------------------------------------
# Shared pieces


def patch_embed(x, weight, bias, cfg):
    """Conv with kernel = stride = p; weight (C, Cin*p*p) is the conv weight flattened."""
    p = cfg.patch_size
    w = weight.reshape(cfg.d_model, cfg.image_channels, p, p)
    y = F.conv2d(x, w, bias, stride=p)  # (B, C, H/p, W/p)
    return y.flatten(2).transpose(1, 2)  # (B, P, C), patches row-major


def sincos_2d(width, grid):
    """MAE's get_2d_sincos_pos_embed: first half encodes the column, second the row."""
    def one_d(dim, pos):
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gh, gw = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64),
                         indexing="ij")
    return torch.from_numpy(np.concatenate([one_d(width // 2, gw), one_d(width // 2, gh)], axis=1))


def attention(x, w_qkv, w_out, heads):
    """Bidirectional multi-head attention, no biases; x (B, T, C)."""
    B, T, C = x.shape
    D = C // heads
    qkv = x @ w_qkv.reshape(-1, C).t()  # w_qkv (3, C, C): q, k, v
    q, k, v = (t.reshape(B, T, heads, D).transpose(1, 2) for t in qkv.split(C, -1))
    probs = ((q @ k.transpose(-2, -1)) / math.sqrt(D)).softmax(-1)
    return (probs @ v).transpose(1, 2).reshape(B, T, C) @ w_out.t()


def swiglu(u, w_gate, w_up, w_down):
    return (F.silu(u @ w_gate.t()) * (u @ w_up.t())) @ w_down.t()


def gelu_mlp(u, w_fc1, w_fc2):
    return F.gelu(u @ w_fc1.t()) @ w_fc2.t()


def expert(u, params, prefix, e, cfg):
    if cfg.expert_act == "gelu":
        return gelu_mlp(u, params[prefix + "experts.w_fc1"][e], params[prefix + "experts.w_fc2"][e])
    return swiglu(u, params[prefix + "experts.w_gate"][e], params[prefix + "experts.w_up"][e],
                  params[prefix + "experts.w_down"][e])


def shared_expert(u, params, prefix, cfg):
    if cfg.expert_act == "gelu":
        return gelu_mlp(u, params[prefix + "shared.w_fc1"], params[prefix + "shared.w_fc2"])
    return swiglu(u, params[prefix + "shared.w_gate"], params[prefix + "shared.w_up"],
                  params[prefix + "shared.w_down"])


def moe_layer(u, params, prefix, cfg):
    """MoE FFN of u (N, C): returns (y, aux, z, counts (E,), margin).

    Token by token: top-K of p (ties to the lower index), weights p or renormalised,
    capacity admission in rounds of choices (all first choices, then all second ...),
    tokens within a round in order, or by descending max weight with Batch Priority
    Routing; dropped assignments add nothing.
    """
    N, E, K = u.shape[0], cfg.num_experts, cfg.top_k
    logits = u @ params[prefix + "router.weight"].t()
    p = logits.softmax(-1)
    pd = p.detach()
    choices, margin = [], math.inf
    for t in range(N):
        ranked = sorted(range(E), key=lambda e: (-float(pd[t, e]), e))
        choices.append(ranked[:K])
        if K < E:
            margin = min(margin, float(pd[t, ranked[K - 1]] - pd[t, ranked[K]]))
    weights = []
    for t in range(N):
        chosen = p[t, choices[t]]
        weights.append(chosen / chosen.sum() if cfg.renormalize else chosen)
    order = list(range(N))
    if cfg.batch_priority:
        order.sort(key=lambda t: -float(weights[t].detach().max()))
    capacity = cfg.capacity(N)
    load, kept = [0] * E, set()
    for k in range(K):
        for t in order:
            e = choices[t][k]
            if capacity is None or load[e] < capacity:
                load[e] += 1
                kept.add((t, k))
    rows = []
    for t in range(N):
        y_t = torch.zeros_like(u[t])
        for k, e in enumerate(choices[t]):
            if (t, k) in kept:
                y_t = y_t + weights[t][k] * expert(u[t:t + 1], params, prefix, e, cfg)[0]
        rows.append(y_t)
    y = torch.stack(rows)
    if cfg.num_shared > 0:
        y = y + shared_expert(u, params, prefix, cfg)
    counts = torch.zeros(E, dtype=torch.int64)
    for t in range(N):
        for e in choices[t]:
            counts[e] += 1
    f = counts.to(p.dtype) / (N * K)
    aux = cfg.aux_loss * E * (f * p.mean(0)).sum()
    z = cfg.z_loss * torch.logsumexp(logits, -1).pow(2).mean()
    return y, aux, z, counts, margin


def layer_norm(x, params, name, cfg):
    if name is None:
        return F.layer_norm(x, (x.shape[-1],), eps=cfg.norm_eps)
    return F.layer_norm(x, (x.shape[-1],), params[name + ".weight"], params[name + ".bias"],
                        cfg.norm_eps)


@dataclasses.dataclass
class Output:
    loss: torch.Tensor
    main_loss: torch.Tensor
    aux_loss: torch.Tensor
    z_loss: torch.Tensor
    counts: list
    margin: float


# ---------------------------------------------------------------------------------------
# ViT-MoE


def vit_forward(cfg, params, images, labels):
    B, C = images.shape[0], cfg.d_model
    h = patch_embed(images, params["patch_embed.weight"], params["patch_embed.bias"], cfg)
    if cfg.pool == "cls":
        h = torch.cat([params["cls_token"].expand(B, 1, C), h], dim=1)
    if cfg.learned_pos():
        h = h + params["pos_embed"]
    else:
        pos = sincos_2d(C, cfg.grid).to(h.dtype)
        if cfg.pool == "cls":
            pos = torch.cat([torch.zeros(1, C, dtype=h.dtype), pos])
        h = h + pos
    T = h.shape[1]
    aux = z = torch.zeros((), dtype=h.dtype)
    counts, margin = [], math.inf
    for l in range(cfg.num_layers):
        p = f"layers.{l}."
        h = h + attention(layer_norm(h, params, p + "norm1", cfg), params[p + "attn.w_qkv"],
                          params[p + "attn.w_out"], cfg.num_heads)
        u = layer_norm(h, params, p + "norm2", cfg).reshape(B * T, C)
        if cfg.is_moe(l):
            y, a, zl, c, m = moe_layer(u, params, p + "moe.", cfg)
            aux, z = aux + a, z + zl
            counts.append(c)
            margin = min(margin, m)
        else:
            y = gelu_mlp(u, params[p + "mlp.w_fc1"], params[p + "mlp.w_fc2"])
        h = h + y.reshape(B, T, C)
    h = layer_norm(h, params, "final_norm", cfg)
    feat = h[:, 0] if cfg.pool == "cls" else h.mean(1)
    logits = feat @ params["head.weight"].t() + params["head.bias"]
    ce = F.cross_entropy(logits, labels.long())
    return Output(ce + aux + z, ce, aux, z, counts, margin)


# ---------------------------------------------------------------------------------------
# DiT-MoE


def timestep_embedding(t, params):
    """[cos(t f_k), sin(t f_k)], f_k = exp(-ln(1e4) k / 128), then Linear-SiLU-Linear."""
    freqs = torch.exp(-math.log(10000.0) * torch.arange(128, dtype=torch.float64) / 128)
    args = t.to(torch.float64)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(params["t_embed.fc1.weight"].dtype)
    h = F.silu(emb @ params["t_embed.fc1.weight"].t() + params["t_embed.fc1.bias"])
    return h @ params["t_embed.fc2.weight"].t() + params["t_embed.fc2.bias"]


def modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


def dit_forward(cfg, params, x_t, t, labels, target):
    B, C, p = x_t.shape[0], cfg.d_model, cfg.patch_size
    h = patch_embed(x_t, params["patch_embed.weight"], params["patch_embed.bias"], cfg)
    h = h + (params["pos_embed"] if cfg.learned_pos() else sincos_2d(C, cfg.grid).to(h.dtype))
    c = timestep_embedding(t, params) + params["y_embed.weight"][labels.long()]
    s = F.silu(c)
    T = h.shape[1]
    aux = z = torch.zeros((), dtype=h.dtype)
    counts, margin = [], math.inf
    for l in range(cfg.num_layers):
        pre = f"layers.{l}."
        mod = s @ params[pre + "adaln.weight"].t() + params[pre + "adaln.bias"]
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)
        a = attention(modulate(layer_norm(h, params, None, cfg), shift1, scale1),
                      params[pre + "attn.w_qkv"], params[pre + "attn.w_out"], cfg.num_heads)
        h = h + gate1[:, None] * a
        u = modulate(layer_norm(h, params, None, cfg), shift2, scale2).reshape(B * T, C)
        if cfg.is_moe(l):
            y, al, zl, cnt, m = moe_layer(u, params, pre + "moe.", cfg)
            aux, z = aux + al, z + zl
            counts.append(cnt)
            margin = min(margin, m)
        else:
            y = swiglu(u, params[pre + "mlp.w_gate"], params[pre + "mlp.w_up"], params[pre + "mlp.w_down"])
        h = h + gate2[:, None] * y.reshape(B, T, C)
    shift, scale = (s @ params["final.adaln.weight"].t() + params["final.adaln.bias"]).chunk(2, dim=-1)
    out = modulate(layer_norm(h, params, None, cfg), shift, scale)
    out = out @ params["final.linear.weight"].t() + params["final.linear.bias"]  # (B, P, Cin p p)
    g, cin = cfg.grid, cfg.image_channels
    # token (gy, gx) column (c, i, j) -> pixel (c, gy p + i, gx p + j)
    pred = out.reshape(B, g, g, cin, p, p).permute(0, 3, 1, 4, 2, 5).reshape(B, cin, g * p, g * p)
    mse = (pred - target).pow(2).mean()
    return Output(mse + aux + z, mse, aux, z, counts, margin)
