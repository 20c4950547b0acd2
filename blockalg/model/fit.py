"""Sizes measured at a few dimension points, written back as exact expressions in the dimensions.

The importer (:mod:`blockalg.model.importer`) builds a module at several *probe points* (values
of the dimensions it takes, chosen so that no two dimensions coincide) and reads every size it
needs: a weight's rows, a head count, an FFN's hidden width. :func:`fit` finds the expression
that gives that size at every point, trying in order

1. one term ``c·m``: ``m`` a product of at most two dimensions, ``c`` a rational;
2. two such terms (``(n_heads + 2·n_kv_heads)·d_head`` is ``n_heads·d_head + 2·n_kv_heads·d_head``);
3. ``c·m`` rounded up (or down) to a multiple ``k`` (LLaMA's FFN: 8/3·d_model rounded up to a
   multiple of 256),

and returns the first family's unique answer. Two answers that differ as functions are an
ambiguity, and :func:`fit` raises rather than guess; no answer raises too.

Identities between the symbols (``d_model = n_heads·d_head`` when the module derives ``d_head``)
make some answers the same function: ``identities`` maps a symbol to what it stands for, and
equal answers are kept once, in their shortest form.

>>> from blockalg.graphs.symbols import d_model, n_heads, d_head
>>> points = [{d_model: h * w, n_heads: h, d_head: w} for h, w in [(45, 590), (28, 938), (33, 852),
...                                                                    (40, 718)]]
>>> fit([4 * p[d_model] for p in points], points, identities={d_model: n_heads * d_head}).expr
4*d_model
>>> llama_ffn = lambda d: 256 * ((int(2 * 4 * d / 3) + 255) // 256)  # Meta's llama/model.py
>>> found = fit([llama_ffn(p[d_model]) for p in points], points)
>>> found.expr, found.description
(256*ceiling(d_model/96), '8/3·d_model rounded up to a multiple of 256')
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction

import sympy as sp

from ..errors import BlockalgError

#: Multipliers tried for a rounded size: p/q with q ≤ 4, up to 16 (8/3, 7/2, 4, ...).
ROUND_MULTIPLIERS = sorted({Fraction(p, q) for q in range(1, 5) for p in range(1, 16 * q + 1)})
#: Values of its symbol at which two rounded forms must agree to count as the same function.
EQUIVALENCE_RANGE = range(1, 1 << 16)


@dataclass(frozen=True)
class Fit:
    """An expression that gives the measured sizes, and how to say it in words."""

    expr: sp.Expr
    description: str


def monomials(symbols, degree: int = 2) -> list[sp.Expr]:
    """1, each symbol, and each product of ``degree`` or fewer of them.

    >>> from blockalg.graphs.symbols import d_model, d_ff
    >>> monomials([d_model, d_ff])
    [1, d_model, d_ff, d_model**2, d_ff*d_model, d_ff**2]
    """
    terms = [sp.Integer(1)]
    for k in range(1, degree + 1):
        terms += [sp.Mul(*combo) for combo in itertools.combinations_with_replacement(symbols, k)]
    return terms


def fit(values, points, identities=None, what: str = "size") -> Fit:
    """The expression in the symbols of ``points`` (dicts symbol → int) that takes ``values``
    at them; raises :class:`BlockalgError` naming ``what`` when there is none or more than one."""
    values = [int(v) for v in values]
    symbols = sorted({s for p in points for s in p}, key=lambda s: s.name)
    terms = monomials(symbols)
    at = [[int(term.xreplace(p)) for p in points] for term in terms]
    identities = identities or {}
    for family in (_one_term, _two_terms, _rounded):
        found = _distinct(family(values, terms, at, points), identities, points)
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            shown = " or ".join(str(f.expr) for f in found[:3])
            raise BlockalgError(f"{what} is ambiguous: {shown} all give {_shown(values, points)}")
    raise BlockalgError(f"{what} ({_shown(values, points)}) is not an expression blockalg can "
                        f"fit in the dimensions")


def _shown(values, points) -> str:
    names = sorted({s for p in points for s in p}, key=lambda s: s.name)
    return "; ".join(f"{v} at " + ", ".join(f"{s}={p[s]}" for s in names)
                     for v, p in zip(values, points))


def _one_term(values, terms, at, points):
    for term, column in zip(terms, at):
        c = Fraction(values[0], column[0])
        if c and all(c * m == v for m, v in zip(column, values)):
            yield Fit(sp.Rational(c.numerator, c.denominator) * term, "")


def _two_terms(values, terms, at, points):
    if len(points) < 3:  # two points always fit two terms: no evidence
        return
    for (t1, m1), (t2, m2) in itertools.combinations(zip(terms, at), 2):
        det = m1[0] * m2[1] - m1[1] * m2[0]
        if det == 0:
            continue
        c1 = Fraction(values[0] * m2[1] - values[1] * m2[0], det)
        c2 = Fraction(m1[0] * values[1] - m1[1] * values[0], det)
        if c1 and c2 and all(c1 * a + c2 * b == v for a, b, v in zip(m1, m2, values)):
            yield Fit(sp.Rational(c1.numerator, c1.denominator) * t1
                      + sp.Rational(c2.numerator, c2.denominator) * t2, "")


def _rounded(values, terms, at, points):
    if len(points) < 3:
        return
    step = math.gcd(*values)
    for term, column in zip(terms, at):
        if not term.is_Symbol:
            continue
        for k in (d for d in range(step, 1, -1) if step % d == 0):
            for c in ROUND_MULTIPLIERS:
                for up in (True, False):
                    if all(k * _round(c.numerator * m, c.denominator * k, up) == v
                           for m, v in zip(column, values)):
                        yield _RoundedFit(term, k, c, up)


def _round(numerator: int, denominator: int, up: bool) -> int:
    return -(-numerator // denominator) if up else numerator // denominator


@dataclass(frozen=True)
class _RoundedFit:
    """k·⌈c·m/k⌉ (``up``) or k·⌊c·m/k⌋ for one symbol m; compared as functions on integers."""

    symbol: sp.Symbol
    k: int
    c: Fraction
    up: bool

    @property
    def fit(self) -> Fit:
        rounding = sp.ceiling if self.up else sp.floor
        expr = self.k * rounding(sp.Rational(self.c.numerator, self.c.denominator) * self.symbol / self.k)
        c = str(self.c.numerator) if self.c.denominator == 1 else f"{self.c.numerator}/{self.c.denominator}"
        return Fit(expr, f"{c}·{self.symbol} rounded {'up' if self.up else 'down'} to a multiple "
                         f"of {self.k}")

    def values(self) -> tuple[int, ...]:
        return tuple(self.k * _round(self.c.numerator * m, self.c.denominator * self.k, self.up)
                     for m in EQUIVALENCE_RANGE)


def _distinct(fits, identities, points) -> list[Fit]:
    """``fits`` with each function kept once (the shortest form); stops past a few."""
    kept: list[tuple[Fit, object]] = []
    for candidate in fits:
        if isinstance(candidate, _RoundedFit):
            candidate, key = candidate.fit, (candidate.symbol, candidate.values())
        else:
            key = _canonical(candidate.expr, identities)
        for i, (other, other_key) in enumerate(kept):
            if _same(key, other_key):
                if _simpler(candidate, other):
                    kept[i] = (candidate, key)
                break
        else:
            kept.append((candidate, key))
        if len(kept) > 3:
            break
    return [f for f, _ in kept]


def _canonical(expr, identities):
    for _ in range(3):  # identities may refer to each other (d_ff -> d_model -> n_heads·d_head)
        expr = expr.xreplace(identities)
    return sp.expand(expr)


def _same(a, b) -> bool:
    if isinstance(a, tuple) or isinstance(b, tuple):
        return a == b
    return sp.expand(a - b) == 0


def _simpler(a: Fit, b: Fit) -> bool:
    return (sp.count_ops(a.expr), len(str(a.expr))) < (sp.count_ops(b.expr), len(str(b.expr)))
