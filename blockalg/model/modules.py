"""The op registry's torch half: one module class per op kind, in the manner of nanoGPT's
``model.py``, each registered for its op's name with :func:`torch_module`.

The symbolic half (:mod:`blockalg.graphs.ops`) knows an op's formulas; this half knows how to
compute it, how to initialise it and which of its weights is the sublayer's output projection. They
meet by name only: :func:`module_for` builds the module of a graph node as
``cls(dims, **attributes)``. The wiring between modules comes from the block graph
(:mod:`blockalg.model.build`), never from here. Leaf names (``qkv``, ``proj``, ``fc``, ``gate``) are
the ones the registry's parameter formulas use.

>>> import torch
>>> from blockalg.graphs.ops import get_op
>>> dims = {"d_model": 8, "n_heads": 2, "d_head": 4, "n_kv_heads": 2, "d_ff": 32}
>>> op = get_op("ffn")
>>> ffn = module_for(op, op.with_defaults({}), dims)
>>> type(ffn).__name__, ffn.output_projection, sum(p.numel() for p in ffn.parameters())
('FFN', 'proj', 552)

Importing this module imports torch.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint

from ..errors import BlockalgError
from ..graphs.expr import numeric_value
from ..graphs.ops import ACTIVATIONS, get_op

_TORCH: dict[str, type[nn.Module]] = {}


def torch_module(op_name: str):
    """Class decorator registering the torch module that computes op ``op_name``; a duplicate
    name, or a name the symbolic registry does not know, raises."""
    get_op(op_name)  # the symbolic half must exist first

    def register(cls):
        if op_name in _TORCH:
            raise ValueError(f"op '{op_name}' has two torch modules")
        cls.kind = op_name  # the op it computes: what a trace of the model reports
        _TORCH[op_name] = cls
        return cls

    return register


def module_for(op, attrs, dims) -> nn.Module:
    """The torch module of a node computing ``op`` with ``attrs`` (defaults filled) at ``dims``."""
    try:
        cls = _TORCH[op.name]
    except KeyError:
        raise BlockalgError(f"op '{op.name}' has no torch module") from None
    return cls(dims, **attrs)


@dataclass(frozen=True)
class Init:
    """An initialisation scheme as the modules apply it (a graph's ``init`` attribute).

    * ``gpt2`` (Radford et al. 2019): N(0, std²) for linear and embedding weights, zero biases,
      norm gains 1; each sublayer's output projection at std/sqrt(2L) unless ``residual_scaling``
      is false.
    * ``deepnorm`` (Wang et al. 2022), decoder-only: as gpt2, then Xavier-normal with gain
      β = (8L)^(-1/4) on the value and output projections and the FFN, gain 1 on q and k.
      (The skip scale α = (2L)^(1/4) is an edge scale of the graph, not an init.)
    * ``xiong``, the setting of Xiong et al. 2020's Theorem 1: every weight matrix Xavier-uniform
      (Glorot & Bengio 2010: variance 2/(fan_in + fan_out); q, k and v each as its own d×d
      matrix, as separate projections would be; each expert of a mixture on its own), zero
      biases, norm gains 1, no depth scaling of any projection, and embedding tables at unit
      variance for the stream they sum to: N(0, 1/``n_tables``) each (token and position table:
      1/2 each). ``std`` and ``residual_scaling`` do not apply.
    """

    scheme: str
    n_layers: int
    std: float = 0.02
    residual_scaling: bool = True
    n_tables: int = 1  # embedding tables summed into the stream (token, and position if learned)

    @property
    def beta(self) -> float:
        return (8 * self.n_layers) ** -0.25

    def normal_(self, weight, output_projection: bool = False) -> None:
        """A weight matrix (or stack of matrices) of a sublayer."""
        if self.scheme == "xiong":
            for matrix in weight.view(-1, *weight.shape[-2:]):
                nn.init.xavier_uniform_(matrix)
            return
        scaled = output_projection and self.residual_scaling
        nn.init.normal_(weight, mean=0.0, std=self.std / math.sqrt(2 * self.n_layers) if scaled
                        else self.std)

    def table_(self, weight) -> None:
        """An embedding table."""
        std = (1 / self.n_tables) ** 0.5 if self.scheme == "xiong" else self.std
        nn.init.normal_(weight, mean=0.0, std=std)

    def linear_(self, linear: nn.Linear, output_projection: bool = False) -> None:
        self.normal_(linear.weight, output_projection)
        if linear.bias is not None:
            nn.init.zeros_(linear.bias)


class Sublayer(nn.Module):
    """What every registered module shares: ``output_projection`` names the leaf that writes the
    sublayer's result back to the stream (GPT-2 scales its init; gradient studies plot it), and
    :meth:`init_` initialises the module's own weights under a scheme: by default, each child
    ``nn.Linear`` as :meth:`Init.linear_` says. Norms and scales keep torch's init (gain 1,
    bias 0; a scale its ``value``)."""

    kind = ""
    output_projection: str | None = None
    uses_cache = False  # whether forward takes the KV cache (attention)

    def init_(self, init: Init) -> None:
        for name, child in self.named_children():
            if isinstance(child, nn.Linear):
                init.linear_(child, name == self.output_projection)

    def deepnorm_(self, init: Init) -> None:
        """DeepNet's second pass (only the sublayers :class:`Init` names override it)."""


