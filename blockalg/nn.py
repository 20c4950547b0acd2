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

    def __init__(self, d_model: int, bias: bool = True):
        super().__init__(d_model, bias=bias)


class RMSNorm(nn.RMSNorm):
    """RMSNorm with a learned gain (torch's own)."""

    kind = "rmsnorm"

    def __init__(self, d_model: int):
        super().__init__(d_model)


class CausalSelfAttention(nn.Module):
    """Causal multi-head self-attention with a fused q/k/v projection; grouped-query attention when
    ``n_kv_heads < n_heads`` (k and v heads are shared by n_heads / n_kv_heads query heads)."""

    kind = "attention"

    def __init__(self, dims, bias: bool = True):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.d_head = dims["n_heads"], dims["n_kv_heads"], dims["d_head"]
        qkv_width = (self.n_heads + 2 * self.n_kv_heads) * self.d_head
        self.qkv = nn.Linear(dims["d_model"], qkv_width, bias=bias)
        self.proj = nn.Linear(self.n_heads * self.d_head, dims["d_model"], bias=bias)
        self.proj.residual_projection = True  # GPT-2 scales its init by 1/sqrt(2L)

    def forward(self, x):
        b, s, _ = x.shape
        q, k, v = self.qkv(x).split(
            [self.n_heads * self.d_head, self.n_kv_heads * self.d_head, self.n_kv_heads * self.d_head],
            dim=-1)
        q = q.view(b, s, self.n_heads, self.d_head).transpose(1, 2)  # (b, h, s, d_head)
        k = k.view(b, s, self.n_kv_heads, self.d_head).transpose(1, 2)  # (b, h_kv, s, d_head)
        v = v.view(b, s, self.n_kv_heads, self.d_head).transpose(1, 2)
        gqa = self.n_kv_heads != self.n_heads
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        y = y.transpose(1, 2).reshape(b, s, self.n_heads * self.d_head)  # (b, s, h·d_head)
        return self.proj(y)


_ACTIVATIONS = {"gelu": lambda x: F.gelu(x, approximate="tanh"), "relu": F.relu, "silu": F.silu}


class FFN(nn.Module):
    """Position-wise FFN: proj(act(fc(x))), or proj(act(gate(x)) * fc(x)) when gated (SwiGLU)."""

    kind = "ffn"

    def __init__(self, dims, activation: str = "gelu", bias: bool = True, gated: bool = False):
        super().__init__()
        self.fc = nn.Linear(dims["d_model"], dims["d_ff"], bias=bias)
        self.gate = nn.Linear(dims["d_model"], dims["d_ff"], bias=bias) if gated else None
        self.proj = nn.Linear(dims["d_ff"], dims["d_model"], bias=bias)
        self.proj.residual_projection = True
        self.act = _ACTIVATIONS[activation]

    def forward(self, x):
        h = self.fc(x)
        h = self.act(self.gate(x)) * h if self.gate is not None else self.act(h)
        return self.proj(h)


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
