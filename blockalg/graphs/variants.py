"""The variant catalog: each block wiring of the literature is one function returning its graph.

Names are matched case-insensitively, ignoring ``-``, ``_`` and spaces, against the name and the
aliases (``pre-LN``, ``preln`` and ``Pre_LN`` all mean ``pre-ln``). Wherever a variant is expected,
the path of a block graph file (JSON) is accepted too.

>>> g = get("Pre-LN")
>>> g.graph["name"], g.graph["final_norm"]
('pre-ln', 'layernorm')
>>> [v.name for v in catalog()][:4]
['pre-ln', 'post-ln', 'hybrid-ln', 'sandwich-ln']
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from ..errors import BlockalgError, quote
from .graph import BlockBuilder, stack
from .serialize import load_block


@dataclass(frozen=True)
class Variant:
    """A catalog entry: the builder of the graph and what a reader needs to trust it."""

    name: str
    aliases: tuple[str, ...]
    equations: tuple[str, ...]
    reference: str
    build: Callable[[], nx.DiGraph]

    @property
    def paper(self) -> str:
        """The reference's citations without the titles ("—" when the variant has no paper).

        >>> lookup("pre-ln").paper
        'Radford et al. 2019 (GPT-2); Xiong et al. 2020'
        """
        cited = [m.group(0) for part in self.reference.split("; ") if (m := _CITATION.match(part))]
        return "; ".join(cited) or "—"

    @property
    def summary(self) -> str:
        """The first line of the builder's docstring."""
        return (self.build.__doc__ or "").strip().splitlines()[0]

    def graph(self) -> nx.DiGraph:
        graph = self.build()
        graph.graph.update(name=self.name, equations=list(self.equations), reference=self.reference)
        return graph


_CATALOG: dict[str, Variant] = {}
#: "Author(s) year", with a parenthesis right after the year: a citation without its title.
_CITATION = re.compile(r"^[A-Z][\w&.\- ]*? (?:19|20)\d\d(?: \([^)']*\))?")


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
        raise BlockalgError(f"unknown variant {quote(name, 60)} (known: {known}; or a .json graph "
                            f"file)") from None


#: ``path/to/file.py:Name``: a block written in PyTorch (imported by :mod:`blockalg.model.importer`,
#: which runs the file; the command line accepts it wherever it accepts a variant).
MODULE_SPEC = re.compile(r"^(?P<path>.+\.py):(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")


def get(name_or_path) -> nx.DiGraph:
    """The block graph of a catalog variant, or of a JSON graph file when given a path."""
    if isinstance(name_or_path, str) and MODULE_SPEC.match(name_or_path):
        raise BlockalgError(f"'{name_or_path}' is a block written in PyTorch: import it with "
                            f"blockalg.from_module (importing runs the file's code)")
    if isinstance(name_or_path, Path) or str(name_or_path).endswith(".json") \
            or "/" in str(name_or_path):
        return load_block(name_or_path)
    return lookup(name_or_path).graph()


def pre_norm_block(b: BlockBuilder, norm: str, attn_attrs: dict, ffn: tuple[str, dict],
                    norm_attrs: dict | None = None, parallel: int = 0, post_norms: bool = False):
    """Build into ``b`` the pre-norm decoder block most models share: sequential, or parallel
    with ``parallel`` (1 or 2) input norms; ``post_norms`` adds a norm on each branch output
    (sandwich/peri-LN, Gemma 2). The catalog and :mod:`blockalg.graphs.hf` both use it."""
    norm_attrs = norm_attrs or {}
    x = b.input()
    ffn_op, ffn_attrs = ffn
    if parallel:
        h1 = b.node("ln_1", norm, x, **norm_attrs)
        h2 = h1 if parallel == 1 else b.node("ln_2", norm, x, **norm_attrs)
        b.output(b.node("add", "add", x, b.node("attn", "attention", h1, **attn_attrs),
                        b.node("ffn", ffn_op, h2, **ffn_attrs)))
        return
    attn = b.node("attn", "attention", b.node("ln_1", norm, x, **norm_attrs), **attn_attrs)
    if post_norms:
        attn = b.node("ln_1_post", norm, attn, **norm_attrs)
    y = b.node("add_1", "add", x, attn)
    ffn = b.node("ffn", ffn_op, b.node("ln_2", norm, y, **norm_attrs), **ffn_attrs)
    if post_norms:
        ffn = b.node("ln_2_post", norm, ffn, **norm_attrs)
    b.output(b.node("add_2", "add", y, ffn))



