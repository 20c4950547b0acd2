"""Values of expressions at concrete dimensions, with the size of every intermediate integer
checked (by bit length) before it is computed.

Counts stay exact Python integers while they are cheap; a value that would need more than
:data:`~blockalg.limits.MAX_EXACT_BITS` bits (the number of gradient paths of a model a million
layers deep has 600,000 digits) is returned as an :class:`Approx`: 30 significant digits, its
log10 and its exact number of digits, computed in log space in microseconds.

>>> from blockalg.graphs.symbols import n_layers
>>> value(4**n_layers, {n_layers: 12})
16777216
>>> big = value(4**n_layers, {n_layers: 10**9})
>>> str(big), big.digits
('2.1280e+602059991', 602059992)
"""

from __future__ import annotations

import contextlib
import math
import operator
import sys
from dataclasses import dataclass
from fractions import Fraction

import mpmath
import sympy as sp

from ..errors import BlockalgError
from ..limits import MAX_EXACT_BITS

PRECISION = 50  # decimal digits of an Approx's arithmetic (log10 of 2^(2^63) has 19 digits)


class TooLarge(ArithmeticError):
    """An intermediate value would exceed the bit budget (raised before computing it)."""


class _NotRational(ArithmeticError):
    """The value is irrational (sqrt(2)) or the expression has a node the exact walk lacks."""


def bits(x) -> int:
    """Bits of an int, or of a Fraction's numerator and denominator together."""
    if isinstance(x, Fraction):
        return x.numerator.bit_length() + x.denominator.bit_length()
    return int(x).bit_length()


def _exact(expr, values, budget):
    if expr.is_Integer:
        return int(expr)
    if expr.is_Rational:
        return Fraction(int(expr.p), int(expr.q))
    if expr.is_Symbol:
        if expr not in values:
            raise BlockalgError(f"{expr} has no value")
        return values[expr]
    if expr.is_Piecewise:
        return _exact(_chosen_piece(expr, values, budget), values, budget)
    args = [_exact(arg, values, budget) for arg in expr.args] if not expr.is_Pow else None
    if expr.is_Add:
        return _normal(sum(args))
    if expr.is_Mul:
        if sum(bits(x) for x in args) > budget:
            raise TooLarge
        return _normal(math.prod(args))
    if expr.is_Pow:
        exponent = _exact(expr.exp, values, budget)
        if not isinstance(exponent, int):
            raise _NotRational
        base = _exact(expr.base, values, budget)
        if base in (0, 1) or exponent == 0:
            if base == 0 and exponent < 0:
                raise BlockalgError(f"{expr}: division by zero")
            return _normal(Fraction(base) ** exponent)
        if bits(base) * abs(exponent) > budget:
            raise TooLarge
        return _normal(Fraction(base) ** exponent)
    if isinstance(expr, sp.floor):
        return math.floor(args[0])
    if isinstance(expr, sp.ceiling):
        return math.ceil(args[0])
    if isinstance(expr, sp.Max):
        return max(args)
    if isinstance(expr, sp.Min):
        return min(args)
    if isinstance(expr, sp.Abs):
        return abs(args[0])
    raise _NotRational


_RELATIONS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
              ">": operator.gt, ">=": operator.ge}


def _chosen_piece(piecewise, values, budget):
    """The expression of the first piece whose condition holds (sympy's nan when none does)."""
    for piece, condition in piecewise.args:
        if _holds(condition, values, budget):
            return piece
    raise _NotRational


def _holds(condition, values, budget) -> bool:
    """Whether a Piecewise condition (relations of exact values, And, Or, Not) holds."""
    if condition is sp.true or condition is sp.false:
        return bool(condition)
    if isinstance(condition, (sp.And, sp.Or)):
        combine = all if isinstance(condition, sp.And) else any
        return combine(_holds(c, values, budget) for c in condition.args)
    if isinstance(condition, sp.Not):
        return not _holds(condition.args[0], values, budget)
    if condition.is_Relational and condition.rel_op in _RELATIONS:
        return _RELATIONS[condition.rel_op](_exact(condition.lhs, values, budget),
                                            _exact(condition.rhs, values, budget))
    raise _NotRational


def _normal(x):
    return x.numerator if isinstance(x, Fraction) and x.denominator == 1 else x


def _approx(expr, values) -> mpmath.mpf:
    if expr.is_Rational:
        return mpmath.mpf(int(expr.p)) / int(expr.q)
    if expr.is_Symbol:
        if expr not in values:
            raise BlockalgError(f"{expr} has no value")
        return mpmath.mpf(values[expr])
    args = [_approx(arg, values) for arg in expr.args]
    if expr.is_Add:
        return mpmath.fsum(args)
    if expr.is_Mul:
        return mpmath.fprod(args)
    if expr.is_Pow:
        return mpmath.power(*args)
    for kind, function in ((sp.floor, mpmath.floor), (sp.ceiling, mpmath.ceil), (sp.Abs, abs)):
        if isinstance(expr, kind):
            return function(args[0])
    if isinstance(expr, (sp.Max, sp.Min)):
        return (max if isinstance(expr, sp.Max) else min)(args)
    if expr.is_number:
        return mpmath.mpf(sp.N(expr, PRECISION))
    raise BlockalgError(f"cannot evaluate {type(expr).__name__} approximately")


