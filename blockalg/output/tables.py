"""Tables of results, shared by the CLI, reports and notebooks: each function takes results
and returns a :class:`~blockalg.output.render.Table`, which renders as text, Markdown, LaTeX or CSV."""

from __future__ import annotations

import sympy as sp

from ..analysis.paths import PATH_KEYS
from ..analysis.terms import polynomial_text
from ..graphs.ops import COMPONENTS
from ..graphs.symbols import LATEX_NAMES
from .render import Table, format_value


def written(expr, fmt: str) -> str:
    """An expression as LaTeX maths for latex/markdown tables, else as plain sympy text (a path
    polynomial of many terms written straight from its terms)."""
    if fmt in ("latex", "markdown"):
        return f"${polynomial_text(expr, True, lambda e: sp.latex(e, symbol_names=LATEX_NAMES))}$"
    return polynomial_text(expr)


def number(value) -> str:
    """A measured or predicted number for a table: ints as :func:`format_value` writes them
    (abbreviated from 25 digits on, like every table), floats with 6 significant digits."""
    return format_value(value) if isinstance(value, int) else f"{value:g}"


#: Dimensions only a mixture-of-experts block uses: left out of the headers of dense models.
EXPERT_DIMS = ("n_experts", "top_k")


def uses_experts(graphs) -> bool:
    """Whether any of ``graphs`` (blocks, stacks, their heads) has a mixture-of-experts node."""
    from ..graphs.graph import segments

    for graph in graphs:
        blocks = [block for block, _ in segments(graph)]
        if graph.graph.get("head") is not None:
            blocks.append(graph.graph["head"])
        if any(data.get("op") == "moe" for block in blocks for _, data in block.nodes(data=True)):
            return True
    return False


def dims_line(dims, graphs=None) -> str:
    """``d_model=768, n_heads=12, ...``; with ``graphs``, without the expert dimensions when no
    graph has experts.

    >>> dims_line({"d_model": 64, "n_experts": 8, "top_k": 2}, graphs=[])
    'd_model=64'
    """
    hidden = () if graphs is None or uses_experts(graphs) else EXPERT_DIMS
    return ", ".join(f"{k}={v}" for k, v in dims.items() if k not in hidden)


def label_part(text: str) -> str:
    """``text`` as a piece of a LaTeX label: letters, digits and ``-``."""
    return "".join(ch if ch.isalnum() else "-" for ch in str(text)).strip("-") or "x"


#: The check that measures each quantity of the comparison table.
CHECK_OF = {"params.total": "params", **{f"params.{c}": f"params.{c}"
                                         for c in COMPONENTS},
            "flops.forward_matmul": "flops.forward_matmul",
            "flops.backward_matmul": "flops.backward_matmul"}

FLOPS_NOTE = ("FLOPs: one sequence of seq_len tokens, batch 1, unembedding included; "
              "matmul FLOPs count attention at the dense s×s cost.")
PATHS_NOTE = ("Paths run from the embedding output to the unembedding input; 'shortest'/'longest' "
              "minimise/maximise the norms or sublayers crossed, each count separately.")


def comparison_table(results, keys, checks=None) -> Table:
    """Values per variant, with the difference of each later variant to the first; with
    ``checks``, each variant's measured value beside its prediction."""
    first = results[0]
    headers, rows, groups = ["quantity"], [[key] for key in keys], []
    for i, r in enumerate(results):
        headers.append(r.name)
        if checks:
            headers.append("measured")
        if i:
            headers.append(f"Δ vs {first.name}")
        groups.append(1 + bool(checks) + bool(i))
        by_name = {c.name: c for c in checks[i]} if checks else {}
        for key, row in zip(keys, rows):
            row.append(format_value(r.values[key]))
            if checks:
                c = by_name.get(CHECK_OF.get(key))
                row.append("" if c is None else f"{number(c.measured)} {'ok' if c.ok else 'FAIL'}")
            if i:
                row.append(format_value(r.values[key] - first.values[key], signed=True))
    dims = dims_line(first.dims, [r.graph for r in results])
    title = f"blockalg compare · preset {first.preset} ({dims})"
    notes = [FLOPS_NOTE] if any(key.startswith("flops.") for key in keys) else []
    if any(key.startswith("memory.") for key in keys):
        notes.append("memory: bytes of one training step of batch sequences, fp32, AdamW, no "
                     "recomputation, eager attention (blockalg memory for other settings).")
    for r, variant_checks in zip(results, checks or []):
        notes += [f"{r.name}: {c.name} predicted {number(c.predicted)} for the backend measured "
                  f"({c.detail})" for c in variant_checks
                  if c.name in CHECK_OF.values() and c.predicted != r.values.get(_quantity_of(c.name))]
    names = ", ".join(r.name for r in results)
    what = "parameters (whole model), FLOPs and gradient paths" if notes else "quantities"
    caption = " ".join([f"{names} at preset {first.preset} ({dims.replace('=', ' = ')}): {what}.",
                        *notes, *([PATHS_NOTE] if any(k.startswith("paths.") for k in keys) else []),
                        *([f"Δ: difference to {first.name}."] if len(results) > 1 else []),
                        *(["measured: the built torch model."] if checks else [])])
    return Table(title, headers, rows, notes=notes, caption=caption, groups=groups,
                 label=f"tab:compare-{label_part(first.preset)}")


def _quantity_of(check_name: str) -> str:
    return next(key for key, name in CHECK_OF.items() if name == check_name)


