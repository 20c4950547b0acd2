"""Figures (matplotlib, imported only here): every function returns a Figure; :func:`figure_bytes`
renders it reproducibly (no timestamps, fixed SVG ids) and :func:`save_figure` writes it atomically.

Every figure is sized to stay readable when scaled to a paper's column (about 3.3 in): 10-point
text on a 5 to 9 in canvas. Colours are the Okabe–Ito palette (distinguishable with every common
colour-vision deficiency), and every series also has its own marker and line style, so a figure
printed in grey still tells them apart. Series that coincide are drawn so both stay visible
(:func:`draw_curves`).
"""

from __future__ import annotations

import io

import networkx as nx

from ..files import write_atomic_bytes
from ..graphs.ops import ATTENTION, FFN, NORM, get_op

#: Okabe & Ito (2008), without the yellow (too light on white): blue, vermillion, bluish green,
#: reddish purple, orange, sky blue, black.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINESTYLES = ["-", "--", ":", "-."]
HATCHES = ["", "//", "..", "xx", "\\\\", "oo", "++"]
COMPONENT_COLORS = {"attention": "#56B4E9", "ffn": "#E69F00", "norm": "#009E73",
                    "scale": "#CC79A7", "embedding": "#0072B2"}
ROLE_COLORS = {NORM: "#009E73", ATTENTION: "#56B4E9", FFN: "#E69F00"}
OTHER_COLOR = "#999999"
DPI = 150


def pyplot():
    """matplotlib.pyplot, on the Agg backend outside notebooks (imported only when a figure is made),
    with blockalg's palette and font sizes."""
    import sys

    import matplotlib

    if "ipykernel" not in sys.modules:  # in a notebook keep the inline backend: figures show
        matplotlib.use("Agg")
    from cycler import cycler

    matplotlib.rcParams.update({
        "svg.hashsalt": "blockalg",  # stable ids: the same figure, the same SVG
        "axes.prop_cycle": cycler(color=PALETTE),
        "font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "legend.fontsize": 8.5,
        "xtick.labelsize": 9, "ytick.labelsize": 9, "figure.titlesize": 11,
        "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.6})
    import matplotlib.pyplot as plt

    return plt


def figure_bytes(fig, fmt: str) -> bytes:
    """The figure as PNG, SVG or PDF bytes, without the date or software stamps."""
    metadata = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}[fmt]
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=DPI, metadata=metadata)
    return buffer.getvalue()


def save_figure(fig, path) -> None:
    """Write ``fig`` to ``path`` (format from the suffix), atomically, and close it."""
    from pathlib import Path

    path = Path(path)
    try:
        write_atomic_bytes(path, figure_bytes(fig, path.suffix.lstrip(".").lower() or "png"))
    finally:
        pyplot().close(fig)


# ---------------------------------------------------------------------------------------------
# Shared drawing helpers.


def coinciding(curves: dict, rel_tol: float = 0.0) -> list[list[str]]:
    """Names of ``curves`` (name → (xs, ys)) grouped where the curves are equal: exactly, or
    within ``rel_tol`` of the group's first curve at every point.

    >>> coinciding({"a": ([1, 2], [3, 4]), "b": ([1, 2], [3, 4]), "c": ([1, 2], [3, 5])})
    [['a', 'b'], ['c']]
    """
    groups: list[list[str]] = []
    for name, (xs, ys) in curves.items():
        for group in groups:
            gx, gy = curves[group[0]]
            if list(gx) == list(xs) and all(_close(a, b, rel_tol) for a, b in zip(gy, ys)):
                group.append(name)
                break
        else:
            groups.append([name])
    return groups


def _close(a, b, rel_tol: float) -> bool:
    return a == b or abs(a - b) <= rel_tol * max(abs(a), abs(b))


