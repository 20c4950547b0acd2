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
import json
import re
import textwrap
from dataclasses import dataclass, field
from fractions import Fraction

import mpmath
import networkx as nx

from ..graphs.magnitude import Approx, long_int_text
from ..graphs.ops import get_op

FORMATS = ("table", "markdown", "latex", "csv")
#: Terminal tables are laid out to fit this many columns.
TEXT_WIDTH = 100
#: A left-aligned text column is wrapped down to this width, no further (then the table is split
#: into blocks of columns instead).
WRAP_MIN = 40
GAP = "  "


@dataclass
class Table:
    """A titled table of already-formatted cells. ``align`` has one letter per column (``l`` or
    ``r``); by default the first column is left-aligned and the rest right-aligned.

    ``caption`` and ``label`` are the LaTeX float's (default: the title and the notes; a label
    made from the title). ``groups`` lists the sizes of the groups of columns after the first
    that a terminal layout keeps together when it splits a wide table into blocks (default: every
    column alone); ``wrap_min`` is the narrowest a text column is wrapped to.
    """

    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    align: str = ""
    caption: str = ""
    label: str = ""
    groups: list[int] = field(default_factory=list)
    wrap_min: int = WRAP_MIN

    def __post_init__(self):
        self.align = self.align or "l" + "r" * (len(self.headers) - 1)

    def render(self, fmt: str, *, float_: bool = True, thousands: str = r"\,") -> str:
        """The table in ``fmt``; for LaTeX a ``table`` float unless ``float_`` is False."""
        if fmt == "latex":
            return self.to_latex(thousands, float_=float_)
        return {"table": self.to_text, "markdown": self.to_markdown, "csv": self.to_csv}[fmt]()

    # -- text --------------------------------------------------------------------------------

    def to_text(self, width: int = TEXT_WIDTH) -> str:
        """Aligned columns within ``width`` characters: long text cells wrap (down to
        :data:`WRAP_MIN`); when the columns still do not fit, they are split into blocks, each
        repeating the first column.

        >>> t = Table("wide", ["k", "a", "b"], [["x", "1" * 30, "2" * 30]])
        >>> print(t.to_text(width=40))
        wide
        k                               a
        ---------------------------------
        x  111111111111111111111111111111
        <BLANKLINE>
        k                               b
        ---------------------------------
        x  222222222222222222222222222222
        """
        lines = _wrap(self.title, width)
        blocks = self._column_blocks(width)
        for i, columns in enumerate(blocks):
            lines += ([""] if i else []) + self._text_block([0, *columns], width)
        for note in self.notes:
            lines += _wrap(note, width)
        return "\n".join(lines)

    def _natural(self, i: int) -> int:
        return max(len(line) for r in [self.headers, *self.rows] for line in str(r[i]).split("\n"))

    def _narrowest(self, i: int) -> int:
        """The width column ``i`` may be wrapped to: its natural width if it does not wrap (the
        first column, right-aligned ones), else ``wrap_min`` or its longest word."""
        natural = self._natural(i)
        if self.align[i] != "l" or i == 0:
            return natural
        longest_word = max((len(w) for r in [self.headers, *self.rows] for w in str(r[i]).split()),
                           default=0)
        return min(natural, max(self.wrap_min, min(longest_word, WRAP_MIN)))

    def _column_blocks(self, width: int) -> list[list[int]]:
        """The columns after the first, in blocks that fit ``width`` next to the first column."""
        sizes = self.groups or [1] * (len(self.headers) - 1)
        groups, start = [], 1
        for size in sizes:
            groups.append(list(range(start, start + size)))
            start += size
        first = self._natural(0)
        blocks, current, used = [], [], first
        for group in groups:
            need = sum(len(GAP) + self._narrowest(i) for i in group)
            if current and used + need > width:
                blocks.append(current)
                current, used = [], first
            current += group
            used += need
        return blocks + [current] if current else blocks or [[]]

    def _text_block(self, columns: list[int], width: int) -> list[str]:
        widths = {i: self._natural(i) for i in columns}
        excess = sum(widths.values()) + len(GAP) * (len(columns) - 1) - width
        while excess > 0:  # narrow the widest wrappable column, one character at a time
            wrappable = [i for i in columns if widths[i] > self._narrowest(i)]
            if not wrappable:
                break
            widest = max(wrappable, key=lambda i: widths[i])
            widths[widest] -= 1
            excess -= 1

        def cell_lines(i, text):
            return [part for line in str(text).split("\n") for part in _wrap(line, widths[i])]

        def render(cells):
            wrapped = [cell_lines(i, c) for i, c in zip(columns, cells)]
            out = []
            for k in range(max(len(w) for w in wrapped)):
                parts = [(w[k] if k < len(w) else "") for w in wrapped]
                out.append(GAP.join(p.ljust(widths[i]) if self.align[i] == "l" else p.rjust(widths[i])
                                    for p, i in zip(parts, columns)).rstrip())
            return out

        picked = [[row[i] for i in columns] for row in self.rows]
        body = [render(cells) for cells in picked]
        # mostly multi-line rows (closed forms): a blank line between rows; else the indented
        # continuation lines are enough
        spaced = 2 * sum(len(lines) > 1 for lines in body) > len(body)
        rule = "-" * (sum(widths.values()) + len(GAP) * (len(columns) - 1))
        lines = [*render([self.headers[i] for i in columns]), rule]
        for k, row_lines in enumerate(body):
            lines += ([""] if spaced and k else []) + row_lines
        return lines

    # -- Markdown, LaTeX, CSV -----------------------------------------------------------------

    def to_markdown(self) -> str:
        """A Markdown (GitHub) table; the notes follow as paragraphs."""
        align = ["---" if a == "l" else "---:" for a in self.align]
        lines = [_md_row(self.headers), _md_row(align), *(_md_row(r) for r in self.rows)]
        return "\n".join(lines + ([""] + self.notes if self.notes else []))

    def to_latex(self, thousands: str = r"\,", *, float_: bool = True) -> str:
        r"""A booktabs tabular inside a ``table`` float with a caption and a label (a bare tabular
        with the caption as a comment when ``float_`` is False). It needs only ``booktabs``:
        symbols are in math mode, minus signs are ``$-$``, and ``thousands`` (a thin space
        ``\,`` by default) groups the digits of integers.

        >>> print(Table("Δ", ["quantity", "Δ"], [["params", "-1,536"]], label="tab:d").to_latex())
        \begin{table}[htbp]
        \centering
        \caption{$\Delta$}
        \label{tab:d}
        \begin{tabular}{lr}
        \toprule
        quantity & $\Delta$ \\
        \midrule
        params & $-$1\,536 \\
        \bottomrule
        \end{tabular}
        \end{table}
        """
        tabular = [f"\\begin{{tabular}}{{{self.align}}}", "\\toprule",
                   " & ".join(map(latex_escape, self.headers)) + r" \\", "\\midrule",
                   *(" & ".join(latex_cell(c, thousands) for c in r) + r" \\" for r in self.rows),
                   "\\bottomrule", "\\end{tabular}"]
        caption = latex_escape(self.caption or " ".join([self.title, *self.notes]))
        if not float_:
            return "\n".join([f"% {line}" for line in caption.splitlines()] + tabular)
        return "\n".join([r"\begin{table}[htbp]", r"\centering", f"\\caption{{{caption}}}",
                          f"\\label{{{self.label or label_of(self.title)}}}", *tabular,
                          r"\end{table}"])

    def to_csv(self) -> str:
        """CSV with plain integers (no thousands separators), so a spreadsheet reads numbers."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.headers)
        writer.writerows([[c.replace(",", "") if _is_formatted_int(str(c)) else c for c in row]
                          for row in self.rows])
        return out.getvalue().rstrip("\n")


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters, continuation lines indented by two
    (unless a word would not fit then)."""
    if len(text) <= width:
        return [text]
    longest = max((len(w) for w in text.split()), default=0)
    indent = "  " if longest + 2 <= width else ""
    return textwrap.wrap(text, width, subsequent_indent=indent, break_on_hyphens=False) or [""]


