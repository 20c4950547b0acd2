"""Path generating functions in term form: ``{(#norms, #attention, #ffn): count}``.

The arithmetic under :mod:`blockalg.analysis.paths`: one pass over a topological order gives the
sum over all paths of the product of node marks (:func:`path_terms`); products and powers of
such polynomials stay exact Python integers (:func:`terms_product`, :func:`terms_power`).

>>> terms_power({(0, 0, 0): 1, (1, 1, 0): 1}, 2)
{(0, 0, 0): 1, (1, 1, 0): 2, (2, 2, 0): 1}
"""

from __future__ import annotations

import functools
import operator

import networkx as nx
import sympy as sp

from ..errors import BlockalgError, quote
from ..graphs.graph import edge_scale, final_norm, sink, source
from ..graphs.ops import ATTENTION, FFN, NORM, get_op
from ..limits import MAX_FACTOR_DEGREE, MAX_PATH_TERMS

#: The marks of the generating function: a norm, an attention sublayer, an FFN sublayer.
n, a, f = sp.symbols("n a f", positive=True)
t = sp.Symbol("t", positive=True)  # the variable of a distribution's generating polynomial
ROLE_MARK = {NORM: n, ATTENTION: a, FFN: f}


def path_terms(graph: nx.DiGraph, start, end, mark_of, scale_of=None) -> dict[tuple, object]:
    """Sum over all ``start`` → ``end`` paths of the product of node marks (and edge scales), as
    ``{(#n, #a, #f): coefficient}``.

    One pass over a topological order: the terms of a node are its mark times the sum over its
    inputs of (input's terms × edge scale). ``mark_of(node)`` is one of ``n``, ``a``, ``f`` or 1
    (the start's mark counts too); ``scale_of(u, v)`` an edge's scale (1 when None). Coefficients
    stay Python ints unless a scale is symbolic, so a 96-layer unrolled model takes milliseconds.
    More than :data:`~blockalg.limits.MAX_PATH_TERMS` distinct monomials at a node is refused.

    >>> g = nx.DiGraph([("x", "y"), ("x", "z"), ("y", "z")])
    >>> sorted(path_terms(g, "x", "z", lambda v: {"y": n}.get(v, 1)).items())
    [((0, 0, 0), 1), ((1, 0, 0), 1)]
    """
    terms = {start: _times_mark({(0, 0, 0): 1}, mark_of(start))}
    for node in _after(graph, start):
        total = {}
        for u in graph.predecessors(node):
            if u in terms:
                scale = scale_of(u, node) if scale_of else 1
                _accumulate(total, terms[u], scale)
        if len(total) > MAX_PATH_TERMS:
            raise BlockalgError(f"node {quote(node)}: more than {MAX_PATH_TERMS} kinds of paths "
                                f"(by norms, attention and FFN crossed) reach it; too complex")
        terms[node] = _times_mark(total, mark_of(node))
    if end not in terms:
        raise BlockalgError(f"no path from {quote(start)} to {quote(end)}")
    return terms[end]


def path_values(graph: nx.DiGraph, start, end, mark_of, points, modulus: int | None = None) -> list[int]:
    """The (unscaled) generating function of :func:`path_terms` evaluated at each of ``points``
    = (n, a, f), integers, modulo ``modulus`` if given: the same one pass over a topological
    order with a number per node and point instead of a polynomial, so its cost does not grow
    with the degree.

    >>> g = nx.DiGraph([("x", "y"), ("x", "z"), ("y", "z")])
    >>> path_values(g, "x", "z", lambda v: {"y": n}.get(v, 1), [(10, 1, 1), (2, 1, 1)])  # n + 1
    [11, 3]
    >>> path_values(g, "x", "z", lambda v: {"y": n}.get(v, 1), [(10, 1, 1)], 7)
    [4]
    """
    weights = [dict(zip(MARKS, point)) for point in points]

    def times_mark(values, node):
        mark = mark_of(node)
        values = [value * weight.get(mark, 1) for value, weight in zip(values, weights)]
        return [value % modulus for value in values] if modulus else values

    values = {start: times_mark([1] * len(points), start)}
    for node in _after(graph, start):
        inputs = [values[u] for u in graph.predecessors(node) if u in values]
        values[node] = times_mark([sum(column) for column in zip(*inputs)], node)
    if end not in values:
        raise BlockalgError(f"no path from {quote(start)} to {quote(end)}")
    return values[end]


def _after(graph: nx.DiGraph, start) -> list:
    """The nodes reachable from ``start``, in topological order, ``start`` left out."""
    reachable = nx.descendants(graph, start)
    return [node for node in nx.topological_sort(graph.subgraph(reachable | {start}))
            if node != start]


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


_KNOWN_TERMS: dict = {}  # expression -> its terms: block polynomials are made from their terms


