"""blockalg: exact parameter counts, FLOPs and gradient paths of transformer block variants.

The package is the pipeline, each layer importing only those before it:
``graphs`` (symbols, the op registry, block graphs, the catalog, presets, Hugging Face configs) →
``analysis`` (parameters, FLOPs, paths) → ``model`` (the torch model, checks, gradients,
training) → ``output`` (tables, figures, reports, notebook display) → ``cli``.

>>> import blockalg
>>> blockalg.analyze("pre-ln", preset="gpt2-small").values["params.total"]
124439808

Torch is imported only by :func:`build_model`, :func:`check`, :func:`from_module` and the other
empirical paths.
"""

import sys

from .analysis.analyze import Analysis, Comparison, analyze, compare
from .errors import BlockalgError
from .graphs import variants
from .graphs.graph import BlockBuilder, BlockGraph, validate_block
from .graphs.hf import from_hf_config
from .graphs.presets import PRESETS, resolve_dims
from .graphs.serialize import load_block, save_block

__all__ = ["Analysis", "BlockBuilder", "BlockGraph", "BlockalgError", "Comparison", "PRESETS",
           "analyze", "build_model", "check", "compare", "from_hf_config", "from_module", "load_block",
           "resolve_dims", "save_block", "validate_block", "variants"]


def build_model(*args, **kwargs):
    """Build the torch model of a variant; see :func:`blockalg.model.build.build_model`."""
    from .model.build import build_model as _build_model

    return _build_model(*args, **kwargs)


def check(*args, **kwargs):
    """Build a variant and check every number against it; see :func:`blockalg.model.check.check`."""
    from .model.check import check as _check

    return _check(*args, **kwargs)


def from_module(*args, **kwargs):
    """Import a block written in PyTorch as a block graph; see
    :func:`blockalg.model.importer.from_module`."""
    from .model.importer import from_module as _from_module

    return _from_module(*args, **kwargs)


if "IPython" in sys.modules:  # in a notebook: graphs and results display themselves
    from .output import display as _display

    _display.register()
