"""Memory and inference costs from the graph alone: weights, gradients, optimizer states,
activations saved for backward, the KV cache, prefill and decode FLOPs, bytes per decoded token.

Every figure is a sympy expression in bytes (or FLOPs) of the dimension symbols, ``n_layers``
kept symbolic, summed from the op registry's formulas (:mod:`blockalg.graphs.ops`); numbers come
from :func:`blockalg.graphs.expr.evaluate`, exact Python ints.

Conventions (a :class:`Setting` names the choices):

* **dtype** ``fp32`` runs everything in fp32; ``bf16``/``fp16`` is mixed precision: weights,
  gradients and activations in 2 bytes, plus an fp32 master copy of the weights in the
  optimizer, whose moments are fp32 too (so AdamW costs 2 + 2 + 4 + 8 = 16 bytes per parameter,
  like fp32's 4 + 4 + 8).
* **optimizer** ``adamw``: two moments per parameter and torch's 4-byte ``step`` per parameter
  tensor; ``sgd``: one momentum buffer; ``none``: no state (and no master copy).
* **ZeRO** stage 1 shards the optimizer states (master copy included) over ``data_parallel``
  ranks, stage 2 the gradients too, stage 3 the weights too: plain division, rounded up, per rank.
* **activations**: the storages autograd keeps for backward during one forward of ``batch``
  sequences of ``seq_len`` tokens, loss included, parameters and buffers excluded, each storage
  once however many ops keep it. ``recompute``: ``none``; ``selective`` (Korthikanti et al. 2022:
  the attention core is recomputed, q, k, v kept); ``full`` (every block checkpointed: only its
  inputs are kept, and in backward one block's activations exist at a time:
  ``activations_recompute``). ``attention``: ``eager`` (the math path, s×s probabilities kept) or
  ``flash`` (a fused kernel: output and log-sum-exp kept).
* **peak_training**: weights + gradients + optimizer + buffers + activations +
  activations_recompute: the tensors that must coexist at the start of backward, not the
  allocator's peak (temporaries such as the logits' gradient come on top).
* **KV cache**: keys and values of every attention layer for ``seq_len`` tokens (the context) of
  ``batch`` sequences: 2 · L · n_kv_heads · d_head · seq_len · batch elements.
* **decode** at position t (0-based; the token attends to t + 1 keys), one step of ``batch``
  sequences: matmul FLOPs, and bytes read: every weight a step uses once (one embedding row per
  sequence, the top-k experts of a mixture, which is a lower bound when the batch is larger than
  one) plus the K/V of t + 1 positions per sequence.

>>> from blockalg.graphs.variants import get
>>> from blockalg.graphs.expr import evaluate
>>> from blockalg.graphs.presets import resolve_dims
>>> e = memory_expressions(get("pre-ln"), Setting(dtype="fp32"))
>>> evaluate(e["weights"], resolve_dims("gpt2-small"))  # 124,439,808 parameters × 4 bytes
497759232
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import sympy as sp

from ..errors import BlockalgError
from ..graphs.graph import (
    edge_scale,
    edge_width,
    final_norm,
    model_nodes,
    model_streams,
    node_op,
    segments,
    stream_nodes,
)
from ..graphs.ops import ACT, EAGER, F32, FLASH, I64, INPUT, OUTPUT, ROWS, get_op, merge
from ..graphs.expr import evaluate
from ..graphs.symbols import batch, d_model, n_layers, position, relations_holding_at, seq_len
from .flops import flop_counts
from .params import param_counts

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
OPTIMIZERS = ("adamw", "sgd", "none")
MOMENTS = {"adamw": 2, "sgd": 1, "none": 0}  # fp32 state tensors per parameter
STEP_BYTES = 4  # torch's AdamW keeps its step count as a 0-d fp32 tensor per parameter tensor
RECOMPUTE = ("none", "selective", "full")
ATTENTION = (EAGER, FLASH)
PEAK_PARTS = ("weights", "gradients", "optimizer", "buffers", "activations",
              "activations_recompute")
MEMORY_KEYS = (*PEAK_PARTS, "peak_training", "kv_cache", "step_flops", "recompute_flops")
INFERENCE_KEYS = ("weights", "kv_cache", "prefill_flops", "decode_flops_per_token",
                  "decode_bytes_per_token")


@dataclass(frozen=True)
class Setting:
    """How the model is trained or run: see the module's conventions."""

    dtype: str = "fp32"
    optimizer: str = "adamw"
    recompute: str = "none"
    attention: str = EAGER
    data_parallel: int = 1
    zero: int = 0

    def __post_init__(self):
        for name, allowed in (("dtype", tuple(DTYPE_BYTES)), ("optimizer", OPTIMIZERS),
                              ("recompute", RECOMPUTE), ("attention", ATTENTION), ("zero", (0, 1, 2, 3))):
            if getattr(self, name) not in allowed:
                raise BlockalgError(f"{name} = {getattr(self, name)!r} (known: "
                                    f"{', '.join(map(str, allowed))})")
        if type(self.data_parallel) is not int or self.data_parallel < 1:
            raise BlockalgError(f"data_parallel = {self.data_parallel!r}: a positive integer")

    @property
    def reduced(self) -> bool:
        """Whether the model runs below fp32 (mixed precision)."""
        return self.dtype != "fp32"

    @property
    def bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    def class_bytes(self) -> dict[str, int]:
        """Bytes per element of each storage class of :mod:`blockalg.graphs.ops`."""
        return {ACT: self.bytes, F32: 4, I64: 8}

    def with_(self, **changes) -> "Setting":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One line: ``fp32, adamw, recompute none, eager attention``."""
        zero = f", ZeRO-{self.zero} over {self.data_parallel}" if self.zero else \
            f", data parallel {self.data_parallel}" if self.data_parallel > 1 else ""
        return (f"{self.dtype}, {self.optimizer}, recompute {self.recompute}, "
                f"{self.attention} attention{zero}")


def to_bytes(elements: dict, setting: Setting) -> sp.Expr:
    """Elements per storage class → bytes."""
    sizes = setting.class_bytes()
    return sp.Add(*(count * sizes[kind] for kind, count in elements.items()))


# ---------------------------------------------------------------------------------------------
# Saved activations: which tensors backward keeps.


def _saves(graph, node, reduced) -> bool:
    op, attrs = node_op(graph, node)
    return op.saves_input(attrs, reduced)


def input_saves(block, reduced: bool) -> dict[str, bool]:
    """Per stream: whether an op of ``block`` keeps the block's input tensor itself."""
    result = {}
    for stream, node in stream_nodes(block, INPUT).items():
        kept = False
        for w in block.successors(node):
            if node_op(block, w)[0].role == OUTPUT:
                raise BlockalgError(f"stream '{stream}' passes through the block unchanged: "
                                    f"its memory is not modelled")
            kept |= edge_scale(block, node, w) == 1 and _saves(block, w, reduced)
        result[stream] = kept
    return result


