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

import math
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import sympy as sp

from ..errors import BlockalgError
from ..graphs import magnitude
from ..graphs.graph import model_streams, segments
from ..graphs.symbols import n_layers
from ..limits import MAX_DETAIL_LAYERS, MAX_STREAM_DETAIL_LAYERS
from .streams import (
    StreamSystem,
    stream_distribution,
    stream_statistics,
    stream_system,
    stream_terms,
)
from .terms import (
    MARKS,
    a,
    block_polynomial,
    block_terms,
    expr_to_terms,
    f,
    factor_if_small,
    factored,
    final_polynomial,
    final_terms,
    int_coefficients,
    int_power_product,
    n,
    polynomial_text,
    power,
    t,
    terms_at,
    terms_power,
    terms_product,
)

layer = sp.Symbol("l", integer=True, positive=True)  # a layer index, 1..L
#: The statistics every model has, in table order (keys of ``PathStats.expressions``).
PATH_KEYS = ("count", "shortest.norms", "shortest.sublayers", "longest.norms", "longest.sublayers",
             "mean_sublayers", "mean_norms")
#: The marks each distribution counts.
DISTRIBUTION_MARKS = {"sublayers": (a, f), "norms": (n,)}


def model_terms(graph, layers: int) -> dict:
    """The model's generating function at ``n_layers = layers`` in term form (no unrolling)."""
    if len(model_streams(graph)) > 1:
        return stream_terms(stream_system(graph), layers)
    terms = final_terms(graph)
    for block, count in segments(graph):
        power = magnitude.exact(count, {n_layers: layers})
        terms = terms_product(terms, terms_power(block_terms(block), power))
    return terms


def model_value(graph, layers: int, point, modulus: int | None = None) -> int:
    """The model's (unscaled) generating function at ``n_layers = layers`` evaluated at ``point``
    = (n, a, f), modulo ``modulus`` if given: final · Π T_i(point)**count_i by repeated squaring
    (start · M**L · head for several streams), never expanding a polynomial. At (1, 1, 1) it is
    the exact number of paths.

    >>> from blockalg.graphs.variants import get
    >>> model_value(get("pre-ln"), 96, (1, 1, 1)) == 4**96
    True
    >>> model_value(get("pre-ln"), 96, (2, 3, 5), 101) == 2 * (1 + 2*3)**96 * (1 + 2*5)**96 % 101
    True
    """
    if len(model_streams(graph)) > 1:
        return _stream_value(stream_system(graph), layers, point, modulus)
    value = terms_at(final_terms(graph), point, modulus)
    for block, count in segments(graph):
        value *= pow(terms_at(block_terms(block), point, modulus),
                     magnitude.exact(count, {n_layers: layers}), modulus)
    return value % modulus if modulus else value


def _stream_value(system: StreamSystem, layers: int, point, modulus: int | None) -> int:
    def at(expr):
        return terms_at(expr_to_terms(expr), point, modulus) if expr != 0 else 0

    k = system.matrix.rows
    matrix = [[at(system.matrix[i, j]) for j in range(k)] for i in range(k)]

    def product(x, y):
        out = [[sum(x[i][m] * y[m][j] for m in range(k)) for j in range(k)] for i in range(k)]
        return [[v % modulus for v in row] for row in out] if modulus else out

    identity = [[int(i == j) for j in range(k)] for i in range(k)]
    result = power(matrix, layers, product, identity)
    value = sum(int(system.start[i]) * result[i][j] * at(system.head[j])
                for i in range(k) for j in range(k))
    return value % modulus if modulus else value


def term_degrees(terms: dict, marks) -> list[int]:
    """The total degree in ``marks`` of every monomial of a polynomial in term form.

    >>> term_degrees({(0, 0, 0): 1, (1, 1, 0): 1}, (a, f))
    [0, 1]
    """
    index = [MARKS.index(m) for m in marks]
    return [sum(exps[i] for i in index) for exps, c in terms.items() if c != 0]


def _mean_degree(terms: dict, marks) -> sp.Rational:
    """Mean over paths (monomials weighted by coefficient) of the degree in ``marks``."""
    weights = [c for c in terms.values() if c != 0]
    return sp.Rational(sum(c * d for c, d in zip(weights, term_degrees(terms, marks))), sum(weights))


def collapsed(terms: dict, of: str) -> list[int]:
    """Coefficients (degree 0 up) of the polynomial in ``t`` that counts the paths of ``terms``
    by the number of ``of`` (sublayers or norms) they cross.

    >>> collapsed({(0, 0, 0): 1, (1, 1, 0): 1, (1, 0, 1): 1, (2, 1, 1): 1}, "sublayers")
    [1, 2, 1]
    """
    degrees = term_degrees(terms, DISTRIBUTION_MARKS[of])
    coefficients = [0] * (max(degrees) + 1)
    for d, c in zip(degrees, (c for c in terms.values() if c != 0)):
        coefficients[d] += c
    return coefficients


