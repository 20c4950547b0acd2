"""Rendering: one :class:`Table` type written as text, Markdown, LaTeX (booktabs) or CSV, and the
drawings of a block graph (text, Mermaid, Graphviz dot).

>>> t = Table("demo", ["variant", "params"], [["pre-ln", "124,439,808"]])
>>> print(t.to_markdown())
| variant | params |
| --- | ---: |
| pre-ln | 124,439,808 |
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

import networkx as nx

from ..graphs.ops import get_op

FORMATS = ("table", "markdown", "latex", "csv")


@dataclass
class Table:
    """A titled table of already-formatted cells. ``align`` has one letter per column (``l`` or
    ``r``); by default the first column is left-aligned and the rest right-aligned."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    align: str = ""

    def __post_init__(self):
        self.align = self.align or "l" + "r" * (len(self.headers) - 1)

    def render(self, fmt: str) -> str:
        return {"table": self.to_text, "markdown": self.to_markdown, "latex": self.to_latex,
                "csv": self.to_csv}[fmt]()

    def to_text(self) -> str:
        widths = [max(len(str(r[i])) for r in [self.headers, *self.rows]) for i in range(len(self.headers))]

        def line(cells):
            return "  ".join(str(c).ljust(w) if a == "l" else str(c).rjust(w)
                             for c, w, a in zip(cells, widths, self.align)).rstrip()

        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        body = [line(self.headers), rule, *(line(r) for r in self.rows)]
        return "\n".join([self.title, *body, *self.notes])

    def to_markdown(self) -> str:
        align = ["---" if a == "l" else "---:" for a in self.align]
        lines = [_md_row(self.headers), _md_row(align), *(_md_row(r) for r in self.rows)]
        return "\n".join(lines + ([""] + self.notes if self.notes else []))

    def to_latex(self, thousands: str = ",") -> str:
        """A booktabs tabular; ``thousands`` replaces the separator in integers (e.g. ``\\,``)."""
        def cell(text):
            escaped = latex_escape(text)
            return escaped.replace(",", thousands) if _is_formatted_int(str(text)) else escaped

        lines = [f"% {self.title}", f"\\begin{{tabular}}{{{self.align}}}", "\\toprule",
                 " & ".join(map(latex_escape, self.headers)) + r" \\", "\\midrule",
                 *(" & ".join(map(cell, r)) + r" \\" for r in self.rows),
                 "\\bottomrule", "\\end{tabular}"]
        return "\n".join(lines)

    def to_csv(self) -> str:
        """CSV with plain integers (no thousands separators), so a spreadsheet reads numbers."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.headers)
        writer.writerows([[c.replace(",", "") if _is_formatted_int(str(c)) else c for c in row]
                          for row in self.rows])
        return out.getvalue().rstrip("\n")


def _is_formatted_int(cell: str) -> bool:
    """``'1,234'``, ``'+0'``, ``'-1,536'``: an integer as :func:`format_int` writes it."""
    body = cell.lstrip("+-")
    return bool(body) and body.replace(",", "").isdigit()


def _md_row(cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    r"""Escape LaTeX's special characters, except inside ``$...$`` maths.

    >>> latex_escape("params.per_block")
    'params.per\\_block'
    """
    parts = str(text).split("$")
    for i in range(0, len(parts), 2):  # even parts lie outside $...$
        parts[i] = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in parts[i])
    return "$".join(parts)


def format_int(value: int, signed: bool = False) -> str:
    """``1234567`` → ``'1,234,567'`` (``'+1,234,567'`` when ``signed``)."""
    return f"{value:+,}" if signed else f"{value:,}"


LONG_INT_DIGITS = 25


def format_value(value, signed: bool = False) -> str:
    """A number for a table: ints with thousands separators (from 25 digits on, in scientific form
    with the digit count; the JSON output stays exact), rationals as ``p/q``.

    >>> import sympy
    >>> format_value(1234), format_value(sympy.Rational(7, 2)), format_value(sympy.Rational(-1, 3), True)
    ('1,234', '7/2', '-1/3')
    """
    if isinstance(value, int) or getattr(value, "is_Integer", False):
        if abs(int(value)) >= 10**LONG_INT_DIGITS:  # a table cell, not a record: JSON keeps it exact
            digits = str(abs(int(value)))
            sign = "-" if value < 0 else "+" if signed else ""
            return f"{sign}{digits[0]}.{digits[1:5]}e+{len(digits) - 1} ({len(digits)} digits)"
        return format_int(int(value), signed)
    text = str(value)
    return f"+{text}" if signed and value >= 0 else text


# ---------------------------------------------------------------------------------------------
# Drawings of a block graph.


def _label(graph, node) -> str:
    data = graph.nodes[node]
    op = get_op(data["op"])
    attrs = {k: v for k, v in data.items() if k != "op" and v != op.attributes[k][0]}
    extra = ", ".join(f"{k}={v}" for k, v in attrs.items())
    return f"{op.name}({extra})" if extra else op.name


def _edge_label(graph, u, v) -> str:
    scale = graph.edges[u, v].get("scale")
    return "" if scale is None else f"×{scale}"


def _segment_lines(graph):
    """For a stack: each segment's block, titled with its layers."""
    from ..graphs.graph import segments

    return [(f"{block.graph.get('name', 'block')} × {count}", block) for block, count in segments(graph)]


