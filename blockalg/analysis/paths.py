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

import itertools
from dataclasses import dataclass

import networkx as nx
import sympy as sp

from ..errors import BlockalgError
from ..graphs.graph import (
    edge_scale,
    final_norm,
    model_streams,
    segments,
    sink,
    source,
    stream_nodes,
)
from ..graphs.ops import ATTENTION, FFN, INPUT, NORM, OUTPUT, get_op
from ..graphs.symbols import n_layers

#: The marks of the generating function: a norm, an attention sublayer, an FFN sublayer.
n, a, f = sp.symbols("n a f", positive=True)
t = sp.Symbol("t", positive=True)  # the variable of a distribution's generating polynomial
layer = sp.Symbol("l", integer=True, positive=True)  # a layer index, 1..L
ROLE_MARK = {NORM: n, ATTENTION: a, FFN: f}
#: The statistics every model has, in table order (keys of ``PathStats.expressions``).
PATH_KEYS = ("count", "shortest.norms", "shortest.sublayers", "longest.norms", "longest.sublayers",
             "mean_sublayers", "mean_norms")


def path_terms(graph: nx.DiGraph, start, end, mark_of, scale_of=None) -> dict[tuple, object]:
    """Sum over all ``start`` → ``end`` paths of the product of node marks (and edge scales), as
    ``{(#n, #a, #f): coefficient}``.

    One pass over a topological order: the terms of a node are its mark times the sum over its
    inputs of (input's terms × edge scale). ``mark_of(node)`` is one of ``n``, ``a``, ``f`` or 1
    (the start's mark counts too); ``scale_of(u, v)`` an edge's scale (1 when None). Coefficients
    stay Python ints unless a scale is symbolic, so a 96-layer unrolled model takes milliseconds.

    >>> g = nx.DiGraph([("x", "y"), ("x", "z"), ("y", "z")])
    >>> sorted(path_terms(g, "x", "z", lambda v: {"y": n}.get(v, 1)).items())
    [((0, 0, 0), 1), ((1, 0, 0), 1)]
    """
    terms = {start: _times_mark({(0, 0, 0): 1}, mark_of(start))}
    reachable = nx.descendants(graph, start) | {start}
    for node in nx.topological_sort(graph.subgraph(reachable)):
        if node == start:
            continue
        total = {}
        for u in graph.predecessors(node):
            if u in terms:
                scale = scale_of(u, node) if scale_of else 1
                _accumulate(total, terms[u], scale)
        terms[node] = _times_mark(total, mark_of(node))
    if end not in terms:
        raise BlockalgError(f"no path from '{start}' to '{end}'")
    return terms[end]


def path_polynomial(graph: nx.DiGraph, start, end, mark_of, scale_of=None) -> sp.Expr:
    """:func:`path_terms` as a sympy polynomial in ``n``, ``a``, ``f``.

    >>> g = nx.DiGraph([("x", "y"), ("x", "z"), ("y", "z")])
    >>> path_polynomial(g, "x", "z", lambda v: {"y": n}.get(v, 1))
    n + 1
    """
    return terms_to_expr(path_terms(graph, start, end, mark_of, scale_of))


MARKS = (n, a, f)


def _times_mark(terms: dict, mark) -> dict:
    if mark == 1:
        return terms
    i = MARKS.index(mark)
    return {tuple(e + (k == i) for k, e in enumerate(exps)): c for exps, c in terms.items()}


def _accumulate(total: dict, terms: dict, scale=1) -> None:
    for exps, c in terms.items():
        total[exps] = total.get(exps, 0) + c * scale


def terms_product(p: dict, q: dict) -> dict:
    """The product of two polynomials in term form."""
    out = {}
    for e1, c1 in p.items():
        for e2, c2 in q.items():
            key = (e1[0] + e2[0], e1[1] + e2[1], e1[2] + e2[2])
            out[key] = out.get(key, 0) + c1 * c2
    return out


def power(base, k: int, multiply, one):
    """``base**k`` by repeated squaring, for any ``multiply`` with identity ``one``.

    >>> power(3, 5, lambda x, y: x * y, 1)
    243
    """
    result = one
    while k:
        if k & 1:
            result = multiply(result, base)
        k >>= 1
        if k:
            base = multiply(base, base)
    return result


def terms_power(p: dict, k: int) -> dict:
    """``p**k`` in term form."""
    return power(p, k, terms_product, {(0, 0, 0): 1})


def expr_to_terms(expr) -> dict:
    """A polynomial in ``n``, ``a``, ``f`` (a sympy expression) in term form."""
    poly = sp.Poly(sp.expand(expr), *MARKS)
    return {exps: int(c) if c.is_Integer else c for exps, c in poly.terms()}


def terms_to_expr(terms: dict) -> sp.Expr:
    return sp.Add(*(c * n**i * a**j * f**k for (i, j, k), c in terms.items() if c != 0))