def post_norm_block(b: BlockBuilder, norm: str, attn_attrs: dict, ffn: tuple[str, dict],
                    norm_attrs: dict | None = None) -> None:
    """Build into ``b`` the post-norm block: y = N(x + Attn(x)); out = N(y + FFN(y)) (the
    original Transformer, OPT-350m). The catalog and :mod:`blockalg.graphs.hf` both use it."""
    norm_attrs = norm_attrs or {}
    ffn_op, ffn_attrs = ffn
    x = b.input()
    y = b.node("ln_1", norm, b.node("add_1", "add", x, b.node("attn", "attention", x, **attn_attrs)),
               **norm_attrs)
    b.output(b.node("ln_2", norm, b.node("add_2", "add", y, b.node("ffn", ffn_op, y, **ffn_attrs)),
                    **norm_attrs))


def output_norm_block(b: BlockBuilder, norm: str, attn_attrs: dict, ffn: tuple[str, dict]) -> None:
    """Build into ``b`` the block with norms on the branch outputs only (OLMo 2's reordered
    norm): y = x + N(Attn(x)); out = y + N(FFN(y)). The catalog and :mod:`blockalg.graphs.hf`
    both use it."""
    ffn_op, ffn_attrs = ffn
    x = b.input()
    y = b.node("add_1", "add", x, b.node("ln_1", norm, b.node("attn", "attention", x, **attn_attrs)))
    b.output(b.node("add_2", "add", y, b.node("ln_2", norm, b.node("ffn", ffn_op, y, **ffn_attrs))))


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
    pre_norm_block(b, "layernorm", {}, ("ffn", {}))
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
    post_norm_block(b, "layernorm", {}, ("ffn", {}))
    return b.graph()


@variant("hybrid-ln", aliases=("hybridln", "seed", "tutorial"),
         equations=("z = Attn(LN(x))", "a = LN(x + z)", "out = LN(a + FFN(a))", "no final norm"),
         reference="no paper: the wiring drawn in many tutorial explanations of GPT, e.g. the "
                   "chat answer whose claims reports/ffn_claims checks; a pre-LN attention input "
                   "on a post-LN block")
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


# Pre-LN's relatives: where the norms sit around each sublayer.


@variant("sandwich-ln", aliases=("sandwichln", "sandwich", "cogview"),
         equations=("y = x + LN(Attn(LN(x)))", "out = y + LN(FFN(LN(y)))", "final LN"),
         reference="Ding et al. 2021, 'CogView' (Sandwich-LN)")
def sandwich_ln() -> nx.DiGraph:
    """Sandwich-LN: pre-LN plus a LayerNorm on each branch's output, bounding what a branch adds."""
    return _sandwich("sandwich-ln", "layernorm")


@variant("peri-ln", aliases=("periln", "peri", "gemma2-layout"),
         equations=("y = x + RMSNorm(Attn(RMSNorm(x)))", "out = y + RMSNorm(FFN(RMSNorm(y)))",
                    "final RMSNorm"),
         reference="Kim et al. 2025, 'Peri-LN'; the layout of Gemma 2 and Gemma 3 (Gemma Team 2024)")
def peri_ln() -> nx.DiGraph:
    """Peri-LN: a norm before and after each sublayer, on the branch only (RMSNorm, as Gemma 2/3).

    The paper also normalises the embedding output; that extra norm is not modelled here.
    """
    return _sandwich("peri-ln", "rmsnorm")


def _sandwich(name, norm) -> nx.DiGraph:
    b = BlockBuilder(name, final_norm=norm)
    pre_norm_block(b, norm, {}, ("ffn", {}), post_norms=True)
    return b.graph()


@variant("output-ln", aliases=("outputln", "olmo2", "olmo-2", "reordered-norm"),
         equations=("y = x + RMSNorm(Attn_qknorm(x))", "out = y + RMSNorm(SwiGLU(y))", "final RMSNorm"),
         reference="OLMo Team 2024, '2 OLMo 2 Furious' (reordered norm and QK-norm)")
