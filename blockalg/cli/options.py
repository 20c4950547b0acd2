"""Options and input handling shared by every command (``blockalg`` and ``blockalg train``):
``--preset``/``--set``/``--hf-config``, ``--device``, the progress bar, and turning variant names,
graph files, blocks written in PyTorch (``path/to/file.py:Name``) and Hugging Face configs into
graphs and dimensions."""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import signal
import sys
import traceback

import click

from ..errors import BlockalgError, escape_line, quote, sigterm_raises
from ..graphs.presets import (
    DEFAULT_PRESET,
    parse_assignments,
    preset_names,
    resolve_dims,
)

#: ``-h`` as well as ``--help`` on every command.
CONTEXT = {"help_option_names": ["-h", "--help"]}
#: The table formats of every command that prints a table; ``json`` is added where it applies.
TABLE_FORMATS = ("table", "markdown", "latex", "csv")
#: Where a torch model is built, with the same choices and meaning in every command.
DEVICES = ("meta", "cpu", "cuda")


DEBUG_ENV = "BLOCKALG_DEBUG"
#: Exit codes: 0 done, 1 a failed check or drift, 2 bad input (one line naming the culprit), 3 an
#: internal error (a bug: one line, the traceback with --debug), 128 + N killed by signal N
#: (130 Ctrl-C, 143 SIGTERM), 141 the reader of stdout went away.
EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_PIPE = 2, 3, 141


def run_command(command, args=None, prog_name=None, say=None) -> int:
    """Run a click command with blockalg's one error contract and return the exit code.

    Bad input (a :class:`BlockalgError`, a usage error, an ``OSError`` such as a full disk) is
    one line on stderr, exit 2. Anything else that escapes is a bug: one line ("internal error:
    ..., please report"), exit 3, and the traceback only with ``--debug`` (anywhere on the
    command line) or the environment variable ``BLOCKALG_DEBUG=1``. Ctrl-C prints one line and
    exits 130; SIGTERM raises like Ctrl-C (so clean-up code runs) and exits 143. ``say`` prints
    a line to stderr (the default ``click.echo(..., err=True)``).
    """
    say = say or (lambda line: click.echo(line, err=True))
    args = list(sys.argv[1:] if args is None else args)
    end = args.index("--") if "--" in args else len(args)
    debug = "--debug" in args[:end] or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    args = [arg for i, arg in enumerate(args) if i >= end or arg != "--debug"]
    with sigterm_raises():
        try:
            rv = command.main(args, prog_name=prog_name, standalone_mode=False)
        except click.ClickException as e:
            say(f"blockalg: error: {escape_line(e.format_message())}")
            return e.exit_code
        except BlockalgError as e:
            say(f"blockalg: error: {escape_line(str(e))}")
            return EXIT_BAD_INPUT
        except (click.Abort, KeyboardInterrupt) as e:
            signum = getattr(e.__cause__ or e.__context__ or e, "signum", signal.SIGINT)
            say("blockalg: interrupted" if signum == signal.SIGINT else
                f"blockalg: terminated by signal {signum}")
            return 128 + signum
        except BrokenPipeError:
            _silence_stdout()
            return EXIT_PIPE
        except OSError as e:
            where = f"{quote(str(e.filename))}: " if e.filename is not None else ""
            say(f"blockalg: error: {where}{escape_line(e.strerror or str(e))}")
            return EXIT_BAD_INPUT
        except Exception as e:  # the last line of defence: a bug, reported as one
            if debug:
                traceback.print_exc()
            hint = "" if debug else f" (rerun with --debug or {DEBUG_ENV}=1 for the traceback)"
            say(f"blockalg: internal error: {type(e).__name__}: {escape_line(str(e))[:300]}, "
                f"please report{hint}")
            return EXIT_INTERNAL
    return rv if isinstance(rv, int) else 0


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so that the flush at exit stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


class Finite(click.FloatRange):
    """A float in a range that is also finite: ``nan`` and ``inf`` are refused."""

    name = "float"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


#: A positive, finite float (learning rates, clipping norms, init scales).
POSITIVE = Finite(min=0, min_open=True)
#: Seeds per setting and sequences per batch: bounded, so a typo cannot ask for 10^30 of them.
SEEDS = click.IntRange(min=1, max=10_000)
BATCH = click.IntRange(min=1, max=2**31 - 1)


