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
from .terms import (
    a,
    degrees,
    expr_to_terms,
    f,
    final_polynomial,
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
        return (self.start.T * self.matrix**blocks * self.head)[0]


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