def draw_curves(ax, curves: dict, *, rel_tol: float = 0.0, what: str = "identical", **kwargs):
    """Draw ``curves`` (name → (xs, ys)), one style per series. Curves equal to an earlier one
    (within ``rel_tol``) are drawn once, labelled ``a = b (identical)`` (or ``a ≈ b (what)``).
    Later series get larger hollow markers, so a series lying on an earlier one stays visible.
    Returns each name's style (its group's)."""
    styles = {}
    for i, group in enumerate(coinciding(curves, rel_tol)):
        xs, ys = curves[group[0]]
        exact = all(list(curves[n][1]) == list(ys) for n in group)
        label = group[0] if len(group) == 1 else \
            f"{' = '.join(group)} (identical)" if exact else f"{' ≈ '.join(group)} ({what})"
        style = {**series_style(i), **kwargs}
        ax.plot(xs, ys, label=label, **style)
        styles.update(dict.fromkeys(group, style))
    return styles


def series_style(i: int) -> dict:
    """Colour, marker and line style of the ``i``-th series: filled small markers first, then
    hollow ones growing, so overlapping series stay visible."""
    return {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)],
            "linestyle": LINESTYLES[i % len(LINESTYLES)], "markersize": min(5 + 1.5 * i, 8),
            "markerfacecolor": PALETTE[i % len(PALETTE)] if i == 0 else "none", "linewidth": 1.4}


def compact(value: float) -> str:
    """``38400`` → ``'38.4k'``, ``124439808`` → ``'124M'``: 3 significant digits and a suffix.

    >>> compact(38400), compact(36864), compact(124439808), compact(7)
    ('38.4k', '36.9k', '124M', '7')
    """
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def unit_of(values) -> tuple[float, str]:
    """The power of 1000 (and its SI prefix) that writes the largest of ``values`` as 1 to 999.

    >>> unit_of([3.2e5, 9.9e5])
    (1000.0, 'k')
    """
    top = max(abs(v) for v in values) if values else 1
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if top >= factor:
            return factor, prefix
    return 1.0, ""


# ---------------------------------------------------------------------------------------------
# The figures of a report.


def params_by_component(analyses):
    """Parameters per component (log scale), one bar per variant, each bar labelled with its
    count: components where the variants differ (e.g. the norms of pre-LN and post-LN) show."""
    plt = pyplot()
    from ..graphs.ops import COMPONENTS

    components = [c for c in COMPONENTS if any(a.values[f"params.{c}"] for a in analyses)]
    fig, ax = plt.subplots(figsize=(6.5, 3.8), constrained_layout=True)
    width = 0.8 / len(analyses)
    for i, a in enumerate(analyses):
        xs = [k + (i - (len(analyses) - 1) / 2) * width for k in range(len(components))]
        heights = [a.values[f"params.{c}"] for c in components]
        bars = ax.bar(xs, heights, width, color=PALETTE[i % len(PALETTE)], edgecolor="black",
                      linewidth=0.5, hatch=HATCHES[i % len(HATCHES)],
                      label=f"{a.name} (total {a.values['params.total']:,})")
        ax.bar_label(bars, labels=[compact(h) if h else "0" for h in heights],
                     rotation=90 if len(analyses) > 3 else 0, fontsize=7.5, padding=2)
    ax.set_yscale("log")
    ax.set_ylim(top=ax.get_ylim()[1] * 8)  # room for the labels above the tallest bars
    ax.set_xticks(range(len(components)), components)
    ax.set_ylabel("parameters (log scale)")
    ax.set_title(f"Parameters per component · {analyses[0].preset}")
    ax.grid(axis="x", visible=False)
    ax.legend(loc="upper left", fontsize=8, ncol=1 if len(analyses) < 4 else 2)
    return fig


def plain_ticks(minor: bool = False):
    """Tick labels as plain numbers (1, 2, 4, ... 1024; 0.02, 0.6) on a log axis, rather than
    powers (2⁰ ... 2¹⁰; 2×10⁻²); ``minor`` labels only the 2s, 3s and 5s of each decade."""
    import math

    from matplotlib.ticker import FuncFormatter

    def label(x, _):
        if x <= 0:
            return ""
        mantissa = round(x / 10 ** math.floor(math.log10(x) + 1e-9), 6)
        return f"{x:g}" if not minor or mantissa in (2, 3, 5) else ""

    return FuncFormatter(label)


