"""Figures (matplotlib, imported only here): every function returns a Figure; :func:`figure_bytes`
renders it reproducibly (no timestamps, fixed SVG ids) and :func:`save_figure` writes it atomically.
"""

from __future__ import annotations

import io

import networkx as nx

from ..files import write_atomic_bytes
from ..graphs.ops import ATTENTION, FFN, NORM, get_op

STYLES = [("o", "-"), ("s", "--"), ("^", ":"), ("D", "-."), ("v", "-")]
COMPONENT_COLORS = {"attention": "#4c72b0", "ffn": "#dd8452", "norm": "#55a868", "scale": "#c44e52",
                    "embedding": "#8172b3"}
ROLE_COLORS = {NORM: "#55a868", ATTENTION: "#4c72b0", FFN: "#dd8452"}


def pyplot():
    """matplotlib.pyplot, on the Agg backend outside notebooks (imported only when a figure is made)."""
    import sys

    import matplotlib

    if "ipykernel" not in sys.modules:  # in a notebook keep the inline backend: figures show
        matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "blockalg"  # stable ids: the same figure, the same SVG
    import matplotlib.pyplot as plt

    return plt


def figure_bytes(fig, fmt: str) -> bytes:
    """The figure as PNG, SVG or PDF bytes, without the date or software stamps."""
    metadata = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}[fmt]
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=120, metadata=metadata)
    return buffer.getvalue()


def save_figure(fig, path) -> None:
    """Write ``fig`` to ``path`` (format from the suffix), atomically, and close it."""
    from pathlib import Path

    path = Path(path)
    try:
        write_atomic_bytes(path, figure_bytes(fig, path.suffix.lstrip(".").lower() or "png"))
    finally:
        pyplot().close(fig)


def params_by_component(analyses):
    """Stacked bars: parameters per component, one bar per variant (millions)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    names = [a.name for a in analyses]
    bottom = [0.0] * len(analyses)
    for component, color in COMPONENT_COLORS.items():
        heights = [a.values[f"params.{component}"] / 1e6 for a in analyses]
        ax.bar(names, heights, bottom=bottom, label=component, color=color)
        bottom = [b + h for b, h in zip(bottom, heights)]
    for x, total in enumerate(a.values["params.total"] for a in analyses):
        ax.annotate(f"{total:,}", (x, total / 1e6), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("parameters (millions)")
    ax.set_xlabel("variant")
    ax.set_title(f"Parameters per component · {analyses[0].preset}")
    ax.legend(title="component", loc="lower right")
    return fig


def flops_per_token(curves, preset: str):
    """Forward FLOPs per token against sequence length, log-log: ``curves`` maps a variant name to
    ``(seq_lens, matmul_per_token, total_per_token)``. The quadratic attention term bends the lines
    up at long sequences."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    for i, (name, (lengths, matmul, total)) in enumerate(curves.items()):
        marker, line = STYLES[i % len(STYLES)]
        ax.plot(lengths, [x / 1e9 for x in total], marker=marker, linestyle=line,
                label=f"{name}: all forward FLOPs")
        ax.plot(lengths, [x / 1e9 for x in matmul], marker=marker, linestyle=line, alpha=0.5,
                label=f"{name}: matmul only")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length s (tokens)")
    ax.set_ylabel("forward GFLOPs per token")
    ax.set_title(f"Forward FLOPs per token · {preset} (dense attention)")
    ax.legend(fontsize=7)
    return fig