def expr_to_terms(expr) -> dict:
    """A polynomial in ``n``, ``a``, ``f`` (a sympy expression) in term form (remembered: a
    block of thousands of terms is expanded once, not once per use)."""
    expr = sp.sympify(expr)
    known = _KNOWN_TERMS.get(expr)
    if known is None:
        poly = sp.Poly(sp.expand(expr), *MARKS)
        known = {exps: int(c) if c.is_Integer else c for exps, c in poly.terms()}
        _remember_terms(expr, known)
    return dict(known)


def _remember_terms(expr, terms: dict) -> None:
    if len(_KNOWN_TERMS) > 256:
        _KNOWN_TERMS.clear()
    _KNOWN_TERMS[expr] = terms


def terms_at(terms: dict, point, modulus: int | None = None) -> int:
    """A polynomial in term form at ``point`` = (n, a, f), modulo ``modulus`` if given; the
    coefficients must be integers (unscaled paths).

    >>> terms_at({(0, 0, 0): 1, (1, 1, 0): 2}, (3, 5, 7))  # 1 + 2·n·a
    31
    """
    total = 0
    for (i, j, k), c in terms.items():
        if modulus:
            total += operator.index(c) * pow(point[0], i, modulus) * pow(point[1], j, modulus) \
                * pow(point[2], k, modulus)
        else:
            total += operator.index(c) * point[0]**i * point[1]**j * point[2]**k
    return total % modulus if modulus else total


def terms_to_expr(terms: dict) -> sp.Expr:
    return sp.Add(*(c * n**i * a**j * f**k for (i, j, k), c in terms.items() if c != 0))


def mark(graph, node):
    return ROLE_MARK.get(get_op(graph.nodes[node]["op"]).role, 1)


def block_terms(graph, scaled: bool = False) -> dict[tuple, object]:
    """T(n, a, f) of one block in term form (no sympy: what the statistics are read from).

    >>> from blockalg.graphs.variants import get
    >>> sorted(block_terms(get("pre-ln")).items())
    [((0, 0, 0), 1), ((1, 0, 1), 1), ((1, 1, 0), 1), ((2, 1, 1), 1)]
    """
    scale_of = (lambda u, v: edge_scale(graph, u, v)) if scaled else None
    return path_terms(graph, source(graph), sink(graph), lambda v: mark(graph, v), scale_of)


def block_polynomial(graph, scaled: bool = False) -> sp.Expr:
    """T(n, a, f) of one block, factored. ``scaled``: edge scales multiply in."""
    return factored(block_terms(graph, scaled))


def factored(terms: dict) -> sp.Expr:
    """The polynomial of ``terms``, factored when small (:func:`factor_if_small`); computed once
    per distinct polynomial (factoring is the costly step, and every analysis of a variant asks
    for the same few blocks)."""
    return _factored(frozenset(terms.items()))


@functools.lru_cache(maxsize=256)
def _factored(items: frozenset) -> sp.Expr:
    terms = dict(items)
    expr = factor_if_small(terms_to_expr(terms), max((sum(e) for e in terms), default=0), len(terms))
    _remember_terms(expr, terms)
    return expr


def factor_if_small(expr, degree: int, n_terms: int = 1) -> sp.Expr:
    """``expr`` factored when its degree is at most :data:`~blockalg.limits.MAX_FACTOR_DEGREE`
    and it has at most 64 terms, else as it is: factoring a degree-200 polynomial takes a minute,
    and the factored form is only for reading.

    >>> factor_if_small(t**2 + 2*t + 1, 2), factor_if_small(1 + 2 * t**200, 200)
    ((t + 1)**2, 2*t**200 + 1)
    """
    return sp.factor(expr) if degree <= MAX_FACTOR_DEGREE and n_terms <= 64 else expr


#: Sums of more terms than this are written straight from their terms (sympy's printers sort
#: and re-examine every term: seconds for a block of thousands).
PRINT_DIRECTLY = 64


def polynomial_text(expr, latex: bool = False, printer=None) -> str:
    """``expr`` as text (``sp.sstr``) or LaTeX; a path polynomial of many terms (in a product or a
    power) is written directly from its terms, highest degree first, in a fraction of the time.

    >>> polynomial_text(sp.Add(*(n**k for k in range(70))) ** 2)[:22]
    '(n**69 + n**68 + n**67'
    """
    printer = printer or (sp.latex if latex else sp.sstr)
    if not isinstance(expr, sp.Expr):  # a transfer matrix (several streams)
        return printer(expr)
    if expr.is_Add and len(expr.args) > PRINT_DIRECTLY and expr.free_symbols <= set(MARKS):
        return _terms_text(expr_to_terms(expr), latex)
    if expr.is_Pow and expr.base.is_Add and len(expr.base.args) > PRINT_DIRECTLY:
        base = polynomial_text(expr.base, latex, printer)
        exponent = printer(expr.exp)
        return f"\\left({base}\\right)^{{{exponent}}}" if latex else f"({base})**{exponent}"
    if expr.is_Mul and any(_is_big(arg) for arg in expr.args):
        parts = [polynomial_text(arg, latex, printer) for arg in expr.args]
        parts = [f"({part})" if arg.is_Add and len(arg.args) <= PRINT_DIRECTLY else part
                 for arg, part in zip(expr.args, parts)]
        return (" " if latex else "*").join(parts)
    return printer(expr)