def seq_lengths(n_ctx: int, points: int = 7) -> list[int]:
    """Sequence lengths for a FLOPs curve: powers of two up to ``n_ctx`` (``n_ctx`` itself last).

    >>> seq_lengths(64), seq_lengths(1000)[-2:]
    ([1, 2, 4, 8, 16, 32, 64], [512, 1000])
    """
    top = n_ctx.bit_length() - 1
    lengths = [2**k for k in range(max(0, top - points + 1), top + 1)]
    return lengths if lengths[-1] == n_ctx else lengths[1:] + [n_ctx]


def flops_per_token(curves, preset: str):
    """Forward FLOPs per token against sequence length (up to the preset's n_ctx): left all
    forward FLOPs, right the matmul FLOPs alone. ``curves`` maps a variant name to
    ``(seq_lens, matmul_per_token, total_per_token)``. The attention scores grow linearly in s."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True, sharey=True)
    factor, prefix = unit_of([v for _, m, t in curves.values() for v in (*m, *t)])
    for ax, pick, title in ((axes[0], 2, "all forward FLOPs (matmul + other)"),
                            (axes[1], 1, "matmul FLOPs only")):
        draw_curves(ax, {name: (c[0], [v / factor for v in c[pick]]) for name, c in curves.items()})
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(plain_ticks())
        ax.set_ylim(bottom=0)
        ax.set_xlabel("sequence length s (tokens)")
        ax.set_title(title)
        ax.legend(loc="lower right")
    axes[0].set_ylabel(f"forward {prefix}FLOPs per token")
    n_ctx = max(c[0][-1] for c in curves.values())
    fig.suptitle(f"Forward FLOPs per token · {preset}, s up to n_ctx = {n_ctx} "
                 f"(dense attention, unembedding included)")
    return fig


def path_distribution(stats_by_name, layers: int):
    """Left: share of paths by sublayers crossed. Right: norms on the shortest path from the output
    back to each layer's input. Variants with the same curve share one line, labelled so."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    shares, shortest = {}, {}
    for name, stats in stats_by_name.items():
        counts = stats.distribution(layers, "sublayers")
        total = sum(counts.values())
        shares[name] = (list(counts), [100 * c / total for c in counts.values()])
        rows = stats.shortest_to_layer(layers)
        shortest[name] = ([r["layer"] for r in rows], [r["norms"] for r in rows])
    draw_curves(left, shares)
    draw_curves(right, shortest)
    left.set_xlabel("sublayers crossed")
    left.set_ylabel("share of paths (%)")
    left.set_title(f"Paths by sublayers crossed (L = {layers})")
    right.set_xlabel("layer l (1 = next to the embedding)")
    right.set_ylabel("norms on the shortest path")
    right.set_title("Shortest gradient path, output → layer l")
    right.set_ylim(bottom=0)
    left.legend(loc="upper left")  # the binomial peaks in the middle
    right.legend(loc="best")
    return fig


