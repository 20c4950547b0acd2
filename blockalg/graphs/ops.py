"""The op registry: one entry per sublayer kind, the single source of truth for the whole pipeline.

Each entry states, in one place, what every stage needs from a node of that kind:

* ``arity`` and ``attributes``: what the graph validator accepts;
* ``role``: how gradient paths count it (a norm, an attention or FFN sublayer, or identity-like);
* ``component``: where its parameters are booked (attention / ffn / norm / embedding);
* ``params``: parameter count per leaf tensor, named as the torch module names them;
* ``forward_matmul`` / ``backward_matmul`` / ``forward_other``: FLOPs for one sequence;
* ``saves_input`` / ``saves_output`` / ``saved_activations``: what backward keeps, as the torch
  half computes it; ``buffers``, ``kv_cache``, ``decode_matmul``, ``decode_reads``: the other
  memory and inference figures (conventions below);
* ``forward_matmul`` / ``backward_matmul`` / ``forward_other`` / ``backward_other``: FLOPs for one
  sequence; ``backward_accumulation``: the gradient sums the op's own reuse of a tensor causes;
  ``exact_phases``: where ``forward_other``/``backward_other`` claim to equal torch's decomposition
  count exactly (:mod:`blockalg.model.elementwise`; elsewhere they are a documented convention);
* the torch half lives in :mod:`blockalg.model.modules`: a module class registered for the
  op's name with ``@torch_module(name)``; the two halves meet by name only.

Formulas are pure sympy functions of the dimension symbols in :mod:`blockalg.graphs.symbols`; they never
see a tensor. All FLOPs are for **one sequence of** ``seq_len`` **tokens** (batch 1).

Conventions (NB: these are the ones ``torch.utils.flop_counter.FlopCounterMode`` uses for matmuls):

* one multiply-add is 2 FLOPs: ``matmul_flops(m, k, n) = 2·m·k·n``;
* a bias add is *not* part of the matmul (``addmm`` counts only its ``mm``); it is an "other" FLOP;
* attention scores and the weighted sum are counted for the dense s×s product; the causal-effective
  count (only the s(s+1)/2 unmasked scores) is reported separately;
* backward matmul FLOPs are 2× forward (one product for the input gradient, one for the weight);
* "other" FLOPs use the per-element costs below. Per-row scalars (a mean's division, an rsqrt) are
  not counted. Embedding lookups are gathers: 0 FLOPs; their backward is a scatter-add, 1 per
  element;
* backward "other" FLOPs use the per-element costs of torch's own backward formulas (its
  decompositions in ``torch._decomp``, read op by op below), per-row and per-column scalars dropped
  as in the forward (a bias gradient, the sum of s·w elements to w, counts s·w). When a tensor is
  used twice its two gradients are summed: that sum is booked apart, as gradient accumulation
  (:meth:`OpKind.backward_accumulation` inside an op, graph forks and tied weights in
  :mod:`blockalg.analysis.flops`), because torch's autograd engine, not the op, performs it.

Memory conventions: elements are counted for one training step of ``batch`` sequences of
``seq_len`` tokens (a few saved tensors, such as rotary tables and position indices, do not grow
with the batch), per *storage* (a view of a kept tensor costs nothing more; a kept view keeps
its whole storage), keyed by storage class: :data:`ACT` (the model's dtype), :data:`F32` (fp32
whatever the model's dtype: norm statistics, attention's log-sum-exp, the math attention path,
which upcasts bf16/fp16 to fp32) and :data:`I64` (indices). What is kept was measured on the
built model with ``torch.autograd.graph.saved_tensors_hooks`` (parameters and buffers
excluded); an op's input and output are booked by :mod:`blockalg.analysis.memory`, which
counts a tensor kept by several consumers once.

>>> from blockalg.graphs.ops import get_op
>>> from blockalg.graphs.symbols import d_model
>>> op = get_op("layernorm")
>>> op.params(op.with_defaults({"bias": True}))  # formulas take every attribute, defaults filled
{'weight': d_model, 'bias': d_model}
"""

from __future__ import annotations

from collections.abc import Mapping

import sympy as sp

from ..errors import BlockalgError, quote
from .symbols import (
    batch,
    d_ff,
    d_head,
    d_model,
    n_ctx,
    n_experts,
    n_heads,
    n_kv_heads,
    position,
    seq_len,
    top_k,
    vocab,
)

#: The two passes whose "other" FLOPs the registry states.
PHASES = ("forward", "backward")

# Roles in gradient paths.
INPUT, OUTPUT, NORM, ATTENTION, FFN, IDENTITY, EMBEDDING = (
    "input", "output", "norm", "attention", "ffn", "identity", "embedding")

#: Where parameters are booked, in table order: every op's ``component`` is one of these.
COMPONENTS = ("attention", "ffn", "norm", "scale", "embedding")

# Per-element costs of the non-matmul work ("other" FLOPs).
LAYERNORM_FLOPS = 5  # mean: add; centre: sub; variance: mul + add; normalise: mul
RMSNORM_FLOPS = 3  # square, sum, normalise
AFFINE_GAIN_FLOPS = 1  # the learned per-dimension gain (and, separately, 1 for a bias)
SOFTMAX_FLOPS = 5  # max, subtract, exp, sum, divide
SCORE_SCALE_FLOPS = 1  # q·k / sqrt(d_head)
ACTIVATION_FLOPS = {"relu": 1, "gelu": 8, "silu": 4}  # gelu: tanh form; silu: x·sigmoid(x)
ACTIVATIONS = tuple(ACTIVATION_FLOPS)  # the activations an FFN may use
ROTARY_FLOPS = 3  # x·cos + rotate(x)·sin, per rotated element of q and k
DYT_FLOPS = 4  # α·x, tanh, the gain, the bias