def closed_form_table(results, keys, fmt: str = "table") -> Table:
    """The closed form of every quantity per variant (as LaTeX maths in latex and markdown)."""
    rows = [[key, *(written(r.closed_form(key), fmt) for r in results)] for key in keys]
    first = results[0]
    caption = (f"Closed forms of {', '.join(r.name for r in results)} with the number of layers L "
               f"symbolic; the relations d_ff = 4d, d_head = d/h, n_kv_heads = h are applied where "
               f"they hold at preset {first.preset}. " + FLOPS_NOTE)
    return Table("closed forms (n_layers symbolic)", ["quantity", *(r.name for r in results)], rows,
                 align="l" * (len(results) + 1), caption=caption, label="tab:closed-forms")


def path_table(graphs, stats, layers, fmt) -> Table:
    """Each path statistic per variant: exact value at L = ``layers`` and closed form in L."""
    headers, rows = ["statistic"], []
    for g in graphs:
        headers += [g.graph["name"], "closed form"]
    for key in PATH_KEYS:
        row = [key]
        for st in stats:
            row += [format_value(st.value(key, layers)), written(st.expressions[key], fmt)]
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
    names = ", ".join(g.graph["name"] for g in graphs)
    return Table(f"blockalg paths · L = {layers} (n: norms, a: attention, f: FFN sublayers crossed)",
                 headers, rows, notes=[PATHS_NOTE], align="l" + "rl" * len(graphs),
                 groups=[2] * len(graphs), label=f"tab:paths-L{layers}",
                 caption=f"Gradient paths of {names} at L = {layers}: exact values and closed forms "
                         f"in L. T(n, a, f) is the block's path generating function: n, a, f count "
                         f"the norms, attention and FFN sublayers a path crosses. " + PATHS_NOTE)


def distribution_table(name, stats, layers) -> Table:
    """Paths crossing k sublayers, for every k, with their share."""
    counts = stats.distribution(layers, "sublayers")
    total = sum(counts.values())
    rows = [[str(k), format_value(c), f"{100 * c / total:.4g}%"] for k, c in counts.items()]
    return Table(f"{name}: paths by sublayers crossed ({stats.sublayer_distribution[1]})",
                 ["sublayers", "paths", "share"], rows, label=f"tab:paths-{label_part(name)}-by-sublayers",
                 caption=f"{name} at L = {layers}: the number of gradient paths that cross k "
                         f"sublayers, and their share ({stats.sublayer_distribution[1]}).")


def shortest_to_layer_table(name, stats, layers) -> Table:
    """For each layer, the shortest path from the output back to that layer's input."""
    rows = [[str(r["layer"]), str(r["norms"]), str(r["sublayers"])]
            for r in stats.shortest_to_layer(layers)]
    return Table(f"{name}: shortest path from the output back to the input of layer l",
                 ["layer l", "norms", "sublayers"], rows, label=f"tab:paths-{label_part(name)}-shortest",
                 caption=f"{name} at L = {layers}: the norms and sublayers on the shortest "
                         f"gradient path from the output back to the input of layer l.")


def gradient_tables(results, layers: int, setting: str):
    """The gradients at initialisation (:class:`~blockalg.model.gradients.GradientNorms`, one per
    variant): a table of ‖∇W2‖ of the FFN's output matrix per layer, and one of ‖∂loss/∂x_l‖ at
    each block's input with that input's RMS. ``setting`` says how they were measured."""
    def trend(values):
        return "n/a" if values is None else f"{values:.3g}"

    headers = ["layer", *(r.name for r in results)]
    weights = [(r.mean(r.weights[r.headline]), r.std(r.weights[r.headline])) for r in results]
    rows = [[str(l + 1), *(f"{m[l]:.4g} ± {s[l]:.2g}" for m, s in weights)] for l in range(layers)]
    rows.append(["last/first", *(trend(r.trend(r.weights[r.headline])) for r in results)])
    yield Table(f"‖∇W2‖ of the FFN's output matrix · {setting} (mean ± std)", headers, rows,
                label="tab:gradients-weights",
                caption=f"Gradient norm of each layer's FFN output matrix at initialisation, "
                        f"{setting}, mean ± std over seeds.")
    stream = [r.mean(r.stream) if r.stream else [float("nan")] * layers for r in results]
    rows = [[str(l + 1), *(f"{r.mean(r.residual)[l]:.4g} (RMS {s[l]:.2g})"
                           for r, s in zip(results, stream))] for l in range(layers)]
    rows.append(["last/first", *(trend(r.trend(r.residual)) for r in results)])
    rows.append(["last/layer 2", *(trend(_last_over_second(r)) for r in results)])
    note = ("Layer 1's input is the raw embedding (RMS about the init std): a norm right after "
            "it divides by that small scale, so ‖∂loss/∂x_1‖ is larger than at later layers whose "
            "input a norm has set to RMS 1. That is a change of scale, not vanishing gradients: "
            "compare from layer 2 on.")
    yield Table(f"‖∂loss/∂x_l‖ at block input (RMS of x_l) · {setting}", headers, rows,
                notes=[note], label="tab:gradients-residual",
                caption=f"Gradient norm of the residual stream at each block's input, with the "
                        f"RMS of that input, at initialisation, {setting}, mean over seeds. {note}")


def _last_over_second(result):
    rows = [run[-1] / run[1] for run in result.residual if len(run) > 1 and run[1] != 0]
    return sum(rows) / len(rows) if rows else None
