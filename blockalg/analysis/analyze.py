"""One call from a graph to every number: :func:`analyze` returns an :class:`Analysis`.

>>> a = analyze("pre-ln", preset="gpt2-small")
>>> a.values["params.total"]
124439808
>>> a.expressions["params.total"].has(n_layers)
True
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:  # at run time imported where memory rows are asked for (add_memory)
    from .memory import Setting

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
    """The exact values of a variant's quantities at ``dims``, and their symbolic expressions.

    ``values`` are exact: Python ints, and sympy Rationals for the path means. ``expressions``
    hold the general formulas (in every dimension symbol, ``n_layers`` symbolic) and ``paths``
    the gradient-path statistics (:mod:`blockalg.analysis.paths`); both are built when first
    asked for (see :func:`numbers_only`). :meth:`closed_form` writes an expression with the
    default relations that hold at ``dims`` applied.
    """

    name: str
    graph: nx.DiGraph
    preset: str
    dims: dict[str, int]
    values: dict[str, int | sp.Rational]
    memory_setting: Setting | None = None  # the setting of the memory rows (add_memory)

    @cached_property
    def expressions(self) -> dict[str, sp.Expr]:
        exprs = expressions(self.graph, self.paths)
        if self.memory_setting is not None:
            exprs.update(_memory_rows(self.graph, self.memory_setting))
        return exprs

    @cached_property
    def paths(self) -> PathStats:
        return path_stats(self.graph)

    def closed_form(self, key: str) -> sp.Expr:
        """The expression for ``key`` with the default relations that hold at ``dims`` applied,
        expanded and collected in ``n_layers``."""
        expr = self.expressions[key].subs(relations_holding_at(self.dims))
        return sp.collect(sp.expand(expr), n_layers)

    def add_memory(self, setting=None) -> "Analysis":
        """Add the ``memory.*`` figures of :data:`MEMORY_KEYS` (bytes, :mod:`blockalg.analysis.memory`;
        default: fp32, AdamW, no recomputation, eager attention) to the values (and expressions)."""
        from .memory import Setting

        self.memory_setting = setting or Setting()
        with numbers_only():
            rows = _memory_rows(self.graph, self.memory_setting)
        self.values.update(exact_values(rows, self.dims))
        self.__dict__.pop("expressions", None)  # built again, with the memory rows, when asked
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
    with numbers_only():
        exprs = expressions(graph)
    return Analysis(graph.graph.get("name", "block"), graph, preset, dims, exact_values(exprs, dims))


def exact_values(exprs: dict, dims: dict) -> dict[str, int | sp.Rational]:
    """Each expression's exact value at ``dims`` (a Rational only for the path means).

    >>> from blockalg.graphs.symbols import d_model
    >>> exact_values({"params.x": 2 * d_model, "paths.mean_norms": d_model / 5}, {"d_model": 8})
    {'params.x': 16, 'paths.mean_norms': 8/5}
    """
    return {key: evaluate(expr, dims, key, integer=not key.startswith("paths.mean"))
            for key, expr in exprs.items()}


@contextlib.contextmanager
def numbers_only():
    """A scope in which formulas are built as unevaluated sympy trees (``sympy.evaluate(False)``).

    An unevaluated tree records the same sums and products as the canonical expression, so its
    exact value at any dimensions is the same number, while building it skips sympy's
    canonical ordering, collection and assumption queries: most of the cost of a first
    command, and sympy's import of its tensor and combinatorics modules, which the first
    evaluated sum triggers. :func:`analyze` computes ``values`` so; ``expressions`` are built
    canonical when first asked for. Evaluate only after leaving the scope.

    >>> from blockalg.graphs.symbols import d_model
    >>> with numbers_only():
    ...     tree = d_model + d_model
    >>> tree.args, evaluate(tree, {"d_model": 3}), d_model + d_model
    ((d_model, d_model), 6, 2*d_model)
    """
    with sp.evaluate(False):
        yield


def _memory_rows(graph, setting) -> dict[str, sp.Expr]:
    from .memory import memory_expressions

    exprs = memory_expressions(graph, setting)
    return {f"memory.{key}": exprs[key] for key in MEMORY_KEYS}


def expressions(graph, paths: PathStats | None = None) -> dict[str, sp.Expr]:
    """Every quantity of :func:`quantity_keys` as a sympy expression of the graph."""
    params, flops = param_counts(graph), flop_counts(graph)
    paths = paths or path_stats(graph)
    return {**{f"params.{k}": params[k] for k in PARAM_KEYS},
            **{f"flops.{k}": flops[k] for k in FLOP_KEYS},
            **{f"paths.{k}": paths.expressions[k] for k in PATH_KEYS}}
