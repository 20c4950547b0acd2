"""Torch modules, one class per sublayer kind, in the manner of nanoGPT's ``model.py``.

The op registry (:mod:`blockalg.ops`) builds these through each entry's ``module`` factory; the
wiring between them comes from the block graph (:mod:`blockalg.build`), never from here. Leaf names
(``qkv``, ``proj``, ``fc``, ``gate``) are the ones the registry's parameter formulas use.

Importing this module imports torch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .expr import numeric_value


class LayerNorm(nn.LayerNorm):
    """LayerNorm with an optional bias (torch's own; kept as a named kind for the registry)."""

    kind = "layernorm"  # the op it computes: what a trace of the model reports

    def __init__(self, width: int, bias: bool = True):
        super().__init__(width, bias=bias)


class RMSNorm(nn.RMSNorm):
    """RMSNorm with a learned gain (torch's own)."""

    kind = "rmsnorm"

    def __init__(self, width: int):
        super().__init__(width)


class CausalSelfAttention(nn.Module):
    """Causal multi-head self-attention with a fused q/k/v projection; grouped-query attention when
    ``n_kv_heads < n_heads`` (k and v heads are shared by n_heads / n_kv_heads query heads).
    Optional: qk-norm on the flat q and k (OLMo 2), rotary positions (RoPE), a learned scale per
    head output (NormFormer)."""

    kind = "attention"

    def __init__(self, dims, bias: bool = True, proj_bias: bool | None = None, qk_norm=None,
                 rotary: bool = False, head_scale: bool = False, rope_theta: float = 10000.0):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.d_head = dims["n_heads"], dims["n_kv_heads"], dims["d_head"]
        q_width, kv_width = self.n_heads * self.d_head, self.n_kv_heads * self.d_head
        self.qkv = nn.Linear(dims["d_model"], q_width + 2 * kv_width, bias=bias)
        if qk_norm is not None:
            norm = {"rmsnorm": nn.RMSNorm, "layernorm": nn.LayerNorm}[qk_norm]
            self.q_norm, self.k_norm = norm(q_width), norm(kv_width)
        else:
            self.q_norm = self.k_norm = None
        self.head_scale = nn.Parameter(torch.ones(self.n_heads)) if head_scale else None
        self.proj = nn.Linear(q_width, dims["d_model"], bias=bias if proj_bias is None else proj_bias)
        self.proj.residual_projection = True  # GPT-2 scales its init by 1/sqrt(2L)
        if rotary:
            inv_freq = rope_theta ** (-torch.arange(0, self.d_head, 2, dtype=torch.float32) / self.d_head)
            self.register_buffer("inv_freq", inv_freq, persistent=False)
        else:
            self.inv_freq = None

    def forward(self, x):
        b, s, _ = x.shape
        q, k, v = self.qkv(x).split(
            [self.n_heads * self.d_head, self.n_kv_heads * self.d_head, self.n_kv_heads * self.d_head],
            dim=-1)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(b, s, self.n_heads, self.d_head).transpose(1, 2)  # (b, h, s, d_head)
        k = k.view(b, s, self.n_kv_heads, self.d_head).transpose(1, 2)  # (b, h_kv, s, d_head)
        v = v.view(b, s, self.n_kv_heads, self.d_head).transpose(1, 2)
        if self.inv_freq is not None:
            q, k = rotate(q, self.inv_freq), rotate(k, self.inv_freq)
        gqa = self.n_kv_heads != self.n_heads
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        if self.head_scale is not None:
            y = y * self.head_scale.view(1, -1, 1, 1)
        y = y.transpose(1, 2).reshape(b, s, self.n_heads * self.d_head)  # (b, s, h·d_head)
        return self.proj(y)


def rotate(x, inv_freq):
    """Rotary position embedding (Su et al. 2021), in the half-split layout of GPT-NeoX and LLaMA:
    pairs (x_i, x_{i + d/2}) rotate by position · inv_freq_i."""
    positions = torch.arange(x.shape[-2], device=x.device, dtype=inv_freq.dtype)
    angles = torch.outer(positions, inv_freq)  # (s, d_head/2)
    cos = torch.cat([angles.cos(), angles.cos()], dim=-1).to(x.dtype)
    sin = torch.cat([angles.sin(), angles.sin()], dim=-1).to(x.dtype)
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


_ACTIVATIONS = {"gelu": lambda x: F.gelu(x, approximate="tanh"), "relu": F.relu, "silu": F.silu}


class FFNUp(nn.Module):
    """act(fc(x)), or act(gate(x)) * fc(x) when gated: the FFN up to its hidden layer."""

    kind = "ffn_up"

    def __init__(self, dims, activation: str = "gelu", bias: bool = True, gated: bool = False):
        super().__init__()
        self.fc = nn.Linear(dims["d_model"], dims["d_ff"], bias=bias)
        self.gate = nn.Linear(dims["d_model"], dims["d_ff"], bias=bias) if gated else None
        self.act = _ACTIVATIONS[activation]

    def forward(self, x):
        h = self.fc(x)
        return self.act(self.gate(x)) * h if self.gate is not None else self.act(h)


class FFNDown(nn.Module):
    """The FFN's output projection, d_ff → d_model."""

    kind = "ffn_down"

    def __init__(self, dims, bias: bool = True):
        super().__init__()
        self.proj = nn.Linear(dims["d_ff"], dims["d_model"], bias=bias)
        self.proj.residual_projection = True

    def forward(self, x):
        return self.proj(x)


class FFN(FFNUp):
    """Position-wise FFN: proj(act(fc(x))), or proj(act(gate(x)) * fc(x)) when gated (SwiGLU)."""

    kind = "ffn"

    def __init__(self, dims, activation: str = "gelu", bias: bool = True, gated: bool = False):
        super().__init__(dims, activation, bias, gated)
        self.proj = nn.Linear(dims["d_ff"], dims["d_model"], bias=bias)
        self.proj.residual_projection = True  # GPT-2 scales its init by 1/sqrt(2L)

    def forward(self, x):
        return self.proj(super().forward(x))


class MoE(nn.Module):
    """Top-k mixture of experts over SwiGLU (or plain) FFN experts, weights stacked per expert.

    On real tensors each expert runs on the tokens routed to it (a loop over experts). On the
    meta device, where routing has no values, each token's k expert weights are gathered and
    applied with one batched product: the same arithmetic, with static shapes, so FLOPs can be
    counted at any size.
    """

    kind = "moe"

    def __init__(self, dims, activation: str = "silu", gated: bool = True):
        super().__init__()
        d, hidden, experts = dims["d_model"], dims["d_ff"], dims["n_experts"]
        self.top_k = dims["top_k"]
        self.router = nn.Linear(d, experts, bias=False)
        self.experts_fc = nn.Parameter(torch.empty(experts, hidden, d))
        self.experts_gate = nn.Parameter(torch.empty(experts, hidden, d)) if gated else None
        self.experts_proj = nn.Parameter(torch.empty(experts, d, hidden))
        self.act = _ACTIVATIONS[activation]

    def expert_weights(self):
        return [w for w in (self.experts_fc, self.experts_gate, self.experts_proj) if w is not None]

    def _expert(self, x, fc, gate, proj):
        h = x @ fc.transpose(-1, -2)
        h = self.act(x @ gate.transpose(-1, -2)) * h if gate is not None else self.act(h)
        return h @ proj.transpose(-1, -2)

    def forward(self, x):
        b, s, d = x.shape
        tokens = x.reshape(-1, d)  # (T, d)
        weights, chosen = self.router(tokens).softmax(dim=-1).topk(self.top_k, dim=-1)  # (T, k)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        if tokens.device.type == "meta":
            flat = chosen.reshape(-1)  # (T·k,)
            picked = [w[flat] if w is not None else None
                      for w in (self.experts_fc, self.experts_gate, self.experts_proj)]
            rows = tokens.repeat_interleave(self.top_k, dim=0).unsqueeze(1)  # (T·k, 1, d)
            out = self._expert(rows, *picked).view(-1, self.top_k, d)  # (T, k, d)
            return (out * weights.unsqueeze(-1)).sum(dim=1).view(b, s, d)
        out = torch.zeros_like(tokens)
        for e in range(self.experts_fc.shape[0]):
            token_idx, slot = torch.where(chosen == e)
            if token_idx.numel():
                gate = self.experts_gate[e] if self.experts_gate is not None else None
                y = self._expert(tokens[token_idx], self.experts_fc[e], gate, self.experts_proj[e])
                out = out.index_add(0, token_idx, y * weights[token_idx, slot].unsqueeze(-1))
        return out.view(b, s, d)


class Scale(nn.Module):
    """Multiply by a constant, or by a learned scalar / per-dimension vector initialised to it."""

    kind = "scale"

    def __init__(self, d_model: int, value, learnable: str | None, dims):
        super().__init__()
        init = numeric_value(value, dims)
        if learnable is None:
            self.register_buffer("value", torch.tensor(init), persistent=False)
            self.weight = None
        else:
            shape = (1,) if learnable == "scalar" else (d_model,)
            self.weight = nn.Parameter(torch.full(shape, init))

    def forward(self, x):
        return x * (self.weight if self.weight is not None else self.value)


class Add(nn.Module):
    """The residual add: the sum of its inputs."""

    kind = "add"

    def forward(self, *inputs):
        out = inputs[0]
        for x in inputs[1:]:
            out = out + x
        return out


class Identity(nn.Module):
    """Passes its one input through (the block's output node)."""

    kind = "output"

    def forward(self, x):
        return x


class Embedding(nn.Embedding):
    """A lookup table (token or position)."""


class Unembedding(nn.Linear):
    """The language-model head, d → V, no bias."""

    def __init__(self, d_model: int, vocab: int):
        super().__init__(d_model, vocab, bias=False)


def gpt2_init_(module: nn.Module, n_layers: int, std: float = 0.02,
               residual_scaling: bool = True) -> None:
    """GPT-2 initialisation (Radford et al. 2019): weights of linear and embedding layers from
    N(0, 0.02²), biases 0, norms at gain 1; residual projections (``residual_projection``) from
    N(0, (0.02/sqrt(2L))²) so the stream's variance does not grow with depth (unless
    ``residual_scaling`` is false)."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            scaled = residual_scaling and getattr(sub, "residual_projection", False)
            scale = 1 / math.sqrt(2 * n_layers) if scaled else 1
            nn.init.normal_(sub.weight, mean=0.0, std=std * scale)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.Embedding):
            nn.init.normal_(sub.weight, mean=0.0, std=std)
        elif isinstance(sub, MoE):
            for w in sub.expert_weights():
                scale = 1 / math.sqrt(2 * n_layers) if residual_scaling and w is sub.experts_proj else 1
                nn.init.normal_(w, mean=0.0, std=std * scale)


def deepnorm_init_(module: nn.Module, n_layers: int, std: float = 0.02,
                   residual_scaling: bool = True) -> None:
    """DeepNet initialisation (Wang et al. 2022), decoder-only: Xavier-normal weights with gain
    β = (8L)^(-1/4) for the value and output projections and the FFN, gain 1 for q and k;
    embeddings N(0, std²) and zero biases as GPT-2. (The skip scale α = (2L)^(1/4) is an edge
    scale of the graph, not an init.) ``residual_scaling`` does not apply."""
    gpt2_init_(module, n_layers, std)
    beta = (8 * n_layers) ** -0.25
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, CausalSelfAttention):
                q_width, kv_width = sub.n_heads * sub.d_head, sub.n_kv_heads * sub.d_head
                q, k, v = sub.qkv.weight.split([q_width, kv_width, kv_width], dim=0)
                nn.init.xavier_normal_(q)
                nn.init.xavier_normal_(k)
                nn.init.xavier_normal_(v, gain=beta)
                nn.init.xavier_normal_(sub.proj.weight, gain=beta)
            elif isinstance(sub, (FFNUp, FFNDown)):
                for linear in (sub.fc, sub.gate, getattr(sub, "proj", None)) if isinstance(sub, FFNUp) \
                        else (sub.proj,):
                    if linear is not None:
                        nn.init.xavier_normal_(linear.weight, gain=beta)


#: Initialisation schemes by the name a graph's ``init`` attribute gives.
INITS = {"gpt2": gpt2_init_, "deepnorm": deepnorm_init_}