def gradient_norms(results):
    """Gradients at initialisation per layer, mean over seeds. Left: ‖∇W‖ of the FFN's output
    matrix W₂ (log scale), Xiong et al.'s Fig. 3. Right: ‖∂loss/∂x_l‖ times the RMS of x_l,
    relative to the last layer (log scale, at least a factor 2 either way, so noise does not
    read as a trend). The scaling matters: block 1's input is the raw embedding (RMS ≈ the init
    std), and a norm right after it divides by that small scale, so the raw ‖∂loss/∂x_1‖ of
    post-LN is tens of times that of later layers, whose input a norm has already scaled to 1;
    the note in the panel gives the numbers. Scaled, a flat line means the gradient neither
    vanishes nor explodes."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.9), constrained_layout=True)
    draw_curves(left, {r.name: (_layers(r.weights[r.headline]), r.mean(r.weights[r.headline]))
                       for r in results})
    left.set_yscale("log")
    left.set_ylabel("‖∇W₂‖ (Frobenius, log scale)")
    left.set_title("FFN output matrix W₂")
    scaled = {r.name: (_layers(r.residual), relative_to_last(scaled_residual(r))) for r in results}
    draw_curves(right, scaled)
    right.axhline(1.0, color="grey", lw=0.8, linestyle=":")
    right.set_yscale("log")
    values = [v for _, ys in scaled.values() for v in ys if v == v and v > 0] or [1.0]
    right.set_ylim(min(0.5, min(values) / 1.3), max(2.0, max(values) * 1.3) * 1.6)
    right.set_ylabel("‖∂loss/∂x_l‖ · RMS(x_l) ÷ last layer")
    right.set_title("Residual stream at block input, scale-free")
    for ax, where in ((left, "center right"), (right, "lower right")):
        ax.set_xlabel("layer l (1 = next to the embedding)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_formatter(plain_ticks())
        ax.yaxis.set_minor_formatter(plain_ticks(minor=True))
        ax.legend(loc=where)
    first = results[0]
    scaling = "" if first.residual_scaling else " (no residual scaling)"
    fig.suptitle(f"Gradients at initialisation · d_model {first.dims['d_model']}, "
                 f"{first.dims['n_layers']} layers, init std {first.init_std:.3g}{scaling}, "
                 f"mean of {len(first.seeds)} seed{'s' if len(first.seeds) > 1 else ''}")
    note = first_layer_note(results)
    if note:
        right.text(0.03, 0.97, note, transform=right.transAxes, fontsize=7.5, va="top",
                   bbox={"facecolor": "white", "edgecolor": "0.7", "alpha": 0.9})
    return fig


def _layers(series) -> list[int]:
    return list(range(1, len(series[0]) + 1))


def scaled_residual(result) -> list[float]:
    """Per layer, mean over seeds of ‖∂loss/∂x_l‖ · RMS(x_l): the gradient for a change of x_l
    relative to its own size (raw ‖∂loss/∂x_l‖ when the stream's RMS was not recorded)."""
    if not result.stream:
        return result.mean(result.residual)
    return result.mean([[g * s for g, s in zip(gs, ss)]
                        for gs, ss in zip(result.residual, result.stream)])


def relative_to_last(values) -> list[float]:
    return [v / values[-1] if values[-1] else float("nan") for v in values]


def first_layer_note(results) -> str:
    """Why layer 1 differs: the RMS of its input (the raw embedding) against layer 2's, per
    variant where they differ by more than 2×."""
    notes: dict[str, list[str]] = {}  # note → the variants it is true of
    for r in results:
        if len(r.stream) and len(r.stream[0]) > 1:
            rms = r.mean(r.stream)
            if rms[1] > 2 * rms[0]:
                raw = r.mean(r.residual)
                notes.setdefault(f"input RMS {rms[0]:.2g} at layer 1 (the embedding), {rms[1]:.2g} "
                                 f"at layer 2,\n  so unscaled ‖∂loss/∂x_1‖ = {raw[0] / raw[1]:.0f}"
                                 f" × ‖∂loss/∂x_2‖", []).append(r.name)
    return "\n".join(f"{', '.join(names)}: {note}" for note, names in notes.items())


# ---------------------------------------------------------------------------------------------
# Drawing a block graph.

BOX_W, BOX_H, COLUMN, ROW = 1.5, 0.52, 1.9, 1.0  # box size and spacing (data units)


def block_drawing(graph):
    """The block graph drawn top (input) to bottom (output) by topological generation, boxes
    coloured by role (norm, attention, FFN, other). Edges between consecutive rows are solid
    arrows; edges that skip rows (the residual connections) are dashed arrows routed beside the
    boxes, never behind them; an edge scale (DeepNorm's α) is written on its edge. A stack
    draws its segments' blocks side by side."""
    if graph.graph.get("segments"):
        return _stack_drawing(graph)
    plt = pyplot()
    from matplotlib.patches import FancyBboxPatch, Patch

    generations = [sorted(g) for g in nx.topological_generations(graph)]
    pos = {node: ((i - (len(gen) - 1) / 2) * COLUMN, -depth * ROW)
           for depth, gen in enumerate(generations) for i, node in enumerate(gen)}
    row_of = {node: depth for depth, gen in enumerate(generations) for node in gen}
    width = max(len(gen) for gen in generations)
    fig, ax = plt.subplots(figsize=(3.2 + 1.5 * width, 0.62 * len(generations) + 0.9),
                           constrained_layout=True)
    for node, (x, y) in pos.items():
        color = ROLE_COLORS.get(get_op(graph.nodes[node]["op"]).role, OTHER_COLOR)
        ax.add_patch(FancyBboxPatch((x - BOX_W / 2, y - BOX_H / 2), BOX_W, BOX_H,
                                    boxstyle="round,pad=0,rounding_size=0.08", facecolor=color,
                                    alpha=0.35, edgecolor="none", zorder=2))
        ax.add_patch(FancyBboxPatch((x - BOX_W / 2, y - BOX_H / 2), BOX_W, BOX_H,
                                    boxstyle="round,pad=0,rounding_size=0.08", facecolor="none",
                                    edgecolor=color, linewidth=1.2, zorder=2))
        ax.text(x, y, f"{node}\n{graph.nodes[node]['op']}", ha="center", va="center",
                fontsize=8.5, zorder=4)
    extent = [min(x for x, _ in pos.values()) - BOX_W / 2, max(x for x, _ in pos.values()) + BOX_W / 2]
    labelled = False
    for u, v, route in _edge_routes(graph, pos, row_of):
        _draw_edge(ax, route, dashed=row_of[v] - row_of[u] != 1 or len(route) > 2)
        label = _scale_label(graph, u, v)
        if label:
            labelled = True
            (x0, y0), (x1, y1) = route[len(route) // 2 - 1], route[len(route) // 2]
            ax.text((x0 + x1) / 2 + 0.08, (y0 + y1) / 2, label, fontsize=9, color="#D55E00",
                    ha="left", va="center", zorder=5,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
        extent = [min(extent[0], *(x for x, _ in route)), max(extent[1], *(x for x, _ in route))]
    ax.legend(handles=[Patch(facecolor=c, alpha=0.5, edgecolor=c, label=name) for name, c in
                       (("norm", ROLE_COLORS[NORM]), ("attention", ROLE_COLORS[ATTENTION]),
                        ("FFN", ROLE_COLORS[FFN]), ("other", OTHER_COLOR))],
              loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4, fontsize=7.5, frameon=False,
              handlelength=1.2, columnspacing=1.0)
    ax.set_title(f"block {graph.graph.get('name', '')}")
    ax.set_xlim(extent[0] - 0.3, extent[1] + (1.4 if labelled else 0.3))  # room for the labels
    ax.set_ylim(-(len(generations) - 1) * ROW - 0.5, 0.5)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig


def _edge_routes(graph, pos, row_of):
    """Each edge as a polyline: straight from the bottom of one box to the top of the next for
    consecutive rows; for an edge that skips rows, out of the side of its source, along a lane
    beside every box of the rows in between, and into the side of its target. Lanes of skips
    whose rows overlap are set apart."""
    lanes: dict[str, list[tuple[int, int]]] = {"right": [], "left": []}
    ports: dict[tuple[str, str], int] = {}  # skips already leaving or entering a box's side
    routes = []
    skips = sorted(((u, v) for u, v in graph.edges if row_of[v] - row_of[u] != 1),
                   key=lambda e: row_of[e[1]] - row_of[e[0]])
    for u, v in graph.edges:
        if (u, v) not in skips:
            (x0, y0), (x1, y1) = pos[u], pos[v]
            routes.append((u, v, [(x0, y0 - BOX_H / 2), (x1, y1 + BOX_H / 2)]))
    for u, v in skips:
        (x0, y0), (x1, y1) = pos[u], pos[v]
        side = "right" if x0 + x1 >= 0 else "left"
        sign = 1 if side == "right" else -1
        span = (row_of[u], row_of[v])
        taken = [lane for lane, (a, b) in enumerate(lanes[side]) if a < span[1] and span[0] < b]
        lane = next(k for k in range(len(lanes[side]) + 1) if k not in taken)
        if lane == len(lanes[side]):
            lanes[side].append(span)
        else:
            lanes[side][lane] = (min(lanes[side][lane][0], span[0]), max(lanes[side][lane][1], span[1]))
        rows = [x for node, (x, _) in pos.items() if span[0] <= row_of[node] <= span[1]]
        edge = max(sign * x for x in rows) + BOX_W / 2
        lane_x = sign * (edge + 0.3 + 0.35 * lane)
        y0 -= _port(ports, u, side)
        y1 += _port(ports, v, side)
        routes.append((u, v, [(x0 + sign * BOX_W / 2, y0), (lane_x, y0), (lane_x, y1),
                              (x1 + sign * BOX_W / 2, y1)]))
    return routes


def _port(ports: dict, node: str, side: str) -> float:
    """A vertical offset for the next skip edge at ``node``'s ``side``, so two arrows that meet
    the same box stay apart."""
    k = ports.get((node, side), 0)
    ports[(node, side)] = k + 1
    return 0.13 * k


def _draw_edge(ax, route, dashed: bool) -> None:
    from matplotlib.patches import FancyArrowPatch
    from matplotlib.path import Path

    codes = [Path.MOVETO] + [Path.LINETO] * (len(route) - 1)
    ax.add_patch(FancyArrowPatch(path=Path(route, codes), arrowstyle="-|>", mutation_scale=11,
                                 linewidth=1.1, color="#444444" if dashed else "black",
                                 linestyle=(0, (4, 2.5)) if dashed else "-", zorder=3,
                                 shrinkA=0, shrinkB=0))


def _scale_label(graph, u, v) -> str:
    """``×α`` for an edge with a constant scale, as mathtext (e.g. ``×(2L)^{1/4}``)."""
    if graph.edges[u, v].get("scale") is None:
        return ""
    import sympy as sp

    from ..graphs.graph import edge_scale
    from ..graphs.symbols import LATEX_NAMES

    scale = edge_scale(graph, u, v)
    powers = scale.as_powers_dict()
    if len(powers) > 1 and len(set(powers.values())) == 1:  # 2^¼·L^¼ → (2L)^{1/4}
        base = sp.latex(sp.Mul(*powers), symbol_names=LATEX_NAMES)
        written = f"({base})^{{{next(iter(powers.values()))}}}"
    else:
        written = sp.latex(scale, symbol_names=LATEX_NAMES, root_notation=False)
    return f"$\\times\\,{written}$"


def _stack_drawing(graph):
    """A stack: each segment's block drawing, side by side, titled with its layer count."""
    plt = pyplot()
    import matplotlib.image

    from ..graphs.graph import segments

    parts = segments(graph)
    figures = [block_drawing(block) for block, _ in parts]
    images = [figure_bytes(fig, "png") for fig in figures]
    for fig in figures:
        plt.close(fig)
    fig, axes = plt.subplots(1, len(parts), figsize=(4 * len(parts), 7), constrained_layout=True)
    for ax, png, (block, count) in zip(axes, images, parts):
        ax.imshow(matplotlib.image.imread(io.BytesIO(png), format="png"))
        ax.set_title(f"{block.graph.get('name', '')} × {count}")
        ax.axis("off")
    fig.suptitle(f"stack {graph.graph.get('name', '')}")
    return fig