# Storage classes of saved tensors: the model's dtype, fp32 whatever it is, int64 indices.
ACT, F32, I64 = "act", "f32", "i64"
STORAGE_CLASSES = (ACT, F32, I64)
# Attention paths: the math path (s×s probabilities kept) and a fused kernel (output and
# log-sum-exp kept; torch's CPU flash kernel here).
EAGER, FLASH = "eager", "flash"
ATTENTION_PATHS = (EAGER, FLASH)
ROWS = batch * seq_len  # token positions in one step


def merge(*parts: Mapping) -> dict[str, sp.Expr]:
    """Sum element counts per storage class, dropping zeros.

    >>> merge({ACT: 2}, {ACT: 3, I64: 1}, {F32: 0})
    {'act': 5, 'i64': 1}
    """
    total: dict[str, sp.Expr] = {}
    for part in parts:
        for key, count in part.items():
            total[key] = total.get(key, sp.Integer(0)) + count
    return {key: sp.sympify(count) for key, count in total.items() if count != 0}

# Per-element costs of the backward's non-matmul work, read off torch's decompositions.
#: native_layer_norm_backward without the affine part: x̂ again (sub, mul), ·N, two row sums,
#: g·x̂, x̂·Σ, two subtractions, ·rstd/N
LAYERNORM_BACKWARD_FLOPS = 10
#: nn.RMSNorm's composite backward without the gain: g·r, g·x and its row sum, the mean's 1/d,
#: the square's 2·x·g (pow, ·2, ·g)
RMSNORM_BACKWARD_FLOPS = 7
AFFINE_GAIN_BACKWARD_FLOPS = 3  # g·w for the input; g·x̂ and its sum over tokens for the weight
BIAS_BACKWARD_FLOPS = 1  # the sum over tokens
SOFTMAX_BACKWARD_FLOPS = 4  # _softmax_backward_data: g·p, row sum, subtract, ·p
SCORE_SCALE_BACKWARD_FLOPS = 1
#: gelu_backward (tanh) recomputes the inner polynomial and tanh: 12 mul, 4 add, 1 sub, 1 tanh;
#: silu_backward: sigmoid, 1 − σ, x·(1 − σ), + 1, σ·(...), ·g; relu: a select (threshold_backward)
ACTIVATION_BACKWARD_FLOPS = {"relu": 1, "gelu": 18, "silu": 6}
GATE_BACKWARD_FLOPS = 2  # act(gate) ⊙ fc: one product per input gradient
ROTARY_BACKWARD_FLOPS = 3  # g·cos, g·sin, the rotation's sign, per rotated element
SCATTER_ADD_FLOPS = 1  # an embedding's backward adds each gradient row into the table
#: DyT: g·γ, and g·tanh summed for γ; tanh_backward g·(1 − y²) (3); g·α, and g·x summed for α;
#: the sum for β
DYT_BACKWARD_FLOPS = 10


def matmul_flops(m, k, n) -> sp.Expr:
    """FLOPs of an (m×k) @ (k×n) product: 2·m·k·n (one multiply-add = 2 FLOPs).

    >>> matmul_flops(2, 3, 4)
    48
    """
    return 2 * sp.sympify(m) * k * n