def _is_big(expr) -> bool:
    base = expr.base if expr.is_Pow else expr
    return base.is_Add and len(base.args) > PRINT_DIRECTLY


def _terms_text(terms: dict, latex: bool) -> str:
    def monomial(exps, c):
        powers = [(s, e) for s, e in zip(("n", "a", "f"), exps) if e]
        if latex:
            body = " ".join(s if e == 1 else f"{s}^{{{e}}}" for s, e in powers)
        else:
            body = "*".join(s if e == 1 else f"{s}**{e}" for s, e in powers)
        if not body:
            return str(c)
        return body if c == 1 else f"{c} {body}" if latex else f"{c}*{body}"

    ordered = sorted(terms.items(), key=lambda item: (-sum(item[0]), [-e for e in item[0]]))
    return " + ".join(monomial(exps, c) for exps, c in ordered)


def final_polynomial(graph) -> sp.Expr:
    """The model's factor after the last block: ``n`` for a final norm, else 1."""
    final = final_norm(graph)
    return ROLE_MARK.get(final[0].role, 1) if final else sp.Integer(1)


def final_terms(graph) -> dict[tuple, int]:
    """:func:`final_polynomial` in term form."""
    final = final_norm(graph)
    return _times_mark({(0, 0, 0): 1}, ROLE_MARK.get(final[0].role, 1) if final else 1)


def degrees(poly_expr, marks) -> list[int]:
    """The total degree in ``marks`` of every monomial of ``poly_expr``."""
    index = [MARKS.index(m) for m in marks]
    return [sum(monom[i] for i in index) for monom in expr_to_terms(poly_expr)]


# Exact integer polynomials as coefficient lists, for distributions at concrete L.


def int_coefficients(expr) -> list[int]:
    p = sp.Poly(expr, t)
    coefficients = [int(c) for c in reversed(p.all_coeffs())]
    return coefficients


def int_poly_mul(p: list[int], q: list[int]) -> list[int]:
    """The product of two integer polynomials.

    >>> int_poly_mul([1, 1], [1, 2, 1])
    [1, 3, 3, 1]
    """
    out = [0] * (len(p) + len(q) - 1)
    for i, x in enumerate(p):
        if x:
            for j, y in enumerate(q):
                out[i + j] += x * y
    return out


def int_poly_pow(p: list[int], k: int) -> list[int]:
    """``p**k``; see :func:`int_power_product`.

    >>> int_poly_pow([0, 1, 1], 3)  # (t + t²)³ = t³(1 + t)³
    [0, 0, 0, 1, 3, 3, 1]
    """
    return int_power_product([(p, k)])


def int_power_product(factors) -> list[int]:
    """Π p_i**k_i for ``factors = [(p_i, k_i)]``, in O(deg · D) big-integer operations (D the
    degree of Π p_i), never multiplying two long polynomials: G = Π p_i**k_i satisfies
    Q·G' = R·G with Q = Π p_i and R = Σ k_i·p_i'·Π_{j≠i} p_j, a recurrence for G's coefficients
    (J. C. P. Miller's, for one factor). A 1000-layer distribution takes milliseconds.

    >>> int_power_product([([1, 1], 3), ([0, 2], 2)])  # (1 + t)³ · (2t)²
    [0, 0, 4, 12, 12, 4]
    """
    shift, reduced = 0, []
    for p, k in factors:
        if k == 0:
            continue
        first = next((i for i, c in enumerate(p) if c), None)
        if first is None:
            return [0]
        last = max(i for i, c in enumerate(p) if c)
        shift += first * k
        reduced.append((p[first:last + 1], k))
    Q, R = [1], [0]
    for p, k in reduced:
        derivative = [k * i * c for i, c in enumerate(p)][1:] or [0]
        R = _poly_add(int_poly_mul(R, p), int_poly_mul(derivative, Q))
        Q = int_poly_mul(Q, p)
    degree = sum((len(p) - 1) * k for p, k in reduced)
    G = [_prod(p[0] ** k for p, k in reduced)]
    for m in range(1, degree + 1):
        total = sum(R[j] * G[m - 1 - j] for j in range(min(len(R), m)))
        total -= sum(Q[j] * (m - j) * G[m - j] for j in range(1, min(len(Q) - 1, m) + 1))
        G.append(total // (Q[0] * m))
    return [0] * shift + G


def _poly_add(p: list[int], q: list[int]) -> list[int]:
    if len(p) < len(q):
        p, q = q, p
    return [x + (q[i] if i < len(q) else 0) for i, x in enumerate(p)]


def _prod(values) -> int:
    result = 1
    for v in values:
        result *= v
    return result
