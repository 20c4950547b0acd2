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
import operator
from fractions import Fraction

import sympy as sp

from ..errors import BlockalgError
from .symbols import DIMENSIONS, n_layers

_NAMES = {**DIMENSIONS, "L": n_layers}
MAX_EXPONENT = 64  # keeps '9**9**9' from hanging the parser
_FUNCTIONS = {"sqrt": sp.sqrt, "floor": sp.floor, "ceiling": sp.ceiling}
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.Pow: operator.pow}


def parse_expression(text) -> sp.Expr:
    """Return the sympy expression written in ``text`` (or the exact number, if given a number)."""
    if isinstance(text, sp.Basic):
        return text
    if isinstance(text, bool):
        raise BlockalgError(f"expression {text!r}: expected a number or an arithmetic expression")
    if isinstance(text, int):
        return sp.Integer(text)
    if isinstance(text, float):
        return sp.Rational(str(text))
    if not isinstance(text, str):
        raise BlockalgError(f"expression {text!r}: expected a number or an arithmetic expression")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise BlockalgError(f"expression {text!r}: not valid arithmetic") from None
    expr = _build(tree.body, text)
    if expr.is_number and not (expr.is_real and expr.is_finite):
        raise BlockalgError(f"expression {text!r} is {expr}: not a finite real number")
    return expr


def _build(node, text) -> sp.Expr:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return sp.Integer(node.value) if isinstance(node.value, int) else sp.Rational(str(node.value))
    if isinstance(node, ast.Name):
        if node.id not in _NAMES:
            raise BlockalgError(f"expression {text!r}: unknown symbol '{node.id}' "
                                f"(known: {', '.join(_NAMES)})")
        return _NAMES[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _build(node.left, text), _build(node.right, text)
        if isinstance(node.op, ast.Pow) and right.is_number and abs(right) > MAX_EXPONENT:
            raise BlockalgError(f"expression {text!r}: exponent {right} is too large")
        if isinstance(node.op, ast.Div):
            if right == 0:
                raise BlockalgError(f"expression {text!r}: division by zero")
            return left * right**-1
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _build(node.operand, text)
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS and len(node.args) == 1 \
                and not node.keywords:
            return _FUNCTIONS[node.func.id](_build(node.args[0], text))
        raise BlockalgError(f"expression {text!r}: calls are limited to sqrt(x), floor(x), ceiling(x)")
    raise BlockalgError(f"expression {text!r}: only numbers, dimension symbols, + - * / ** and "
                        f"sqrt() are allowed")


def numeric_value(text, dims) -> float:
    """The float value of an expression at concrete ``dims`` (for torch constants and inits).

    >>> numeric_value("(2*L)**(1/4)", {"n_layers": 8})
    2.0
    """
    expr = parse_expression(text)
    if expr.is_number:  # most edge scales: 1
        return float(expr)
    expr = expr.subs({DIMENSIONS[k]: v for k, v in dims.items() if k in DIMENSIONS})
    if not expr.is_number:
        raise BlockalgError(f"expression {text!r}: symbols {sorted(map(str, expr.free_symbols))} "
                            f"have no value")
    return float(expr)


def evaluate(expr, dims: dict[str, int], what: str = "expression", integer: bool = True):
    """The exact value of ``expr`` at ``dims``: a Python int (or, unless ``integer``, a Rational).

    Sums, products and integer powers of integers, rationals and dimension symbols, and
    Piecewise choices between them (every count, FLOP and memory formula), are computed in Python
    integers and fractions, without building sympy objects; anything else (``floor``, ``Max``,
    roots) goes in one ``xreplace`` of the dimensions as sympy Integers. Either way the value is
    exact.

    >>> from blockalg.graphs.symbols import d_model, n_layers
    >>> evaluate(3 * d_model**2, {"d_model": 768})
    1769472
    >>> evaluate(n_layers / 8, {"n_layers": 12}, integer=False)
    3/2
    >>> evaluate(sp.Piecewise((4**n_layers, sp.Eq(d_model, 768)), (0, True)), {"d_model": 768, "n_layers": 2})
    16
    """
    expr, values = sp.sympify(expr), {DIMENSIONS[k]: v for k, v in dims.items() if k in DIMENSIONS}
    try:
        value = _exact(expr, values)
    except _NotArithmetic:
        value = expr.xreplace({s: sp.Integer(v) for s, v in values.items()})
        value = int(value) if value.is_Integer else value
    else:
        value = value.numerator if value.denominator == 1 else sp.Rational(value.numerator,
                                                                           value.denominator)
    if isinstance(value, int):
        return value
    if not integer and isinstance(value, sp.Rational):
        return value
    raise BlockalgError(f"{what} = {value} is not {'an integer' if integer else 'a rational'} "
                        f"at these dimensions")


class _NotArithmetic(Exception):
    """An expression :func:`_exact` leaves to sympy."""


def _exact(expr, values) -> Fraction:
    """``expr`` at ``values`` (symbol -> int) as a Fraction, for +, ·, integer powers."""
    if expr.is_Symbol:
        if expr not in values:
            raise _NotArithmetic
        return Fraction(values[expr])
    if expr.is_Rational:
        return Fraction(int(expr.p), int(expr.q))
    if expr.is_Add:
        return sum((_exact(arg, values) for arg in expr.args), Fraction(0))
    if expr.is_Mul:
        product = Fraction(1)
        for arg in expr.args:
            product *= _exact(arg, values)
        return product
    if expr.is_Pow:
        base, exponent = _exact(expr.base, values), _exact(expr.exp, values)
        if exponent.denominator != 1 or (base == 0 and exponent < 0):
            raise _NotArithmetic  # a root, or sympy's zoo: let sympy say
        return base ** exponent.numerator
    if expr.is_Piecewise:
        piece = next((piece for piece, condition in expr.args if _holds(condition, values)), None)
        if piece is None:
            raise _NotArithmetic  # no condition holds: sympy's nan
        return _exact(piece, values)
    raise _NotArithmetic


_RELATIONS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
              ">": operator.gt, ">=": operator.ge}


def _holds(condition, values) -> bool:
    """Whether a Piecewise condition (relations of exact values, And, Or, Not) holds."""
    if condition is sp.true or condition is sp.false:
        return bool(condition)
    if isinstance(condition, sp.And):
        return all(_holds(c, values) for c in condition.args)
    if isinstance(condition, sp.Or):
        return any(_holds(c, values) for c in condition.args)
    if isinstance(condition, sp.Not):
        return not _holds(condition.args[0], values)
    if condition.is_Relational and condition.rel_op in _RELATIONS:
        return _RELATIONS[condition.rel_op](_exact(condition.lhs, values), _exact(condition.rhs, values))
    raise _NotArithmetic