def model_terms(graph, layers: int) -> dict:
    """The model's generating function at ``n_layers = layers`` in term form (no unrolling)."""
    if len(model_streams(graph)) > 1:
        return _stream_terms(stream_system(graph), layers)
    terms = expr_to_terms(final_polynomial(graph))
    for block, count in segments(graph):
        power = int(count.subs(n_layers, layers))
        terms = terms_product(terms, terms_power(expr_to_terms(block_polynomial(block)), power))
    return terms


def _mark(graph, node):
    return ROLE_MARK.get(get_op(graph.nodes[node]["op"]).role, 1)


def block_polynomial(graph, scaled: bool = False) -> sp.Expr:
    """T(n, a, f) of one block, factored. ``scaled``: edge scales multiply in."""
    scale_of = (lambda u, v: edge_scale(graph, u, v)) if scaled else None
    return sp.factor(path_polynomial(graph, source(graph), sink(graph), lambda v: _mark(graph, v),
                                     scale_of))


def final_polynomial(graph) -> sp.Expr:
    """The model's factor after the last block: ``n`` for a final norm, else 1."""
    final = final_norm(graph)
    return ROLE_MARK.get(final[0].role, 1) if final else sp.Integer(1)


def _degrees(poly_expr, marks) -> list[int]:
    """The total degree in ``marks`` of every monomial of ``poly_expr``."""
    p = sp.Poly(sp.expand(poly_expr), n, a, f)
    index = [(n, a, f).index(m) for m in marks]
    return [sum(monom[i] for i in index) for monom in p.monoms()]


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
        coefficients = _int_coefficients(final)
        for per_block, count in parts:
            power = _int_poly_pow(_int_coefficients(per_block), int(count.subs(n_layers, layers)))
            coefficients = _int_poly_mul(coefficients, power)
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
        return stream_path_stats(graph)
    factors = [(block_polynomial(block), count) for block, count in segments(graph)]
    final = final_polynomial(graph)
    sublayers, norms = (a, f), (n,)
    final_norms = _degrees(final, norms)[0]

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
        "shortest.norms": total(lambda T: min(_degrees(T, norms))) + final_norms,
        "shortest.sublayers": total(lambda T: min(_degrees(T, sublayers))),
        "longest.norms": total(lambda T: max(_degrees(T, norms))) + final_norms,
        "longest.sublayers": total(lambda T: max(_degrees(T, sublayers))),
        "mean_sublayers": total(lambda T: _mean_degree(T, sublayers)),
        "mean_norms": total(lambda T: _mean_degree(T, norms)) + final_norms,
        "shortest_to_layer.norms": total(lambda T: min(_degrees(T, norms)), from_layer) + final_norms,
        "shortest_to_layer.sublayers": total(lambda T: min(_degrees(T, sublayers)), from_layer),
    }
    stats = PathStats(factors, final, expressions, None, None)
    stats.sublayer_distribution = distribution_closed_form(*stats._distribution_parts("sublayers"))
    stats.norm_distribution = distribution_closed_form(*stats._distribution_parts("norms"))
    return stats


# Exact integer polynomials as coefficient lists, for distributions at concrete L.


def _int_coefficients(expr) -> list[int]:
    p = sp.Poly(expr, t)
    coefficients = [int(c) for c in reversed(p.all_coeffs())]
    return coefficients


def _int_poly_mul(p: list[int], q: list[int]) -> list[int]:
    out = [0] * (len(p) + len(q) - 1)
    for i, x in enumerate(p):
        if x:
            for j, y in enumerate(q):
                out[i + j] += x * y
    return out


def _int_poly_pow(p: list[int], k: int) -> list[int]:
    return power(p, k, _int_poly_mul, [1])


# ---------------------------------------------------------------------------------------------
# Several residual streams (ResiDual): a transfer matrix instead of a polynomial.


@dataclass
class StreamSystem:
    """``M[i][j]``: paths from stream i entering a block to stream j leaving it; ``start[i]``: 1
    when stream i starts as the embedding; ``head[j]``: paths from stream j through the head
    and the final norm. The model's generating function is start · M**L · head."""

    streams: list[str]
    matrix: sp.Matrix
    start: sp.Matrix
    head: sp.Matrix

    def generating_function(self, blocks=n_layers) -> sp.Expr:
        return (self.start.T * self.matrix**blocks * self.head)[0]


def _paths_or_zero(graph, start, end) -> sp.Expr:
    try:
        return sp.factor(path_polynomial(graph, start, end, lambda v: _mark(graph, v)))
    except BlockalgError:
        return sp.Integer(0)


