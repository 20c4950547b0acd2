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

from .errors import BlockalgError
from .flops import flop_counts
from .params import param_counts
from .paths import PathStats, path_stats
from .presets import DEFAULT_PRESET, resolve_dims
from .symbols import DIMENSIONS, n_layers, relations_holding_at
from .variants import get

PARAM_KEYS = ("total", "active", "per_block", "attention", "ffn", "norm", "embedding")
FLOP_KEYS = ("forward_matmul", "backward_matmul", "forward_other", "forward_matmul_causal")
PATH_KEYS = ("count", "shortest.norms", "shortest.sublayers", "longest.norms", "longest.sublayers",
             "mean_sublayers", "mean_norms")


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
    ``paths`` holds the gradient-path statistics (:mod:`blockalg.paths`).
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

    def to_dict(self) -> dict:
        """The JSON shape of ``blockalg compare``: params, flops and expressions of one variant."""
        nested = {"name": self.name, "params": {}, "flops": {}}
        for key, value in self.values.items():
            group, name = key.split(".", 1)
            if group in nested:
                nested[group][name] = value
        nested["paths"] = self.paths.at(self.dims["n_layers"])
        nested["expressions"] = {key: str(self.closed_form(key)) for key in self.expressions}
        return nested

    def _repr_markdown_(self) -> str:
        from .render import Table, format_value

        rows = [[key, format_value(self.values[key]), f"${sp.latex(self.closed_form(key))}$"]
                for key in self.expressions]
        return Table(f"{self.name} at {self.preset}", ["quantity", "value", "closed form"],
                     rows).to_markdown()


@dataclass
class Comparison:
    """Several variants analysed at the same dimensions; displays as the comparison table."""

    analyses: list[Analysis]

    def __getitem__(self, name: str) -> Analysis:
        return next(a for a in self.analyses if a.name == name)

    def table(self):
        from .tables import comparison_table

        return comparison_table(self.analyses, quantity_keys())

    def to_dict(self) -> dict:
        """The JSON shape of ``blockalg compare --format json``."""
        first = self.analyses[0]
        return {"preset": first.preset, "dims": first.dims,
                "variants": [a.to_dict() for a in self.analyses]}

    def _repr_markdown_(self) -> str:
        return self.table().to_markdown()


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
    graph = get(variant) if not isinstance(variant, nx.DiGraph) else variant
    dims = resolve_dims(preset, overrides) if dims is None else dims
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


def evaluate(expr: sp.Expr, dims: dict[str, int], what: str = "expression", integer: bool = True):
    """The exact value of ``expr`` at ``dims``: a Python int (or, unless ``integer``, a Rational).

    >>> from blockalg.symbols import d_model
    >>> evaluate(3 * d_model**2, {"d_model": 768})
    1769472
    """
    value = sp.sympify(expr).subs({DIMENSIONS[k]: v for k, v in dims.items() if k in DIMENSIONS})
    if value.is_Integer:
        return int(value)
    if not integer and value.is_Rational:
        return value
    raise BlockalgError(f"{what} = {value} is not {'an integer' if integer else 'a rational'} "
                        f"at these dimensions")