class OpKind:
    """A sublayer kind. Subclass it, set the class attributes, override the formulas that apply,
    and decorate with :func:`register`."""

    name: str = ""
    role: str = IDENTITY
    component: str | None = None  # where its parameters are booked
    arity: tuple[int, int | None] = (1, 1)  # (min, max) inputs; None = any number
    attributes: dict[str, tuple[object, object]] = {}  # name -> (default, type or allowed values)
    in_block: bool = True  # False for the model-level ops (embeddings, unembedding)
    #: Whether the torch implementation reuses tensors a data-dependent number of times (a MoE
    #: loop over the experts a batch routes to): its gradient sums are then a convention.
    reuse_depends_on_data: bool = False

    def params(self, attrs: Mapping) -> dict[str, sp.Expr]:
        """Parameter count per leaf tensor, keyed as the torch module names the tensor."""
        return {}

    def active_params(self, attrs: Mapping) -> sp.Expr:
        """Parameters used for one token (all of them, except in a mixture of experts)."""
        return sum(self.params(attrs).values(), sp.Integer(0))

    def in_width(self, attrs: Mapping) -> sp.Expr:
        """Width of each input (the residual stream, unless the op sits inside a sublayer)."""
        return d_model

    def out_width(self, attrs: Mapping) -> sp.Expr:
        """Width of the output."""
        return self.in_width(attrs)

    def forward_matmul(self, attrs: Mapping, n_inputs: int) -> sp.Expr:
        """Matmul FLOPs of one forward pass over one sequence (dense attention)."""
        return sp.Integer(0)

    def forward_matmul_causal(self, attrs: Mapping, n_inputs: int) -> sp.Expr:
        """Like :meth:`forward_matmul`, counting only the unmasked causal attention scores."""
        return self.forward_matmul(attrs, n_inputs)

    def backward_matmul(self, attrs: Mapping, n_inputs: int) -> sp.Expr:
        """Matmul FLOPs of the backward pass: input and weight gradient, 2× forward."""
        return 2 * self.forward_matmul(attrs, n_inputs)

    def backward_matmul_fused(self, attrs: Mapping, n_inputs: int) -> sp.Expr:
        """Backward matmul FLOPs when attention runs a fused kernel (flash, memory-efficient,
        cuDNN, CPU flash), which recomputes the scores: FlopCounterMode counts its backward at
        2.5× forward. Equal to :meth:`backward_matmul` for every op without such a kernel."""
        return self.backward_matmul(attrs, n_inputs)

    def forward_other(self, attrs: Mapping, n_inputs: int) -> sp.Expr:
        """Non-matmul FLOPs of one forward pass (norms, softmax, activations, adds, biases)."""
        return sp.Integer(0)

    def saves_input(self, attrs: Mapping, reduced: bool = False) -> bool:
        """Whether backward keeps the op's input tensor itself (``reduced``: the model runs in
        bf16/fp16)."""
        return False

    def saves_output(self, attrs: Mapping, reduced: bool = False) -> bool:
        """Whether backward keeps the op's output tensor itself (ReLU keeps its result)."""
        return False

    def saved_activations(self, attrs: Mapping, n_inputs: int, attention_path: str = EAGER, *,
                          reduced: bool = False, selective: bool = False) -> dict[str, sp.Expr]:
        """Elements of the tensors the op creates inside itself and keeps for backward, per
        storage class, for one step (see the module's memory conventions). ``selective``: the
        attention core is recomputed in backward (Korthikanti et al. 2022)."""
        return {}

    def buffers(self, attrs: Mapping) -> sp.Expr:
        """Elements of the op's buffers (state that is not a parameter), in the model's dtype."""
        return sp.Integer(0)

    def kv_cache(self, attrs: Mapping) -> sp.Expr:
        """Elements cached per token of one sequence for incremental decoding."""
        return sp.Integer(0)

    def decode_matmul(self, attrs: Mapping, n_inputs: int) -> sp.Expr:
        """Matmul FLOPs of decoding one token at ``position`` with the cache (one sequence)."""
        return self.forward_matmul(attrs, n_inputs).subs(seq_len, 1)

    def decode_reads(self, attrs: Mapping) -> sp.Expr:
        """Parameter elements one decoding step of ``batch`` sequences reads."""
        return self.active_params(attrs)

    def backward_other(self, attrs: Mapping, n_inputs: int) -> sp.Expr:
        """Non-matmul FLOPs of the backward pass (the gradients' elementwise work), the sums of
        gradients of reused tensors excluded (:meth:`backward_accumulation`)."""
        return sp.Integer(0)

    def backward_accumulation(self, attrs: Mapping) -> sp.Expr:
        """Elements of gradient sums the op's own implementation causes by using a tensor twice
        (RMSNorm's input feeds the square and the product): torch's autograd engine adds them."""
        return sp.Integer(0)

    def exact_phases(self, attrs: Mapping) -> tuple[str, ...]:
        """The phases (``"forward"``, ``"backward"``) in which :meth:`forward_other` and
        :meth:`backward_other` equal the count of torch's decomposition exactly; in the others
        they are this module's per-element convention, reported beside that count."""
        return ()

    def with_defaults(self, attrs: Mapping) -> dict:
        """``attrs`` completed with this op's defaults (attributes outside the schema are dropped)."""
        return {key: attrs.get(key, default) for key, (default, _) in self.attributes.items()}

    def __repr__(self):
        return f"<op {self.name}>"


_REGISTRY: dict[str, OpKind] = {}


