"""One call from a graph to every number: :func:`analyze` returns an :class:`Analysis`.

>>> a = analyze("pre-ln", preset="gpt2-small")
>>> a.values["params.total"]
124439808
>>> a.expressions["params.total"].has(n_layers)
True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import sympy as sp

from ..graphs.expr import evaluate
from ..graphs.ops import COMPONENTS
from ..graphs.presets import DEFAULT_PRESET, resolve_dims
from ..graphs.resolve import resolve
from ..graphs.symbols import n_layers, relations_holding_at
from .flops import flop_counts
from .params import param_counts
from .paths import PATH_KEYS, PathStats, path_stats

PARAM_KEYS = ("total", "active", "per_block", *COMPONENTS)
#: The memory figures ``compare`` shows (:meth:`Analysis.add_memory`), bytes at its default setting.
MEMORY_KEYS = ("weights", "gradients", "optimizer", "activations", "peak_training", "kv_cache")
FLOP_KEYS = ("forward_matmul", "backward_matmul", "forward_other", "backward_other",
             "forward_matmul_causal")


def quantity_keys() -> list[str]:
    """Dotted names of every quantity, in table order: ``params.total`` ... ``paths.mean_norms``."""
    return ([f"params.{k}" for k in PARAM_KEYS] + [f"flops.{k}" for k in FLOP_KEYS]
            + [f"paths.{k}" for k in PATH_KEYS])


@dataclass
class Analysis:
    """The symbolic expressions of a variant and their exact values at ``dims``.

    ``expressions`` hold the general formulas (in every dimension symbol, ``n_layers`` symbolic);
    :meth:`closed_form` writes one with the default relations that hold at ``dims`` applied;
    ``values`` are exact: Python ints, and sympy Rationals for the path means.
    ``paths`` holds the gradient-path statistics (:mod:`blockalg.analysis.paths`).
    """

    name: str
    graph: nx.DiGraph
    preset: str
    dims: dict[str, int]
    expressions: dict[str, sp.Expr]
    paths: PathStats
    values: dict[str, int | sp.Rational] = field(init=False)

    def __post_init__(self):
        self.values = {key: evaluate(expr, self.dims, key, integer=not key.startswith("paths.mean"))
                       for key, expr in self.expressions.items()}

    def closed_form(self, key: str) -> sp.Expr:
        """The expression for ``key`` with the default relations that hold at ``dims`` applied,
        expanded and collected in ``n_layers``."""
        expr = self.expressions[key].subs(relations_holding_at(self.dims))
        return sp.collect(sp.expand(expr), n_layers)

    def add_memory(self, setting=None) -> "Analysis":
        """Add the ``memory.*`` figures of :data:`MEMORY_KEYS` (bytes, :mod:`blockalg.analysis.memory`;
        default: fp32, AdamW, no recomputation, eager attention) to the expressions and values."""
        from .memory import Setting, memory_expressions

        exprs = memory_expressions(self.graph, setting or Setting())
        for key in MEMORY_KEYS:
            self.expressions[f"memory.{key}"] = exprs[key]
            self.values[f"memory.{key}"] = evaluate(exprs[key], self.dims, f"memory.{key}")
        return self

    def to_dict(self) -> dict:
        """The JSON shape of ``blockalg compare``: params, flops (memory after
        :meth:`add_memory`) and expressions of one variant."""
        nested = {"name": self.name, "params": {}, "flops": {}}
        if any(key.startswith("memory.") for key in self.values):
            nested["memory"] = {}
        for key, value in self.values.items():
            group, name = key.split(".", 1)
            if group in nested:
                nested[group][name] = value
        nested["paths"] = self.paths.at(self.dims["n_layers"])
        nested["expressions"] = {key: str(self.closed_form(key)) for key in self.expressions}
        return nested


@dataclass
class Comparison:
    """Several variants analysed at the same dimensions; displays as the comparison table."""

    analyses: list[Analysis]

    def __getitem__(self, name: str) -> Analysis:
        return next(a for a in self.analyses if a.name == name)

    def to_dict(self) -> dict:
        """The JSON shape of ``blockalg compare --format json``."""
        first = self.analyses[0]
        return {"preset": first.preset, "dims": first.dims,
                "variants": [a.to_dict() for a in self.analyses]}


def compare(variants, preset: str = DEFAULT_PRESET, dims: dict | None = None, **overrides) -> Comparison:
    """Analyse each of ``variants`` at the same dimensions.

    >>> c = compare(["pre-ln", "post-ln"], preset="gpt2-small")
    >>> c["post-ln"].values["params.total"] - c["pre-ln"].values["params.total"]
    -1536
    """
    dims = resolve_dims(preset, overrides) if dims is None else dims
    return Comparison([analyze(v, preset=preset, dims=dims) for v in variants])


def analyze(variant, preset: str = DEFAULT_PRESET, dims: dict | None = None, **overrides) -> Analysis:
    """Analyse ``variant`` (a catalog name, a graph file path or a graph) at ``preset``.

    ``dims`` replaces the preset's dimensions entirely; keyword arguments override single ones.
    """
    graph, dims = resolve(variant, preset, dims, **overrides)
    paths = path_stats(graph)
    return Analysis(graph.graph.get("name", "block"), graph, preset, dims,
                    expressions(graph, paths), paths)


def expressions(graph, paths: PathStats | None = None) -> dict[str, sp.Expr]:
    """Every quantity of :func:`quantity_keys` as a sympy expression of the graph."""
    params, flops = param_counts(graph), flop_counts(graph)
    paths = paths or path_stats(graph)
    return {**{f"params.{k}": params[k] for k in PARAM_KEYS},
            **{f"flops.{k}": flops[k] for k in FLOP_KEYS},
            **{f"paths.{k}": paths.expressions[k] for k in PATH_KEYS}}
