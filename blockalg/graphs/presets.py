"""Presets: model shapes as plain data, and the dimension set an analysis runs at.

A preset gives the independent dimensions; :func:`resolve_dims` fills the derived ones
(``d_head = d_model / n_heads``, ``n_kv_heads = n_heads``, ``seq_len = n_ctx``, ``batch = 1``),
applies ``--set NAME=VALUE`` overrides and checks the result.

>>> dims = resolve_dims("gpt2-small", {"seq_len": 512})
>>> dims["d_head"], dims["seq_len"], dims["n_ctx"]
(64, 512, 1024)
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import BlockalgError, quote
from ..limits import MAX_DIMENSION
from .symbols import DIMENSIONS

DEFAULT_PRESET = "gpt2-small"

#: Sources: Radford et al. 2019 (GPT-2, Table 2 and the released configs); Brown et al. 2020
#: (GPT-3, Table 2.1). GPT-2 sizes: 124M / 355M / 774M / 1558M parameters.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(d_model=64, n_heads=4, n_layers=2, n_ctx=64, vocab=512, d_ff=256),
    # small enough for CPU studies, deep enough to show a trend across layers
    "tiny-deep": dict(d_model=128, n_heads=4, n_layers=12, n_ctx=128, vocab=1024, d_ff=512),
    "gpt2-small": dict(d_model=768, n_heads=12, n_layers=12, n_ctx=1024, vocab=50257, d_ff=3072),
    "gpt2-medium": dict(d_model=1024, n_heads=16, n_layers=24, n_ctx=1024, vocab=50257, d_ff=4096),
    "gpt2-large": dict(d_model=1280, n_heads=20, n_layers=36, n_ctx=1024, vocab=50257, d_ff=5120),
    "gpt2-xl": dict(d_model=1600, n_heads=25, n_layers=48, n_ctx=1024, vocab=50257, d_ff=6400),
    "gpt3-175b": dict(d_model=12288, n_heads=96, n_layers=96, n_ctx=2048, vocab=50257, d_ff=49152),
}

#: The presets of published models (``tiny`` and ``tiny-deep`` are test shapes).
PUBLISHED_PRESETS = ("gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl", "gpt3-175b")

#: Dimensions an analysis may be given.
SETTABLE = tuple(DIMENSIONS)


def preset_names() -> list[str]:
    return list(PRESETS)


def resolve_dims(preset=DEFAULT_PRESET, overrides: Mapping[str, int] | None = None) -> dict:
    """The full, checked dimension set of ``preset`` (a name, or a dict of dimensions) with
    ``overrides`` applied; missing dimensions take their derived defaults."""
    if isinstance(preset, Mapping):
        base = dict(preset)
    elif preset in PRESETS:
        base = PRESETS[preset]
    else:
        raise BlockalgError(f"unknown preset '{preset}' (known: {', '.join(PRESETS)})")
    overrides = dict(overrides or {})
    for name in [*base, *overrides]:
        if name not in SETTABLE:
            raise BlockalgError(f"unknown dimension {quote(name)} (known: {', '.join(SETTABLE)})")
    given = {**base, **overrides}
    for name, value in given.items():
        _check_positive(name, value)
    if "d_head" not in given and given["d_model"] % given["n_heads"]:
        raise BlockalgError(f"d_model = {given['d_model']} is not divisible by "
                            f"n_heads = {given['n_heads']}")
    derived = {"d_head": given["d_model"] // given["n_heads"], "n_kv_heads": given["n_heads"],
               "seq_len": given["n_ctx"], "batch": 1, "n_experts": 8, "top_k": 2}
    dims = {**derived, **given}
    if dims["n_heads"] % dims["n_kv_heads"]:
        raise BlockalgError(f"n_heads = {dims['n_heads']} is not a multiple of "
                            f"n_kv_heads = {dims['n_kv_heads']}")
    if dims["top_k"] > dims["n_experts"]:
        raise BlockalgError(f"top_k = {dims['top_k']} exceeds n_experts = {dims['n_experts']}")
    if dims["seq_len"] > dims["n_ctx"]:
        raise BlockalgError(f"seq_len = {dims['seq_len']} exceeds the context n_ctx = {dims['n_ctx']}")
    return {name: dims[name] for name in DIMENSIONS if name in dims}


def _check_positive(name: str, value) -> None:
    if type(value) is not int or not 0 < value <= MAX_DIMENSION:
        raise BlockalgError(f"{name} = {quote(value, 60)}: dimensions are positive integers up "
                            f"to 2**63 - 1 (what the device's int64 holds)")


def parse_assignments(items) -> dict[str, int]:
    """``["d_model=512", "n_layers=6"]`` → ``{"d_model": 512, "n_layers": 6}``.

    >>> parse_assignments(["n_layers=6"])
    {'n_layers': 6}
    """
    result = {}
    for item in items:
        name, sep, value = item.partition("=")
        name, digits = name.strip(), value.strip().replace("_", "")
        if not sep or not name:
            raise BlockalgError(f"--set {quote(item, 60)}: expected NAME=VALUE")
        if name not in SETTABLE:
            raise BlockalgError(f"--set {quote(item, 60)}: unknown dimension {quote(name, 60)} "
                                f"(known: {', '.join(SETTABLE)})")
        if not digits.isascii() or not digits.lstrip("+-").isdigit():
            raise BlockalgError(f"--set {quote(item, 60)}: {quote(value, 60)} is not an integer")
        number = int(digits) if len(digits) <= 40 else MAX_DIMENSION + 1
        if not 0 < number <= MAX_DIMENSION:
            raise BlockalgError(f"--set {quote(item, 60)}: dimensions are positive integers "
                                f"up to 2**63 - 1 (what the device's int64 holds)")
        result[name] = number
    return result
