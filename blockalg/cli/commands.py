"""The ``blockalg`` command: a thin layer over the library.

Results go to stdout (parseable in json/csv); diagnostics go to stderr. Bad input exits 2 with one
line naming the culprit; a failed empirical check exits 1.
"""

from __future__ import annotations

import importlib
import sys

import click
import sympy as sp

from ..errors import BlockalgError
from ..files import check_writable, read_json
from ..graphs.graph import INIT_SCHEMES
from ..graphs.presets import DEFAULT_PRESET, preset_names
from ..limits import MAX_DIMENSION
from ..output.render import Table, graph_to_dot, graph_to_mermaid, graph_to_text, json_text
from ..output.tables import (
    closed_form_table,
    comparison_table,
    dims_line,
    distribution_table,
    gradient_tables,
    label_part,
    number,
    path_table,
    shortest_to_layer_table,
)
from .options import (
    BATCH,
    CONTEXT,
    RAW_ARGS,
    SEEDS,
    Finite,
    TABLE_FORMATS,
    accepts_modules,
    device_option,
    dims_options,
    format_option,
    hf_config_option,
    progress,
    real_device,
    render_table,
    resolve_inputs,
    run_command,
    set_option,
    training_options,
)


class _Group(click.Group):
    """Runs every command under the one error contract of :func:`~.options.run_command`; the
    commands of :data:`LAZY_COMMANDS` are imported only when asked for (or listed)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        sys.exit(run_command(super(), args, prog_name))

    def resolve_command(self, ctx, args):
        """Also keeps the command's arguments as typed (their order matters for --hf-config)."""
        name, command, rest = super().resolve_command(ctx, args)
        ctx.meta[RAW_ARGS] = list(rest)
        return name, command, rest

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx, name):
        if name in LAZY_COMMANDS and name not in self.commands:
            module, attribute = LAZY_COMMANDS[name]
            self.add_command(getattr(importlib.import_module(module, __package__), attribute), name)
        return super().get_command(ctx, name)


#: Commands in their own module, with the module (relative to this package) and the attribute:
#: ``blockalg train`` (:mod:`blockalg.cli.train`) needs the training code's option choices;
#: ``memory`` and ``inference`` live in :mod:`blockalg.cli.memory`.
LAZY_COMMANDS = {"train": (".train", "train_command"), "memory": (".memory", "memory_command"),
                 "inference": (".memory", "inference_command")}


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(package_name="blockalg")
@click.option("--debug", is_flag=True, expose_value=False,
              help="On an internal error, print the traceback (also: BLOCKALG_DEBUG=1). "
                   "Accepted anywhere on the command line.")
def main():
    """Exact parameter counts, FLOPs and gradient paths of transformer block variants.

    Exit codes: 0 done, 1 a check failed (or report --drift found a difference), 2 bad input
    (one line naming the culprit), 3 internal error (please report), 130 interrupted.
    """


@main.command("variants")
@click.option("--full", is_flag=True,
              help="Also the equations and the whole reference (titles included).")
@format_option(*TABLE_FORMATS, "json")
def variants_command(full, fmt):
    """List the variant catalog: names, aliases, papers (and equations in every format but the
    terminal table's compact default)."""
    from ..graphs.variants import catalog

    entries = catalog()
    if fmt == "json":
        click.echo(json_text([{"name": v.name, "aliases": list(v.aliases),
                                "equations": list(v.equations), "reference": v.reference,
                                "paper": v.paper, "summary": v.summary} for v in entries]))
        return
    lines = "\n" if fmt == "table" else "; "  # one citation per line on a terminal
    columns = {"name": lambda v: v.name, "paper": lambda v: v.paper.replace("; ", lines),
               "aliases": lambda v: ", ".join(v.aliases)}
    if full or fmt != "table":
        columns["equations"] = lambda v: "; ".join(v.equations)
    if full:
        columns["reference"] = lambda v: v.reference
    table = Table(f"blockalg variants ({len(entries)})", list(columns),
                  [[column(v) for column in columns.values()] for v in entries],
                  align="l" * len(columns), wrap_min=16, label="tab:variants",
                  caption="The block variants of blockalg's catalog.")
    click.echo(render_table(table, fmt))


