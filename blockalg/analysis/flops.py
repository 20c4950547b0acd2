"""FLOPs from the graph alone, for one sequence of ``seq_len`` tokens at batch 1.

``forward_matmul`` and ``backward_matmul`` are what ``torch.utils.flop_counter.FlopCounterMode``
counts (mm, addmm, bmm, attention) with attention at the dense s×s cost;
``forward_matmul_causal`` counts only the unmasked causal scores; ``forward_other`` is everything
else (norms, softmax, activations, adds, biases, edge scales) at the per-element costs documented
in :mod:`blockalg.graphs.ops`. ``backward_matmul_fused`` is the backward as FlopCounterMode counts it when
attention runs a fused kernel that recomputes the scores (CUDA flash/efficient/cuDNN, CPU flash). The unembedding matmul is included; the loss is not.

>>> from blockalg.graphs.variants import get
>>> from blockalg.graphs.symbols import default_relations
>>> f = flop_counts(get("pre-ln"))["forward_matmul"].subs(default_relations())
>>> sp.factor(f - flop_counts(get("post-ln"))["forward_matmul"].subs(default_relations()))
0
"""

from __future__ import annotations

import sympy as sp

from ..graphs.graph import edge_width, model_nodes, scaled_edges, segments
from ..graphs.symbols import seq_len

KINDS = ("forward_matmul", "backward_matmul", "forward_other", "forward_matmul_causal",
         "backward_matmul_fused")


def node_flops(graph) -> dict[str, dict[str, sp.Expr]]:
    """FLOPs of one instance of each node, per kind, keyed by node path (zero entries dropped)."""
    result = {}
    for m in model_nodes(graph):
        counts = {kind: getattr(m.op, kind)(m.attrs, m.n_inputs) for kind in KINDS}
        if any(v != 0 for v in counts.values()):
            result[m.path] = counts
    return result


def flop_counts(graph) -> dict[str, sp.Expr]:
    """Whole-model FLOPs per kind, ``n_layers`` kept symbolic."""
    totals = {kind: sp.Integer(0) for kind in KINDS}
    for m in model_nodes(graph):
        for kind in KINDS:
            totals[kind] += m.count * getattr(m.op, kind)(m.attrs, m.n_inputs)
    # NB: a constant scale on an edge is one multiply per element of the tensor it carries.
    for block, count in segments(graph):
        totals["forward_other"] += count * seq_len * sum(
            (edge_width(block, u, v) for u, v, _ in scaled_edges(block)), sp.Integer(0))
    return totals
