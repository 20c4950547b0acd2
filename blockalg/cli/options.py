"""Options and input handling shared by every command (``blockalg`` and ``blockalg train``):
``--preset``/``--set``/``--hf-config``, ``--device``, the progress bar, and turning variant names,
graph files and Hugging Face configs into graphs and dimensions."""

from __future__ import annotations

import contextlib
import sys

import click

from ..errors import BlockalgError
from ..graphs.presets import DEFAULT_PRESET, parse_assignments, preset_names, resolve_dims


def hf_config_option(command):
    """``--hf-config``: a Hugging Face config.json, analysed as one more variant at its own dims."""
    return click.option("--hf-config", type=click.Path(dir_okay=False),
                        help="A Hugging Face config.json: its model joins the variants, and its "
                             "dimensions replace the preset's.")(command)


def dims_options(command=None, *, default=DEFAULT_PRESET):
    """``--preset``, ``--set`` and ``--hf-config``, shared by every command that works at concrete
    dimensions."""
    def decorate(command):
        command = hf_config_option(command)
        command = click.option("--set", "assignments", multiple=True, metavar="NAME=VALUE",
                               help="Override one dimension, e.g. --set n_layers=48 (repeatable).")(command)
        return click.option("--preset", default=default, show_default=True,
                            type=click.Choice(preset_names()), help="Model shape to evaluate at.")(command)
    return decorate(command) if command else decorate


def resolve_inputs(variants, preset, assignments, hf_config):
    """The graphs to analyse, the dimensions and their label (the preset, or the config's type).

    With ``--hf-config`` the config's model comes first and its dimensions are used for all; the
    config fields blockalg does not model are listed on stderr.
    """
    from ..graphs.variants import get

    overrides = parse_assignments(assignments)
    graphs = []
    if hf_config:
        from ..graphs.hf import from_hf_config

        model = from_hf_config(hf_config, **overrides)
        if preset != DEFAULT_PRESET:
            click.echo(f"note: --hf-config gives the dimensions; --preset {preset} is not used", err=True)
        for line in model.not_modeled:
            click.echo(f"note: {hf_config}: not modelled: {line}", err=True)
        graphs.append(model.graph)
        dims, label = model.dims, f"hf:{model.model_type}"
    else:
        dims, label = resolve_dims(preset, overrides), preset
    graphs += [get(name) for name in variants if name.lower() != "vs"]
    if not graphs:
        raise BlockalgError("no variant given (try: blockalg variants, or --hf-config PATH)")
    return _distinct_names(graphs), dims, label


def _distinct_names(graphs):
    """Results are keyed by name: a second graph called like an earlier one becomes ``name-2``."""
    seen = {}
    for graph in graphs:
        name = graph.graph.get("name", "block")
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            graph.graph["name"] = f"{name}-{seen[name]}"
    return graphs


def device_option(command):
    """``--device``: where the torch model is built for empirical checks."""
    return click.option("--device", type=click.Choice(["meta", "cpu", "cuda"]), default="meta",
                        show_default=True,
                        help="meta: no memory, any size; cpu/cuda: real tensors.")(command)


def progress(items, label: str):
    """``items`` with a progress bar on stderr when it is a terminal; silent when piped."""
    items = list(items)
    if not sys.stderr.isatty() or len(items) < 2:
        return contextlib.nullcontext(items)
    return click.progressbar(items, label=label, file=sys.stderr,
                             item_show_func=lambda item: "" if item is None else
                             item.graph.get("name", "") if hasattr(item, "graph") else str(item))