@main.command("show")
@click.argument("variant", required=False)
@hf_config_option
@format_option("text", "json", "mermaid", "dot", default="text")
@accepts_modules
def show_command(variant, hf_config, fmt):
    """Print the block graph of VARIANT (a catalog name or a .json graph file) or --hf-config.

    --format json writes it as a graph file (a block imported from PyTorch keeps its relations and
    notes there, and is never executed again when the file is read).
    """
    from ..graphs.serialize import to_json

    graph = resolve_inputs([variant] if variant else [], DEFAULT_PRESET, (), hf_config)[0][0]
    writers = {"text": graph_to_text, "json": to_json, "mermaid": graph_to_mermaid,
               "dot": graph_to_dot}
    click.echo(writers[fmt](graph).rstrip("\n"))


@main.command("compare")
@click.argument("variants", nargs=-1)
@dims_options
@format_option(*TABLE_FORMATS, "json")
@click.option("--symbolic", is_flag=True, help="Also show the closed forms.")
@click.option("--check", "run_checks", is_flag=True,
              help="Also build each model and show the measured numbers (imports torch).")
@device_option
@accepts_modules
def compare_command(variants, preset, assignments, hf_config, fmt, symbolic, run_checks, device):
    """Compare VARIANTS side by side (names or .json graph files; 'vs' between them is allowed).

    Counts are whole-model figures; FLOPs are per sequence of seq_len tokens at batch 1, with the
    unembedding matmul. Exits 1 when --check finds a mismatch.
    """
    from ..analysis.analyze import MEMORY_KEYS, compare, quantity_keys
    from ..analysis.once import formulas_once

    graphs, dims, label = resolve_inputs(variants, preset, assignments, hf_config)
    with formulas_once():  # the memory rows reuse the counts of the comparison
        comparison = compare(graphs, preset=label, dims=dims)
        results = [r.add_memory() for r in comparison.analyses]
    keys = quantity_keys() + [f"memory.{key}" for key in MEMORY_KEYS]
    checks = [_run_checks(r.graph, dims, device) for r in results] if run_checks else None
    if fmt == "json":
        data = comparison.to_dict()
        for entry, variant_checks in zip(data["variants"], checks or []):
            entry["checks"] = [c.to_dict() for c in variant_checks]
        click.echo(json_text(data))
    else:
        click.echo(render_table(comparison_table(results, keys, checks), fmt))
        if symbolic:
            click.echo()
            click.echo(render_table(closed_form_table(results, keys, fmt), fmt))
    return _exit_code(checks)


@main.command("check")
@click.argument("variants", nargs=-1)
@dims_options
@device_option
@training_options
@click.option("--elementwise/--no-elementwise", default=True, show_default=True,
              help="Also count the non-matmul work on torch's decomposition of the model (meta "
                   "device; about 0.1 s per layer).")
@format_option(*TABLE_FORMATS, "json")
@accepts_modules
def check_command(variants, preset, assignments, hf_config, device, dtype, optimizer, recompute,
                  attention, elementwise, fmt):
    """Build each of VARIANTS as a torch model and check every number against the prediction.

    Prints predicted, measured and pass/fail per check; exits 1 if any check fails. The memory
    checks build the model in --dtype and measure one step as `blockalg memory` describes it.
    """
    from ..analysis.memory import Setting

    graphs, dims, preset = resolve_inputs(variants, preset, assignments, hf_config)
    setting = Setting(dtype=dtype, optimizer=optimizer, recompute=recompute, attention=attention)
    with progress(graphs, "checking") as bar:
        checks = [_run_checks(graph, dims, device, setting, elementwise) for graph in bar]
    if fmt == "json":
        click.echo(json_text({"preset": preset, "dims": dims, "device": device,
                               "setting": setting.to_dict(), "variants": [
            {"name": g.graph["name"], "checks": [c.to_dict() for c in cs]}
            for g, cs in zip(graphs, checks)]}))
    else:
        click.echo(render_table(check_table(graphs, checks, preset, device, dims,
                                            notes_below=fmt == "table"), fmt))
    return _exit_code(checks)


def check_table(graphs, checks, preset, device, dims, notes_below: bool = False) -> Table:
    """Predicted, measured and the result of every check; with ``notes_below`` (a terminal) the
    checks' notes follow the table instead of filling a column."""
    rows, notes = [], []
    for g, cs in zip(graphs, checks):
        for c in cs:
            rows.append([g.graph["name"], c.name, number(c.predicted), number(c.measured),
                         "ok" if c.ok else "FAIL", c.detail])
            if notes_below and c.detail:
                notes.append(f"{g.graph['name']} {c.name}: {c.detail}")
    headers = ["variant", "check", "predicted", "measured", "result", "note"]
    if notes_below:
        headers, rows = headers[:-1], [row[:-1] for row in rows]
    shape = dims_line(dims, graphs)
    return Table(f"blockalg check · preset {preset} · device {device} ({shape})", headers, rows,
                 notes=notes, align="llrrll"[:len(headers)], label=f"tab:check-{label_part(preset)}",
                 caption=f"Every number of {', '.join(g.graph['name'] for g in graphs)} at preset "
                         f"{preset} ({shape.replace('=', ' = ')}), predicted from the graph and "
                         f"measured on the torch model built from it on the {device} device.")


