"""Writes examples/tour.ipynb (the notebook is generated so its source reads as code review-able
Python; run this after editing the cells, the tests execute the notebook)."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    ("md", "# A tour of blockalg\n\nBlock variants as graphs, exact numbers from them, and the "
           "same graphs as torch models. Every object below displays itself."),
    ("code", "import sympy\nimport blockalg\nfrom blockalg import variants\nfrom blockalg.output import plots"),
    ("md", "## A block is a graph\n\n`variants.get` returns a `networkx.DiGraph` (displayed as its "
           "equations, a Mermaid diagram and a drawing)."),
    ("code", 'g = variants.get("pre-ln")\ng'),
    ("code", "sorted(g.nodes(data='op'))"),
    ("md", "## Exact numbers, side by side"),
    ("code", 'c = blockalg.compare(["pre-ln", "post-ln", "hybrid-ln"], preset="gpt2-small")\nc'),
    ("code", 'c["pre-ln"].values["params.total"]'),
    ("md", "Expressions stay sympy objects, with `n_layers` symbolic, ready for `sympy.latex`."),
    ("code", 'a = c["pre-ln"]\na.closed_form("params.total")'),
    ("code", 'sympy.latex(a.closed_form("flops.forward_matmul"), symbol_names=blockalg.graphs.symbols.LATEX_NAMES)'),
    ("md", "## Gradient paths"),
    ("code", "a.paths"),
    ("code", "a.paths.at(12)"),
    ("code", "fig = plots.path_distribution({x.name: x.paths for x in c.analyses}, 12)"),
    ("code", "fig = plots.params_by_component(c.analyses)"),
    ("md", "## Your own block\n\nGPT-J's parallel block with one shared LayerNorm, written in five "
           "lines: the analyses follow the graph."),
    ("code", 'b = blockalg.BlockBuilder("parallel", final_norm="layernorm")\nx = b.input()\n'
             'h = b.node("ln", "layernorm", x)\n'
             'b.output(b.node("add", "add", x, b.node("attn", "attention", h), b.node("ffn", "ffn", h)))\n'
             'parallel = b.graph()\nblockalg.analyze(parallel, preset="gpt2-small").paths.at(12)'),
    ("md", "## The same graph as a torch model, checked\n\nOn the meta device a model of any size "
           "is built in seconds, without memory."),
    ("code", 'from blockalg.model.check import check\n'
             '[(x.name, x.measured, x.ok) for x in check("pre-ln", preset="gpt2-small", device="meta")]'),
]


def tour() -> nbformat.NotebookNode:
    cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in CELLS]
    return new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                              "language": "python"}})


if __name__ == "__main__":
    path = Path(__file__).with_name("tour.ipynb")
    nbformat.write(tour(), path)
    print(f"wrote {path}")
