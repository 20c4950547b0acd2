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

import importlib
import sys

#: Public names and the module each comes from, imported on first use (PEP 562), so that
#: ``import blockalg.cli`` pays only for what a command needs.
_EXPORTS = {
    "Analysis": "analysis.analyze", "Comparison": "analysis.analyze",
    "analyze": "analysis.analyze", "compare": "analysis.analyze",
    "BlockalgError": "errors", "variants": None,
    "BlockBuilder": "graphs.graph", "BlockGraph": "graphs.graph", "validate_block": "graphs.graph",
    "from_hf_config": "graphs.hf", "PRESETS": "graphs.presets", "resolve_dims": "graphs.presets",
    "load_block": "graphs.serialize", "save_block": "graphs.serialize",
}

__all__ = sorted([*_EXPORTS, "build_model", "check", "from_module"])


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'blockalg' has no attribute '{name}'")
    if name == "variants":
        value = importlib.import_module(".graphs.variants", __name__)
    else:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *__all__})


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