def stream_system(graph) -> StreamSystem:
    """The transfer matrix of a multi-stream model (streams in the model's order)."""
    streams = list(model_streams(graph))
    ins, outs = stream_nodes(graph, INPUT), stream_nodes(graph, OUTPUT)
    matrix = sp.Matrix(len(streams), len(streams),
                       lambda i, j: _paths_or_zero(graph, ins[streams[i]], outs[streams[j]]))
    head = graph.graph["head"]
    head_out = next(iter(stream_nodes(head, OUTPUT).values()))
    final = final_polynomial(graph)
    head_vector = sp.Matrix([_paths_or_zero(head, stream_nodes(head)[s], head_out) * final
                             for s in streams])
    start = sp.Matrix([1 if model_streams(graph)[s] == "embedding" else 0 for s in streams])
    return StreamSystem(streams, matrix, start, head_vector)


def _stream_extreme(system: StreamSystem, marks, pick, blocks, start=None) -> sp.Expr:
    """Fewest (``pick=min``) or most marks on a path through ``blocks`` blocks.

    Streams must never feed an earlier stream (M upper triangular), so a path visits streams
    in order i_0 < ... < i_m, spending m blocks on the moves and the other blocks in the
    visited stream whose self-loop is cheapest (or dearest): a minimum over visit orders, linear
    in L (for L ≥ number of streams).
    """
    M, k = system.matrix, system.matrix.rows
    start = system.start if start is None else start
    if any(M[i, j] != 0 for i in range(k) for j in range(i)):
        raise BlockalgError("path statistics need streams that never feed an earlier stream")

    def cost(expr):
        return None if expr == 0 else pick(_degrees(expr, marks))

    stay = [cost(M[i, i]) for i in range(k)]
    candidates = []
    for m in range(k):
        for visit in itertools.combinations(range(k), m + 1):
            moves = [cost(M[u, v]) for u, v in zip(visit, visit[1:])]
            stays = [stay[i] for i in visit if stay[i] is not None]
            exit_cost = cost(system.head[visit[-1]])
            if start[visit[0]] == 0 or exit_cost is None or None in moves or not stays:
                continue
            candidates.append(sum(moves) + (blocks - m) * pick(stays) + exit_cost)
    return (sp.Min if pick is min else sp.Max)(*candidates)


def stream_path_stats(graph) -> PathStats:
    """The statistics of a multi-stream model: closed forms from start · M**L · head."""
    system = stream_system(graph)
    gf = system.generating_function()
    sublayers, norms = (a, f), (n,)
    ones = {n: 1, a: 1, f: 1}
    count = sp.simplify(gf.subs(ones))

    def mean(marks):
        collapsed = gf.subs({m: t for m in marks}).subs(ones)
        return sp.simplify(sp.diff(collapsed, t).subs(t, 1) / count)

    everywhere = sp.ones(system.matrix.rows, 1)
    from_layer = n_layers - layer + 1
    expressions = {
        "count": count,
        "shortest.norms": _stream_extreme(system, norms, min, n_layers),
        "shortest.sublayers": _stream_extreme(system, sublayers, min, n_layers),
        "longest.norms": _stream_extreme(system, norms, max, n_layers),
        "longest.sublayers": _stream_extreme(system, sublayers, max, n_layers),
        "mean_sublayers": mean(sublayers),
        "mean_norms": mean(norms),
        "shortest_to_layer.norms": _stream_extreme(system, norms, min, from_layer, everywhere),
        "shortest_to_layer.sublayers": _stream_extreme(system, sublayers, min, from_layer, everywhere),
    }
    distributions = [(gf.subs({m: t for m in marks}).subs(ones), "no binomial form")
                     for marks in (sublayers, norms)]
    return StreamPathStats([(system.matrix, n_layers)], sp.Integer(1), expressions, *distributions,
                           system=system)


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
        for (i, j, k), c in _stream_terms(self.system, layers).items():
            degree = (i,) if marks == (n,) else (j + k,)
            counts[degree[0]] = counts.get(degree[0], 0) + c
        return dict(sorted(counts.items()))


def _stream_terms(system: StreamSystem, layers: int) -> dict:
    """start · M**layers · head in term form, by repeated squaring of the term matrix."""
    k = system.matrix.rows
    matrix = [[expr_to_terms(system.matrix[i, j]) if system.matrix[i, j] != 0 else {}
               for j in range(k)] for i in range(k)]

    def product(x, y):
        out = [[{} for _ in range(k)] for _ in range(k)]
        for i in range(k):
            for j in range(k):
                for m in range(k):
                    if x[i][m] and y[m][j]:
                        for e, c in terms_product(x[i][m], y[m][j]).items():
                            out[i][j][e] = out[i][j].get(e, 0) + c
        return out

    identity = [[{(0, 0, 0): 1} if i == j else {} for j in range(k)] for i in range(k)]
    result = power(matrix, layers, product, identity)
    total = {}
    for i in range(k):
        if system.start[i] == 0:
            continue
        for j in range(k):
            if system.head[j] != 0 and result[i][j]:
                for e, c in terms_product(result[i][j], expr_to_terms(system.head[j])).items():
                    total[e] = total.get(e, 0) + c
    return {e: c for e, c in total.items() if c}