def kept_outputs(block, reduced: bool, next_saves: dict[str, bool]) -> sp.Expr:
    """Elements of the tensors made between the ops of ``block`` (node outputs, scaled edges)
    that backward keeps: an output when its op keeps it or any consumer keeps its input (a
    block output when the next block keeps its input: ``next_saves``), once however many keep it."""
    total = sp.Integer(0)

    def consumer_keeps(v, w):
        op, attrs = node_op(block, w)
        return next_saves[attrs["stream"]] if op.role == OUTPUT else op.saves_input(attrs, reduced)

    for v in block.nodes:
        op, attrs = node_op(block, v)
        if op.role in (INPUT, OUTPUT):
            continue
        kept = op.saves_output(attrs, reduced) or any(
            consumer_keeps(v, w) for w in block.successors(v) if edge_scale(block, v, w) == 1)
        if kept:
            total += ROWS * op.out_width(attrs)
    for u, w in block.edges:
        if edge_scale(block, u, w) != 1 and consumer_keeps(u, w):  # x·scale is a new tensor
            total += ROWS * edge_width(block, u, w)
    return total


def _tail(graph, reduced) -> tuple[dict[str, bool], sp.Expr]:
    """Whether what follows the blocks keeps each stream's last output, and what the head
    block (several streams) and the final norm keep between them."""
    lm_head = get_op("unembedding")
    final = final_norm(graph)
    keeps = final[0].saves_input(final[0].with_defaults(final[1]), reduced) if final \
        else lm_head.saves_input({}, reduced)
    between = ROWS * d_model if final else sp.Integer(0)  # the final norm's output, lm_head keeps it
    head = graph.graph.get("head")
    if head is None:
        return {stream: keeps for stream in model_streams(graph)}, between
    into_tail = dict.fromkeys(stream_nodes(head, OUTPUT), keeps)
    return input_saves(head, reduced), between + kept_outputs(head, reduced, into_tail)


