"""Tables of results, shared by the CLI, reports and notebooks: each function takes results
and returns a :class:`~blockalg.output.render.Table`, which renders as text, Markdown, LaTeX or CSV."""

from __future__ import annotations

import sympy as sp

from ..analysis.paths import PATH_KEYS
from ..graphs.ops import COMPONENTS
from ..graphs.symbols import LATEX_NAMES
from .render import Table, format_int, format_value


def written(expr, fmt: str) -> str:
    """An expression as LaTeX maths for latex/markdown tables, else as plain sympy text."""
    return f"${sp.latex(expr, symbol_names=LATEX_NAMES)}$" if fmt in ("latex", "markdown") \
        else sp.sstr(expr)


def number(value) -> str:
    return format_int(value) if isinstance(value, int) else f"{value:g}"


def dims_line(dims) -> str:
    return ", ".join(f"{k}={v}" for k, v in dims.items())


#: The check that measures each quantity of the comparison table.
CHECK_OF = {"params.total": "params", **{f"params.{c}": f"params.{c}"
                                         for c in COMPONENTS},
            "flops.forward_matmul": "flops.forward_matmul",
            "flops.backward_matmul": "flops.backward_matmul"}


def comparison_table(results, keys, checks=None) -> Table:
    """Values per variant, with the difference of each later variant to the first; with
    ``checks``, each variant's measured value beside its prediction."""
    first = results[0]
    headers, rows = ["quantity"], [[key] for key in keys]
    for i, r in enumerate(results):
        headers.append(r.name)
        if checks:
            headers.append("measured")
        if i:
            headers.append(f"Δ vs {first.name}")
        by_name = {c.name: c for c in checks[i]} if checks else {}
        for key, row in zip(keys, rows):
            row.append(format_value(r.values[key]))
            if checks:
                c = by_name.get(CHECK_OF.get(key))
                row.append("" if c is None else f"{format_int(c.measured)} {'ok' if c.ok else 'FAIL'}")
            if i:
                row.append(format_value(r.values[key] - first.values[key], signed=True))
    title = f"blockalg compare · preset {first.preset} ({dims_line(first.dims)})"
    notes = ["FLOPs: one sequence of seq_len tokens, batch 1, unembedding included; "
             "matmul FLOPs count attention at the dense s×s cost."] \
        if any(key.startswith("flops.") for key in keys) else []
    if any(key.startswith("memory.") for key in keys):
        notes.append("memory: bytes of one training step of batch sequences, fp32, AdamW, no "
                     "recomputation, eager attention (blockalg memory for other settings).")
    for r, variant_checks in zip(results, checks or []):
        notes += [f"{r.name}: {c.name} predicted {number(c.predicted)} for the backend measured "
                  f"({c.detail})" for c in variant_checks
                  if c.name in CHECK_OF.values() and c.predicted != r.values.get(_quantity_of(c.name))]
    return Table(title, headers, rows, notes=notes)


def _quantity_of(check_name: str) -> str:
    return next(key for key, name in CHECK_OF.items() if name == check_name)


def closed_form_table(results, keys, fmt: str = "table") -> Table:
    """The closed form of every quantity per variant (as LaTeX maths in latex and markdown)."""
    rows = [[key, *(written(r.closed_form(key), fmt) for r in results)] for key in keys]
    return Table("closed forms (n_layers symbolic)", ["quantity", *(r.name for r in results)], rows)


def path_table(graphs, stats, layers, fmt) -> Table:
    """Each path statistic per variant: exact value at L = ``layers`` and closed form in L."""
    headers, rows = ["statistic"], []
    for g in graphs:
        headers += [g.graph["name"], "closed form"]
    values = [st.at(layers) for st in stats]
    for key in PATH_KEYS:
        row = [key]
        for st, v in zip(stats, values):
            group, _, part = key.partition(".")
            value = v[group][part] if part else v[key]
            row += [format_value(value) if isinstance(value, int) else value,
                    written(st.expressions[key], fmt)]
        rows.append(row)
    for label, pick in (("block T(n, a, f)", lambda st: st.block),
                        ("model T**L · final", lambda st: st.generating_function),
                        ("sublayers crossed", lambda st: st.sublayer_distribution[1]),
                        ("norms crossed", lambda st: st.norm_distribution[1])):
        row = [label]
        for st in stats:
            item = pick(st)
            row += ["", item if isinstance(item, str) else written(item, fmt)]
        rows.append(row)
    return Table(f"blockalg paths · L = {layers} (n: norms, a: attention, f: FFN sublayers crossed)",
                 headers, rows, notes=["A path runs from the embedding output to the unembedding "
                                       "input; 'shortest'/'longest' minimise/maximise each count "
                                       "separately."])


def distribution_table(name, stats, layers) -> Table:
    """Paths crossing k sublayers, for every k, with their share."""
    counts = stats.distribution(layers, "sublayers")
    total = sum(counts.values())
    rows = [[str(k), format_int(c), f"{100 * c / total:.4g}%"] for k, c in counts.items()]
    return Table(f"{name}: paths by sublayers crossed ({stats.sublayer_distribution[1]})",
                 ["sublayers", "paths", "share"], rows)


def shortest_to_layer_table(name, stats, layers) -> Table:
    """For each layer, the shortest path from the output back to that layer's input."""
    rows = [[str(r["layer"]), str(r["norms"]), str(r["sublayers"])]
            for r in stats.shortest_to_layer(layers)]
    return Table(f"{name}: shortest path from the output back to the input of layer l",
                 ["layer l", "norms", "sublayers"], rows)
