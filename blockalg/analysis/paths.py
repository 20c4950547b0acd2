"""Gradient paths: the path generating function of a block, and the statistics it gives in closed form.

Unroll the model into a DAG from the embedding output to the input of the unembedding. Each path is
counted by kind: norms crossed (``n``), attention sublayers crossed (``a``), FFN sublayers crossed
(``f``). The **path generating function** sums the monomial ``n^#norms · a^#attention · f^#ffn``
over all paths (edge scales multiply in). For a block it is a polynomial T(n, a, f) found in one pass
over a topological order, never by enumerating paths; the model's is ``T**L`` times ``n`` when the
model has a final norm: a closed form in ``L = n_layers``.

Everything else follows from T. Because the L blocks are chosen independently along a path, a
degree's minimum, maximum and mean over paths are L times the block's; distributions are the
coefficients of ``T(1, t, t)**L`` (sublayers) and ``T(t, 1, 1)**L`` (norms).

>>> from blockalg.graphs.variants import get
>>> block_polynomial(get("pre-ln"))
(a*n + 1)*(f*n + 1)
>>> s = path_stats(get("pre-ln"))
>>> s.at(12)["count"], s.at(12)["shortest"], s.at(12)["longest"], s.at(12)["mean_sublayers"]
(16777216, {'norms': 1, 'sublayers': 0}, {'norms': 25, 'sublayers': 24}, '12')
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..graphs.graph import model_streams, segments
from ..graphs.symbols import n_layers
from .streams import StreamSystem, stream_statistics, stream_system, stream_terms
from .terms import (
    a,
    block_polynomial,
    degrees,
    expr_to_terms,
    f,
    final_polynomial,
    int_coefficients,
    int_poly_mul,
    int_poly_pow,
    n,
    t,
    terms_power,
    terms_product,
)

layer = sp.Symbol("l", integer=True, positive=True)  # a layer index, 1..L
#: The statistics every model has, in table order (keys of ``PathStats.expressions``).
PATH_KEYS = ("count", "shortest.norms", "shortest.sublayers", "longest.norms", "longest.sublayers",
             "mean_sublayers", "mean_norms")


def model_terms(graph, layers: int) -> dict:
    """The model's generating function at ``n_layers = layers`` in term form (no unrolling)."""
    if len(model_streams(graph)) > 1:
        return stream_terms(stream_system(graph), layers)
    terms = expr_to_terms(final_polynomial(graph))
    for block, count in segments(graph):
        power = int(count.subs(n_layers, layers))
        terms = terms_product(terms, terms_power(expr_to_terms(block_polynomial(block)), power))
    return terms


def _mean_degree(poly_expr, marks) -> sp.Rational:
    """Mean over paths (monomials weighted by coefficient) of the degree in ``marks``."""
    at_t = poly_expr.subs({m: t for m in marks}).subs({x: 1 for x in (n, a, f)})
    return sp.Rational(sp.diff(at_t, t).subs(t, 1), at_t.subs(t, 1))


def distribution_closed_form(parts, final: sp.Expr) -> tuple[sp.Expr, str]:
    """``(Π per_block_i**count_i · final, description)`` for ``parts = [(per_block, count)]``;
    the description names a binomial where it is one: per-block polynomials c·t^m·(1 + t)^j give
    a shifted Binomial(Σ j·count, 1/2)."""
    expr, shift, trials = final, sp.sympify(sp.degree(final, t)) if final != 1 else sp.Integer(0), 0
    binomial = True
    for per_block, count in parts:
        factored = sp.factor(per_block)
        expr *= factored**count
        for base, power in sp.factor_list(factored)[1]:
            if base == t:
                shift += power * count
            elif sp.expand(base - (1 + t)) == 0:
                trials += power * count
            else:
                binomial = False
    if not binomial:
        return expr, "no binomial form"
    if trials == 0:
        return expr, "a single value"
    shifted = f" + {sp.sstr(shift)}" if shift != 0 else ""
    return expr, f"Binomial({sp.sstr(trials)}, 1/2){shifted} over paths"