def init_model_(model: nn.Module, init: Init) -> None:
    """Initialise every registered module of ``model`` under ``init``, in module order (so a
    seed gives the same weights as ever); DeepNet's rescaling is a second pass."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, Sublayer):
                module.init_(init)
        if init.scheme == "deepnorm":
            for module in model.modules():
                if isinstance(module, Sublayer):
                    module.deepnorm_(init)


class _Undrawn:
    """For torch's modules: ``reset_parameters`` fills and draws nothing on the meta device.

    NB: torch does both there through its Python reference ops, for tensors that hold no
    values (GPT-3's token table took half a second, its 577 linear maps and norms 0.1 s)."""

    def reset_parameters(self):
        if not self.weight.is_meta:
            super().reset_parameters()


class Linear(_Undrawn, nn.Linear):
    """``nn.Linear``, undrawn on the meta device."""


@torch_module("layernorm")
class LayerNorm(_Undrawn, nn.LayerNorm, Sublayer):
    """LayerNorm over ``width`` (``d_model`` or ``d_ff``) with an optional bias (torch's own)."""

    def __init__(self, dims, width: str = "d_model", bias: bool = True):
        super().__init__(dims[width], bias=bias)


@torch_module("rmsnorm")
class RMSNorm(_Undrawn, nn.RMSNorm, Sublayer):
    """RMSNorm over ``width`` with a learned gain (torch's own)."""

    def __init__(self, dims, width: str = "d_model"):
        super().__init__(dims[width])


@torch_module("dyt")
class DyT(Sublayer):
    """γ ⊙ tanh(α·x) + β over ``width`` features; α starts at 0.5, γ at 1, β at 0 (the paper's
    defaults outside LLMs)."""

    def __init__(self, dims, width: str = "d_model", alpha: float = 0.5):
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1,), alpha))
        self.weight = nn.Parameter(torch.ones(dims[width]))
        self.bias = nn.Parameter(torch.zeros(dims[width]))

    def forward(self, x):
        return self.weight * torch.tanh(self.alpha * x) + self.bias


