"""Parameter counts from the graph alone: per leaf tensor, per component, per block, per model.

Every count is a sum of the leaf formulas of :mod:`blockalg.graphs.ops`, each multiplied by how often its
node occurs (``n_layers`` for block nodes), so ``n_layers`` stays a symbol.

>>> from blockalg.graphs.variants import get
>>> from blockalg.graphs.symbols import d_model, vocab
>>> counts = param_counts(get("post-ln"))
>>> counts["embedding"]
d_model*n_ctx + d_model*vocab
"""

from __future__ import annotations

import sympy as sp

from ..graphs.graph import model_nodes
from ..graphs.ops import COMPONENTS
from .once import once_per_graph


def leaf_params(graph) -> dict[str, sp.Expr]:
    """Parameters of each leaf tensor of one instance of its node: ``block.attn.qkv.weight`` → d·3d.

    Keys match the torch model's ``named_parameters()`` with ``blocks.<i>.`` read as ``block.``.
    """
    return {f"{m.path}.{leaf}": count
            for m in model_nodes(graph) for leaf, count in m.op.params(m.attrs).items()}


def node_params(graph) -> dict[str, sp.Expr]:
    """Parameters of one instance of each node that has any, keyed by node path."""
    counts = {}
    for m in model_nodes(graph):
        total = sum(m.op.params(m.attrs).values(), sp.Integer(0))
        if total != 0:
            counts[m.path] = total
    return counts


@once_per_graph
def param_counts(graph) -> dict[str, sp.Expr]:
    """Whole-model counts: ``total``, ``active`` (used per token: less than the total only with
    mixture-of-experts layers), ``per_block`` (in a stack, the first segment's block) and one entry
    per component."""
    counts = {"total": sp.Integer(0), "active": sp.Integer(0), "per_block": sp.Integer(0),
              **{c: sp.Integer(0) for c in COMPONENTS}}
    for m in model_nodes(graph):
        n = sum(m.op.params(m.attrs).values(), sp.Integer(0))
        counts["total"] += m.count * n
        counts["active"] += m.count * m.op.active_params(m.attrs)
        if m.op.component:
            counts[m.op.component] += m.count * n
        if m.path.startswith(("block.", "segment0.")):  # a stack: its first segment's block
            counts["per_block"] += n
    return counts