def path_distribution(stats_by_name, layers: int):
    """Left: share of paths by sublayers crossed. Right: norms on the shortest path from the output
    back to each layer's input."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for i, (name, stats) in enumerate(stats_by_name.items()):
        marker, line = STYLES[i % len(STYLES)]
        counts = stats.distribution(layers, "sublayers")
        total = sum(counts.values())
        left.plot(list(counts), [100 * c / total for c in counts.values()], marker=marker,
                  linestyle=line, label=name)
        shortest = stats.shortest_to_layer(layers)
        right.plot([r["layer"] for r in shortest], [r["norms"] for r in shortest], marker=marker,
                   linestyle=line, label=name)
    left.set_xlabel("sublayers crossed")
    left.set_ylabel("share of paths (%)")
    left.set_title(f"Paths by sublayers crossed (L = {layers})")
    right.set_xlabel("layer l (1 = next to the embedding)")
    right.set_ylabel("norms on the shortest path to layer l")
    right.set_title("Shortest gradient path, output → layer l")
    for ax in (left, right):
        ax.legend()
    return fig


def gradient_norms(results):
    """Two panels, log scale: ‖∇W‖ of each result's headline matrix (the FFN's W2) per layer and
    ‖∂loss/∂x_l‖; mean ± std over seeds."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    panels = [(lambda r: r.weights[r.headline], "‖∇W‖ of the FFN's W₂"),
              (lambda r: r.residual, "‖∂loss/∂x_l‖ at block input")]
    for ax, (series_of, title) in zip(axes, panels):
        for i, r in enumerate(results):
            marker, line = STYLES[i % len(STYLES)]
            series = series_of(r)
            layers = list(range(1, len(series[0]) + 1))
            mean, std = r.mean(series), r.std(series)
            ax.plot(layers, mean, marker=marker, linestyle=line, label=r.name)
            ax.fill_between(layers, [m - s for m, s in zip(mean, std)],
                            [m + s for m, s in zip(mean, std)], alpha=0.2)
        ax.set_yscale("log")
        ax.set_xlabel("layer l (1 = next to the embedding)")
        ax.set_ylabel("gradient norm (Frobenius, log scale)")
        ax.set_title(title)
        ax.legend()
    first = results[0]
    scaling = "" if first.residual_scaling else " (no residual scaling)"
    fig.suptitle(f"Gradient norms at initialisation · d_model {first.dims['d_model']}, "
                 f"{first.dims['n_layers']} layers, init std {first.init_std:.3g}{scaling}, "
                 f"{len(first.seeds)} seeds (mean ± std)")
    return fig


def block_drawing(graph):
    """The block graph drawn top (input) to bottom (output) by topological generation, nodes
    coloured by role: green norms, blue attention, orange FFN, grey identity-like. A stack draws
    its segments' blocks side by side."""
    plt = pyplot()
    if graph.graph.get("segments"):
        from ..graphs.graph import segments

        parts = segments(graph)
        figures = [block_drawing(block) for block, _ in parts]
        images = [figure_bytes(fig, "png") for fig in figures]
        for fig in figures:
            plt.close(fig)
        import matplotlib.image

        fig, axes = plt.subplots(1, len(parts), figsize=(4 * len(parts), 8), constrained_layout=True)
        for ax, png, (block, count) in zip(axes, images, parts):
            ax.imshow(matplotlib.image.imread(io.BytesIO(png), format="png"))
            ax.set_title(f"{block.graph.get('name', '')} × {count}")
            ax.axis("off")
        fig.suptitle(f"stack {graph.graph.get('name', '')}")
        return fig
    generations = [sorted(g) for g in nx.topological_generations(graph)]
    positions = {node: (i - (len(gen) - 1) / 2, -depth)
                 for depth, gen in enumerate(generations) for i, node in enumerate(gen)}
    width = max(len(gen) for gen in generations)
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * width, 0.9 * len(generations) + 0.6),
                           constrained_layout=True)
    colors = [ROLE_COLORS.get(get_op(graph.nodes[v]["op"]).role, "#dddddd") for v in graph]
    nx.draw_networkx_nodes(graph, positions, ax=ax, node_color=colors, node_size=2200, node_shape="s")
    nx.draw_networkx_labels(graph, positions, ax=ax, font_size=8,
                            labels={v: f"{v}\n{graph.nodes[v]['op']}" for v in graph})
    adjacent = [(u, v) for u, v in graph.edges if positions[u][1] - positions[v][1] == 1]
    skips = [(u, v) for u, v in graph.edges if (u, v) not in adjacent]
    common = dict(ax=ax, node_size=2200, node_shape="s", arrowsize=12, arrows=True)
    nx.draw_networkx_edges(graph, positions, edgelist=adjacent, **common)
    nx.draw_networkx_edges(graph, positions, edgelist=skips, connectionstyle="arc3,rad=-0.6",
                           edge_color="#555555", style="dashed", **common)
    ax.set_title(f"block {graph.graph.get('name', '')}")
    ax.set_xlim(-width / 2 - 0.8, width / 2 + 0.8)
    ax.axis("off")
    return fig