def label_of(text: str) -> str:
    """A LaTeX label made from a title: ``tab:`` and its words, lower case, joined by ``-``.

    >>> label_of("blockalg compare · preset tiny")
    'tab:blockalg-compare-preset-tiny'
    """
    words = re.findall(r"[a-z0-9]+", text.lower())
    return "tab:" + "-".join(words[:8])


def _is_formatted_int(cell: str) -> bool:
    """``'1,234'``, ``'+0'``, ``'-1,536'``: an integer as :func:`format_int` writes it."""
    body = cell.lstrip("+-")
    return bool(body) and body.replace(",", "").isdigit()


def _md_row(cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
                  "|": r"\textbar{}"}
#: Characters outside ASCII as maths (merged into one ``$...$`` when adjacent) ...
_LATEX_MATH = {"Δ": r"\Delta", "−": "-", "×": r"\times", "·": r"\cdot", "→": r"\to",
               "←": r"\leftarrow", "↦": r"\mapsto", "⇔": r"\Leftrightarrow", "≥": r"\geq",
               "≤": r"\leq", "≈": r"\approx", "≠": r"\neq", "±": r"\pm", "∞": r"\infty",
               "‖": r"\|", "∂": r"\partial", "∇": r"\nabla", "√": r"\surd", "α": r"\alpha",
               "β": r"\beta", "γ": r"\gamma", "ε": r"\epsilon", "σ": r"\sigma", "ω": r"\omega",
               "π": r"\pi", "Σ": r"\Sigma", "⊙": r"\odot", "∈": r"\in", "ᵀ": r"^{\top}",
               "²": "^{2}", "³": "^{3}", "¹": "^{1}", "⁴": "^{4}", "⁻": "^{-}", "¼": r"\frac{1}{4}",
               "½": r"\frac{1}{2}", "₁": "_{1}", "₂": "_{2}", "ₖ": "_{k}", "⌊": r"\lfloor",
               "⌋": r"\rfloor", "⌈": r"\lceil", "⌉": r"\rceil", "′": "'"}