def output_ln() -> nx.DiGraph:
    """Output-LN (OLMo 2): norms on the branch outputs only, RMSNorm on q and k inside attention;
    rotary positions, SwiGLU without biases, untied embeddings."""
    b = BlockBuilder("output-ln", final_norm="rmsnorm", positions="none", tied_embeddings=False)
    output_norm_block(b, "rmsnorm", {"bias": False, "qk_norm": "rmsnorm", "rotary": True},
                      ("ffn", {"activation": "silu", "gated": True, "bias": False}))
    return b.graph()


@variant("normformer", aliases=("norm-former",),
         equations=("y = x + LN(HeadScale(Attn(LN(x))))", "h = LN(act(fc(LN(y))))",
                    "out = y + proj(h)", "final LN"),
         reference="Shleifer et al. 2021, 'NormFormer: Improved Transformer Pretraining with Extra "
                   "Normalization'")
def normformer() -> nx.DiGraph:
    """NormFormer: pre-LN plus a LayerNorm after attention, learned per-head scales, and a
    LayerNorm (of width d_ff) between the FFN's activation and its output projection: the FFN is
    two nodes with the norm between them."""
    b = BlockBuilder("normformer", final_norm="layernorm")
    x = b.input()
    attn = b.node("attn", "attention", b.node("ln_1", "layernorm", x), head_scale=True)
    y = b.node("add_1", "add", x, b.node("ln_attn", "layernorm", attn))
    hidden = b.node("ffn_up", "ffn_up", b.node("ln_2", "layernorm", y))
    down = b.node("ffn_down", "ffn_down", b.node("ln_ffn", "layernorm", hidden, width="d_ff"))
    b.output(b.node("add_2", "add", y, down))
    return b.graph()


# Post-LN's relatives: the norm stays on the stream, the skip path is rescaled.


@variant("deepnorm", aliases=("deep-norm", "deepnet"),
         equations=("y = LN(α·x + Attn(x))", "out = LN(α·y + FFN(y))", "α = (2L)^(1/4)",
                    "init gain β = (8L)^(-1/4) on v, out-proj, FFN"),
         reference="Wang et al. 2022, 'DeepNet: Scaling Transformers to 1,000 Layers' (decoder-only "
                   "constants)")
def deepnorm() -> nx.DiGraph:
    """DeepNorm: post-LN with the skip path up-weighted by α and the branches initialised small,
    which bounds the model update and trains 1,000-layer post-LN models."""
    alpha = "(2*L)**(1/4)"
    b = BlockBuilder("deepnorm", init="deepnorm")
    x = b.input()
    y = b.node("ln_1", "layernorm",
               b.node("add_1", "add", x, b.node("attn", "attention", x), scales={x: alpha}))
    out = b.node("ln_2", "layernorm",
                 b.node("add_2", "add", y, b.node("ffn", "ffn", y), scales={y: alpha}))
    b.output(out)
    return b.graph()


@variant("admin", aliases=("adaptive-model-initialization",),
         equations=("y = LN(ω₁ ⊙ x + Attn(x))", "out = LN(ω₂ ⊙ y + FFN(y))",
                    "ω learned per dimension, initialised to 1"),
         reference="Liu et al. 2020, 'Understanding the Difficulty of Training Transformers' (Admin)")
def admin() -> nx.DiGraph:
    """Admin: post-LN with a learned per-dimension scale on each skip path. The paper initialises
    ω from a profiling pass over the data; here ω starts at 1, where Admin equals post-LN."""
    b = BlockBuilder("admin")
    x = b.input()
    skip_1 = b.node("skip_1", "scale", x, learnable="vector")
    y = b.node("ln_1", "layernorm", b.node("add_1", "add", skip_1, b.node("attn", "attention", x)))
    skip_2 = b.node("skip_2", "scale", y, learnable="vector")
    b.output(b.node("ln_2", "layernorm", b.node("add_2", "add", skip_2, b.node("ffn", "ffn", y))))
    return b.graph()


@variant("rezero", aliases=("re-zero",),
         equations=("y = x + α₁·Attn(x)", "out = y + α₂·FFN(y)", "α learned scalars, initialised to 0",
                    "no norms"),
         reference="Bachlechner et al. 2020, 'ReZero is All You Need'")
def rezero() -> nx.DiGraph:
    """ReZero: no norms at all; each branch is gated by a learned scalar that starts at 0, so the
    model is the identity at initialisation."""
    b = BlockBuilder("rezero")
    x = b.input()
    y = b.node("add_1", "add", x, b.node("alpha_1", "scale", b.node("attn", "attention", x),
                                         value=0, learnable="scalar"))
    b.output(b.node("add_2", "add", y, b.node("alpha_2", "scale", b.node("ffn", "ffn", y),
                                              value=0, learnable="scalar")))
    return b.graph()