def register(cls: type[OpKind]) -> type[OpKind]:
    """Class decorator adding an op kind to the registry; a duplicate name raises."""
    if cls.name in _REGISTRY:
        raise ValueError(f"op '{cls.name}' is registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


def get_op(name: str) -> OpKind:
    """The registered op kind called ``name``.

    >>> get_op("attention").role
    'attention'
    """
    if isinstance(name, str) and name in _REGISTRY:
        return _REGISTRY[name]
    raise BlockalgError(f"unknown op {quote(name, 60)} (known: {', '.join(op_names())})")


def op_names(in_block: bool | None = None) -> list[str]:
    """Names of the registered ops, optionally only those allowed inside a block."""
    return [n for n, op in _REGISTRY.items() if in_block is None or op.in_block == in_block]


def _optional(flag: bool, key: str, count) -> dict[str, sp.Expr]:
    return {key: count} if flag else {}


# ---------------------------------------------------------------------------------------------
# The residual stream's endpoints and identity-like mixing ops.


class _StreamEnd(OpKind):
    """Where a residual ``stream`` enters or leaves a block: no work, so every phase is exact."""

    attributes = {"stream": ("x", str)}

    def exact_phases(self, attrs):
        return PHASES


@register
class Input(_StreamEnd):
    """The block's input: a residual stream entering the block (one per ``stream``; most blocks
    carry one stream, ``x``)."""

    name, role, arity = "input", INPUT, (0, 0)


@register
class Output(_StreamEnd):
    """A block's output for one ``stream``: passes its one input through."""

    name, role, arity = "output", OUTPUT, (1, 1)


@register
class Add(OpKind):
    """Residual add of two or more streams: (k-1)·d FLOPs per token."""

    name, role, arity = "add", IDENTITY, (2, None)

    def forward_other(self, attrs, n_inputs):
        return (n_inputs - 1) * seq_len * d_model

    def exact_phases(self, attrs):
        return PHASES  # the backward passes the gradient to every input: no work



@register
class Scale(OpKind):
    """Multiply the stream by a constant (``value``), or by a learned scalar or per-dimension vector
    (``learnable``: "scalar" | "vector", initialised to ``value``)."""

    name, role, component = "scale", IDENTITY, "scale"
    attributes = {"value": (1, "expression"), "learnable": (None, (None, "scalar", "vector"))}

    def params(self, attrs):
        return {"scalar": {"weight": sp.Integer(1)}, "vector": {"weight": d_model},
                None: {}}[attrs["learnable"]]

    def forward_other(self, attrs, n_inputs):
        return seq_len * d_model

    def saves_input(self, attrs, reduced=False):
        return attrs["learnable"] is not None  # x · weight keeps x for the weight's gradient

    def buffers(self, attrs):
        return sp.Integer(0) if attrs["learnable"] else sp.Integer(1)  # the constant, a 0-d tensor

    def backward_other(self, attrs, n_inputs):
        # g·w for the input; a learned weight adds g·x and its sum
        return (1 if attrs["learnable"] is None else 3) * seq_len * d_model

    def exact_phases(self, attrs):
        # NB: a learned weight's gradient sums s·d products into 1 or d: the decomposition counts
        # s·d − 1 (or − d) additions there
        return PHASES if attrs["learnable"] is None else ("forward",)



# ---------------------------------------------------------------------------------------------
# Norms.


#: Widths a norm (or a finer node of a sublayer) can have: the stream, or the FFN's hidden layer.
WIDTHS = {"d_model": d_model, "d_ff": d_ff}


class _Norm(OpKind):
    """A norm over the last dimension; its formulas take the width so that norms inside a
    sublayer (the qk-norms of attention) reuse them."""

    role, component = NORM, "norm"

    def in_width(self, attrs):
        return WIDTHS[attrs["width"]]

    def params_at(self, width, attrs) -> dict[str, sp.Expr]:
        """Leaves of this norm over ``width`` features."""
        raise NotImplementedError

    def other_per_element(self, attrs) -> int:
        """Non-matmul FLOPs per normalised element."""
        raise NotImplementedError

    def saved_at(self, rows, width, attrs, reduced: bool) -> dict[str, sp.Expr]:
        """What the norm keeps inside itself over ``rows`` × ``width`` elements."""
        raise NotImplementedError

    def backward_per_element(self, attrs) -> int:
        """Non-matmul backward FLOPs per normalised element (gradient sums excluded)."""
        raise NotImplementedError

    def reused_per_element(self, attrs) -> int:
        """Gradient sums per normalised element: extra uses of the input in the implementation."""
        return 0

    def params(self, attrs):
        return self.params_at(WIDTHS[attrs["width"]], attrs)

    def forward_other(self, attrs, n_inputs):
        return self.other_per_element(attrs) * seq_len * WIDTHS[attrs["width"]]

    def saved_activations(self, attrs, n_inputs, attention_path=EAGER, *, reduced=False,
                          selective=False):
        return self.saved_at(ROWS, WIDTHS[attrs["width"]], attrs, reduced)

    def backward_other(self, attrs, n_inputs):
        return self.backward_per_element(attrs) * seq_len * WIDTHS[attrs["width"]]

    def backward_accumulation(self, attrs):
        return self.reused_per_element(attrs) * seq_len * WIDTHS[attrs["width"]]


@register
class LayerNormOp(_Norm):
    """LayerNorm (Ba et al. 2016): gain and, unless ``bias`` is false, bias: 2·width parameters.
    ``width`` is ``d_model`` on the stream, ``d_ff`` inside an FFN (NormFormer)."""

    name = "layernorm"
    attributes = {"bias": (True, bool), "width": ("d_model", tuple(WIDTHS))}

    def params_at(self, width, attrs):
        return {"weight": width, **_optional(attrs["bias"], "bias", width)}

    def other_per_element(self, attrs):
        return LAYERNORM_FLOPS + AFFINE_GAIN_FLOPS + (1 if attrs["bias"] else 0)

    def saves_input(self, attrs, reduced=False):
        return True

    def saved_at(self, rows, width, attrs, reduced):
        # NB: mean and rstd are fp32 for bf16/fp16 inputs on CUDA and meta; torch's CPU kernel
        # keeps them in the input's dtype (2·rows·2 bytes fewer per norm there).
        return {F32: 2 * rows}

    def backward_per_element(self, attrs):
        return (LAYERNORM_BACKWARD_FLOPS + AFFINE_GAIN_BACKWARD_FLOPS
                + (BIAS_BACKWARD_FLOPS if attrs["bias"] else 0))


@register
class RMSNormOp(_Norm):
    """RMSNorm (Zhang & Sennrich 2019): gain only, width parameters."""

    name = "rmsnorm"
    attributes = {"width": ("d_model", tuple(WIDTHS))}

    def params_at(self, width, attrs):
        return {"weight": width}

    def other_per_element(self, attrs):
        return RMSNORM_FLOPS + AFFINE_GAIN_FLOPS

    def saves_input(self, attrs, reduced=False):
        return not reduced  # below fp32 it keeps an fp32 copy instead

    def saved_at(self, rows, width, attrs, reduced):
        # torch's rms_norm: rstd, and x·rstd (kept by the gain's product); computed in fp32
        if reduced:
            return {F32: 2 * rows * width + rows}  # fp32 copy of x, x·rstd, rstd
        return {ACT: rows * width, F32: rows}

    def backward_per_element(self, attrs):
        return RMSNORM_BACKWARD_FLOPS + AFFINE_GAIN_BACKWARD_FLOPS

    def reused_per_element(self, attrs):
        return 1  # torch's RMSNorm is composite: x feeds x² and x·rsqrt(mean(x²) + eps)


@register
class DyTOp(_Norm):
    """Dynamic Tanh (Zhu et al. 2025, 'Transformers without Normalization'): γ ⊙ tanh(α·x) + β,
    a learned scalar α and per-feature γ, β: 2·width + 1 parameters. It stands where a norm
    stands, so gradient paths count it as one."""

    name = "dyt"
    attributes = {"width": ("d_model", tuple(WIDTHS))}

    def params_at(self, width, attrs):
        return {"alpha": sp.Integer(1), "weight": width, "bias": width}

    def other_per_element(self, attrs):
        return DYT_FLOPS

    def saves_input(self, attrs, reduced=False):
        return True  # α·x keeps x for α's gradient

    def saved_at(self, rows, width, attrs, reduced):
        return {ACT: rows * width}  # tanh's result, kept by tanh and by γ's product

    def backward_per_element(self, attrs):
        return DYT_BACKWARD_FLOPS

    def exact_phases(self, attrs):
        return ("forward",)  # α·x, tanh, ·γ, + β: four pointwise ops in torch too


# ---------------------------------------------------------------------------------------------
# Sublayers.


@register
class AttentionOp(OpKind):
    """Causal multi-head self-attention (Vaswani et al. 2017) with a fused q/k/v projection.

    ``n_kv_heads < n_heads`` gives grouped-query attention (Ainslie et al. 2023). Leaves:
    ``qkv`` (d → (h + 2·h_kv)·d_head) and ``proj`` (h·d_head → d). Attributes: ``bias`` (on qkv,
    and on proj unless ``proj_bias`` says otherwise: Qwen2 has qkv biases only); ``qk_norm``
    (OLMo 2: an RMSNorm or LayerNorm on the flat q and k projections, leaves ``q_norm``,
    ``k_norm``); ``rotary`` (RoPE, Su et al. 2021: no parameters, rotates q and k by position);
    ``head_scale`` (NormFormer: a learned scale per head output, leaf ``head_scale``).
    The qk-norms sit inside the sublayer: gradient paths do not count them as norms.
    """

    name, role, component = "attention", ATTENTION, "attention"
    attributes = {"bias": (True, bool), "proj_bias": (None, (None, True, False)),
                  "qk_norm": (None, (None, "rmsnorm", "layernorm")), "rotary": (False, bool),
                  "head_scale": (False, bool)}

    @staticmethod
    def proj_bias(attrs) -> bool:
        return attrs["bias"] if attrs["proj_bias"] is None else attrs["proj_bias"]

    @staticmethod
    def _qk_norms(attrs) -> list[tuple[str, _Norm, dict, sp.Expr]]:
        """(leaf prefix, norm op, its attributes, width) of the q- and k-norms, if any."""
        if attrs["qk_norm"] is None:
            return []
        norm = get_op(attrs["qk_norm"])
        defaults = norm.with_defaults({})
        return [("q_norm", norm, defaults, n_heads * d_head), ("k_norm", norm, defaults, n_kv_heads * d_head)]

    def params(self, attrs):
        qkv_width = (n_heads + 2 * n_kv_heads) * d_head
        leaves = {"qkv.weight": d_model * qkv_width, **_optional(attrs["bias"], "qkv.bias", qkv_width)}
        for prefix, norm, norm_attrs, width in self._qk_norms(attrs):
            leaves.update({f"{prefix}.{leaf}": n for leaf, n in norm.params_at(width, norm_attrs).items()})
        leaves.update(_optional(attrs["head_scale"], "head_scale", n_heads))
        leaves["proj.weight"] = n_heads * d_head * d_model
        leaves.update(_optional(self.proj_bias(attrs), "proj.bias", d_model))
        return leaves

    @staticmethod
    def _projections(attrs):
        return (matmul_flops(seq_len, d_model, (n_heads + 2 * n_kv_heads) * d_head)
                + matmul_flops(seq_len, n_heads * d_head, d_model))

    @staticmethod
    def _scores_and_mix(n_scores):
        # NB: per query head, q·kᵀ and p·v are each 2·d_head FLOPs per score (GQA shares k, v
        # across heads but not the products).
        return 2 * n_heads * matmul_flops(1, d_head, 1) * n_scores

    def forward_matmul(self, attrs, n_inputs):
        return self._projections(attrs) + self._scores_and_mix(seq_len**2)

    def forward_matmul_causal(self, attrs, n_inputs):
        return self._projections(attrs) + self._scores_and_mix(seq_len * (seq_len + 1) / 2)

    def backward_matmul_fused(self, attrs, n_inputs):
        # NB: 2× every product, plus q·kᵀ once more: 2.5× the scores-and-mix part.
        return self.backward_matmul(attrs, n_inputs) + self._scores_and_mix(seq_len**2) / 2

    def _biases(self, attrs):
        """Elements of the biases' outputs: the bias adds, and their gradients' sums."""
        return (seq_len * (n_heads + 2 * n_kv_heads) * d_head if attrs["bias"] else 0) \
            + (seq_len * d_model if self.proj_bias(attrs) else 0)

    def _qk_norm(self, attrs, per_element):
        return sum((per_element(norm, norm_attrs) * seq_len * width
                    for _, norm, norm_attrs, width in self._qk_norms(attrs)), sp.Integer(0))

    @staticmethod
    def _qk(attrs):
        """Elements of q and k (what rotary positions rotate)."""
        return seq_len * (n_heads + n_kv_heads) * d_head if attrs["rotary"] else 0

    def forward_other(self, attrs, n_inputs):
        scores = n_heads * seq_len**2
        qk_norm = self._qk_norm(attrs, lambda norm, a: norm.other_per_element(a))
        head_scale = seq_len * n_heads * d_head if attrs["head_scale"] else 0
        return ((SCORE_SCALE_FLOPS + SOFTMAX_FLOPS) * scores + self._biases(attrs) + qk_norm
                + ROTARY_FLOPS * self._qk(attrs) + head_scale)

    def backward_other(self, attrs, n_inputs):
        scores = n_heads * seq_len**2
        qk_norm = self._qk_norm(attrs, lambda norm, a: norm.backward_per_element(a))
        # NB: the head scale's backward is g·w for the input, g·y and its sum for the weight
        head_scale = 3 * seq_len * n_heads * d_head if attrs["head_scale"] else 0
        return ((SCORE_SCALE_BACKWARD_FLOPS + SOFTMAX_BACKWARD_FLOPS) * scores
                + BIAS_BACKWARD_FLOPS * self._biases(attrs) + qk_norm
                + ROTARY_BACKWARD_FLOPS * self._qk(attrs) + head_scale)

    def backward_accumulation(self, attrs):
        # rotary: q (and k) feed x·cos and the rotated half; an RMS qk-norm reuses its input
        return self._qk(attrs) + self._qk_norm(attrs, lambda norm, a: norm.reused_per_element(a))

    def core_matmul(self, attrs) -> sp.Expr:
        """Matmul FLOPs of the attention core (scores and weighted sum): what selective
        recomputation repeats in backward."""
        return self._scores_and_mix(seq_len**2)

    def saves_input(self, attrs, reduced=False):
        return True  # the qkv projection keeps x

    def saved_activations(self, attrs, n_inputs, attention_path=EAGER, *, reduced=False,
                          selective=False):
        """As the torch module computes it: q, k and v are views of the qkv projection's output
        unless a qk-norm or rotary makes new q and k; v stays a view, so whatever keeps v keeps
        the whole projection. A fused kernel, or the checkpoint of selective recomputation, keeps
        q, k, v; the fused kernel also its output, written (b, s, h, d_head)-contiguous so that
        proj's input is a view of it, and the log-sum-exp. The math path keeps q and k scaled,
        v copied (k and v repeated to n_heads under GQA) and the s×s probabilities, in fp32, and
        its (b, h, s, d_head) output is copied for proj."""
        q = ROWS * n_heads * d_head
        kv = ROWS * n_kv_heads * d_head
        norms = self._qk_norms(attrs)
        fused = attention_path == FLASH
        keeps_qkv = fused or selective
        parts = [norm.saved_at(ROWS, width, norm_attrs, reduced) for _, norm, norm_attrs, width in norms]
        if attrs["rotary"]:
            parts.append({ACT: 4 * seq_len * d_head})  # cos and sin, made for q and again for k
        qkv_kept = keeps_qkv or any(norm.saves_input(norm_attrs, reduced)
                                    for _, norm, norm_attrs, _ in norms)
        if qkv_kept:
            parts.append({ACT: q + 2 * kv})  # the qkv projection's output
        if keeps_qkv and (norms or attrs["rotary"]):
            parts.append({ACT: q + kv})  # the new q and k
        if fused and not selective:
            parts.append({F32: batch * n_heads * seq_len})  # log-sum-exp
        elif not selective:
            parts.append({F32: 2 * q + batch * n_heads * seq_len**2})  # q, k scaled; probabilities
            parts.append({F32: q} if reduced else self._math_v(q, kv, qkv_kept))

        # the core's output (proj's input, or kept by the head scale, whose product proj keeps)
        parts.append({ACT: (2 if attrs["head_scale"] else 1) * q})
        return merge(*parts)

    @staticmethod
    def _math_v(q, kv, qkv_kept) -> dict[str, sp.Expr]:
        """v as the fp32 math path keeps it: reshaped to (b·h, s, d_head) for its product, a
        copy, except at batch 1 without GQA, where the reshape is a view of the qkv output."""
        view = sp.And(sp.Eq(batch, 1), sp.Eq(n_kv_heads, n_heads))
        return {ACT: sp.Piecewise((0 if qkv_kept else q + 2 * kv, view), (q, True))}

    def buffers(self, attrs):
        return d_head / 2 if attrs["rotary"] else sp.Integer(0)  # the rotary frequencies

    def kv_cache(self, attrs):
        return 2 * n_kv_heads * d_head

    def decode_matmul(self, attrs, n_inputs):
        return self._projections(attrs).subs(seq_len, 1) + self._scores_and_mix(position + 1)



@register
class FFNUpOp(OpKind):
    """The first half of an FFN, for variants that put a norm inside it (NormFormer):
    act(fc(x)), or act(gate(x)) ⊙ fc(x) when ``gated``; d_model → d_ff. Leaves ``fc``, ``gate``.
    It is the FFN sublayer on gradient paths; :class:`FFNDownOp` closes it."""

    name, role, component = "ffn_up", FFN, "ffn"
    attributes = {"activation": ("gelu", ACTIVATIONS), "bias": (True, bool),
                  "gated": (False, bool)}

    def out_width(self, attrs):
        return d_ff

    def params(self, attrs):
        bias, gated = attrs["bias"], attrs["gated"]
        return {"fc.weight": d_model * d_ff, **_optional(bias, "fc.bias", d_ff),
                **_optional(gated, "gate.weight", d_model * d_ff),
                **_optional(gated and bias, "gate.bias", d_ff)}

    def forward_matmul(self, attrs, n_inputs):
        return (2 if attrs["gated"] else 1) * matmul_flops(seq_len, d_model, d_ff)

    def forward_other(self, attrs, n_inputs):
        hidden = seq_len * d_ff
        gated = attrs["gated"]
        biases = (2 if gated else 1) * hidden if attrs["bias"] else 0
        return ACTIVATION_FLOPS[attrs["activation"]] * hidden + (hidden if gated else 0) + biases

    @staticmethod
    def hidden_saved(attrs) -> int:
        """d_ff-wide tensors kept per token inside: the activation's input (ReLU keeps its
        result instead), and when gated the activation's result and fc's output (the gate
        product's factors)."""
        relu = attrs["activation"] == "relu"
        if attrs["gated"]:
            return 2 if relu else 3
        return 0 if relu else 1

    def saves_input(self, attrs, reduced=False):
        return True

    def saves_output(self, attrs, reduced=False):
        return attrs["activation"] == "relu" and not attrs["gated"]

    def saved_activations(self, attrs, n_inputs, attention_path=EAGER, *, reduced=False,
                          selective=False):
        return merge({ACT: self.hidden_saved(attrs) * ROWS * d_ff})

    def backward_other(self, attrs, n_inputs):
        hidden = seq_len * d_ff
        gated = attrs["gated"]
        biases = (2 if gated else 1) * hidden if attrs["bias"] else 0
        return (ACTIVATION_BACKWARD_FLOPS[attrs["activation"]] * hidden
                + (GATE_BACKWARD_FLOPS * hidden if gated else 0) + BIAS_BACKWARD_FLOPS * biases)

    def backward_accumulation(self, attrs):
        return seq_len * d_model if attrs["gated"] else sp.Integer(0)  # x feeds fc and gate



@register
class FFNDownOp(OpKind):
    """The second half of an FFN: proj, d_ff → d_model (leaf ``proj``)."""

    name, component = "ffn_down", "ffn"
    attributes = {"bias": (True, bool)}

    def in_width(self, attrs):
        return d_ff

    def out_width(self, attrs):
        return d_model

    def params(self, attrs):
        return {"proj.weight": d_ff * d_model, **_optional(attrs["bias"], "proj.bias", d_model)}

    def forward_matmul(self, attrs, n_inputs):
        return matmul_flops(seq_len, d_ff, d_model)

    def forward_other(self, attrs, n_inputs):
        return seq_len * d_model if attrs["bias"] else 0

    def saves_input(self, attrs, reduced=False):
        return True

    def backward_other(self, attrs, n_inputs):
        return BIAS_BACKWARD_FLOPS * seq_len * d_model if attrs["bias"] else 0

    def exact_phases(self, attrs):
        return ("forward",)



@register
class FFNOp(OpKind):
    """Position-wise feed-forward network: proj(act(fc(x))), or proj(act(gate(x)) ⊙ fc(x)) when
    ``gated`` (GLU family, Shazeer 2020; SwiGLU = gated + silu). Leaves: ``fc`` (d → d_ff),
    ``gate`` (d → d_ff, gated only) and ``proj`` (d_ff → d): :class:`FFNUpOp` then
    :class:`FFNDownOp`, whose formulas it sums."""

    name, role, component = "ffn", FFN, "ffn"
    attributes = FFNUpOp.attributes

    @staticmethod
    def _halves(attrs):
        return ((get_op("ffn_up"), attrs), (get_op("ffn_down"), {"bias": attrs["bias"]}))

    def params(self, attrs):
        return {k: v for op, a in self._halves(attrs) for k, v in op.params(a).items()}

    def forward_matmul(self, attrs, n_inputs):
        return sum(op.forward_matmul(a, 1) for op, a in self._halves(attrs))

    def forward_other(self, attrs, n_inputs):
        return sum(op.forward_other(a, 1) for op, a in self._halves(attrs))

    def saves_input(self, attrs, reduced=False):
        return True

    def saved_activations(self, attrs, n_inputs, attention_path=EAGER, *, reduced=False,
                          selective=False):
        # and the up half's output, which proj keeps
        return merge({ACT: (FFNUpOp.hidden_saved(attrs) + 1) * ROWS * d_ff})

    def backward_other(self, attrs, n_inputs):
        return sum(op.backward_other(a, 1) for op, a in self._halves(attrs))

    def backward_accumulation(self, attrs):
        return get_op("ffn_up").backward_accumulation(attrs)



@register
class MoEOp(OpKind):
    """Top-k mixture-of-experts FFN (Shazeer et al. 2017; Mixtral, Jiang et al. 2024): a router
    (d → n_experts, no bias) sends each token to its ``top_k`` experts, each an FFN of width d_ff
    (SwiGLU by default, no biases), and sums their outputs with the renormalised router weights.

    Leaves: ``router.weight`` and the experts' stacked weights ``experts_fc``, ``experts_gate``,
    ``experts_proj`` (n_experts × ...). Parameters count every expert; :meth:`active_params` and
    the FLOPs count what one token uses: the router and ``top_k`` experts.
    """

    name, role, component = "moe", FFN, "ffn"
    reuse_depends_on_data = True
    attributes = {"activation": ("silu", ACTIVATIONS), "gated": (True, bool)}

    @staticmethod
    def _expert(attrs):
        return get_op("ffn"), {**attrs, "bias": False}

    def params(self, attrs):
        ffn, expert = self._expert(attrs)
        leaves = {"router.weight": d_model * n_experts}
        for leaf, count in ffn.params(expert).items():
            leaves[f"experts_{leaf.removesuffix('.weight')}"] = n_experts * count
        return leaves

    def active_params(self, attrs):
        ffn, expert = self._expert(attrs)
        return d_model * n_experts + top_k * ffn.active_params(expert)

    def forward_matmul(self, attrs, n_inputs):
        ffn, expert = self._expert(attrs)
        return matmul_flops(seq_len, d_model, n_experts) + top_k * ffn.forward_matmul(expert, 1)

    def forward_other(self, attrs, n_inputs):
        ffn, expert = self._expert(attrs)
        router = SOFTMAX_FLOPS * seq_len * n_experts + seq_len * top_k  # softmax, renormalise
        combine = seq_len * top_k * d_model + seq_len * (top_k - 1) * d_model  # weight, sum
        return router + top_k * ffn.forward_other(expert, 1) + combine

    def saves_input(self, attrs, reduced=False):
        return True  # the router keeps x

    def saved_activations(self, attrs, n_inputs, attention_path=EAGER, *, reduced=False,
                          selective=False):
        """Router: its probabilities, the top-k weights and their sum (the renormalisation),
        the chosen experts. Per routed token (ROWS·top_k of them, however they are spread over
        the experts): its gathered input, the expert's output and its weighted output (which
        ``index_add`` keeps), d_model each, its weight, the expert FFN's d_ff-wide tensors, and
        two indices (token and slot)."""
        routed = ROWS * top_k
        hidden = FFNUpOp.hidden_saved({**attrs, "bias": False}) + 1
        return merge({ACT: ROWS * n_experts + routed + ROWS + routed * (3 * d_model + 1 + hidden * d_ff),
                      I64: routed + 2 * routed})

    def backward_other(self, attrs, n_inputs):
        ffn, expert = self._expert(attrs)
        router = SOFTMAX_BACKWARD_FLOPS * seq_len * n_experts + 2 * seq_len * top_k
        combine = 3 * seq_len * top_k * d_model  # g·w to the experts; g·out and its sum to w
        return router + top_k * ffn.backward_other(expert, 1) + combine

    def backward_accumulation(self, attrs):
        ffn, expert = self._expert(attrs)
        # x feeds the router and the experts; the routing weights feed their sum and the division
        return seq_len * d_model + seq_len * top_k + top_k * ffn.backward_accumulation(expert)



# ---------------------------------------------------------------------------------------------
# Model-level ops: the embedding side and the unembedding (not allowed inside a block).


@register
class TokenEmbedding(OpKind):
    """Token embedding table V×d; a lookup is a gather (0 FLOPs)."""

    name, role, component, arity, in_block = "token_embedding", EMBEDDING, "embedding", (0, 0), False

    def params(self, attrs):
        return {"weight": vocab * d_model}

    def saved_activations(self, attrs, n_inputs, attention_path=EAGER, *, reduced=False,
                          selective=False):
        return {I64: ROWS}  # the token ids

    def decode_reads(self, attrs):
        return batch * d_model  # one row per sequence

    def backward_other(self, attrs, n_inputs):
        return SCATTER_ADD_FLOPS * seq_len * d_model

    def exact_phases(self, attrs):
        return PHASES



@register
class PositionEmbedding(OpKind):
    """Learned absolute positions (GPT-2): an (n_ctx + offset)×d table, added to the token
    embedding; ``offset`` rows are reserved (OPT starts its positions at 2)."""

    name, role, component, arity, in_block = (
        "position_embedding", EMBEDDING, "embedding", (0, 0), False)
    attributes = {"offset": (0, int)}

    def params(self, attrs):
        return {"weight": (n_ctx + attrs["offset"]) * d_model}

    def forward_other(self, attrs, n_inputs):
        return seq_len * d_model  # the add onto the token embedding

    def saved_activations(self, attrs, n_inputs, attention_path=EAGER, *, reduced=False,
                          selective=False):
        return {I64: seq_len}  # the positions, shared by the batch

    def decode_reads(self, attrs):
        return d_model  # the row of the position being decoded

    def backward_other(self, attrs, n_inputs):
        return SCATTER_ADD_FLOPS * seq_len * d_model

    def exact_phases(self, attrs):
        return PHASES



@register
class Unembedding(OpKind):
    """The language-model head d → V. ``tied``: it reuses the token table, no own parameters."""

    name, role, component, arity, in_block = "unembedding", EMBEDDING, "embedding", (1, 1), False
    attributes = {"tied": (True, bool)}

    def params(self, attrs):
        return {} if attrs["tied"] else {"weight": vocab * d_model}

    def forward_matmul(self, attrs, n_inputs):
        return matmul_flops(seq_len, d_model, vocab)

    def saves_input(self, attrs, reduced=False):
        return True

    def saved_activations(self, attrs, n_inputs, attention_path=EAGER, *, reduced=False,
                          selective=False):
        # the cross-entropy loss: log-probabilities, targets, and its 0-d total weight
        return {ACT: ROWS * vocab + 1, I64: ROWS}

    def decode_reads(self, attrs):
        return vocab * d_model  # the whole table, tied or not

    def exact_phases(self, attrs):
        return PHASES  # no elementwise work; a tied weight's gradient sum is booked apart

