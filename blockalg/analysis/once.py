"""Formulas computed once per graph within a scope: one command asks for the same counts of
the same graph several times (the comparison table, then the memory rows built on them).

Outside :func:`formulas_once` nothing is kept, so a changed op registry (a test's monkeypatch,
a new op) is always seen; inside, each graph object's results are computed once.

>>> calls = []
>>> @once_per_graph
... def counts(graph):
...     calls.append(graph)
...     return {"total": len(calls)}
>>> graph = object()
>>> with formulas_once():
...     counts(graph) == counts(graph)
True
>>> len(calls), counts(graph)
(1, {'total': 2})
"""

from __future__ import annotations

import contextlib
import functools

from sympy.core.parameters import global_parameters

_SCOPES: list[dict] = []


@contextlib.contextmanager
def formulas_once():
    """A scope in which :func:`once_per_graph` functions compute once per graph object."""
    _SCOPES.append({})
    try:
        yield
    finally:
        _SCOPES.pop()


def once_per_graph(func):
    """``func(graph)`` (a dict, possibly of dicts) cached per graph object inside
    :func:`formulas_once`; each call gets its own copy, which the caller may change."""
    @functools.wraps(func)
    def wrapper(graph):
        if not _SCOPES:
            return func(graph)
        # NB: unevaluated trees (analyze.numbers_only) and canonical expressions kept apart
        key = (func.__qualname__, id(graph), global_parameters.evaluate)
        if key not in _SCOPES[-1]:
            _SCOPES[-1][key] = (graph, func(graph))  # NB: holding the graph keeps its id its own
        result = _SCOPES[-1][key][1]
        return {k: dict(v) if isinstance(v, dict) else v for k, v in result.items()}

    return wrapper