def exact(expr, values: dict, max_bits: int = MAX_EXACT_BITS):
    """The exact value of ``expr`` (an int or a :class:`fractions.Fraction`) with ``values``
    (symbol → int) substituted; :class:`TooLarge` as soon as an intermediate value would exceed
    ``max_bits`` bits, before computing it."""
    return _exact(sp.sympify(expr), values, max_bits)


def approximate(expr, values: dict) -> mpmath.mpf:
    """The value of ``expr`` as an mpmath float of :data:`PRECISION` digits (any exponent)."""
    with mpmath.workdps(PRECISION):
        return +_approx(sp.sympify(expr), values)


def value(expr, values: dict, max_bits: int = MAX_EXACT_BITS):
    """An int or Fraction when it fits ``max_bits`` bits, else an :class:`Approx`; a sympy
    number when the value is irrational (``sqrt(2)``)."""
    expr = sp.sympify(expr)
    try:
        return exact(expr, values, max_bits)
    except TooLarge:
        try:
            return Approx(approximate(expr, values))
        except ZeroDivisionError:
            raise BlockalgError(f"{expr}: division by zero") from None
    except ZeroDivisionError:
        raise BlockalgError(f"{expr}: division by zero") from None
    except _NotRational:
        pass
    # NB: only irrational powers get here; the parser bounds their size (MAX_EXPRESSION_BITS).
    result = expr.xreplace({s: sp.Integer(v) for s, v in values.items()})
    if result.free_symbols:
        raise BlockalgError(f"{', '.join(sorted(map(str, result.free_symbols)))} "
                            f"{'has' if len(result.free_symbols) == 1 else 'have'} no value")
    if result.is_Integer:
        return int(result)
    if result.is_Rational:
        return Fraction(int(result.p), int(result.q))
    return result


@dataclass(frozen=True)
class Approx:
    """A number too large to compute exactly: ``mantissa``·10^``exponent`` to 30 significant
    digits. Prints as ``2.1280e+602059991``; ``digits`` is the exact number of digits of its
    integer part; JSON holds ``{"approx", "log10", "digits"}``.

    >>> a = Approx(mpmath.mpf(2) ** 100000)
    >>> a.digits, a.log10 > 30102
    (30103, True)
    >>> str(a - a), str(-a)
    ('0', '-9.9900e+30102')
    """

    number: mpmath.mpf

    @property
    def log10(self) -> float:
        """log10 of the absolute value (-inf for zero)."""
        if not self.number:
            return float("-inf")
        with mpmath.workdps(PRECISION):
            return float(mpmath.log10(abs(self.number)))

    def _split(self) -> tuple[mpmath.mpf, int]:
        with mpmath.workdps(PRECISION):
            log = mpmath.log10(abs(self.number))
            exponent = int(mpmath.floor(log))
            mantissa = mpmath.power(10, log - exponent)
        if mantissa >= mpmath.mpf("9.99995"):  # rounds up to 10.0000
            mantissa, exponent = mantissa / 10, exponent + 1
        return mantissa, exponent

    @property
    def digits(self) -> int:
        """Digits of the integer part (1 for |x| < 10)."""
        if abs(self.number) < 10:
            return 1
        return self._split()[1] + 1

    def __str__(self) -> str:
        if not self.number:
            return "0"
        if mpmath.mpf("1e-4") <= abs(self.number) < mpmath.mpf("1e15"):  # a mean, say
            return f"{float(self.number):.12g}"
        mantissa, exponent = self._split()
        sign = "-" if self.number < 0 else ""
        return f"{sign}{float(mantissa):.4f}e{exponent:+d}"

    def to_json(self) -> dict:
        return {"approx": str(self), "log10": self.log10, "digits": self.digits}

    def __neg__(self):
        return Approx(-self.number)

    def __sub__(self, other):
        with mpmath.workdps(PRECISION):
            return Approx(self.number - _mp(other))

    def __rsub__(self, other):
        with mpmath.workdps(PRECISION):
            return Approx(_mp(other) - self.number)

    def __add__(self, other):
        with mpmath.workdps(PRECISION):
            return Approx(self.number + _mp(other))

    __radd__ = __add__

    def __lt__(self, other):
        return self.number < _mp(other)

    def __gt__(self, other):
        return self.number > _mp(other)

    def __eq__(self, other):
        return isinstance(other, (Approx, int, Fraction)) and self.number == _mp(other)

    def __hash__(self):
        return hash(self.number)


@contextlib.contextmanager
def long_int_text():
    """Inside the block, ints of any length convert to and from decimal text (Python refuses
    more than 4,300 digits by default; blockalg's exact values have at most MAX_EXACT_BITS)."""
    limit = getattr(sys, "get_int_max_str_digits", lambda: 0)()
    if limit:
        sys.set_int_max_str_digits(0)
    try:
        yield
    finally:
        if limit:
            sys.set_int_max_str_digits(limit)


def exact_text(value) -> str:
    """``str`` of an int or Fraction, however many digits.

    >>> len(exact_text(Fraction(10**5000, 3)))
    5003
    """
    with long_int_text():
        return str(value)


def _mp(x) -> mpmath.mpf:
    if isinstance(x, Approx):
        return x.number
    if isinstance(x, Fraction):
        return mpmath.mpf(x.numerator) / x.denominator
    return mpmath.mpf(int(x))
