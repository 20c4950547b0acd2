"""Several residual streams (ResiDual): a transfer matrix instead of a polynomial.

``M[i][j]`` counts the paths from stream i entering a block to stream j leaving it; the model's
generating function is start · M**L · head, still a closed form in L.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import sympy as sp

from ..errors import BlockalgError
from ..graphs.graph import model_streams, stream_nodes
from ..graphs.ops import INPUT, OUTPUT
from ..graphs.symbols import n_layers
from ..limits import MAX_STREAMS
from .terms import (
    a,
    degrees,
    expr_to_terms,
    f,
    final_polynomial,
    int_coefficients,
    mark,
    n,
    path_polynomial,
    power,
    t,
    terms_product,
)


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
        return (self.start.T * self.power(blocks) * self.head)[0]

    def power(self, blocks=n_layers) -> sp.Matrix:
        """M**blocks in closed form for two streams (M upper triangular, so no eigenvectors to
        find): the corner is B·Σ_r A^r·D^(L-1-r) = B·(A^L - D^L)/(A - D), or B·L·A^(L-1) when
        the diagonal entries agree."""
        M = self.matrix
        if M.rows == 1:
            return sp.Matrix([[M[0, 0] ** blocks]])
        A, B, D = M[0, 0], M[0, 1], M[1, 1]
        if sp.expand(A - D) == 0:
            corner = B * blocks * A ** (blocks - 1)
        else:
            corner = B * (A**blocks - D**blocks) / (A - D)
        return sp.Matrix([[A**blocks, corner], [0, D**blocks]])


def _paths_or_zero(graph, start, end) -> sp.Expr:
    try:
        return sp.factor(path_polynomial(graph, start, end, lambda v: mark(graph, v)))
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
    if len(streams) > MAX_STREAMS or any(matrix[i, j] != 0 for i in range(len(streams))
                                         for j in range(i)):
        raise BlockalgError(f"path statistics need at most {MAX_STREAMS} streams, none feeding "
                            f"an earlier one")
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
        return None if expr == 0 else pick(degrees(expr, marks))

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


def stream_statistics(system: StreamSystem, layer) -> tuple[dict, list]:
    """The closed forms of a multi-stream model's path statistics (start · M**L · head) and
    its two distributions' generating functions; ``layer`` is the symbol of a layer index."""
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
    return expressions, distributions


def stream_terms(system: StreamSystem, layers: int) -> dict:
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


def stream_distribution(system: StreamSystem, layers: int, marks) -> dict[int, int]:
    """Number of paths by degree in ``marks`` (``(a, f)``: sublayers; ``(n,)``: norms) at
    ``layers`` blocks: start · M**layers · head with each entry collapsed to a polynomial in
    one variable, one block at a time. The polynomials are packed into single integers, one
    slot of ``B`` bits per coefficient (B above the total path count, so slots never overflow):
    multiplying by a block's small polynomial is then a few shifts and adds of big integers.

    >>> from blockalg.graphs.variants import get
    >>> sum(stream_distribution(stream_system(get("resi-dual")), 3, (a, f)).values())
    127
    """
    def collapse(expr):
        if expr == 0:
            return [0]
        return int_coefficients(sp.expand(sp.sympify(expr).subs({m: t for m in marks})
                                          .subs({x: 1 for x in (n, a, f)})))

    k = system.matrix.rows
    matrix = [[collapse(system.matrix[i, j]) for j in range(k)] for i in range(k)]
    head = [collapse(system.head[j]) for j in range(k)]
    start = [1 if system.start[i] else 0 for i in range(k)]
    slot = _count(start, matrix, head, layers).bit_length() + 1
    slot += -slot % 4  # whole hex digits, to unpack by slicing text

    def times(x: int, poly: list[int]) -> int:
        return sum(c * (x << (slot * d)) for d, c in enumerate(poly) if c)

    vector = start
    for _ in range(layers):
        vector = [sum(times(vector[i], matrix[i][j]) for i in range(k)) for j in range(k)]
    total = sum(times(vector[j], head[j]) for j in range(k))
    text, width = format(total, "x"), slot // 4
    text = text.zfill(-(-len(text) // width) * width)
    coefficients = [int(text[i:i + width], 16) for i in range(0, len(text), width)][::-1]
    return {degree: c for degree, c in enumerate(coefficients) if c}


def _count(start, matrix, head, layers: int) -> int:
    """start · M(1)**layers · head: the number of paths (integer matrices, repeated squaring)."""
    k = len(start)
    ones = [[sum(matrix[i][j]) for j in range(k)] for i in range(k)]

    def product(x, y):
        return [[sum(x[i][m] * y[m][j] for m in range(k)) for j in range(k)] for i in range(k)]

    result = power(ones, layers, product, [[int(i == j) for j in range(k)] for i in range(k)])
    return sum(start[i] * result[i][j] * sum(head[j]) for i in range(k) for j in range(k))
