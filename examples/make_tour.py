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
    ("md", "## Bring your own block\n\nA block written in PyTorch, here with the attention inline "
           "(no submodule) and the MLP in an `nn.Sequential`, is traced on the meta device and "
           "imported as a graph: closed forms, paths and comparisons follow. Its hidden width "
           "`4 * d_model` is not an argument: the import states it as a relation."),
    ("code", 'import torch.nn as nn\nimport torch.nn.functional as F\n\n\n'
             'class MyBlock(nn.Module):\n'
             '    def __init__(self, d_model, n_heads):\n'
             '        super().__init__()\n'
             '        self.n_heads = n_heads\n'
             '        self.ln_1, self.ln_2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)\n'
             '        self.qkv, self.proj = nn.Linear(d_model, 3 * d_model), nn.Linear(d_model, d_model)\n'
             '        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(approximate="tanh"),\n'
             '                                 nn.Linear(4 * d_model, d_model))\n\n'
             '    def attention(self, x):\n'
             '        b, s, d = x.shape\n'
             '        q, k, v = self.qkv(x).view(b, s, 3, self.n_heads, d // self.n_heads).transpose(1, 3).unbind(2)\n'
             '        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)\n'
             '        return self.proj(y.transpose(1, 2).reshape(b, s, d))\n\n'
             '    def forward(self, x):\n'
             '        x = x + self.attention(self.ln_1(x))\n'
             '        return x + self.mlp(self.ln_2(x))\n\n\n'
             'mine = blockalg.from_module(MyBlock)\n'
             'mine.graph["relations"]'),
    ("code", 'blockalg.compare(["pre-ln", mine], preset="gpt2-small")'),
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