def graph_to_text(graph) -> str:
    """One line per node in forward order: ``name = op(inputs)``; a stack lists its segments."""
    if graph.graph.get("segments"):
        parts = [f"stack {graph.graph.get('name', '')}"]
        for title, block in _segment_lines(graph):
            parts += [f"segment: {title}", *graph_to_text(block).splitlines()[1:-1]]
        meta = {k: graph.graph.get(k) for k in ("final_norm", "positions", "tied_embeddings", "init")}
        return "\n".join(parts + ["model: " + ", ".join(f"{k}={v}" for k, v in meta.items())])
    lines = [f"block {graph.graph.get('name', 'block')}"]
    for node in nx.topological_sort(graph):
        inputs = ", ".join(f"{u}{_edge_label(graph, u, node)}" for u in graph.predecessors(node))
        lines.append(f"  {node} = {_label(graph, node)}({inputs})" if inputs
                     else f"  {node} = {_label(graph, node)}")
    meta = {k: graph.graph.get(k) for k in ("final_norm", "positions", "tied_embeddings", "init")}
    if graph.graph.get("streams"):
        meta["streams"] = graph.graph["streams"]
    lines.append("model: " + ", ".join(f"{k}={v}" for k, v in meta.items()))
    if graph.graph.get("head") is not None:
        lines += ["head:", *graph_to_text(graph.graph["head"]).splitlines()[1:-1]]
    relations = graph.graph.get("relations") or {}
    if relations:
        lines.append("relations: " + ", ".join(f"{k} = {v}" for k, v in relations.items()))
    lines += [f"note: {note}" for note in graph.graph.get("notes") or []]
    return "\n".join(lines)


def graph_to_mermaid(graph) -> str:
    """A Mermaid flowchart (renders on GitHub and in Jupyter with the mermaid extension); a stack
    draws one subgraph per segment."""
    if graph.graph.get("segments"):
        lines = ["flowchart TD"]
        for i, (title, block) in enumerate(_segment_lines(graph)):
            lines.append(f'    subgraph s{i}["{title}"]')
            for line in graph_to_mermaid(block).splitlines()[1:]:
                lines.append("    " + line.replace("    ", f"    s{i}_", 1).replace("--> ", f"--> s{i}_")
                             .replace("| ", f"| s{i}_"))
            lines.append("    end")
        return "\n".join(lines)
    lines = ["flowchart TD"]
    for node in nx.topological_sort(graph):
        lines.append(f'    {node}["{node}: {_label(graph, node)}"]')
    for u, v in graph.edges:
        label = _edge_label(graph, u, v)
        lines.append(f"    {u} -->|{label}| {v}" if label else f"    {u} --> {v}")
    return "\n".join(lines)


def graph_to_dot(graph) -> str:
    """Graphviz dot source (a stack: the blocks of its segments, one after the other)."""
    if graph.graph.get("segments"):
        return "\n".join(graph_to_dot(block) for _, block in _segment_lines(graph))
    name = graph.graph.get("name", "block")
    lines = [f'digraph "{name}" {{', "    rankdir=TB;", "    node [shape=box];"]
    for node in nx.topological_sort(graph):
        lines.append(f'    {node} [label="{node}\\n{_label(graph, node)}"];')
    for u, v in graph.edges:
        label = _edge_label(graph, u, v)
        lines.append(f'    {u} -> {v} [label="{label}"];' if label else f"    {u} -> {v};")
    lines.append("}")
    return "\n".join(lines)