# Parallel blocks: attention and FFN read the same input.


@variant("parallel", aliases=("gpt-j", "gptj", "palm", "parallel-1ln"),
         equations=("h = LN(x)", "out = x + Attn(h) + FFN(h)", "final LN"),
         reference="Wang & Komatsuzaki 2021 (GPT-J); Chowdhery et al. 2022 (PaLM)")
def parallel() -> nx.DiGraph:
    """Parallel block with one shared LayerNorm: attention and FFN run side by side."""
    b = BlockBuilder("parallel", final_norm="layernorm")
    pre_norm_block(b, "layernorm", {}, ("ffn", {}), parallel=1)
    return b.graph()


@variant("parallel-2ln", aliases=("parallel2ln", "gpt-neox", "neox"),
         equations=("out = x + Attn(LN₁(x)) + FFN(LN₂(x))", "final LN"),
         reference="Black et al. 2022, 'GPT-NeoX-20B' (use_parallel_residual)")
def parallel_2ln() -> nx.DiGraph:
    """Parallel block with a LayerNorm for each branch (GPT-NeoX, Pythia)."""
    b = BlockBuilder("parallel-2ln", final_norm="layernorm")
    pre_norm_block(b, "layernorm", {}, ("ffn", {}), parallel=2)
    return b.graph()


@variant("bloom-residual", aliases=("bloomresidual", "post-ln-residual",
                                    "apply-residual-connection-post-layernorm"),
         equations=("h = LN(x); y = h + Attn(h)", "h' = LN(y); out = h' + FFN(h')", "final LN"),
         reference="BigScience 2022, BLOOM (apply_residual_connection_post_layernorm = true)")
def bloom_residual() -> nx.DiGraph:
    """Residual taken after the norm: the skip path starts at LN(x), not x, so every path crosses
    the block's norms as in post-LN."""
    b = BlockBuilder("bloom-residual", final_norm="layernorm")
    x = b.input()
    h = b.node("ln_1", "layernorm", x)
    y = b.node("add_1", "add", h, b.node("attn", "attention", h))
    h2 = b.node("ln_2", "layernorm", y)
    b.output(b.node("add_2", "add", h2, b.node("ffn", "ffn", h2)))
    return b.graph()


@variant("llama", aliases=("llama2", "llama3", "pre-rmsnorm"),
         equations=("y = x + Attn_rope(RMSNorm(x))", "out = y + SwiGLU(RMSNorm(y))", "final RMSNorm"),
         reference="Touvron et al. 2023, 'LLaMA'; Ainslie et al. 2023 (GQA); Su et al. 2021 (RoPE)")
def llama() -> nx.DiGraph:
    """LLaMA: pre-RMSNorm, rotary positions (no position table), SwiGLU FFN, no biases, untied
    unembedding; grouped-query attention through the n_kv_heads dimension (--set n_kv_heads=...)."""
    b = BlockBuilder("llama", final_norm="rmsnorm", positions="none", tied_embeddings=False)
    pre_norm_block(b, "rmsnorm", {"bias": False, "rotary": True},
                   ("ffn", {"activation": "silu", "gated": True, "bias": False}))
    return b.graph()


@variant("dyt", aliases=("dynamic-tanh", "no-norm"),
         equations=("y = x + Attn(DyT(x))", "out = y + FFN(DyT(y))", "DyT(x) = γ ⊙ tanh(α·x) + β",
                    "final DyT"),
         reference="Zhu et al. 2025, 'Transformers without Normalization'")
def dyt() -> nx.DiGraph:
    """Pre-LN with every LayerNorm replaced by Dynamic Tanh, an element-wise squashing with a
    learned scale: no statistics over the features at all."""
    b = BlockBuilder("dyt", final_norm="dyt")
    pre_norm_block(b, "dyt", {}, ("ffn", {}))
    return b.graph()


@variant("moe", aliases=("mixtral", "mixture-of-experts", "sparse-moe"),
         equations=("y = x + Attn_rope(RMSNorm(x))", "out = y + Σ_top-k g_e(y)·SwiGLU_e(RMSNorm(y))",
                    "final RMSNorm"),
         reference="Shazeer et al. 2017 (sparsely-gated MoE); Jiang et al. 2024, 'Mixtral of Experts'")
