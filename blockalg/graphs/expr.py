"""Safe parsing of the small arithmetic expressions a graph file may hold (edge scales, init gains).

Text from a file is parsed with :mod:`ast` and rebuilt node by node into sympy; nothing is ever
evaluated, so a file cannot run code. Allowed: integer and decimal literals (decimals become exact
rationals), the dimension symbols of :mod:`blockalg.graphs.symbols` (and ``L`` for ``n_layers``), ``+ - * / **``,
parentheses and ``sqrt``, ``floor``, ``ceiling``.

>>> parse_expression("(2*L)**(1/4)")
2**(1/4)*n_layers**(1/4)
>>> parse_expression("0.5")
1/2
>>> parse_expression("sqrt(-1)")
Traceback (most recent call last):
...
blockalg.errors.BlockalgError: expression 'sqrt(-1)' is I: not a finite real number
>>> parse_expression("__import__('os')")
Traceback (most recent call last):
...
blockalg.errors.BlockalgError: expression "__import__('os')": calls are limited to sqrt(x), floor(x), ceiling(x)
"""

import ast
import functools
import math
import operator
from fractions import Fraction

import sympy as sp

from ..errors import BlockalgError, quote
from ..limits import (
    MAX_DIMENSION,
    MAX_EXPRESSION_BITS,
    MAX_EXPRESSION_CHARS,
    MAX_EXPRESSION_DEPTH,
    MAX_EXPRESSION_NODES,
)
from . import magnitude
from .symbols import DIMENSIONS, n_layers

_NAMES = {**DIMENSIONS, "L": n_layers}
MAX_EXPONENT = 64  # keeps '9**9**9' from hanging the parser
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.Pow: operator.pow}
_SYMBOL_BITS = math.log2(MAX_DIMENSION) + 1e-9


def _rounding(function):
    """floor or ceiling, left unevaluated on a symbolic argument: sympy's simplification of
    floor(polynomial) queries assumptions for seconds; numbers are rounded at once."""
    return lambda arg: function(arg) if arg.is_number else function(arg, evaluate=False)


_FUNCTIONS = {"sqrt": sp.sqrt, "floor": _rounding(sp.floor), "ceiling": _rounding(sp.ceiling)}


def parse_expression(text) -> sp.Expr:
    """Return the sympy expression written in ``text`` (or the exact number, if given a number).

    Refused before anything is computed: text over :data:`~blockalg.limits.MAX_EXPRESSION_CHARS`
    characters, more syntax nodes or deeper nesting than the limits, a non-number exponent, and
    any expression whose value could exceed :data:`~blockalg.limits.MAX_EXPRESSION_BITS` bits
    with every dimension at its maximum (so ``((2**64)**64)**64`` is refused in microseconds).
    The result is canonical even where the caller builds unevaluated sympy trees
    (:func:`blockalg.analysis.analyze.numbers_only`).
    """
    return _parse_text(text) if isinstance(text, str) else _parse(text)


@functools.lru_cache(maxsize=4096)
def _parse_text(text: str) -> sp.Expr:
    # NB: remembered, because sympy clears its caches whenever the evaluation flag changes
    with sp.evaluate(True):
        return _parse(text)


