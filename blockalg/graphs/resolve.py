"""One way from what a user names to what an analysis needs: a graph and its dimensions.

Every entry point (``analyze``, ``build_model``, ``check``, ``gradient_norms``, training) takes a
variant as a catalog name, a graph file path or a graph, and the shape as a preset, a full
dimension dict or keyword overrides; :func:`resolve` turns any of these into ``(graph, dims)``.

>>> graph, dims = resolve("Pre-LN", preset="tiny", n_layers=3)
>>> graph.graph["name"], dims["n_layers"], dims["d_head"]
('pre-ln', 3, 16)
"""

from __future__ import annotations

import networkx as nx

from ..errors import BlockalgError, quote
from ..limits import MAX_DIMENSION
from . import magnitude
from .expr import parse_expression
from .presets import DEFAULT_PRESET, resolve_dims
from .symbols import DIMENSIONS
from .variants import get


def resolve_graph(variant) -> nx.DiGraph:
    """The graph of ``variant``: a graph is returned as is, a name or path is looked up."""
    return variant if isinstance(variant, nx.DiGraph) else get(variant)


def resolve(variant, preset=DEFAULT_PRESET, dims: dict | None = None,
            **overrides) -> tuple[nx.DiGraph, dict]:
    """``(graph, dims)``: ``dims`` when given (taken as complete), else ``preset`` with
    ``overrides`` applied and checked (:func:`blockalg.graphs.presets.resolve_dims`)."""
    graph = resolve_graph(variant)
    return graph, apply_relations(graph, resolve_dims(preset, overrides) if dims is None else dims)


def apply_relations(graph, dims: dict) -> dict:
    """``dims`` with the graph's ``relations`` applied, in order: the dimensions a block imported
    from PyTorch sets itself (nanoGPT's ``d_ff = 4*d_model``) take the module's values.

    >>> from blockalg.graphs.presets import resolve_dims
    >>> g = nx.DiGraph(relations={"d_ff": "4*d_model"})
    >>> apply_relations(g, resolve_dims("tiny", {"d_ff": 100}))["d_ff"]
    256
    """
    relations = graph.graph.get("relations") or {}
    if not relations:
        return dims
    dims = dict(dims)
    for name, text in relations.items():
        value = magnitude.value(parse_expression(text), {DIMENSIONS[k]: v for k, v in dims.items()
                                                         if k in DIMENSIONS})
        if not isinstance(value, int) or not 0 < value <= MAX_DIMENSION:
            raise BlockalgError(f"relation {name} = {quote(text, 60)} is {value} at these "
                                f"dimensions, not a positive integer up to 2**63 - 1")
        dims[name] = value
    return dims