def binomial_form(coefficients: list[int]) -> tuple[int, int] | None:
    """``(m, j)`` when the polynomial with these coefficients is c·t^m·(1 + t)^j, else None; read
    off the coefficients (no factoring).

    >>> binomial_form([0, 2, 4, 2]), binomial_form([1, 2])
    ((1, 2), None)
    """
    m = next((i for i, c in enumerate(coefficients) if c), None)
    if m is None:
        return None
    rest = coefficients[m:]
    while rest[-1] == 0:
        rest = rest[:-1]
    j = len(rest) - 1
    return (m, j) if all(c == rest[0] * math.comb(j, i) for i, c in enumerate(rest)) else None


def distribution_closed_form(parts, final: sp.Expr) -> tuple[sp.Expr, str]:
    """``(Π per_block_i**count_i · final, description)`` for ``parts = [(per_block, count)]``;
    the description names a binomial where it is one: per-block polynomials c·t^m·(1 + t)^j give
    a shifted Binomial(Σ j·count, 1/2), read off the coefficients (factoring a degree-200
    polynomial would take a minute; it is factored for display only when small)."""
    expr, shift, trials = final, sp.sympify(sp.degree(final, t)) if final != 1 else sp.Integer(0), 0
    binomial = True
    for per_block, count in parts:
        coefficients = int_coefficients(per_block)
        expr *= factor_if_small(per_block, len(coefficients) - 1)**count
        form = binomial_form(coefficients)
        if form is None:
            binomial = False
        else:
            shift += form[0] * count
            trials += form[1] * count
    if not binomial:
        return expr, "no binomial form"
    if trials == 0:
        return expr, "a single value"
    shifted = f" + {sp.sstr(shift)}" if shift != 0 else ""
    return expr, f"Binomial({sp.sstr(trials)}, 1/2){shifted} over paths"


def _t_polynomial(coefficients: list[int]) -> sp.Expr:
    return sp.Add(*(c * t**k for k, c in enumerate(coefficients) if c))


@dataclass
class PathStats:
    """Closed forms (in ``n_layers``) of the path statistics of a model's wiring.

    ``parts`` holds each segment's block polynomial T_i(n, a, f) in term form
    (``{(#n, #a, #f): count}``) with the number of layers it covers; ``factors`` the same with
    T_i as a factored sympy expression (one ``(T, n_layers)`` for a model of identical blocks).
    The statistics are read from the terms; factoring and the distributions' closed forms are
    computed when first asked for.
    """

    parts: list[tuple[dict, sp.Expr]]
    final: sp.Expr  # the final norm's factor
    expressions: dict[str, sp.Expr]
    #: Most layers :meth:`distribution` and :meth:`shortest_to_layer` list (a row per layer).
    detail_layers: ClassVar[int] = MAX_DETAIL_LAYERS

    @cached_property
    def factors(self) -> list[tuple[sp.Expr, sp.Expr]]:
        return [(factored(terms), count) for terms, count in self.parts]

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

    @cached_property
    def sublayer_distribution(self) -> tuple[sp.Expr, str]:
        """The generating function in ``t`` of paths by sublayers crossed, and its description."""
        return distribution_closed_form(*self._distribution_parts("sublayers"))

    @cached_property
    def norm_distribution(self) -> tuple[sp.Expr, str]:
        """The generating function in ``t`` of paths by norms crossed, and its description."""
        return distribution_closed_form(*self._distribution_parts("norms"))

    def at(self, layers: int) -> dict:
        """The statistics at ``n_layers = layers``; the JSON shape of ``paths``. Exact numbers,
        except a value too large to compute (over MAX_EXACT_BITS bits, e.g. 4^L at L = 10^9),
        which is an :class:`~blockalg.graphs.magnitude.Approx`; means are exact fractions as
        text, however long."""
        value = {key: self.value(key, layers) for key in PATH_KEYS}
        mean = {key: value[key] if isinstance(value[key], magnitude.Approx)
                else magnitude.exact_text(value[key]) for key in ("mean_sublayers", "mean_norms")}
        return {"count": value["count"],
                "shortest": {"norms": value["shortest.norms"],
                             "sublayers": value["shortest.sublayers"]},
                "longest": {"norms": value["longest.norms"],
                            "sublayers": value["longest.sublayers"]},
                "mean_sublayers": mean["mean_sublayers"],
                "mean_norms": mean["mean_norms"],
                "generating_function": polynomial_text(self.generating_function),
                "block_generating_function": polynomial_text(self.block)}

    def value(self, key: str, layers: int):
        """Statistic ``key`` at ``n_layers = layers``: an int or Fraction, or an
        :class:`~blockalg.graphs.magnitude.Approx` when too large to compute exactly."""
        return magnitude.value(self.expressions[key], {n_layers: layers})

    def shortest_to_layer(self, layers: int) -> list[dict]:
        """For each layer l = 1..L, the shortest path from the model output back to layer l's
        input (it crosses blocks l..L and the final norm); at most ``detail_layers`` rows."""
        self.check_detail(layers)
        norms, subs = self.expressions["shortest_to_layer.norms"], self.expressions["shortest_to_layer.sublayers"]
        return [{"layer": l, "norms": magnitude.exact(norms, {n_layers: layers, layer: l}),
                 "sublayers": magnitude.exact(subs, {n_layers: layers, layer: l})}
                for l in range(1, layers + 1)]

    def distribution(self, layers: int, of: str = "sublayers") -> dict[int, int]:
        """Number of paths crossing k sublayers (or norms), for every k, at ``n_layers = layers``
        (at most ``detail_layers`` layers: the answer has a row per k)."""
        self.check_detail(layers)
        factors = [(collapsed(self._final_terms, of), 1)] + [
            (collapsed(terms, of), magnitude.exact(count, {n_layers: layers}))
            for terms, count in self.parts]
        return {k: c for k, c in enumerate(int_power_product(factors)) if c}

    def check_detail(self, layers: int) -> None:
        """A one-line error when ``layers`` is over :attr:`detail_layers`."""
        if layers > self.detail_layers:
            raise BlockalgError(f"distributions and per-layer rows are listed up to "
                                f"{self.detail_layers:,} layers for this model, not {layers:,}")

    @property
    def _final_terms(self) -> dict:
        return {tuple(int(m == self.final) for m in MARKS): 1}

    def _distribution_parts(self, of):
        return ([(_t_polynomial(collapsed(terms, of)), count) for terms, count in self.parts],
                _t_polynomial(collapsed(self._final_terms, of)))


