"""The variant catalog: each block wiring of the literature is one function returning its graph.

Names are matched case-insensitively, ignoring ``-``, ``_`` and spaces, against the name and the
aliases (``pre-LN``, ``preln`` and ``Pre_LN`` all mean ``pre-ln``). Wherever a variant is expected,
the path of a block graph file (JSON) is accepted too.

>>> g = get("Pre-LN")
>>> g.graph["name"], g.graph["final_norm"]
('pre-ln', 'layernorm')
>>> [v.name for v in catalog()]
['pre-ln', 'post-ln', 'hybrid-ln']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from .errors import BlockalgError
from .graph import BlockBuilder, load_block


@dataclass(frozen=True)
class Variant:
    """A catalog entry: the builder of the graph and what a reader needs to trust it."""

    name: str
    aliases: tuple[str, ...]
    equations: tuple[str, ...]
    reference: str
    build: Callable[[], nx.DiGraph]

    @property
    def summary(self) -> str:
        """The first line of the builder's docstring."""
        return (self.build.__doc__ or "").strip().splitlines()[0]

    def graph(self) -> nx.DiGraph:
        graph = self.build()
        graph.graph.update(name=self.name, equations=list(self.equations), reference=self.reference)
        return graph


_CATALOG: dict[str, Variant] = {}


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch not in "-_ ")


def variant(name: str, *, aliases: tuple[str, ...], equations: tuple[str, ...], reference: str):
    """Decorator adding a graph builder to the catalog; a name or alias used twice raises."""

    def register(build):
        entry = Variant(name, aliases, equations, reference, build)
        for key in {_key(name), *map(_key, aliases)}:
            if key in _CATALOG:
                raise ValueError(f"variant name '{key}' is registered twice")
            _CATALOG[key] = entry
        return build

    return register


def catalog() -> list[Variant]:
    """Every variant, once, in catalog order."""
    return list(dict.fromkeys(_CATALOG.values()))


def lookup(name: str) -> Variant:
    """The catalog entry called ``name`` (or one of its aliases)."""
    try:
        return _CATALOG[_key(name)]
    except KeyError:
        known = ", ".join(v.name for v in catalog())
        raise BlockalgError(f"unknown variant '{name}' (known: {known}; or a .json graph file)") from None


def get(name_or_path) -> nx.DiGraph:
    """The block graph of a catalog variant, or of a JSON graph file when given a path."""
    if isinstance(name_or_path, Path) or str(name_or_path).endswith(".json") \
            or "/" in str(name_or_path):
        return load_block(name_or_path)
    return lookup(name_or_path).graph()


# ---------------------------------------------------------------------------------------------
# The catalog. Node names are the torch submodule names (blocks.<i>.<node>).


@variant("pre-ln", aliases=("preln", "pre-layernorm", "prenorm", "gpt2"),
         equations=("y = x + Attn(LN(x))", "out = y + FFN(LN(y))", "final LN after the last block"),
         reference="Radford et al. 2019 (GPT-2); Xiong et al. 2020, 'On Layer Normalization in "
                   "the Transformer Architecture'")
def pre_ln() -> nx.DiGraph:
    """Pre-LN: each sublayer reads a normalised copy of the stream; the skip path has no norm.

    GPT-2 and GPT-3 use it, with one more LayerNorm after the last block. Gradients reach every
    layer through an identity path, which is why it trains without learning-rate warm-up.
    """
    b = BlockBuilder("pre-ln", final_norm="layernorm")
    x = b.input()
    y = b.node("add_1", "add", x, b.node("attn", "attention", b.node("ln_1", "layernorm", x)))
    out = b.node("add_2", "add", y, b.node("ffn", "ffn", b.node("ln_2", "layernorm", y)))
    b.output(out)
    return b.graph()


@variant("post-ln", aliases=("postln", "post-layernorm", "postnorm", "vaswani", "transformer"),
         equations=("y = LN(x + Attn(x))", "out = LN(y + FFN(y))", "no final norm"),
         reference="Vaswani et al. 2017, 'Attention Is All You Need'; Radford et al. 2018 (GPT-1)")
def post_ln() -> nx.DiGraph:
    """Post-LN: the norm follows each residual add, so every path crosses 2 norms per block.

    The original Transformer, GPT-1 and BERT. Needs learning-rate warm-up to train (Xiong et al.
    2020); no final norm, since the last block already ends in one.
    """
    b = BlockBuilder("post-ln")
    x = b.input()
    y = b.node("ln_1", "layernorm", b.node("add_1", "add", x, b.node("attn", "attention", x)))
    out = b.node("ln_2", "layernorm", b.node("add_2", "add", y, b.node("ffn", "ffn", y)))
    b.output(out)
    return b.graph()


@variant("hybrid-ln", aliases=("hybridln", "seed", "tutorial"),
         equations=("z = Attn(LN(x))", "a = LN(x + z)", "out = LN(a + FFN(a))", "no final norm"),
         reference="the wiring drawn in many tutorial explanations of GPT (see shared/seed); "
                   "a pre-LN attention input on a post-LN block")
def hybrid_ln() -> nx.DiGraph:
    """Hybrid-LN: a norm before attention *and* after each residual add: three norms per block.

    Every path crosses at least two norms per block, as in post-LN.
    """
    b = BlockBuilder("hybrid-ln")
    x = b.input()
    z = b.node("attn", "attention", b.node("ln_1", "layernorm", x))
    a = b.node("ln_2", "layernorm", b.node("add_1", "add", x, z))
    out = b.node("ln_3", "layernorm", b.node("add_2", "add", a, b.node("ffn", "ffn", a)))
    b.output(out)
    return b.graph()
