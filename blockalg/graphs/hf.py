"""Real models from their Hugging Face ``config.json``: the block graph and the dimensions.

:func:`from_hf_config` reads a config (a path, a dict, or a ``transformers`` config object; no
weights, no network) and returns an :class:`HFModel`: the graph built with the same
:class:`~blockalg.graphs.graph.BlockBuilder` as the catalog, the dimensions, and the config fields that
change the computation but that blockalg does not model (so a reader knows what the numbers
leave out). Tests build each architecture with ``transformers`` on the meta device and compare
parameter counts and matmul FLOPs exactly. A ``config.json`` saved by ``transformers`` omits the
fields left at their defaults; the readers below use the same defaults.

>>> m = from_hf_config({"model_type": "gpt2", "n_embd": 768, "n_head": 12, "n_layer": 12,
...                     "n_positions": 1024, "vocab_size": 50257})
>>> m.graph.graph["name"], m.dims["d_ff"]
('gpt2', 3072)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import networkx as nx

from ..errors import BlockalgError, escape_line, quote
from ..files import read_json
from ..limits import MAX_DIMENSION
from .graph import BlockBuilder
from .presets import resolve_dims
from .variants import output_norm_block, post_norm_block, pre_norm_block


@dataclass
class HFModel:
    """A model read from a config: its block graph, its dimensions, what was left out."""

    model_type: str
    graph: nx.DiGraph
    dims: dict
    not_modeled: list[str] = field(default_factory=list)


#: Fields that never change parameter counts or FLOPs (ids, dtypes, dropout, eps, init...).
IRRELEVANT = {
    "architectures", "model_type", "torch_dtype", "dtype", "transformers_version", "bos_token_id",
    "eos_token_id", "pad_token_id", "initializer_range", "use_cache", "layer_norm_eps",
    "layer_norm_epsilon", "rms_norm_eps", "attention_dropout", "hidden_dropout", "dropout",
    "attn_pdrop", "embd_pdrop", "resid_pdrop", "summary_activation", "summary_first_dropout",
    "summary_proj_to_labels", "summary_type", "summary_use_proj", "task_specific_params",
    "scale_attn_weights", "reorder_and_upcast_attn", "scale_attn_by_inverse_layer_idx", "id2label",
    "label2id", "_name_or_path", "tokenizer_class", "prefix", "return_dict", "output_attentions",
    "output_hidden_states", "classifier_dropout", "attention_probs_dropout_prob",
    "hidden_dropout_prob", "activation_dropout", "layerdrop", "init_std", "output_router_logits",
    "router_aux_loss_coef", "router_jitter_noise", "pretraining_tp", "max_window_layers",
    "use_sliding_window", "attn_implementation", "_attn_implementation", "is_decoder",
    "bias_dropout_add_fusion", "tie_word_embeddings", "rope_theta", "rope_parameters",
    "partial_rotary_factor", "head_dim", "use_return_dict", "problem_type", "is_encoder_decoder",
    "chunk_size_feed_forward", "num_labels", "keys_to_ignore_at_inference",
}

_ARCHITECTURES: dict[str, Callable] = {}


def architecture(*model_types: str):
    """Decorator registering the builder of one or more ``model_type`` values."""
    def register(build):
        for model_type in model_types:
            _ARCHITECTURES[model_type] = build
        return build
    return register


def supported_model_types() -> list[str]:
    return sorted(_ARCHITECTURES)


def from_hf_config(config, **overrides) -> HFModel:
    """The block graph and dimensions of a Hugging Face config (path, dict or config object)."""
    cfg = _as_dict(config)
    model_type = cfg.get("model_type")
    if not isinstance(model_type, str) or model_type not in _ARCHITECTURES:
        raise BlockalgError(f"model_type {model_type!r} is not supported "
                            f"(supported: {', '.join(supported_model_types())})")
    reader = _Reader(cfg)
    graph, base = _ARCHITECTURES[model_type](reader)
    name = cfg.get("_name_or_path")
    graph.graph["name"] = name if isinstance(name, str) and name.strip() else model_type
    try:
        dims = resolve_dims(base, overrides)
    except BlockalgError as e:
        raise BlockalgError(f"{model_type} config: {e}") from None
    return HFModel(model_type, graph, dims, reader.not_modeled())


def _as_dict(config) -> dict:
    if isinstance(config, dict):
        return dict(config)
    if hasattr(config, "to_dict"):
        return config.to_dict()
    data = read_json(config)
    if not isinstance(data, dict):
        raise BlockalgError(f"{quote(str(config))}: a config.json holds an object")
    return data


#: Config fields that are dimensions (positive integers up to 2**63 - 1) and flags (true/false),
#: checked when read so that a wrong type is named, not met later as a TypeError.
DIMENSION_FIELDS = {
    "n_embd", "hidden_size", "n_head", "n_layer", "n_positions", "n_inner", "num_attention_heads",
    "num_hidden_layers", "max_position_embeddings", "intermediate_size", "vocab_size",
    "num_key_value_heads", "head_dim", "num_local_experts", "num_experts_per_tok",
    "word_embed_proj_dim", "ffn_hidden_size", "num_kv_heads", "num_ln_in_parallel_attn"}
FLAG_FIELDS = {
    "add_cross_attention", "tie_word_embeddings", "attention_bias", "use_parallel_residual",
    "mlp_bias", "layer_norm_elementwise_affine", "do_layer_norm_before", "_remove_final_layer_norm",
    "enable_bias", "alibi", "new_decoder_architecture", "multi_query", "parallel_attn", "bias"}


class _Reader:
    """Reads config fields, remembering which ones were used."""

    def __init__(self, cfg: dict):
        self.cfg, self.used, self.ignored = cfg, set(), {}

    def __call__(self, *names, default=...):
        """The first of ``names`` present (aliases across model types), else ``default``."""
        for name in names:
            if name in self.cfg and self.cfg[name] is not None:
                self.used.add(name)
                return self._checked(name, self.cfg[name])
        if default is ...:
            raise BlockalgError(f"{self.cfg.get('model_type')} config has no {quote(names[0])}")
        return default

    def _checked(self, name: str, value):
        where = f"{self.cfg.get('model_type')} config: {name} = {quote(value, 60)}"
        if name in DIMENSION_FIELDS and (type(value) is not int or not 0 < value <= MAX_DIMENSION):
            raise BlockalgError(f"{where}: expected a positive integer up to 2**63 - 1")
        if name in FLAG_FIELDS and type(value) is not bool:
            raise BlockalgError(f"{where}: expected true or false")
        return value

    def note(self, name: str, why: str) -> None:
        """A field present in the config whose effect blockalg does not model."""
        if self.cfg.get(name) not in (None, False):
            self.ignored[name] = why

    def require(self, condition: bool, message: str) -> None:
        if not condition:
            raise BlockalgError(f"{self.cfg.get('model_type')} config: {message} is not modelled")

    def not_modeled(self) -> list[str]:
        unknown = sorted(k for k, v in self.cfg.items() if k not in self.used and k not in IRRELEVANT
                         and k not in self.ignored and not k.startswith("_")
                         and v is not None and v is not False)
        return [escape_line(f"{k}: {why}") for k, why in sorted(self.ignored.items())] + \
            [f"{quote(k, 60) if not k.isprintable() else k}: not read by blockalg" for k in unknown]


def _dims(r: _Reader, *, d_model, n_heads, n_layers, n_ctx, d_ff, n_kv_heads=None, d_head=None,
          **extra) -> dict:
    dims = {"d_model": d_model, "n_heads": n_heads, "n_layers": n_layers, "n_ctx": n_ctx,
            "vocab": r("vocab_size"), "d_ff": d_ff, **extra}
    if n_kv_heads is not None:
        dims["n_kv_heads"] = n_kv_heads
    if d_head is not None:
        dims["d_head"] = d_head
    return dims


_ACT = {"gelu": "gelu", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "gelu_fast": "gelu",
        "relu": "relu", "silu": "silu", "swish": "silu"}


def _activation(r: _Reader, *names, default) -> str:
    act = r(*names, default=default)
    if not isinstance(act, str) or act not in _ACT:
        raise BlockalgError(f"activation {act!r} is not modelled (known: {', '.join(_ACT)})")
    return _ACT[act]


@architecture("gpt2")
def _gpt2(r: _Reader):
    r.require(not r("add_cross_attention", default=False), "add_cross_attention")
    d = r("n_embd", "hidden_size")
    b = BlockBuilder("gpt2", final_norm="layernorm", tied_embeddings=r("tie_word_embeddings", default=True))
    pre_norm_block(b, "layernorm", {}, ("ffn", {"activation": _activation(r, "activation_function", default="gelu_new")}))
    return b.graph(), _dims(r, d_model=d, n_heads=r("n_head"), n_layers=r("n_layer"),
                            n_ctx=r("n_positions"), d_ff=r("n_inner", default=None) or 4 * d)


@architecture("gpt_neox")
def _gpt_neox(r: _Reader):
    r.note("rotary_pct", "partial rotary: blockalg rotates all of d_head (no parameters, no matmul)")
    bias = r("attention_bias", default=True)
    b = BlockBuilder("gpt_neox", final_norm="layernorm", positions="none",
                     tied_embeddings=r("tie_word_embeddings", default=False))
    pre_norm_block(b, "layernorm", {"bias": bias, "rotary": True},
                    ("ffn", {"activation": _activation(r, "hidden_act", default="gelu")}),
                    parallel=2 if r("use_parallel_residual", default=True) else 0)
    return b.graph(), _dims(r, d_model=r("hidden_size"), n_heads=r("num_attention_heads"),
                            n_layers=r("num_hidden_layers"), n_ctx=r("max_position_embeddings"),
                            d_ff=r("intermediate_size"))


@architecture("llama", "mistral", "qwen2", "mixtral", "olmo2", "gemma2")
def _llama_family(r: _Reader):
    """LLaMA and its descendants: pre-RMSNorm, rotary, gated FFN, GQA, untied unless said."""
    model_type = r.cfg["model_type"]
    for name in ("rope_scaling", "sliding_window", "layer_types", "attn_logit_softcapping",
                 "final_logit_softcapping", "query_pre_attn_scalar", "cache_implementation"):
        r.note(name, "changes values or masks, not parameter counts or dense matmul FLOPs")
    if model_type == "gemma2":
        r.note("hidden_activation", "gelu_pytorch_tanh: counted as gelu")
    attn_bias = r("attention_bias", default=False)
    attn = {"bias": attn_bias, "rotary": True}
    if model_type == "qwen2":
        attn.update(bias=True, proj_bias=False)  # Qwen2: biases on q, k, v only
    if model_type == "olmo2":
        attn["qk_norm"] = "rmsnorm"
    act = _activation(r, "hidden_act", "hidden_activation",
                      default="gelu_pytorch_tanh" if model_type == "gemma2" else "silu")
    ffn = ("moe", {"activation": act}) if model_type == "mixtral" else \
        ("ffn", {"activation": act, "gated": True, "bias": r("mlp_bias", default=False)})
    tied = r("tie_word_embeddings", default=model_type == "gemma2")
    b = BlockBuilder(model_type, final_norm="rmsnorm", positions="none", tied_embeddings=tied)
    if model_type == "olmo2":  # norms on the branch outputs only
        output_norm_block(b, "rmsnorm", attn, ffn)
    else:
        pre_norm_block(b, "rmsnorm", attn, ffn, post_norms=model_type == "gemma2")
    heads = r("num_attention_heads")
    extra = {"n_experts": r("num_local_experts", default=8), "top_k": r("num_experts_per_tok", default=2)} \
        if model_type == "mixtral" else {}
    return b.graph(), _dims(r, d_model=r("hidden_size"), n_heads=heads, n_layers=r("num_hidden_layers"),
                            n_ctx=r("max_position_embeddings"), d_ff=r("intermediate_size"),
                            n_kv_heads=r("num_key_value_heads", default=heads),
                            d_head=r("head_dim", default=256 if model_type == "gemma2" else None),
                            **extra)


@architecture("opt")
def _opt(r: _Reader):
    d = r("hidden_size")
    r.require(r("word_embed_proj_dim", default=d) == d, "word_embed_proj_dim != hidden_size "
              "(project_in/project_out)")
    r.require(r("layer_norm_elementwise_affine", default=True), "layer_norm_elementwise_affine = false")
    pre = r("do_layer_norm_before", default=True)
    final = pre and not r("_remove_final_layer_norm", default=False)
    bias = r("enable_bias", default=True)
    b = BlockBuilder("opt", final_norm="layernorm" if final else None,
                     tied_embeddings=r("tie_word_embeddings", default=True), position_offset=2)
    attn = {"bias": bias}
    ffn = {"activation": _activation(r, "activation_function", default="relu"), "bias": bias}
    if pre:
        pre_norm_block(b, "layernorm", attn, ("ffn", ffn))
    else:  # OPT-350m: post-LN
        post_norm_block(b, "layernorm", attn, ("ffn", ffn))
    return b.graph(), _dims(r, d_model=d, n_heads=r("num_attention_heads"), n_layers=r("num_hidden_layers"),
                            n_ctx=r("max_position_embeddings"), d_ff=r("ffn_dim"))


@architecture("falcon")
def _falcon(r: _Reader):
    r.require(not r("alibi", default=False), "alibi positions")
    new_arch = r("new_decoder_architecture", default=False)
    heads = r("num_attention_heads")
    # read all four: each architecture ignores two of them
    kv_new, lns = r("num_kv_heads", default=heads), r("num_ln_in_parallel_attn", default=2)
    multi_query, parallel_attn = r("multi_query", default=True), r("parallel_attn", default=True)
    if new_arch:
        r.require(lns in (1, 2), f"num_ln_in_parallel_attn = {lns!r}")
        kv_heads, parallel = kv_new, lns
    else:
        kv_heads, parallel = (1 if multi_query else heads), (1 if parallel_attn else 0)
    d = r("hidden_size")
    bias = r("bias", default=False)
    b = BlockBuilder("falcon", final_norm="layernorm", positions="none",
                     tied_embeddings=r("tie_word_embeddings", default=True))
    pre_norm_block(b, "layernorm", {"bias": bias, "rotary": True},
                    ("ffn", {"activation": _activation(r, "activation", default="gelu"), "bias": bias}),
                    parallel=parallel)
    return b.graph(), _dims(r, d_model=d, n_heads=heads, n_layers=r("num_hidden_layers"),
                            n_ctx=r("max_position_embeddings", default=2048),
                            d_ff=r("ffn_hidden_size", default=None) or 4 * d, n_kv_heads=kv_heads,
                            d_head=r("head_dim", default=None))