@torch_module("attention")
class CausalSelfAttention(Sublayer):
    """Causal multi-head self-attention with a fused q/k/v projection; grouped-query attention when
    ``n_kv_heads < n_heads`` (k and v heads are shared by n_heads / n_kv_heads query heads).
    Optional: qk-norm on the flat q and k (OLMo 2), rotary positions (RoPE), a learned scale per
    head output (NormFormer)."""

    output_projection = "proj"
    uses_cache = True  # takes the KV cache of incremental decoding
    recompute_core = False  # selective recomputation (set by blockalg.model.memory.recompute)

    def __init__(self, dims, bias: bool = True, proj_bias: bool | None = None, qk_norm=None,
                 rotary: bool = False, head_scale: bool = False, rope_theta: float = 10000.0):
        super().__init__()
        if rotary and dims["d_head"] % 2:
            raise BlockalgError(f"rotary attention needs an even d_head, not {dims['d_head']}")
        self.n_heads, self.n_kv_heads, self.d_head = dims["n_heads"], dims["n_kv_heads"], dims["d_head"]
        q_width, kv_width = self.n_heads * self.d_head, self.n_kv_heads * self.d_head
        self.qkv = Linear(dims["d_model"], q_width + 2 * kv_width, bias=bias)
        if qk_norm is not None:
            norm = {"rmsnorm": nn.RMSNorm, "layernorm": nn.LayerNorm}[qk_norm]
            self.q_norm, self.k_norm = norm(q_width), norm(kv_width)
        else:
            self.q_norm = self.k_norm = None
        self.head_scale = nn.Parameter(torch.ones(self.n_heads)) if head_scale else None
        self.proj = Linear(q_width, dims["d_model"], bias=bias if proj_bias is None else proj_bias)
        if rotary:
            inv_freq = rope_theta ** (-torch.arange(0, self.d_head, 2, dtype=torch.float32) / self.d_head)
            self.register_buffer("inv_freq", inv_freq, persistent=False)
        else:
            self.inv_freq = None

    def forward(self, x, cache=None):
        b, s, _ = x.shape
        q, k, v = self.qkv(x).split(
            [self.n_heads * self.d_head, self.n_kv_heads * self.d_head, self.n_kv_heads * self.d_head],
            dim=-1)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(b, s, self.n_heads, self.d_head).transpose(1, 2)  # (b, h, s, d_head)
        k = k.view(b, s, self.n_kv_heads, self.d_head).transpose(1, 2)  # (b, h_kv, s, d_head)
        v = v.view(b, s, self.n_kv_heads, self.d_head).transpose(1, 2)
        start = cache.length if cache is not None else 0
        if self.inv_freq is not None:
            q, k = rotate(q, self.inv_freq, start), rotate(k, self.inv_freq, start)
        if cache is not None:
            k, v = cache.update(self, k, v)
        if self.recompute_core and torch.is_grad_enabled():  # Korthikanti et al. 2022
            y = checkpoint(attend, q, k, v, use_reentrant=True, preserve_rng_state=False)
        else:
            y = attend(q, k, v)
        if self.head_scale is not None:
            y = y * self.head_scale.view(1, -1, 1, 1)
        y = y.transpose(1, 2).reshape(b, s, self.n_heads * self.d_head)  # (b, s, h·d_head)
        return self.proj(y)

    def init_(self, init):
        super().init_(init)
        if init.scheme == "xiong":  # q, k and v are three matrices, not one of 3d rows
            for weight in self._qkv_weights():
                nn.init.xavier_uniform_(weight)

    def _qkv_weights(self):
        q_width, kv_width = self.n_heads * self.d_head, self.n_kv_heads * self.d_head
        return self.qkv.weight.split([q_width, kv_width, kv_width], dim=0)

    def deepnorm_(self, init):
        q, k, v = self._qkv_weights()
        nn.init.xavier_normal_(q)
        nn.init.xavier_normal_(k)
        nn.init.xavier_normal_(v, gain=init.beta)
        nn.init.xavier_normal_(self.proj.weight, gain=init.beta)


_fused_on_meta = [False]  # set by attention_path("flash")


@contextlib.contextmanager
def attention_path(path: str):
    """Run attention on the ``"eager"`` math path (it keeps the s×s probabilities for backward)
    or the ``"flash"`` fused kernel (output and log-sum-exp kept). On the meta device SDPA
    always takes the math path, so ``"flash"`` calls torch's fused CPU kernel there directly."""
    backend = {"eager": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION}[path]
    previous, _fused_on_meta[0] = _fused_on_meta[0], path == "flash"
    try:
        with sdpa_kernel(backend):
            yield
    finally:
        _fused_on_meta[0] = previous


def attend(q, k, v):
    """Causal attention, (b, h, s, d_head) → (b, h, s, d_head). Queries are the last positions of
    the keys: a prefill sees the causal triangle, a decoded token every cached key."""
    s, t = q.shape[-2], k.shape[-2]
    if 1 < s < t:
        raise BlockalgError(f"attention: {s} queries over {t} cached keys (prefill into a filled "
                            f"cache) is not supported")
    if _fused_on_meta[0] and q.device.type == "meta":
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, s == t)[0]
    return F.scaled_dot_product_attention(q, k, v, is_causal=s == t,
                                          enable_gqa=k.shape[1] != q.shape[1])


