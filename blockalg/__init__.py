"""blockalg: exact parameter counts, FLOPs and gradient paths of transformer block variants.

>>> import blockalg
>>> blockalg.analyze("pre-ln", preset="gpt2-small").values["params.total"]
124439808

Torch is imported only by :func:`build_model` and the empirical checks.
"""

from . import variants
from .analyze import Analysis, Comparison, analyze, compare
from .errors import BlockalgError
from .graph import BlockBuilder, BlockGraph, load_block, save_block, validate_block
from .presets import PRESETS, resolve_dims

__all__ = ["Analysis", "BlockBuilder", "BlockGraph", "BlockalgError", "Comparison", "PRESETS",
           "analyze", "build_model", "compare",
           "load_block", "resolve_dims", "save_block", "validate_block", "variants"]


def build_model(*args, **kwargs):
    """Build the torch model of a variant; see :func:`blockalg.build.build_model`."""
    from .build import build_model as _build_model

    return _build_model(*args, **kwargs)
