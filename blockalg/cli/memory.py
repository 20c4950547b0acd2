"""``blockalg memory`` and ``blockalg inference``: memory and inference costs derived from the
graph (:mod:`blockalg.analysis.memory`), with roofline bounds on named hardware
(:mod:`blockalg.analysis.hardware`). Registered on the ``blockalg`` group by
:mod:`blockalg.cli.commands`. Importing this module does not import torch.
"""

from __future__ import annotations

import click
import sympy as sp

from ..analysis.memory import INFERENCE_KEYS, MEMORY_KEYS, Setting
from ..output.render import Table, format_value, json_text
from ..output.tables import dims_line, label_part
from .options import (
    TABLE_FORMATS,
    dims_options,
    format_option,
    hardware_options,
    render_table,
    resolve_hardware,
    resolve_inputs,
    training_options,
)

FORMAT = format_option(*TABLE_FORMATS, "json")
BATCH = click.option("--batch", type=click.IntRange(min=1), help="Sequences per step (--set batch=B).")


def _shape(assignments, **dims) -> tuple:
    """``--set`` assignments with the shortcut options (``--batch``, ``--seq-len``) appended."""
    return tuple(assignments) + tuple(f"{name}={value}" for name, value in dims.items()
                                      if value is not None)


def human_bytes(value: int) -> str:
    """``1234567890`` → ``'1,234,567,890 (1.15 GiB)'``.

    >>> human_bytes(2 * 2**30)
    '2,147,483,648 (2 GiB)'
    """
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{format_value(value)} ({value / size:.3g} {unit})"
    return format_value(value)


def _expressions(exprs: dict, dims: dict, group: str) -> dict[str, str]:
    from ..analysis.memory import closed_forms

    return {f"{group}.{key}": str(expr) for key, expr in closed_forms(exprs, dims).items()}


def _entries(graphs, expressions_of, dims, group: str, derived=None, roofline=None) -> list[dict]:
    """One JSON entry per graph: ``{"name", group: values at dims, "expressions"}``, the values
    extended by ``derived(values)`` and the entry by ``"roofline": roofline(values)`` if given."""
    from ..analysis.memory import values_at

    entries = []
    for graph in graphs:
        exprs = expressions_of(graph)
        values = values_at(exprs, dims)
        values.update(derived(values) if derived else {})
        entry = {"name": graph.graph["name"], group: values,
                 "expressions": _expressions(exprs, dims, group)}
        if roofline is not None:
            entry["roofline"] = roofline(values)
        entries.append(entry)
    return entries


def _echo_table(fmt, command: str, what: str, label, dims, graphs, entries, rows, notes,
                setting: str = "") -> None:
    """``blockalg <command>``'s table of ``rows`` for ``entries``, captioned "<what> of ..."."""
    shape, names = dims_line(dims, graphs), [e["name"] for e in entries]
    click.echo(render_table(Table(
        f"blockalg {command} · preset {label}{f' · {setting}' if setting else ''} ({shape})",
        ["quantity", *names], rows, notes=notes, label=f"tab:{command}-{label_part(label)}",
        caption=f"{what} of {', '.join(names)} at preset {label} ({shape.replace('=', ' = ')})"
                f"{f', {setting}' if setting else ''}. {notes[0]}"), fmt))


def _roofline_rows(rooflines, labels) -> list[list[str]]:
    rows = []
    for key, label in labels:
        cells = []
        for r in rooflines:
            value = r[key]
            cells.append("yes" if value is True else "no" if value is False
                         else f"{value:.4g}" if isinstance(value, float) else str(value))
        rows.append([label, *cells])
    return rows


@click.command("memory")
@click.argument("variants", nargs=-1)
@dims_options
@BATCH
@click.option("--seq-len", type=click.IntRange(min=1), help="Tokens per sequence (--set seq_len=S).")
@training_options
@click.option("--data-parallel", type=click.IntRange(min=1), default=1, show_default=True,
              help="Data-parallel ranks (ZeRO shards over them).")
@click.option("--zero", type=click.Choice(["0", "1", "2", "3"]), default="0", show_default=True,
              help="ZeRO stage: 1 shards optimizer states, 2 also gradients, 3 also weights.")