def _times(count, elements: dict) -> dict:
    return {kind: count * n for kind, n in elements.items()}


def _in_block(m) -> bool:
    return m.path.startswith(("block.", "segment"))


def saved_elements(graph, setting: Setting = Setting()) -> dict[str, sp.Expr]:
    """Elements of every storage kept for backward in one training step, per storage class."""
    reduced, full = setting.reduced, setting.recompute == "full"
    selective = setting.recompute == "selective"
    parts = [_times(m.count, m.op.saved_activations(m.attrs, m.n_inputs, setting.attention,
                                                     reduced=reduced, selective=selective))
             for m in model_nodes(graph) if not (full and _in_block(m))]
    tail, between = _tail(graph, reduced)
    streams = list(model_streams(graph))
    blocks = segments(graph)
    if full:  # every block's inputs, kept by its checkpoint, and the last block's outputs
        inputs = sum((count for _, count in blocks), sp.Integer(0)) * len(streams)
        outputs = sum(1 for s in streams if tail[s])
        return merge(*parts, {ACT: (inputs + outputs) * ROWS * d_model + between})
    first = input_saves(blocks[0][0], reduced)
    edges = sum(ROWS * d_model for s in streams if first[s])  # the embedding (or zero stream)
    for i, (block, count) in enumerate(blocks):
        own = input_saves(block, reduced)
        after = input_saves(blocks[i + 1][0], reduced) if i + 1 < len(blocks) else tail
        inner = kept_outputs(block, reduced, own)
        edges += count * inner
        if after != own:  # the segment's last block hands over to something else
            edges += sp.Min(count, 1) * (kept_outputs(block, reduced, after) - inner)
    return merge(*parts, {ACT: edges + between})


def recompute_elements(graph, setting: Setting) -> dict[str, sp.Expr]:
    """Under full recomputation, what one block keeps while its backward runs (the largest
    block of a stack); nothing otherwise. Its input is held already."""
    if setting.recompute != "full":
        return {}
    per_block = []
    for block, _ in segments(graph):
        parts = [op.saved_activations(attrs, block.in_degree(v), setting.attention,
                                      reduced=setting.reduced)
                 for v in block.nodes for op, attrs in [node_op(block, v)]]
        none = dict.fromkeys(stream_nodes(block, OUTPUT), False)
        per_block.append(merge(*parts, {ACT: kept_outputs(block, setting.reduced, none)}))
    if len(per_block) == 1:
        return per_block[0]
    return {ACT: sp.Max(*(to_bytes(p, setting) for p in per_block)) / setting.bytes}


def recompute_flops(graph, setting: Setting) -> sp.Expr:
    """Matmul FLOPs recomputation adds to a step: one more forward of every block (full), or
    of every attention core (selective)."""
    if setting.recompute == "none":
        return sp.Integer(0)
    total = sp.Integer(0)
    for m in model_nodes(graph):
        if not _in_block(m):
            continue
        if setting.recompute == "full":
            total += m.count * m.op.forward_matmul(m.attrs, m.n_inputs)
        elif m.op.name == "attention":
            total += m.count * m.op.core_matmul(m.attrs)
    return batch * total


# ---------------------------------------------------------------------------------------------
# States, cache, decoding.


def param_tensors(graph) -> sp.Expr:
    """Number of parameter tensors (a tied unembedding has none of its own)."""
    return sum((m.count * len(m.op.params(m.attrs)) for m in model_nodes(graph)), sp.Integer(0))


