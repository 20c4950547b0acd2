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
from .render import FORMATS, Table, format_int, graph_to_dot, graph_to_mermaid, graph_to_text


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
def compare_command(variants, preset, assignments, fmt, symbolic):
    """Compare VARIANTS side by side (names or .json graph files; 'vs' between them is allowed).

    Counts are whole-model figures; FLOPs are per sequence of seq_len tokens at batch 1, with the
    unembedding matmul.
    """
    from .analyze import analyze, quantity_keys

    dims = resolve_dims(preset, parse_assignments(assignments))
    results = [analyze(name, preset=preset, dims=dims) for name in variant_names(variants)]
    if fmt == "json":
        click.echo(json.dumps({"preset": preset, "dims": dims,
                               "variants": [r.to_dict() for r in results]}, indent=2))
        return
    click.echo(comparison_table(results, quantity_keys()).render(fmt))
    if symbolic:
        click.echo()
        click.echo(closed_form_table(results, quantity_keys(), fmt).render(fmt))


def _dims_line(dims) -> str:
    return ", ".join(f"{k}={v}" for k, v in dims.items())


def comparison_table(results, keys) -> Table:
    """Values per variant, with the difference of each later variant to the first."""
    first = results[0]
    headers = ["quantity", first.name]
    for r in results[1:]:
        headers += [r.name, f"Δ vs {first.name}"]
    rows = []
    for key in keys:
        row = [key, format_int(first.values[key])]
        for r in results[1:]:
            row += [format_int(r.values[key]), format_int(r.values[key] - first.values[key], signed=True)]
        rows.append(row)
    title = f"blockalg compare · preset {first.preset} ({_dims_line(first.dims)})"
    return Table(title, headers, rows,
                 notes=["FLOPs: one sequence of seq_len tokens, batch 1, unembedding included; "
                        "matmul FLOPs count attention at the dense s×s cost."])


def closed_form_table(results, keys, fmt: str = "table") -> Table:
    """The closed form of every quantity per variant (as LaTeX maths in latex and markdown)."""
    def written(expr):
        return f"${sp.latex(expr, symbol_names=LATEX_NAMES)}$" if fmt in ("latex", "markdown") else str(expr)

    rows = [[key, *(written(r.closed_form(key)) for r in results)] for key in keys]
    return Table("closed forms (n_layers symbolic)", ["quantity", *(r.name for r in results)], rows)


if __name__ == "__main__":
    main()