def moe() -> nx.DiGraph:
    """Mixture of experts in the LLaMA layout (Mixtral): the FFN is n_experts SwiGLU experts, top_k
    per token. params.total counts every expert, params.active and the FLOPs what a token uses."""
    b = BlockBuilder("moe", final_norm="rmsnorm", positions="none", tied_embeddings=False)
    x = b.input()
    attn = b.node("attn", "attention", b.node("ln_1", "rmsnorm", x), bias=False, rotary=True)
    y = b.node("add_1", "add", x, attn)
    b.output(b.node("add_2", "add", y, b.node("moe", "moe", b.node("ln_2", "rmsnorm", y))))
    return b.graph()


@variant("mix-ln", aliases=("mixln", "mix"),
         equations=("layers 1..⌊L/4⌋: post-LN blocks", "layers ⌊L/4⌋+1..L: pre-LN blocks", "final LN"),
         reference="Li et al. 2024, 'Mix-LN: Unleashing the Power of Deeper Layers by Combining "
                   "Pre-LN and Post-LN' (α = 0.25)")
def mix_ln() -> nx.DiGraph:
    """Mix-LN: post-LN in the first quarter of the layers, pre-LN after, so the deep layers keep
    pre-LN's identity path and the shallow ones get post-LN's larger gradients. A stack of two
    segments: its generating function is T_post^⌊L/4⌋ · T_pre^(L-⌊L/4⌋) · n."""
    return stack("mix-ln", [(post_ln(), "floor(L/4)"), (pre_ln(), "L - floor(L/4)")],
                 final_norm="layernorm")


@variant("b2t", aliases=("b2t-connection", "bottom-to-top"),
         equations=("h = LN(x + Attn(x))", "out = LN(x + h + FFN(h))", "no final norm"),
         reference="Takase et al. 2023, 'B2T Connection: Serving Stability and Performance in Deep "
                   "Transformers'")
def b2t() -> nx.DiGraph:
    """Post-LN plus a bottom-to-top skip: the block input joins the last residual add, so one
    path per block crosses a single norm instead of two."""
    b = BlockBuilder("b2t")
    x = b.input()
    h = b.node("ln_1", "layernorm", b.node("add_1", "add", x, b.node("attn", "attention", x)))
    b.output(b.node("ln_2", "layernorm", b.node("add_2", "add", x, h, b.node("ffn", "ffn", h))))
    return b.graph()


@variant("resi-dual", aliases=("residual-dual", "resi_dual", "residual"),
         equations=("x_a' = LN(h + FFN(h)), h = LN(x_a + Attn(x_a))",
                    "x_d' = x_d + Attn(x_a) + FFN(h)", "x_a starts as the embedding, x_d at 0",
                    "out = x_a + LN(x_d)"),
         reference="Xie et al. 2023, 'ResiDual: Transformer with Dual Residual Connections'")
def resi_dual() -> nx.DiGraph:
    """ResiDual: a post-LN stream (``a``) plus a dual stream (``d``) that accumulates every
    sublayer's output un-normalised, as pre-LN's stream does; the head adds LN(x_d) to x_a. Two
    carried streams: path statistics come from a 2×2 transfer matrix."""
    b = BlockBuilder("resi-dual", positions="learned", streams={"a": "embedding", "d": "zero"},
                     head=_resi_dual_head())
    x_a, x_d = b.input("x_a", stream="a"), b.input("x_d", stream="d")
    attn = b.node("attn", "attention", x_a)
    h = b.node("ln_1", "layernorm", b.node("add_1", "add", x_a, attn))
    ffn = b.node("ffn", "ffn", h)
    b.output(b.node("ln_2", "layernorm", b.node("add_2", "add", h, ffn)), "out_a", stream="a")
    b.output(b.node("add_d", "add", x_d, attn, ffn), "out_d", stream="d")
    return b.graph()


def _resi_dual_head() -> nx.DiGraph:
    b = BlockBuilder("resi-dual.head")
    x_a, x_d = b.input("x_a", stream="a"), b.input("x_d", stream="d")
    b.output(b.node("add", "add", x_a, b.node("ln_d", "layernorm", x_d)))
    return b.graph(head=True)