class KVCache:
    """Keys and values of every attention module for the tokens seen so far, concatenated along
    the sequence one step at a time (like Hugging Face's DynamicCache)."""

    def __init__(self):
        self.length = 0  # tokens cached (the model advances it after each step)
        self.kv = {}

    def update(self, module, k, v):
        if module in self.kv:
            k = torch.cat([self.kv[module][0], k], dim=2)
            v = torch.cat([self.kv[module][1], v], dim=2)
        self.kv[module] = (k, v)
        return k, v

    def nbytes(self) -> int:
        return sum(t.nbytes for pair in self.kv.values() for t in pair)


def rotate(x, inv_freq, start: int = 0):
    """Rotary position embedding (Su et al. 2021), in the half-split layout of GPT-NeoX and LLaMA:
    pairs (x_i, x_{i + d/2}) rotate by position · inv_freq_i; positions start at ``start``."""
    # NB: angles in fp32 whatever the model's dtype: bf16 cannot count past 256.
    positions = torch.arange(start, start + x.shape[-2], device=x.device, dtype=torch.float32)
    angles = torch.outer(positions, inv_freq.float())  # (s, d_head/2)
    cos = torch.cat([angles.cos(), angles.cos()], dim=-1).to(x.dtype)
    sin = torch.cat([angles.sin(), angles.sin()], dim=-1).to(x.dtype)
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


#: The torch function of each activation in :data:`blockalg.graphs.ops.ACTIVATIONS`.
_ACTIVATIONS = {"gelu": lambda x: F.gelu(x, approximate="tanh"), "relu": F.relu, "silu": F.silu}
assert set(_ACTIVATIONS) == set(ACTIVATIONS), "every activation of the registry needs a function"


class _FFNDeepNorm(Sublayer):
    def deepnorm_(self, init):
        for child in self.children():
            if isinstance(child, nn.Linear):
                nn.init.xavier_normal_(child.weight, gain=init.beta)


@torch_module("ffn_up")
class FFNUp(_FFNDeepNorm):
    """act(fc(x)), or act(gate(x)) * fc(x) when gated: the FFN up to its hidden layer."""

    def __init__(self, dims, activation: str = "gelu", bias: bool = True, gated: bool = False):
        super().__init__()
        self.fc = Linear(dims["d_model"], dims["d_ff"], bias=bias)
        self.gate = Linear(dims["d_model"], dims["d_ff"], bias=bias) if gated else None
        self.act = _ACTIVATIONS[activation]

    def forward(self, x):
        h = self.fc(x)
        return self.act(self.gate(x)) * h if self.gate is not None else self.act(h)


@torch_module("ffn_down")
class FFNDown(_FFNDeepNorm):
    """The FFN's output projection, d_ff → d_model."""

    output_projection = "proj"

    def __init__(self, dims, bias: bool = True):
        super().__init__()
        self.proj = Linear(dims["d_ff"], dims["d_model"], bias=bias)

    def forward(self, x):
        return self.proj(x)


@torch_module("ffn")
class FFN(FFNUp):
    """Position-wise FFN: proj(act(fc(x))), or proj(act(gate(x)) * fc(x)) when gated (SwiGLU)."""

    output_projection = "proj"

    def __init__(self, dims, activation: str = "gelu", bias: bool = True, gated: bool = False):
        super().__init__(dims, activation, bias, gated)
        self.proj = Linear(dims["d_ff"], dims["d_model"], bias=bias)

    def forward(self, x):
        return self.proj(super().forward(x))