#: ... and as text.
_LATEX_TEXT = {"…": r"\ldots{}", "—": "---", "–": "--", "“": "``", "”": "''", "‘": "`", "’": "'",
               "é": r"\'e", "ü": r"\"u", "ö": r"\"o", "\u00a0": "~"}


def latex_escape(text: str) -> str:
    r"""Escape LaTeX's special characters and write symbols in math mode, except inside
    ``$...$`` maths (kept as is). What comes out compiles with pdflatex in a plain ``article``;
    a character with no LaTeX form becomes ``?``.

    >>> latex_escape("params.per_block")
    'params.per\\_block'
    >>> latex_escape("‖∂loss/∂x‖ · 2")
    '$\\| \\partial$loss/$\\partial$x$\\|$ $\\cdot$ 2'
    """
    parts = str(text).split("$")
    for i in range(0, len(parts), 2):  # even parts lie outside $...$
        parts[i] = _escape_text(parts[i])
    return "$".join(parts)


def _escape_text(text: str) -> str:
    out, math = [], []
    for ch in text:
        if ch in _LATEX_MATH:
            math.append(_LATEX_MATH[ch])
            continue
        if math:
            out.append("$" + " ".join(math) + "$")
            math = []
        out.append(_LATEX_SPECIAL.get(ch) or _LATEX_TEXT.get(ch) or (ch if ch.isascii() else "?"))
    if math:
        out.append("$" + " ".join(math) + "$")
    return "".join(out)


_BIG = re.compile(r"^(≈?)([+-]?)(\d)\.(\d+)e\+(\d+) \((\d+) digits\)$")


def latex_cell(text, thousands: str = r"\,") -> str:
    r"""One table cell in LaTeX: an integer with ``thousands`` between digit groups and a math
    sign, an abbreviated one as a power of ten, anything else escaped.

    >>> latex_cell("-1,536"), latex_cell("1.1481e+602 (603 digits)")
    ('$-$1\\,536', '$1.1481\\times10^{602}$ (603 digits)')
    """
    text = str(text)
    if _is_formatted_int(text):
        sign = {"-": "$-$", "+": "$+$"}.get(text[0], "")
        return sign + text.lstrip("+-").replace(",", thousands)
    big = _BIG.match(text)
    if big:
        approx, sign, lead, frac, exponent, digits = big.groups()
        sign = ("$\\approx$" if approx else "") + {"-": "$-$", "+": "$+$"}.get(sign, "")
        return f"{sign}${lead}.{frac}\\times10^{{{exponent}}}$ ({digits} digits)"
    return latex_escape(text)