DETAIL_MAX_LAYERS = 48


@main.command("paths")
@click.argument("variants", nargs=-1)
@dims_options
@click.option("--layers", type=click.IntRange(min=1, max=MAX_DIMENSION),
              help="Number of layers (the same as --set n_layers=N).")
@click.option("--detail/--no-detail", default=None,
              help="Per-layer shortest paths and the full distributions "
                   f"(default: on up to {DETAIL_MAX_LAYERS} layers).")
@format_option(*TABLE_FORMATS, "json")
@accepts_modules
def paths_command(variants, preset, assignments, hf_config, layers, detail, fmt):
    """Gradient-path statistics of VARIANTS: closed forms in L and exact values.

    A path runs from the embedding output to the unembedding input; its length is counted in
    norms, attention and FFN sublayers crossed. Nothing is enumerated: a 1000-layer model answers
    as fast as a 12-layer one.
    """
    from ..analysis.paths import path_stats

    graphs, dims, _ = resolve_inputs(variants, preset, assignments, hf_config)
    layers = layers or dims["n_layers"]
    detail = layers <= DETAIL_MAX_LAYERS if detail is None else detail
    stats = [path_stats(g) for g in graphs]
    for st in stats if detail else ():
        st.check_detail(layers)  # before anything is printed
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
        click.echo(json_text({"layers": layers, "variants": entries}))
        return
    click.echo(render_table(path_table(graphs, stats, layers, fmt), fmt))
    if detail:
        for g, st in zip(graphs, stats):
            click.echo()
            click.echo(render_table(distribution_table(g.graph["name"], st, layers), fmt))
            click.echo()
            click.echo(render_table(shortest_to_layer_table(g.graph["name"], st, layers), fmt))


@main.command("gradients")
@click.argument("variants", nargs=-1)
@dims_options(default="tiny-deep")
@device_option(default="cpu")
@click.option("--seeds", type=SEEDS, default=3, show_default=True,
              help="Number of initialisations to average over.")
@click.option("--batch", type=BATCH, default=8, show_default=True)
@click.option("--init-std", type=Finite(min=0, min_open=True, max=1e3), default=0.02,
              show_default=True, help="Std of the weight init (GPT-2: 0.02; try d_model**-0.5).")
@click.option("--residual-scaling/--no-residual-scaling", default=True, show_default=True,
              help="GPT-2's 1/sqrt(2L) on the residual projections' init.")
@click.option("--init", "init", type=click.Choice(INIT_SCHEMES), default=None,
              help="Initialisation scheme instead of the graph's own; xiong: Xiong et al. 2020's "
                   "setting (Xavier weights, unit-variance embeddings, no depth scaling; "
                   "--init-std and --residual-scaling do not apply).")
@click.option("--plot", type=click.Path(dir_okay=False), callback=lambda ctx, param, value:
              _figure_path(value), help="Save a figure (.png, .svg or .pdf).")