def path_stats(graph) -> PathStats:
    """Every path statistic of ``graph`` in closed form (``n_layers`` symbolic)."""
    if len(model_streams(graph)) > 1:
        with sp.evaluate(True):  # matrix algebra and simplification, even inside numbers_only()
            system = stream_system(graph)
            expressions, distributions = stream_statistics(system, layer)
        return StreamPathStats([], sp.Integer(1), expressions, system=system,
                               distributions=tuple(distributions))
    parts = [(block_terms(block), count) for block, count in segments(graph)]
    sublayers, norms = (a, f), (n,)
    final_norms = next(iter(final_terms(graph)))[0]

    def total(per_block, counts=None):
        return sum((c * per_block(T) for (T, _), c in zip(parts, counts or [c for _, c in parts])),
                   sp.Integer(0))

    count = sp.Integer(1)
    for T, c in parts:
        count *= sp.Integer(sum(T.values())) ** c
    # blocks of each segment between layer l and the output
    if len(parts) == 1:
        from_layer = [n_layers - layer + 1]
    else:
        starts = [sum((c for _, c in parts[:i]), sp.Integer(0)) for i in range(len(parts))]
        from_layer = [sp.Max(0, sp.Min(c, start + c - layer + 1))
                      for (_, c), start in zip(parts, starts)]
    expressions = {
        "count": count,
        "shortest.norms": total(lambda T: min(term_degrees(T, norms))) + final_norms,
        "shortest.sublayers": total(lambda T: min(term_degrees(T, sublayers))),
        "longest.norms": total(lambda T: max(term_degrees(T, norms))) + final_norms,
        "longest.sublayers": total(lambda T: max(term_degrees(T, sublayers))),
        "mean_sublayers": total(lambda T: _mean_degree(T, sublayers)),
        "mean_norms": total(lambda T: _mean_degree(T, norms)) + final_norms,
        "shortest_to_layer.norms": total(lambda T: min(term_degrees(T, norms)), from_layer) + final_norms,
        "shortest_to_layer.sublayers": total(lambda T: min(term_degrees(T, sublayers)), from_layer),
    }
    return PathStats(parts, final_polynomial(graph), expressions)


@dataclass
class StreamPathStats(PathStats):
    """:class:`PathStats` of a multi-stream model; ``block`` is the transfer matrix."""

    system: StreamSystem | None = None
    distributions: tuple = ()  # (sublayers, norms): (generating function in t, description)
    detail_layers: ClassVar[int] = MAX_STREAM_DETAIL_LAYERS

    @property
    def factors(self) -> list[tuple[sp.Expr, sp.Expr]]:
        return [(self.system.matrix, n_layers)]

    @property
    def sublayer_distribution(self) -> tuple[sp.Expr, str]:
        return self.distributions[0]

    @property
    def norm_distribution(self) -> tuple[sp.Expr, str]:
        return self.distributions[1]

    @property
    def generating_function(self) -> sp.Expr:
        return self.system.generating_function()

    def distribution(self, layers: int, of: str = "sublayers") -> dict[int, int]:
        self.check_detail(layers)
        return stream_distribution(self.system, layers, DISTRIBUTION_MARKS[of])
