"""The ``blockalg`` command: a thin layer over the library.

Results go to stdout (parseable in json/csv); diagnostics go to stderr. Bad input exits 2 with one
line naming the culprit; a failed empirical check exits 1.
"""

from __future__ import annotations

import json
import sys

import click
import sympy as sp

from .errors import BlockalgError
from .presets import DEFAULT_PRESET, parse_assignments, preset_names, resolve_dims
from .symbols import LATEX_NAMES
from .render import FORMATS, Table, format_int, format_value, graph_to_dot, graph_to_mermaid, graph_to_text


class _Group(click.Group):
    """Turns every usage error into one line on stderr and exit code 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as e:
            click.echo(f"blockalg: error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except BlockalgError as e:
            click.echo(f"blockalg: error: {e}", err=True)
            sys.exit(2)
        except click.Abort:
            click.echo("blockalg: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_Group)
@click.version_option(package_name="blockalg")
def main():
    """Exact parameter counts, FLOPs and gradient paths of transformer block variants."""


def dims_options(command):
    """``--preset`` and ``--set``, shared by every command that works at concrete dimensions."""
    command = click.option("--set", "assignments", multiple=True, metavar="NAME=VALUE",
                           help="Override one dimension, e.g. --set n_layers=48 (repeatable).")(command)
    return click.option("--preset", default=DEFAULT_PRESET, show_default=True,
                        type=click.Choice(preset_names()), help="Model shape to evaluate at.")(command)


def device_option(command):
    """``--device``: where the torch model is built for empirical checks."""
    return click.option("--device", type=click.Choice(["meta", "cpu", "cuda"]), default="meta",
                        show_default=True,
                        help="meta: no memory, any size; cpu/cuda: real tensors.")(command)


def variant_names(names) -> list[str]:
    """Drop a literal ``vs`` so ``compare pre-LN vs post-LN`` reads as it is said."""
    names = [n for n in names if n.lower() != "vs"]
    if not names:
        raise BlockalgError("no variant given (try: blockalg variants)")
    return names


@main.command("variants")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
def variants_command(fmt):
    """List the variant catalog."""
    from .variants import catalog

    entries = catalog()
    if fmt == "json":
        click.echo(json.dumps([{"name": v.name, "aliases": list(v.aliases),
                                "equations": list(v.equations), "reference": v.reference,
                                "summary": v.summary} for v in entries], indent=2))
        return
    rows = [[v.name, ", ".join(v.aliases), "; ".join(v.equations)] for v in entries]
    click.echo(Table("blockalg variants", ["name", "aliases", "equations"], rows).to_text())


@main.command("show")
@click.argument("variant")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "mermaid", "dot"]),
              default="text", show_default=True, help="Output format.")
def show_command(variant, fmt):
    """Print the block graph of VARIANT (a catalog name or a .json graph file)."""
    from .graph import to_json
    from .variants import get

    graph = get(variant)
    writers = {"text": graph_to_text, "json": to_json, "mermaid": graph_to_mermaid,
               "dot": graph_to_dot}
    click.echo(writers[fmt](graph).rstrip("\n"))


@main.command("compare")
@click.argument("variants", nargs=-1, required=True)
@dims_options
@click.option("--format", "fmt", type=click.Choice([*FORMATS, "json"]), default="table",
              show_default=True, help="Output format.")
@click.option("--symbolic", is_flag=True, help="Also show the closed forms.")
@click.option("--check", "run_checks", is_flag=True,
              help="Also build each model and show the measured numbers (imports torch).")
@device_option
def compare_command(variants, preset, assignments, fmt, symbolic, run_checks, device):
    """Compare VARIANTS side by side (names or .json graph files; 'vs' between them is allowed).

    Counts are whole-model figures; FLOPs are per sequence of seq_len tokens at batch 1, with the
    unembedding matmul. Exits 1 when --check finds a mismatch.
    """
    from .analyze import analyze, quantity_keys

    dims = resolve_dims(preset, parse_assignments(assignments))
    results = [analyze(name, preset=preset, dims=dims) for name in variant_names(variants)]
    checks = [_run_checks(r.graph, dims, device) for r in results] if run_checks else None
    if fmt == "json":
        entries = [r.to_dict() for r in results]
        for entry, variant_checks in zip(entries, checks or []):
            entry["checks"] = [c.to_dict() for c in variant_checks]
        click.echo(json.dumps({"preset": preset, "dims": dims, "variants": entries}, indent=2))
    else:
        click.echo(comparison_table(results, quantity_keys(), checks).render(fmt))
        if symbolic:
            click.echo()
            click.echo(closed_form_table(results, quantity_keys(), fmt).render(fmt))
    return _exit_code(checks)


@main.command("check")
@click.argument("variants", nargs=-1, required=True)
@dims_options
@device_option
@click.option("--format", "fmt", type=click.Choice([*FORMATS, "json"]), default="table",
              show_default=True, help="Output format.")
def check_command(variants, preset, assignments, device, fmt):
    """Build each of VARIANTS as a torch model and check every number against the prediction.

    Prints predicted, measured and pass/fail per check; exits 1 if any check fails.
    """
    from .variants import get

    dims = resolve_dims(preset, parse_assignments(assignments))
    graphs = [get(name) for name in variant_names(variants)]
    checks = [_run_checks(graph, dims, device) for graph in graphs]
    if fmt == "json":
        click.echo(json.dumps({"preset": preset, "dims": dims, "device": device, "variants": [
            {"name": g.graph["name"], "checks": [c.to_dict() for c in cs]}
            for g, cs in zip(graphs, checks)]}, indent=2))
    else:
        rows = [[g.graph["name"], c.name, _number(c.predicted), _number(c.measured),
                 "ok" if c.ok else "FAIL", c.detail] for g, cs in zip(graphs, checks) for c in cs]
        title = f"blockalg check · preset {preset} · device {device} ({_dims_line(dims)})"
        click.echo(Table(title, ["variant", "check", "predicted", "measured", "result", "note"],
                         rows, align="llrrll").render(fmt))
    return _exit_code(checks)


DETAIL_MAX_LAYERS = 48


@main.command("paths")
@click.argument("variants", nargs=-1, required=True)
@click.option("--preset", default=DEFAULT_PRESET, show_default=True, type=click.Choice(preset_names()),
              help="Take the number of layers from this preset.")
@click.option("--layers", type=click.IntRange(min=1), help="Number of layers (overrides --preset).")
@click.option("--detail/--no-detail", default=None,
              help="Per-layer shortest paths and the full distributions "
                   f"(default: on up to {DETAIL_MAX_LAYERS} layers).")
@click.option("--format", "fmt", type=click.Choice([*FORMATS, "json"]), default="table",
              show_default=True, help="Output format.")
def paths_command(variants, preset, layers, detail, fmt):
    """Gradient-path statistics of VARIANTS: closed forms in L and exact values.

    A path runs from the embedding output to the unembedding input; its length is counted in
    norms, attention and FFN sublayers crossed. Nothing is enumerated: a 1000-layer model answers
    as fast as a 12-layer one.
    """
    from .paths import path_stats
    from .variants import get

    layers = layers or resolve_dims(preset)["n_layers"]
    detail = layers <= DETAIL_MAX_LAYERS if detail is None else detail
    graphs = [get(name) for name in variant_names(variants)]
    stats = [path_stats(g) for g in graphs]
    if fmt == "json":
        entries = []
        for g, st in zip(graphs, stats):
            entry = {"name": g.graph["name"], "paths": st.at(layers),
                     "closed_forms": {k: sp.sstr(e) for k, e in st.expressions.items()},
                     "distributions": {}}
            for of, (expr, description) in (("sublayers", st.sublayer_distribution),
                                             ("norms", st.norm_distribution)):
                entry["distributions"][of] = {"generating_function": sp.sstr(expr),
                                              "description": description}
                if detail:
                    entry["distributions"][of]["counts"] = {
                        str(k): c for k, c in st.distribution(layers, of).items()}
            if detail:
                entry["shortest_to_layer"] = st.shortest_to_layer(layers)
            entries.append(entry)
        click.echo(json.dumps({"layers": layers, "variants": entries}, indent=2))
        return
    click.echo(path_table(graphs, stats, layers, fmt).render(fmt))
    if detail:
        for g, st in zip(graphs, stats):
            click.echo()
            click.echo(distribution_table(g.graph["name"], st, layers).render(fmt))
            click.echo()
            click.echo(shortest_to_layer_table(g.graph["name"], st, layers).render(fmt))


def path_table(graphs, stats, layers, fmt) -> Table:
    """Each path statistic per variant: exact value at L = ``layers`` and closed form in L."""
    def written(expr):
        return f"${sp.latex(expr, symbol_names=LATEX_NAMES)}$" if fmt in ("latex", "markdown") \
            else sp.sstr(expr)

    headers, rows = ["statistic"], []
    for g in graphs:
        headers += [g.graph["name"], "closed form"]
    values = [st.at(layers) for st in stats]
    for key in ("count", "shortest.norms", "shortest.sublayers", "longest.norms",
                "longest.sublayers", "mean_sublayers", "mean_norms"):
        row = [key]
        for st, v in zip(stats, values):
            group, _, part = key.partition(".")
            value = v[group][part] if part else v[key]
            row += [format_value(value) if isinstance(value, int) else value,
                    written(st.expressions[key])]
        rows.append(row)
    for label, pick in (("block T(n, a, f)", lambda st: st.block),
                        ("model T**L · final", lambda st: st.generating_function),
                        ("sublayers crossed", lambda st: st.sublayer_distribution[1]),
                        ("norms crossed", lambda st: st.norm_distribution[1])):
        row = [label]
        for st in stats:
            item = pick(st)
            row += ["", item if isinstance(item, str) else written(item)]
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


@main.command("gradients")
@click.argument("variants", nargs=-1, required=True)
@click.option("--preset", default="tiny-deep", show_default=True, type=click.Choice(preset_names()),
              help="Model shape (small: this runs real tensors).")
@click.option("--set", "assignments", multiple=True, metavar="NAME=VALUE",
              help="Override one dimension (repeatable).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Number of initialisations to average over.")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--init-std", type=click.FloatRange(min=0, min_open=True), default=0.02,
              show_default=True, help="Std of the weight init (GPT-2: 0.02; try d_model**-0.5).")
@click.option("--residual-scaling/--no-residual-scaling", default=True, show_default=True,
              help="GPT-2's 1/sqrt(2L) on the residual projections' init.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Save a figure (PNG/SVG/PDF).")
@click.option("--format", "fmt", type=click.Choice([*FORMATS, "json"]), default="table",
              show_default=True, help="Output format.")
def gradients_command(variants, preset, assignments, device, seeds, batch, init_std,
                      residual_scaling, plot, fmt):
    """Per-layer gradient norms at initialisation (Xiong et al. 2020, Fig. 3).

    Expected: post-LN gradient norms grow toward the output layers, pre-LN stay roughly flat.
    What this run measures is printed as measured.
    """
    from .gradients import HEADLINE, gradient_norms, plot_gradient_norms
    from .variants import get

    dims = resolve_dims(preset, parse_assignments(assignments))
    results = [gradient_norms(get(name), dims, seeds=tuple(range(seeds)), batch=batch,
                              device=device, init_std=init_std, residual_scaling=residual_scaling)
               for name in variant_names(variants)]
    if plot:
        plot_gradient_norms(results, plot)
        click.echo(f"wrote {plot}", err=True)
    if fmt == "json":
        click.echo(json.dumps({"preset": preset, "dims": dims, "device": device, "batch": batch,
                               "init_std": init_std, "residual_scaling": residual_scaling,
                               "variants": [r.to_dict() for r in results]}, indent=2))
        return
    for title, pick in ((f"‖∇W‖ of {HEADLINE} (FFN W2)", lambda r: r.weights[HEADLINE]),
                        ("‖∂loss/∂x_l‖ at block input (residual stream)", lambda r: r.residual)):
        headers = ["layer", *(r.name for r in results)]
        columns = [(r.mean(pick(r)), r.std(pick(r))) for r in results]
        rows = [[str(layer + 1), *(f"{m[layer]:.4g} ± {s[layer]:.2g}" for m, s in columns)]
                for layer in range(dims["n_layers"])]
        rows.append(["last/first", *(f"{r.trend(pick(r)):.3g}" for r in results)])
        scaling = "" if residual_scaling else " without residual scaling"
        click.echo(Table(f"{title} · preset {preset}, init std {init_std:g}{scaling}, {seeds} seeds, "
                         f"batch {batch} (mean ± std)", headers, rows).render(fmt))
        click.echo()
    click.echo("Expected (Xiong et al. 2020): post-LN grows toward the output (last/first > 1), "
               "pre-LN stays roughly flat (≈ 1).")


def _run_checks(graph, dims, device):
    from .check import check

    return check(graph, dims, device=device)


def _exit_code(checks) -> int:
    failed = [c for cs in checks or [] for c in cs if not c.ok]
    if failed:
        click.echo(f"blockalg: {len(failed)} check(s) failed: "
                   f"{', '.join(sorted({c.name for c in failed}))}", err=True)
    return 1 if failed else 0


def _number(value) -> str:
    return format_int(value) if isinstance(value, int) else f"{value:g}"


def _dims_line(dims) -> str:
    return ", ".join(f"{k}={v}" for k, v in dims.items())


#: The check that measures each quantity of the comparison table.
CHECK_OF = {"params.total": "params", **{f"params.{c}": f"params.{c}"
                                         for c in ("attention", "ffn", "norm", "embedding")},
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
    title = f"blockalg compare · preset {first.preset} ({_dims_line(first.dims)})"
    notes = ["FLOPs: one sequence of seq_len tokens, batch 1, unembedding included; "
             "matmul FLOPs count attention at the dense s×s cost."]
    for r, variant_checks in zip(results, checks or []):
        notes += [f"{r.name}: {c.name} predicted {_number(c.predicted)} for the backend measured "
                  f"({c.detail})" for c in variant_checks
                  if c.name in CHECK_OF.values() and c.predicted != r.values.get(_quantity_of(c.name))]
    return Table(title, headers, rows, notes=notes)


def _quantity_of(check_name: str) -> str:
    return next(key for key, name in CHECK_OF.items() if name == check_name)


def closed_form_table(results, keys, fmt: str = "table") -> Table:
    """The closed form of every quantity per variant (as LaTeX maths in latex and markdown)."""
    def written(expr):
        return f"${sp.latex(expr, symbol_names=LATEX_NAMES)}$" if fmt in ("latex", "markdown") else str(expr)

    rows = [[key, *(written(r.closed_form(key)) for r in results)] for key in keys]
    return Table("closed forms (n_layers symbolic)", ["quantity", *(r.name for r in results)], rows)


if __name__ == "__main__":
    main()
