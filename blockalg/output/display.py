"""Notebook display: how graphs, analyses, comparisons and path statistics show themselves.

The objects live in :mod:`blockalg.graphs` and :mod:`blockalg.analysis`, which know nothing of
rendering; this module holds one function per (type, MIME type) and registers them with IPython's
display formatters (``formatter.for_type``) when blockalg is imported inside IPython. Outside a
notebook the same functions render on demand:

>>> from blockalg import analyze
>>> print(markdown(analyze("pre-ln", preset="tiny")).splitlines()[0])
| quantity | value | closed form |
"""

from __future__ import annotations

import sys

import sympy as sp

from ..analysis.analyze import Analysis, Comparison, quantity_keys
from ..analysis.paths import PathStats
from ..graphs.graph import BlockGraph
from .render import Table, format_value, graph_to_mermaid
from .tables import comparison_table


def graph_markdown(graph: BlockGraph) -> str:
    """The block's name, equations, relations (a block imported from PyTorch: the dimensions it
    sets itself) and Mermaid diagram."""
    equations = "; ".join(graph.graph.get("equations", []))
    head = f"**{graph.graph.get('name', 'block')}**" + (f": {equations}" if equations else "")
    relations = graph.graph.get("relations") or {}
    if relations:
        head += "\n\nRelations: " + ", ".join(f"`{k} = {v}`" for k, v in relations.items())
    return f"{head}\n\n```mermaid\n{graph_to_mermaid(graph)}\n```"


def graph_svg(graph: BlockGraph) -> str:
    """The block drawn by :func:`blockalg.output.plots.block_drawing`, as SVG text."""
    from .plots import block_drawing, figure_bytes, pyplot

    fig = block_drawing(graph)
    try:
        return figure_bytes(fig, "svg").decode("utf-8")
    finally:
        pyplot().close(fig)


def analysis_markdown(analysis: Analysis) -> str:
    """Every quantity: exact value and closed form."""
    rows = [[key, format_value(analysis.values[key]), f"${sp.latex(analysis.closed_form(key))}$"]
            for key in analysis.expressions]
    return Table(f"{analysis.name} at {analysis.preset}", ["quantity", "value", "closed form"],
                 rows).to_markdown()


def comparison_markdown(comparison: Comparison) -> str:
    """The comparison table of ``blockalg compare``."""
    return comparison_table(comparison.analyses, quantity_keys()).to_markdown()


def paths_markdown(stats: PathStats) -> str:
    """T(n, a, f), the model's generating function and each statistic's closed form."""
    rows = "\n".join(f"| {key} | ${sp.latex(expr)}$ |" for key, expr in stats.expressions.items())
    return (f"T(n, a, f) = ${sp.latex(stats.block)}$; model: ${sp.latex(stats.generating_function)}$"
            f"\n\n| statistic | closed form |\n| --- | --- |\n{rows}")


#: MIME type -> {type: renderer}: what a notebook shows for each object.
RENDERERS = {
    "text/markdown": {BlockGraph: graph_markdown, Analysis: analysis_markdown,
                      Comparison: comparison_markdown, PathStats: paths_markdown},
    "image/svg+xml": {BlockGraph: graph_svg},
}


def markdown(obj) -> str:
    """The Markdown a notebook shows for ``obj``."""
    return next(render(obj) for cls, render in RENDERERS["text/markdown"].items()
                if isinstance(obj, cls))


def register(shell=None) -> bool:
    """Register every renderer with the running IPython shell (``shell`` or ``get_ipython()``);
    False when there is none."""
    if shell is None:
        ipython = sys.modules.get("IPython")
        shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return False
    for mime, renderers in RENDERERS.items():
        formatter = shell.display_formatter.formatters[mime]
        for cls, render in renderers.items():
            formatter.for_type(cls, render)
    return True