def format_option(*formats, default="table"):
    """``--format``: one of ``formats`` (the same names in every command); with ``latex`` among
    them also ``--no-float``, read by :func:`render_table`."""
    option = click.option("--format", "fmt", type=click.Choice(formats), default=default,
                          show_default=True, help="Output format.")
    if "latex" not in formats:
        return option
    no_float = click.option("--no-float", is_flag=True, expose_value=False,
                            callback=lambda ctx, param, value: ctx.meta.__setitem__(NO_FLOAT, value),
                            help="LaTeX: a bare tabular instead of a table float with caption and "
                                 "label.")
    return lambda command: option(no_float(command))


NO_FLOAT = "blockalg.no_float"


def render_table(table, fmt: str) -> str:
    """``table`` in ``fmt``; LaTeX as a captioned, labelled ``table`` float unless the command got
    ``--no-float``."""
    ctx = click.get_current_context(silent=True)
    return table.render(fmt, float_=not (ctx and ctx.meta.get(NO_FLOAT)))


MODULE_HELP = ("A VARIANT may also be path/to/file.py:Name, a block written in PyTorch: it is traced "
               "and imported as a graph. Importing a .py file RUNS ITS CODE (a .json graph file is "
               "never executed); only this explicit file.py:Name form does.")


def accepts_modules(command):
    """Append :data:`MODULE_HELP` to a command's help (put it right above the function)."""
    command.__doc__ = f"{inspect.cleandoc(command.__doc__)}\n\n{MODULE_HELP}"
    return command


def hf_config_option(command):
    """``--hf-config``: a Hugging Face config.json, analysed as one more variant at its own dims."""
    return click.option("--hf-config", type=click.Path(dir_okay=False),
                        help="A Hugging Face config.json: its model joins the variants, and its "
                             "dimensions replace the preset's.")(command)


def set_option(command):
    """``--set NAME=VALUE`` (repeatable): override one dimension of the preset."""
    return click.option("--set", "assignments", multiple=True, metavar="NAME=VALUE",
                        help="Override one dimension, e.g. --set n_layers=48 (repeatable).")(command)


def dims_options(command=None, *, default=DEFAULT_PRESET):
    """``--preset``, ``--set`` and ``--hf-config``, shared by every command that works at concrete
    dimensions."""
    def decorate(command):
        command = set_option(hf_config_option(command))
        return click.option("--preset", default=default, show_default=True,
                            type=click.Choice(preset_names()), help="Model shape to evaluate at.")(command)
    return decorate(command) if command else decorate


def resolve_inputs(variants, preset, assignments, hf_config):
    """The graphs to analyse, the dimensions and their label (the preset, or the config's type).

    With ``--hf-config`` the config's model takes the place the option has among the variants on
    the command line (first when it comes first: then it is the baseline of the differences) and
    its dimensions are used for all; the config fields blockalg does not model are listed on
    stderr.
    """
    overrides = parse_assignments(assignments)
    names = [name for name in variants if name.lower() != "vs"]
    model = None
    if hf_config:
        from ..graphs.hf import from_hf_config

        model = from_hf_config(hf_config, **overrides)
        if preset != DEFAULT_PRESET:
            click.echo(f"note: --hf-config gives the dimensions; --preset {preset} is not used", err=True)
        for line in model.not_modeled:
            click.echo(f"note: {escape_line(hf_config)}: not modelled: {line}", err=True)
        dims, label = model.dims, f"hf:{model.model_type}"
    else:
        dims, label = resolve_dims(preset, overrides), preset
    graphs = [_graph_of(name, dims) for name in names]
    if model is not None:
        graphs.insert(_hf_position(names), model.graph)
    if not graphs:
        raise BlockalgError("no variant given (try: blockalg variants, or --hf-config PATH)")
    return _distinct_names(graphs), dims, label


def _graph_of(name: str, dims: dict):
    """A catalog variant or graph file, or a block written in PyTorch (``file.py:Name``: imported,
    running the file), verified at ``dims``; the dimensions such a block sets itself are noted."""
    from ..graphs.variants import MODULE_SPEC, get

    if not MODULE_SPEC.match(name):
        return get(name)
    from ..graphs.resolve import apply_relations
    from ..model.importer import import_file

    graph = import_file(name, dims)
    own = apply_relations(graph, dims)
    for key, expr in graph.graph["relations"].items():
        if own[key] != dims.get(key):
            click.echo(f"note: {name}: {key} = {expr} = {own[key]} is set by the module "
                       f"({key} = {dims.get(key)} is not used for it)", err=True)
    return graph


#: ``ctx.meta`` key of the command's own arguments, as typed (set by the ``blockalg`` group).
RAW_ARGS = "blockalg.args"


