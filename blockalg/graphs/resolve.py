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

from .presets import DEFAULT_PRESET, resolve_dims
from .variants import get


def resolve_graph(variant) -> nx.DiGraph:
    """The graph of ``variant``: a graph is returned as is, a name or path is looked up."""
    return variant if isinstance(variant, nx.DiGraph) else get(variant)


def resolve(variant, preset=DEFAULT_PRESET, dims: dict | None = None,
            **overrides) -> tuple[nx.DiGraph, dict]:
    """``(graph, dims)``: ``dims`` when given (taken as complete), else ``preset`` with
    ``overrides`` applied and checked (:func:`blockalg.graphs.presets.resolve_dims`)."""
    return resolve_graph(variant), resolve_dims(preset, overrides) if dims is None else dims