def format_int(value: int, signed: bool = False) -> str:
    """``1234567`` → ``'1,234,567'`` (``'+1,234,567'`` when ``signed``)."""
    return f"{value:+,}" if signed else f"{value:,}"


LONG_INT_DIGITS = 25


def format_value(value, signed: bool = False) -> str:
    """A number for a table: ints with thousands separators (from 25 digits on, in scientific form
    with the digit count; the JSON output stays exact), rationals as ``p/q`` (a long one as its
    value to 6 digits, with the digit counts), a value too large to compute exactly
    (:class:`~blockalg.graphs.magnitude.Approx`) with ``≈``. Nothing is written out in full, so
    a count of 100,000 digits costs no more than one of 100.

    >>> import sympy
    >>> format_value(1234), format_value(sympy.Rational(7, 2)), format_value(sympy.Rational(-1, 3), True)
    ('1,234', '7/2', '-1/3')
    >>> format_value(4**1000), format_value(sympy.Rational(4**100 + 1, 4**99))
    ('1.1481e+602 (603 digits)', '≈4 (61/60-digit fraction)')
    >>> format_value(Approx(mpmath.mpf(4) ** 10**9))
    '≈2.1280e+602059991 (602059992 digits)'
    """
    sign = "+" if signed else ""
    if isinstance(value, Approx):
        digits = f" ({value.digits} digits)" if "e" in str(value) else ""
        return f"≈{sign if value.number >= 0 else ''}{value}{digits}"
    if isinstance(value, int) or getattr(value, "is_Integer", False):
        value = int(value)
        if abs(value) >= 10**LONG_INT_DIGITS:  # a table cell, not a record: JSON keeps it exact
            digits, leading = _leading_digits(abs(value), 5)
            sign = "-" if value < 0 else sign
            return f"{sign}{leading[0]}.{leading[1:]}e+{digits - 1} ({digits} digits)"
        return format_int(value, signed)
    if isinstance(value, Fraction) or getattr(value, "is_Rational", False):
        p, q = (value.numerator, value.denominator) if isinstance(value, Fraction) else (value.p, value.q)
        p, q = int(p), int(q)
        if max(abs(p), q) >= 10**LONG_INT_DIGITS:
            # a mean over 4^1000 paths is a fraction of hundreds of digits: its value, to 6 digits
            with mpmath.workdps(30):
                shown = mpmath.nstr(mpmath.mpf(p) / q, 6, min_fixed=-4, max_fixed=15)
            shown = shown[:-2] if shown.endswith(".0") else shown
            text = f"≈{shown} ({_leading_digits(abs(p), 1)[0]}/{_leading_digits(q, 1)[0]}-digit fraction)"
            return f"+{text}" if signed and p >= 0 else text
    text = str(value)
    return f"+{text}" if signed and value >= 0 else text


def _leading_digits(number: int, count: int) -> tuple[int, str]:
    """(digits of ``number`` > 0, its first ``count`` digits), without writing the whole number
    in decimal (Python refuses that past 4,300 digits, and it takes quadratic time)."""
    digits = max(1, int(number.bit_length() * 0.30102999566398120))  # log10(2): at most 1 short
    while 10**digits <= number:
        digits += 1
    return digits, str(number // 10 ** max(0, digits - count))


def json_text(data, indent: int | None = 2) -> str:
    """``data`` as JSON. Exact integers are written in full however long (Python's 4,300-digit
    limit on int-to-str conversion is lifted for this write); an
    :class:`~blockalg.graphs.magnitude.Approx` becomes ``{"approx", "log10", "digits"}``;
    fractions and other sympy numbers become strings.

    >>> json_text({"count": 10**5000}, indent=None)[:12]
    '{"count": 10'
    """
    with long_int_text():
        return json.dumps(data, indent=indent, default=_json_default)


def _json_default(value):
    if isinstance(value, Approx):
        return value.to_json()
    if getattr(value, "is_Integer", False):
        return int(value)
    if isinstance(value, Fraction) or getattr(value, "is_number", False):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


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
