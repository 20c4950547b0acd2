"""FLOPs from the graph alone, for one sequence of ``seq_len`` tokens at batch 1.

``forward_matmul`` and ``backward_matmul`` are what ``torch.utils.flop_counter.FlopCounterMode``
counts (mm, addmm, bmm, attention) with attention at the dense s×s cost;
``forward_matmul_causal`` counts only the unmasked causal scores; ``forward_other`` is everything
else (norms, softmax, activations, adds, biases, edge scales) at the per-element costs documented
in :mod:`blockalg.graphs.ops`, and ``backward_other`` the same for the backward, including the
sums of the gradients of tensors used twice (graph forks, reuse inside an op, a tied embedding).
:func:`other_by_kind` splits both per op kind, as :mod:`blockalg.model.elementwise` counts them. ``backward_matmul_fused`` is the backward as FlopCounterMode counts it when
attention runs a fused kernel that recomputes the scores (CUDA flash/efficient/cuDNN, CPU flash). The unembedding matmul is included; the loss is not.

>>> from blockalg.graphs.variants import get
>>> from blockalg.graphs.symbols import default_relations
>>> f = flop_counts(get("pre-ln"))["forward_matmul"].subs(default_relations())
>>> sp.factor(f - flop_counts(get("post-ln"))["forward_matmul"].subs(default_relations()))
0
"""

from __future__ import annotations

import sympy as sp

from ..graphs.graph import edge_width, model_nodes, node_op, scaled_edges, segments
from ..graphs.ops import PHASES
from ..graphs.symbols import d_model, seq_len, vocab
from .once import once_per_graph

KINDS = ("forward_matmul", "backward_matmul", "forward_other", "forward_matmul_causal",
         "backward_matmul_fused", "backward_other")
#: The non-matmul work no single op owns, booked under these names beside the op kinds.
EDGE_SCALE, ACCUMULATION = "edge_scale", "gradient_accumulation"


def node_flops(graph) -> dict[str, dict[str, sp.Expr]]:
    """FLOPs of one instance of each node, per kind, keyed by node path (zero entries dropped)."""
    result = {}
    for m in model_nodes(graph):
        counts = {kind: getattr(m.op, kind)(m.attrs, m.n_inputs) for kind in KINDS}
        if any(v != 0 for v in counts.values()):
            result[m.path] = counts
    return result


@once_per_graph
def flop_counts(graph) -> dict[str, sp.Expr]:
    """Whole-model FLOPs per kind, ``n_layers`` kept symbolic."""
    totals = {kind: sp.Integer(0) for kind in KINDS}
    for m in model_nodes(graph):
        for kind in KINDS:
            if not kind.endswith("_other"):
                totals[kind] += m.count * getattr(m.op, kind)(m.attrs, m.n_inputs)
    for phases in other_by_kind(graph).values():
        for phase in PHASES:
            totals[f"{phase}_other"] += phases[phase]
    return totals


@once_per_graph
def other_by_kind(graph) -> dict[str, dict[str, sp.Expr]]:
    """Whole-model non-matmul FLOPs per op kind and phase: ``{kind: {"forward", "backward"}}``,
    with the work no op owns under :data:`EDGE_SCALE` and :data:`ACCUMULATION`.

    >>> from blockalg.graphs.variants import get
    >>> other_by_kind(get("pre-ln"))["gradient_accumulation"]["backward"]  # 2 forks a block, tied table
    2*d_model*n_layers*seq_len + d_model*vocab
    """
    zero = sp.Integer(0)
    kinds = {}

    def book(kind, phase, amount):
        kinds.setdefault(kind, dict.fromkeys(PHASES, zero))[phase] += amount

    accumulated = zero
    for m in model_nodes(graph):
        book(m.op.name, "forward", m.count * m.op.forward_other(m.attrs, m.n_inputs))
        book(m.op.name, "backward", m.count * m.op.backward_other(m.attrs, m.n_inputs))
        accumulated += m.count * m.op.backward_accumulation(m.attrs)
    blocks = segments(graph) + ([(graph.graph["head"], 1)] if graph.graph.get("head") else [])
    for block, count in blocks:
        # NB: a constant scale on an edge is one multiply per element, forward and backward.
        scaled = seq_len * sum((edge_width(block, u, v) for u, v, _ in scaled_edges(block)), zero)
        if scaled != 0:
            book(EDGE_SCALE, "forward", count * scaled)
            book(EDGE_SCALE, "backward", count * scaled)
        accumulated += count * fork_sums(block)
    if graph.graph.get("tied_embeddings", True):
        accumulated += vocab * d_model  # the table's gradients from the lookup and the head
    book(ACCUMULATION, "backward", accumulated)
    return kinds


def exact_by_kind(graph) -> dict[str, set[str]]:
    """Per kind, the phases in which :func:`other_by_kind` claims to equal the count of torch's
    decomposition exactly: those every op of the kind claims (edge scales and gradient sums: both)."""
    exact = {EDGE_SCALE: set(PHASES), ACCUMULATION: set(PHASES)}
    for m in model_nodes(graph):
        claimed = set(m.op.exact_phases(m.attrs))
        exact[m.op.name] = exact.get(m.op.name, claimed) & claimed
        if m.op.reuse_depends_on_data:  # how often a tensor is reused depends on the tokens
            exact[ACCUMULATION] = set()
    return exact


def fork_sums(block) -> sp.Expr:
    """Elements of the gradient sums at the block's forks: a node whose output k edges carry
    has its k gradients summed, k − 1 additions per element."""
    return seq_len * sum((node_op(block, u)[0].out_width(node_op(block, u)[1]) * (k - 1)
                          for u, k in block.out_degree() if k > 1), sp.Integer(0))