@hardware_options
@FORMAT
def memory_command(variants, preset, assignments, hf_config, batch, seq_len, dtype, optimizer,
                   recompute, attention, data_parallel, zero, hardware, hardware_spec, fmt):
    """Training memory of VARIANTS, per rank, in bytes: weights, gradients, optimizer states,
    buffers, activations saved for backward, and their sum, peak_training; the KV cache of the
    context; with --hardware, whether a step fits and its least time on the roofline.

    `blockalg check` measures the same figures on the built model (same options).
    """
    from ..analysis.hardware import training_roofline
    from ..analysis.memory import memory_expressions

    setting = Setting(dtype=dtype, optimizer=optimizer, recompute=recompute, attention=attention,
                      data_parallel=data_parallel, zero=int(zero))
    graphs, dims, label = resolve_inputs(variants, preset, _shape(assignments, batch=batch,
                                                                  seq_len=seq_len), hf_config)
    hw = resolve_hardware(hardware, hardware_spec)
    entries = _entries(graphs, lambda g: memory_expressions(g, setting), dims, "memory",
                       roofline=None if hw is None else lambda values: training_roofline(values, hw, dtype))
    if fmt == "json":
        click.echo(json_text({"preset": label, "dims": dims, "setting": setting.to_dict(),
                               "hardware": hw.to_dict() if hw else None, "variants": entries},
                              indent=2))
        return
    rows = [[f"memory.{key}", *(human_bytes(e["memory"][key]) if not key.endswith("flops")
                                else format_value(e["memory"][key]) for e in entries)]
            for key in MEMORY_KEYS]
    if hw is not None:
        rows += _roofline_rows([e["roofline"] for e in entries], [
            ("fits", f"fits in {hw.name} ({human_bytes(hw.capacity)})"),
            ("step_time_s", "step time ≥ (s)"), ("bound", "bound by")])
    notes = ["Bytes per rank. Activations: what autograd keeps for backward in one step of batch "
             "sequences, loss included; peak_training = weights + gradients + optimizer + buffers "
             "+ activations + activations_recompute."]
    _echo_table(fmt, "memory", "Training memory", label, dims, graphs, entries, rows, notes,
                setting.describe())


@click.command("inference")
@click.argument("variants", nargs=-1)
@dims_options
@click.option("--context", type=click.IntRange(min=1),
              help="Tokens in the context (--set seq_len=N; default: the preset's n_ctx).")
@BATCH
@click.option("--dtype", type=click.Choice(["fp32", "bf16", "fp16"]), default="bf16", show_default=True,
              help="Dtype of weights and cache.")
@hardware_options
@FORMAT
def inference_command(variants, preset, assignments, hf_config, context, batch, dtype, hardware,
                      hardware_spec, fmt):
    """Inference costs of VARIANTS at a context of N tokens: the KV cache, the prefill's FLOPs,
    and the FLOPs and bytes of decoding the token at position N − 1 (which reads the whole
    cache), hence its arithmetic intensity; with --hardware, roofline bounds on prefill time and
    decode tokens per second."""
    from ..analysis.hardware import inference_roofline
    from ..analysis.memory import inference_expressions

    setting = Setting(dtype=dtype)
    graphs, dims, label = resolve_inputs(variants, preset, _shape(assignments, seq_len=context,
                                                                  batch=batch), hf_config)
    hw = resolve_hardware(hardware, hardware_spec)
    entries = _entries(graphs, lambda g: inference_expressions(g, setting), dims, "inference",
                       derived=_intensity,
                       roofline=None if hw is None else
                       lambda values: inference_roofline(values, dims["batch"], hw, dtype))
    if fmt == "json":
        click.echo(json_text({"preset": label, "dims": dims, "dtype": dtype,
                               "context": dims["seq_len"], "position": dims["seq_len"] - 1,
                               "hardware": hw.to_dict() if hw else None, "variants": entries},
                              indent=2))
        return
    rows = [[f"inference.{key}", *(human_bytes(e["inference"][key]) if key in ("weights", "kv_cache")
                                   or key.endswith("bytes_per_token")
                                   else format_value(e["inference"][key]) for e in entries)]
            for key in INFERENCE_KEYS]
    rows.append(["inference.arithmetic_intensity",
                 *(f"{e['inference']['arithmetic_intensity']:.4g} FLOP/B" for e in entries)])
    if hw is not None:
        rows += _roofline_rows([e["roofline"] for e in entries], [
            ("fits", f"fits in {hw.name} ({human_bytes(hw.capacity)})"),
            ("prefill_time_s", "prefill time ≥ (s)"), ("decode_time_s", "decode step ≥ (s)"),
            ("decode_tokens_per_s", "decode tokens/s ≤"), ("decode_bound", "decode bound by"),
            ("ridge_point", "ridge point (FLOP/B)")])
    notes = [f"Context {dims['seq_len']} tokens, batch {dims['batch']}, {dtype}; decode: one step "
             f"of the batch at position {dims['seq_len'] - 1}, reading every weight it uses and "
             "the whole cache; matmul FLOPs."]
    _echo_table(fmt, "inference", "Inference costs", label, dims, graphs, entries, rows, notes)


def _intensity(values) -> dict:
    """Decode FLOPs per byte read: rounded for reading, and exact."""
    intensity = sp.Rational(values["decode_flops_per_token"], values["decode_bytes_per_token"])
    return {"arithmetic_intensity": float(f"{float(intensity):.6g}"),
            "arithmetic_intensity_exact": str(intensity)}