def _hf_position(names) -> int:
    """How many of the variant ``names`` come before ``--hf-config`` on the command line (0 when
    the command line is not known, e.g. a command run on its own)."""
    ctx = click.get_current_context(silent=True)
    args = (ctx.meta.get(RAW_ARGS) if ctx else None) or []
    at = next((i for i, a in enumerate(args) if a.split("=", 1)[0] == "--hf-config"), None)
    if at is None:
        return 0
    seen = 0
    for arg in args[:at]:  # the variant arguments in order, skipping options and their values
        if seen < len(names) and arg == names[seen]:
            seen += 1
    return seen


def _distinct_names(graphs):
    """Results are keyed by name: a second graph called like an earlier one becomes ``name-2``."""
    seen = {}
    for graph in graphs:
        name = graph.graph.get("name", "block")
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            graph.graph["name"] = f"{name}-{seen[name]}"
    return graphs


def device_option(command=None, *, default="meta"):
    """``--device``: where the torch model is built (the same choices everywhere; commands that
    need real values refuse ``meta`` with :func:`real_device`)."""
    option = click.option("--device", type=click.Choice(DEVICES), default=default,
                          show_default=True,
                          help="Where the torch model is built: meta (no memory, any size, no "
                               "values) or real tensors on cpu/cuda.")
    return option(command) if command else option


def real_device(device: str, what: str) -> str:
    """``device``, or a one-line error when it is ``meta`` and ``what`` needs real values."""
    if device == "meta":
        raise BlockalgError(f"--device meta: {what} needs real tensors (use cpu or cuda)")
    return device


def progress(items, label: str):
    """``items`` with a progress bar on stderr when it is a terminal; silent when piped."""
    items = list(items)
    if not sys.stderr.isatty() or len(items) < 2:
        return contextlib.nullcontext(items)
    return click.progressbar(items, label=label, file=sys.stderr,
                             item_show_func=lambda item: "" if item is None else
                             item.graph.get("name", "") if hasattr(item, "graph") else str(item))


def training_options(command):
    """``--dtype``, ``--optimizer``, ``--recompute``, ``--attention``: how a training step runs
    (shared by ``blockalg memory`` and ``blockalg check``, so that both describe the same step)."""
    from ..analysis.memory import ATTENTION, DTYPE_BYTES, OPTIMIZERS, RECOMPUTE

    options = [
        click.option("--dtype", type=click.Choice(list(DTYPE_BYTES)), default="fp32", show_default=True,
                     help="fp32, or bf16/fp16 mixed precision (fp32 master weights and moments)."),
        click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adamw", show_default=True,
                     help="adamw: two moments; sgd: momentum; none: no optimizer state."),
        click.option("--recompute", type=click.Choice(RECOMPUTE), default="none", show_default=True,
                     help="Activation recomputation: selective recomputes the attention core, "
                          "full checkpoints every block."),
        click.option("--attention", type=click.Choice(ATTENTION), default="eager", show_default=True,
                     help="eager: the math path (keeps the s×s probabilities); flash: a fused kernel."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def hardware_options(command):
    """``--hardware NAME`` and ``--hardware-spec FILE`` (a JSON file adding hardware)."""
    from ..analysis.hardware import hardware_names

    command = click.option("--hardware-spec", type=click.Path(dir_okay=False),
                           help="A JSON file describing hardware: name, peak_flops_bf16, "
                                "peak_flops_fp32, memory_bandwidth, memory_capacity.")(command)
    return click.option("--hardware", metavar="NAME",
                        help=f"Roofline bounds on this hardware ({', '.join(hardware_names())}, "
                             "or a name from --hardware-spec).")(command)


def resolve_hardware(name, spec):
    """The named hardware (None when no name is given), from the spec file or the table."""
    from ..analysis.hardware import get_hardware, load_hardware_spec

    extra = load_hardware_spec(spec) if spec else {}
    if name is None:
        if len(extra) == 1:
            return next(iter(extra.values()))
        if extra:
            raise BlockalgError(f"--hardware-spec {spec} describes {len(extra)} devices: "
                                f"pick one with --hardware")
        return None
    return get_hardware(name, extra)


@contextlib.contextmanager
def step_progress(total: int, label: str):
    """A progress bar of ``total`` steps on stderr when it is a terminal; yields ``advance(n)``
    (None when there is no bar: piped, or nothing to count)."""
    if not sys.stderr.isatty() or total < 2:
        yield None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True) as bar:
        yield bar.update