def _parse(text) -> sp.Expr:
    if isinstance(text, sp.Basic):
        return text
    if isinstance(text, bool):
        raise BlockalgError(f"expression {text!r}: expected a number or an arithmetic expression")
    if isinstance(text, int):
        return _number(text, quote(text))
    if isinstance(text, float):
        if not math.isfinite(text):
            raise BlockalgError(f"expression {text!r}: not a finite real number")
        return _number(Fraction(repr(text)), quote(text))
    if not isinstance(text, str):
        raise BlockalgError(f"expression {quote(text, 60)}: expected a number or an arithmetic "
                            f"expression")
    shown = quote(text, 60)
    if len(text) > MAX_EXPRESSION_CHARS:
        raise BlockalgError(f"expression {shown}: longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, UnicodeError, RecursionError, MemoryError):
        raise BlockalgError(f"expression {shown}: not valid arithmetic") from None
    _check_size(tree.body, shown)
    expr, _ = _build(tree.body, shown)
    if expr.is_number and not (expr.is_real and expr.is_finite):
        raise BlockalgError(f"expression {shown} is {expr}: not a finite real number")
    return expr


def _check_size(root, shown) -> None:
    """At most MAX_EXPRESSION_NODES syntax nodes, nested at most MAX_EXPRESSION_DEPTH deep."""
    stack, count = [(root, 1)], 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_EXPRESSION_NODES or depth > MAX_EXPRESSION_DEPTH:
            raise BlockalgError(f"expression {shown}: more than {MAX_EXPRESSION_NODES} terms or "
                                f"nested deeper than {MAX_EXPRESSION_DEPTH}")
        stack += [(child, depth + 1) for child in ast.iter_child_nodes(node)
                  if not isinstance(child, (ast.operator, ast.unaryop, ast.expr_context))]


def _number(value, shown) -> sp.Expr:
    if sum(_size(value)) > MAX_EXPRESSION_BITS:
        raise BlockalgError(f"expression {shown}: the number is larger than "
                            f"{MAX_EXPRESSION_BITS} bits")
    return sp.Rational(value.numerator, value.denominator) if isinstance(value, Fraction) \
        else sp.Integer(value)


def _size(number) -> tuple[float, float]:
    """log2 of the numerator's and of the denominator's size of an int or Fraction (rounded
    up a little, so that they bound)."""
    number = Fraction(number)
    return (math.log2(abs(number.numerator)) + 1e-9 if number else 0.0,
            math.log2(number.denominator) + 1e-9)


def _combine(op, left, right, exponent=None) -> tuple[float, float]:
    """Bounds (N, D) with |numerator| ≤ 2^N and denominator ≤ 2^D of ``left op right``."""
    (n1, d1), (n2, d2) = left, right
    if op is ast.Pow:
        k = abs(int(exponent.p))  # a root only shrinks: bound a**(p/q) by a**p
        return (n1 * k, d1 * k) if exponent >= 0 else (d1 * k, n1 * k)
    if op in (ast.Add, ast.Sub):
        return max(n1 + d2, n2 + d1) + 1, d1 + d2
    if op is ast.Mult:
        return n1 + n2, d1 + d2
    return n1 + d2, d1 + n2  # division


def _build(node, shown) -> tuple[sp.Expr, tuple[int, int]]:
    """The expression of ``node`` and bounds on the bits of its value's numerator and
    denominator for any dimensions up to MAX_DIMENSION, checked before each operation so that
    no operation ever builds a number over MAX_EXPRESSION_BITS."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        if isinstance(node.value, float) and not math.isfinite(node.value):
            raise BlockalgError(f"expression {shown}: {node.value} is not a finite number")
        number = node.value if isinstance(node.value, int) else Fraction(repr(node.value))
        return _number(number, shown), _size(number)
    if isinstance(node, ast.Name):
        if node.id not in _NAMES:
            raise BlockalgError(f"expression {shown}: unknown symbol {quote(node.id)} "
                                f"(known: {', '.join(_NAMES)})")
        return _NAMES[node.id], (_SYMBOL_BITS, 0)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        (left, left_size), (right, right_size) = _build(node.left, shown), _build(node.right, shown)
        if isinstance(node.op, ast.Pow):
            if not right.is_Rational:
                raise BlockalgError(f"expression {shown}: exponents must be rational numbers")
            if abs(right) > MAX_EXPONENT:
                raise BlockalgError(f"expression {shown}: exponent {right} is too large")
            if left == 0 and right.is_negative:
                raise BlockalgError(f"expression {shown}: division by zero")
        if isinstance(node.op, ast.Div) and right == 0:
            raise BlockalgError(f"expression {shown}: division by zero")
        size = _combine(type(node.op), left_size, right_size, right)
        if sum(size) > MAX_EXPRESSION_BITS:
            raise BlockalgError(f"expression {shown}: its value could exceed "
                                f"{MAX_EXPRESSION_BITS} bits; too large")
        if isinstance(node.op, ast.Div):
            return left * right**-1, size
        return _BINARY[type(node.op)](left, right), size
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner, size = _build(node.operand, shown)
        return (-inner if isinstance(node.op, ast.USub) else inner), size
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS and len(node.args) == 1 \
                and not node.keywords:
            arg, (n, d) = _build(node.args[0], shown)
            return _FUNCTIONS[node.func.id](arg), (n, d) if node.func.id == "sqrt" else (n + 1, 0)
        raise BlockalgError(f"expression {shown}: calls are limited to sqrt(x), floor(x), ceiling(x)")
    raise BlockalgError(f"expression {shown}: only numbers, dimension symbols, + - * / ** and "
                        f"sqrt() are allowed")


def _values(dims) -> dict:
    return {DIMENSIONS[k]: v for k, v in dims.items() if k in DIMENSIONS}


def numeric_value(text, dims) -> float:
    """The float value of an expression at concrete ``dims`` (for torch constants and inits).

    >>> numeric_value("(2*L)**(1/4)", {"n_layers": 8})
    2.0
    """
    expr = parse_expression(text)
    if expr.is_number:  # most edge scales: 1; bounded by the parser
        return float(expr)
    missing = expr.free_symbols - set(_values(dims))
    if missing:
        raise BlockalgError(f"expression {quote(str(text), 60)}: symbols "
                            f"{sorted(map(str, missing))} have no value")
    number = magnitude.approximate(expr, _values(dims))
    if not isinstance(number, magnitude.mpmath.mpf) or not magnitude.mpmath.isfinite(number) \
            or abs(number) > 1e300:
        raise BlockalgError(f"expression {quote(str(text), 60)} = {number}: not a finite real number "
                            f"at these dimensions")
    return float(number)


def evaluate(expr, dims: dict[str, int], what: str = "expression", integer: bool = True):
    """The exact value of ``expr`` at ``dims``: a Python int (or, unless ``integer``, a Rational);
    an :class:`~blockalg.graphs.magnitude.Approx` when it has more than
    :data:`~blockalg.limits.MAX_EXACT_BITS` bits (the path count of a very deep model).

    Sums, products, powers and Piecewise choices (every count, FLOP and memory formula) are
    computed in Python integers and fractions, without building sympy objects, and each
    intermediate value's size is checked before it is computed, so nothing hangs; irrational
    values (roots) go through sympy.

    >>> from blockalg.graphs.symbols import d_model, n_layers
    >>> evaluate(3 * d_model**2, {"d_model": 768})
    1769472
    >>> evaluate(n_layers / 8, {"n_layers": 12}, integer=False)
    3/2
    >>> evaluate(sp.Piecewise((4**n_layers, sp.Eq(d_model, 768)), (0, True)), {"d_model": 768, "n_layers": 2})
    16
    """
    try:
        value = magnitude.value(expr, _values(dims))
    except BlockalgError as e:
        raise BlockalgError(f"{what}: {e}") from None
    if isinstance(value, (int, magnitude.Approx)):
        return value
    if not integer and isinstance(value, Fraction):
        return sp.Rational(value.numerator, value.denominator)
    raise BlockalgError(f"{what} = {value} is not {'an integer' if integer else 'a rational'} "
                        f"at these dimensions")