@torch_module("moe")
class MoE(Sublayer):
    """Top-k mixture of experts over SwiGLU (or plain) FFN experts, weights stacked per expert.

    Each expert runs on the tokens routed to it (a loop over experts; see :meth:`routes` for the
    meta device).
    """

    output_projection = "experts_proj"

    def __init__(self, dims, activation: str = "silu", gated: bool = True):
        super().__init__()
        d, hidden, experts = dims["d_model"], dims["d_ff"], dims["n_experts"]
        self.top_k = dims["top_k"]
        self.router = Linear(d, experts, bias=False)
        self.experts_fc = nn.Parameter(torch.empty(experts, hidden, d))
        self.experts_gate = nn.Parameter(torch.empty(experts, hidden, d)) if gated else None
        self.experts_proj = nn.Parameter(torch.empty(experts, d, hidden))
        self.act = _ACTIVATIONS[activation]

    def init_(self, init):
        for name in ("experts_fc", "experts_gate", "experts_proj"):
            if getattr(self, name) is not None:
                init.normal_(getattr(self, name), name == self.output_projection)
        init.linear_(self.router)

    def _expert(self, x, fc, gate, proj):
        h = x @ fc.transpose(-1, -2)
        h = self.act(x @ gate.transpose(-1, -2)) * h if gate is not None else self.act(h)
        return h @ proj.transpose(-1, -2)

    def forward(self, x):
        b, s, d = x.shape
        tokens = x.reshape(-1, d)  # (T, d)
        weights, chosen = self.router(tokens).softmax(dim=-1).topk(self.top_k, dim=-1)  # (T, k)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(tokens)
        for e, (token_idx, slot) in enumerate(self.routes(chosen)):
            if token_idx.numel():
                gate = self.experts_gate[e] if self.experts_gate is not None else None
                y = self._expert(tokens[token_idx], self.experts_fc[e], gate, self.experts_proj[e])
                out = out.index_add(0, token_idx, y * weights[token_idx, slot].unsqueeze(-1))
        return out.view(b, s, d)

    def routes(self, chosen):
        """Per expert, the (token, slot) pairs routed to it. On the meta device routing has no
        values: the T·k pairs are dealt to the experts in turn, the same arithmetic with static
        shapes, so FLOPs and memory (sums over the experts) can be counted at any size."""
        n = self.experts_fc.shape[0]
        if chosen.device.type != "meta":
            return [torch.where(chosen == e) for e in range(n)]
        pairs = torch.arange(chosen.numel(), device=chosen.device)
        return [(p // self.top_k, p % self.top_k) for p in (pairs[e::n] for e in range(n))]


@torch_module("scale")
class Scale(Sublayer):
    """Multiply by a constant, or by a learned scalar / per-dimension vector initialised to it."""

    def __init__(self, dims, value=1, learnable: str | None = None):
        super().__init__()
        d_model = dims["d_model"]
        init = numeric_value(value, dims)
        if learnable is None:
            self.register_buffer("value", torch.tensor(init), persistent=False)
            self.weight = None
        else:
            shape = (1,) if learnable == "scalar" else (d_model,)
            self.weight = nn.Parameter(torch.full(shape, init))

    def forward(self, x):
        return x * (self.weight if self.weight is not None else self.value)


@torch_module("add")
class Add(Sublayer):
    """The residual add: the sum of its inputs."""

    def __init__(self, dims):
        super().__init__()

    def forward(self, *inputs):
        out = inputs[0]
        for x in inputs[1:]:
            out = out + x
        return out


@torch_module("output")
class Identity(Sublayer):
    """Passes its one input through (the block's output node)."""

    def __init__(self, dims, stream: str = "x"):
        super().__init__()

    def forward(self, x):
        return x


class _Table(_Undrawn, nn.Embedding, Sublayer):
    """A lookup table, N(0, std²) (``xiong``: unit variance of the stream, :meth:`Init.table_`)."""

    def init_(self, init):
        init.table_(self.weight)


@torch_module("token_embedding")
class TokenEmbedding(_Table):
    """The token table, V × d."""

    def __init__(self, dims):
        super().__init__(dims["vocab"], dims["d_model"])


@torch_module("position_embedding")
class PositionEmbedding(_Table):
    """Learned absolute positions, (n_ctx + offset) × d; row ``offset + i`` is position i."""

    def __init__(self, dims, offset: int = 0):
        super().__init__(dims["n_ctx"] + offset, dims["d_model"])
        self.offset = offset


@torch_module("unembedding")
class Unembedding(_Undrawn, nn.Linear, Sublayer):
    """The language-model head, d → V, no bias (``tied``: the model shares the token table's
    weight with it)."""

    def __init__(self, dims, tied: bool = True):
        super().__init__(dims["d_model"], dims["vocab"], bias=False)
        self.tied = tied

    def init_(self, init):
        # NB: a tied head draws the shared table once more, as GPT-2's init always did (same
        # distribution; kept so that seeds give the weights they gave before).
        if self.tied:
            init.table_(self.weight)
        else:
            init.normal_(self.weight)