@dataclass
class PathStats:
    """Closed forms (in ``n_layers``) of the path statistics of a model's wiring.

    ``factors`` holds each segment's block polynomial T_i(n, a, f) with the number of layers it
    covers (one ``(T, n_layers)`` for a model of identical blocks).
    """

    factors: list[tuple[sp.Expr, sp.Expr]]
    final: sp.Expr  # the final norm's factor
    expressions: dict[str, sp.Expr]
    sublayer_distribution: tuple[sp.Expr, str]
    norm_distribution: tuple[sp.Expr, str]

    @property
    def block(self) -> sp.Expr:
        """T(n, a, f) of the (first) block."""
        return self.factors[0][0]

    @property
    def generating_function(self) -> sp.Expr:
        product = self.final
        for block, count in self.factors:
            product *= block**count
        return product

    def at(self, layers: int) -> dict:
        """The statistics at ``n_layers = layers`` as exact numbers; the JSON shape of ``paths``."""
        value = {key: expr.subs(n_layers, layers) for key, expr in self.expressions.items()}
        return {"count": int(value["count"]),
                "shortest": {"norms": int(value["shortest.norms"]),
                             "sublayers": int(value["shortest.sublayers"])},
                "longest": {"norms": int(value["longest.norms"]),
                            "sublayers": int(value["longest.sublayers"])},
                "mean_sublayers": str(sp.Rational(value["mean_sublayers"])),
                "mean_norms": str(sp.Rational(value["mean_norms"])),
                "generating_function": sp.sstr(self.generating_function),
                "block_generating_function": sp.sstr(self.block)}

    def shortest_to_layer(self, layers: int) -> list[dict]:
        """For each layer l = 1..L, the shortest path from the model output back to layer l's
        input (it crosses blocks l..L and the final norm)."""
        norms, subs = self.expressions["shortest_to_layer.norms"], self.expressions["shortest_to_layer.sublayers"]
        return [{"layer": l, "norms": int(norms.subs({n_layers: layers, layer: l})),
                 "sublayers": int(subs.subs({n_layers: layers, layer: l}))}
                for l in range(1, layers + 1)]

    def distribution(self, layers: int, of: str = "sublayers") -> dict[int, int]:
        """Number of paths crossing k sublayers (or norms), for every k, at ``n_layers = layers``."""
        parts, final = self._distribution_parts(of)
        coefficients = int_coefficients(final)
        for per_block, count in parts:
            power = int_poly_pow(int_coefficients(per_block), int(count.subs(n_layers, layers)))
            coefficients = int_poly_mul(coefficients, power)
        return {k: c for k, c in enumerate(coefficients) if c}

    def _distribution_parts(self, of):
        marks = {"sublayers": (a, f), "norms": (n,)}[of]
        others = [x for x in (n, a, f) if x not in marks]

        def collapse(expr):
            return sp.expand(sp.sympify(expr).subs({m: t for m in marks}).subs({x: 1 for x in others}))

        return [(collapse(block), count) for block, count in self.factors], collapse(self.final)


def path_stats(graph) -> PathStats:
    """Every path statistic of ``graph`` in closed form (``n_layers`` symbolic)."""
    if len(model_streams(graph)) > 1:
        system = stream_system(graph)
        expressions, distributions = stream_statistics(system, layer)
        return StreamPathStats([(system.matrix, n_layers)], sp.Integer(1), expressions,
                               *distributions, system=system)
    factors = [(block_polynomial(block), count) for block, count in segments(graph)]
    final = final_polynomial(graph)
    sublayers, norms = (a, f), (n,)
    final_norms = degrees(final, norms)[0]

    def total(per_block, counts=None):
        return sum((c * per_block(T) for (T, _), c in zip(factors, counts or [c for _, c in factors])),
                   sp.Integer(0))

    count = sp.Integer(1)
    for T, c in factors:
        count *= T.subs({n: 1, a: 1, f: 1}) ** c
    # blocks of each segment between layer l and the output
    if len(factors) == 1:
        from_layer = [n_layers - layer + 1]
    else:
        starts = [sum((c for _, c in factors[:i]), sp.Integer(0)) for i in range(len(factors))]
        from_layer = [sp.Max(0, sp.Min(c, start + c - layer + 1))
                      for (_, c), start in zip(factors, starts)]
    expressions = {
        "count": count,
        "shortest.norms": total(lambda T: min(degrees(T, norms))) + final_norms,
        "shortest.sublayers": total(lambda T: min(degrees(T, sublayers))),
        "longest.norms": total(lambda T: max(degrees(T, norms))) + final_norms,
        "longest.sublayers": total(lambda T: max(degrees(T, sublayers))),
        "mean_sublayers": total(lambda T: _mean_degree(T, sublayers)),
        "mean_norms": total(lambda T: _mean_degree(T, norms)) + final_norms,
        "shortest_to_layer.norms": total(lambda T: min(degrees(T, norms)), from_layer) + final_norms,
        "shortest_to_layer.sublayers": total(lambda T: min(degrees(T, sublayers)), from_layer),
    }
    stats = PathStats(factors, final, expressions, None, None)
    stats.sublayer_distribution = distribution_closed_form(*stats._distribution_parts("sublayers"))
    stats.norm_distribution = distribution_closed_form(*stats._distribution_parts("norms"))
    return stats


@dataclass
class StreamPathStats(PathStats):
    """:class:`PathStats` of a multi-stream model; ``block`` is the transfer matrix."""

    system: StreamSystem | None = None

    @property
    def generating_function(self) -> sp.Expr:
        return self.system.generating_function()

    def distribution(self, layers: int, of: str = "sublayers") -> dict[int, int]:
        marks = {"sublayers": (a, f), "norms": (n,)}[of]
        counts = {}
        for (i, j, k), c in stream_terms(self.system, layers).items():
            degree = (i,) if marks == (n,) else (j + k,)
            counts[degree[0]] = counts.get(degree[0], 0) + c
        return dict(sorted(counts.items()))