@format_option(*TABLE_FORMATS, "json")
@accepts_modules
def gradients_command(variants, preset, assignments, hf_config, device, seeds, batch, init_std,
                      residual_scaling, init, plot, fmt):
    """Per-layer gradient norms at initialisation (Xiong et al. 2020, Fig. 3).

    Expected: post-LN gradient norms grow toward the output layers, pre-LN stay roughly flat.
    What this run measures is printed as measured.
    """
    from ..model.gradients import gradient_norms
    from ..output.plots import gradient_norms as gradient_figure
    from ..output.plots import save_figure

    real_device(device, "measuring gradients")
    graphs, dims, preset = resolve_inputs(variants, preset, assignments, hf_config)
    if plot:
        check_writable(plot)  # before the work, not after
    with progress(graphs, "measuring") as bar:
        results = [gradient_norms(graph, dims, seeds=tuple(range(seeds)), batch=batch,
                                  device=device, init_std=init_std, residual_scaling=residual_scaling,
                                  init=init)
                   for graph in bar]
    if plot:
        save_figure(gradient_figure(results), plot)
        click.echo(f"wrote {plot}", err=True)
    if fmt == "json":
        click.echo(json_text({"preset": preset, "dims": dims, "device": device, "batch": batch,
                               "init": init, "init_std": init_std,
                               "residual_scaling": residual_scaling,
                               "variants": [r.to_dict() for r in results]}))
        return
    scaling = "" if residual_scaling else " without residual scaling"
    init_setting = f"init {init}" if init == "xiong" else f"init std {init_std:g}{scaling}"
    setting = f"preset {preset}, {init_setting}, {seeds} seeds, batch {batch}"
    for table in gradient_tables(results, dims["n_layers"], setting):
        click.echo(render_table(table, fmt))
        click.echo()
    if fmt == "table":
        click.echo("Expected (Xiong et al. 2020): post-LN's ‖∇W2‖ grows toward the output\n"
                   "(last/first > 1), pre-LN's stays roughly flat (≈ 1). Theorem 1: the last\n"
                   "layer's W2 gradient falls like 1/sqrt(L) with depth in pre-LN and does not\n"
                   "in post-LN (analyses/gradient_scaling.py).")


def _figure_path(value):
    if value is not None and not value.lower().endswith((".png", ".svg", ".pdf")):
        raise click.BadParameter(f"{value}: the figure's name must end in .png, .svg or .pdf")
    return value


THOUSANDS = {"thin": r"\,", "comma": ",", "space": r"\ ", "none": ""}


@main.command("report")
@click.argument("variants", nargs=-1)
@click.option("--preset", "presets", multiple=True, type=click.Choice(preset_names()),
              help=f"Preset to report at (repeatable; default {DEFAULT_PRESET}).")
@set_option
@click.option("--out", type=click.Path(file_okay=False), default="reports/blockalg",
              show_default=True, help="Folder to write (replaced as a whole, atomically).")
@hf_config_option
@click.option("--empirical", is_flag=True, help="Also measure gradient norms at init (torch).")
@click.option("--thousands", type=click.Choice(list(THOUSANDS)), default="thin", show_default=True,
              help="Thousands separator in the LaTeX tables (thin: a thin space, \\,).")
@click.option("--drift", "check_only", is_flag=True,
              help="Write nothing; exit 1 if the text files on disk differ from what would be "
                   "written. Measured gradients are not measured again: they are read from the "
                   "folder's data.json.")
@click.option("--check", "old_drift", is_flag=True, hidden=True)  # the old spelling of --drift
@accepts_modules
def report_command(variants, presets, assignments, out, hf_config, empirical, thousands, check_only,
                   old_drift):
    """Write a self-contained report folder on VARIANTS: Markdown, a LaTeX document with captioned
    tables and figures, CSV, JSON and figures."""
    from ..output.report import drift_report, replaceable, variant_report

    check_only = check_only or old_drift

    if not check_only:
        replaceable(out)  # a folder it may replace, writable: before the work, not after
    shapes = []
    for preset in presets or (DEFAULT_PRESET,):
        graphs, dims, label = resolve_inputs(variants, preset, assignments, hf_config)
        shapes.append((label, dims))
    measured = _measured_gradients(out) if check_only and empirical else None
    folder = variant_report(graphs, dict(shapes), empirical=empirical, thousands=THOUSANDS[thousands],
                            measured=measured, draw=not check_only)
    if check_only:
        if measured is not None:
            click.echo(f"note: gradients not measured again; taken from {out}/data.json", err=True)
        return drift_report(folder, out, lambda line: click.echo(line, err=True))
    folder.write(out)
    click.echo(f"wrote {len(folder.files)} files to {out}", err=True)


def _measured_gradients(out):
    """The gradient measurements of the report in ``out`` (None when it has none)."""
    from pathlib import Path

    try:
        return read_json(Path(out) / "data.json")["gradients"]
    except (BlockalgError, KeyError, TypeError):
        return None


def _run_checks(graph, dims, device, memory=None, elementwise=False):
    from ..model.check import check

    return check(graph, dims, device=device, memory=memory, elementwise=elementwise)


def _exit_code(checks) -> int:
    failed = [c for cs in checks or [] for c in cs if not c.ok]
    if failed:
        click.echo(f"blockalg: {len(failed)} check(s) failed: "
                   f"{', '.join(sorted({c.name for c in failed}))}", err=True)
    return 1 if failed else 0


if __name__ == "__main__":
    main()