def _sum_nodes(graph, method) -> sp.Expr:
    return sum((m.count * method(m) for m in model_nodes(graph)), sp.Integer(0))


def kv_elements(graph) -> sp.Expr:
    """Elements of the KV cache for ``seq_len`` tokens of ``batch`` sequences."""
    return batch * seq_len * _sum_nodes(graph, lambda m: m.op.kv_cache(m.attrs))


def _shard(expr, n: int, sharded: bool) -> sp.Expr:
    return sp.ceiling(expr / n) if sharded and n > 1 else expr


def memory_expressions(graph, setting: Setting = Setting()) -> dict[str, sp.Expr]:
    """Every figure of :data:`MEMORY_KEYS`, in bytes, per rank; ``step_flops`` (matmul FLOPs of
    a training step of ``batch`` sequences as FlopCounterMode counts them: a fused attention
    kernel's backward recomputes the scores; recomputation included) and ``recompute_flops``
    (its recomputed part) in FLOPs."""
    params = param_counts(graph)["total"]
    n, zero = setting.data_parallel, setting.zero
    state = MOMENTS[setting.optimizer] * 4 * params
    if setting.optimizer == "adamw":
        state += STEP_BYTES * param_tensors(graph)
    if setting.reduced and setting.optimizer != "none":
        state += 4 * params  # the fp32 master copy
    e = {"weights": _shard(setting.bytes * params, n, zero >= 3),
         "gradients": _shard(setting.bytes * params, n, zero >= 2),
         "optimizer": _shard(state, n, zero >= 1),
         "buffers": setting.bytes * _sum_nodes(graph, lambda m: m.op.buffers(m.attrs)),
         "activations": to_bytes(saved_elements(graph, setting), setting),
         "activations_recompute": to_bytes(recompute_elements(graph, setting), setting)}
    e["peak_training"] = sum((e[k] for k in PEAK_PARTS), sp.Integer(0))
    e["kv_cache"] = setting.bytes * kv_elements(graph)
    e["recompute_flops"] = recompute_flops(graph, setting)
    flops = flop_counts(graph)
    backward = flops["backward_matmul_fused" if setting.attention == FLASH else "backward_matmul"]
    e["step_flops"] = batch * (flops["forward_matmul"] + backward) + e["recompute_flops"]
    return {key: e[key] for key in MEMORY_KEYS}


def inference_expressions(graph, setting: Setting = Setting()) -> dict[str, sp.Expr]:
    """Every figure of :data:`INFERENCE_KEYS`: the context is ``seq_len`` tokens, the decoded
    token sits at ``position`` (use t = seq_len − 1, the last token that fits)."""
    params = param_counts(graph)["total"]
    kv_per_token = _sum_nodes(graph, lambda m: m.op.kv_cache(m.attrs))
    return {"weights": setting.bytes * params,
            "kv_cache": setting.bytes * kv_elements(graph),
            "prefill_flops": batch * flop_counts(graph)["forward_matmul"],
            "decode_flops_per_token": batch * _sum_nodes(graph, lambda m: m.op.decode_matmul(m.attrs, m.n_inputs)),
            "decode_bytes_per_token": setting.bytes * (
                _sum_nodes(graph, lambda m: m.op.decode_reads(m.attrs))
                + batch * (position + 1) * kv_per_token)}


def at_last_position(expr) -> sp.Expr:
    """``expr`` with the decoded token at the last position of the context: t = seq_len − 1."""
    return sp.sympify(expr).subs(position, seq_len - 1)


def values_at(expressions: dict, dims: dict) -> dict[str, int]:
    """Exact values at ``dims``; a decode figure at the last position of the context."""
    return {key: evaluate(at_last_position(expr), dims, key) for key, expr in expressions.items()}


def closed_forms(expressions: dict, dims: dict) -> dict[str, sp.Expr]:
    """Each expression with the default relations that hold at ``dims`` applied, expanded and
    collected in ``n_layers`` (as :meth:`blockalg.analysis.analyze.Analysis.closed_form`)."""
    relations = relations_holding_at(dims)
    return {key: sp.collect(sp.expand(sp.sympify(expr).subs(relations)), n_layers)
            for key, expr in expressions.items()}
