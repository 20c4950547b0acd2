"""The block graph as a runnable PyTorch model.

:class:`Block` executes a block graph: one submodule per graph node, named after the node and made
by the node's op-registry factory, run in topological order. :class:`GPT` wraps L blocks in the
model of :func:`blockalg.graphs.graph.model_nodes` (token + position embedding, final norm, unembedding,
tied by default). So ``named_parameters()`` lines up with :func:`blockalg.analysis.params.leaf_params`:
``blocks.3.attn.qkv.weight`` is the leaf ``block.attn.qkv.weight``.

Initialisation per ``init`` scheme (a graph attribute):

* ``gpt2`` (pre-ln, post-ln, hybrid-ln): N(0, 0.02²) for linear and embedding weights, zero biases,
  norm gains 1, residual projections (``attn.proj``, ``ffn.proj``) at std 0.02/sqrt(2L)
  (Radford et al. 2019). GPT-1 (post-LN) used N(0, 0.02²) without the depth scaling; the
  original Transformer used Xavier-uniform. Both are left for later variants to name.
* ``deepnorm`` (deepnorm): Xavier-normal with gain β = (8L)^(-1/4) on the value and output
  projections and the FFN, gain 1 on q and k (Wang et al. 2022).
* ``xiong`` (any graph, with ``init="xiong"``): the setting of Xiong et al. 2020's Theorem 1,
  Xavier-uniform weights, unit-variance embeddings, no depth scaling (:class:`Init`).

>>> import torch
>>> model = build_model("pre-ln", preset="tiny", device="meta")
>>> sum(p.numel() for p in model.parameters())  # 512·64 + 64·64 + 2·(12·64² + 13·64) + 2·64
136960
"""

from __future__ import annotations

import contextlib
import re

import networkx as nx
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..analysis.params import leaf_params
from ..errors import BlockalgError, escape_line
from ..graphs.expr import evaluate, numeric_value
from ..graphs.graph import (
    INIT_SCHEMES,
    edge_scale,
    model_nodes,
    model_streams,
    node_op,
    segments,
    stream_nodes,
)
from ..graphs.ops import INPUT, OUTPUT
from ..graphs.presets import DEFAULT_PRESET
from ..graphs.resolve import resolve
from ..limits import MAX_DIMENSION, MAX_TORCH_LAYERS
from .modules import Init, init_model_, module_for


class Block(nn.Module):
    """One block: the graph's nodes as submodules, executed in topological order.

    It takes one tensor per stream (in ``streams`` order) and returns one per stream: a single
    tensor for the usual one-stream block, or a model head's single output.
    """

    def __init__(self, graph: nx.DiGraph, dims: dict, streams=("x",)):
        super().__init__()
        inputs, outputs = stream_nodes(graph, INPUT), stream_nodes(graph, OUTPUT)
        self.inputs = [inputs[s] for s in streams]
        self.outputs = [outputs[s] for s in streams] if len(outputs) > 1 else list(outputs.values())
        self.plan = []  # (node, [(input node, constant scale or None), ...]) in forward order
        for node in nx.topological_sort(graph):
            if node in self.inputs:
                continue
            self.add_module(node, module_for(*node_op(graph, node), dims))
            inputs = []
            for u in graph.predecessors(node):
                scale = edge_scale(graph, u, node)
                inputs.append((u, None if scale == 1 else numeric_value(scale, dims)))
            self.plan.append((node, inputs))

    def forward(self, *streams, cache=None):
        values = {node: streams[i] for i, node in enumerate(self.inputs)}  # (indexing traces)
        for node, inputs in self.plan:
            args = [values[u] if s is None else values[u] * s for u, s in inputs]
            module = self._modules[node]
            values[node] = module(*args, cache=cache) if cache is not None and module.uses_cache \
                else module(*args)
        if len(self.outputs) == 1:
            return values[self.outputs[0]]
        return tuple(values[node] for node in self.outputs)


class GPT(nn.Module):
    """A GPT-style language model around a block graph."""

    def __init__(self, graph: nx.DiGraph, dims: dict):
        super().__init__()
        self.dims = dims
        self.recompute = "none"  # "full": checkpoint every block (blockalg.model.memory.recompute)
        self.streams = model_streams(graph)  # stream -> "embedding" | "zero"
        self.segment_of = []  # the segment (of a stack) each block belongs to
        blocks = []
        for i, (block, count) in enumerate(segments(graph)):
            n = evaluate(count, dims)
            blocks += [Block(block, dims, list(self.streams)) for _ in range(n)]
            self.segment_of += [i] * n
        self.blocks = nn.ModuleList(blocks)
        head = graph.graph.get("head")
        self.head = Block(head, dims, list(self.streams)) if head is not None else None
        for m in model_nodes(graph):
            if m.path.partition(".")[0] in ("wte", "wpe", "ln_f", "lm_head"):
                self.add_module(m.path, module_for(m.op, m.attrs, dims))
        self.wpe = getattr(self, "wpe", None)
        self.ln_f = getattr(self, "ln_f", None)
        if graph.graph.get("tied_embeddings", True):
            self.lm_head.weight = self.wte.weight

    def forward(self, idx, targets=None, cache=None):
        """Logits (and the loss when ``targets`` are given). With a :class:`KVCache`, ``idx`` are
        the next tokens after the cached ones: a prefill, then one token per call."""
        b, s = idx.shape
        past = cache.length if cache is not None else 0
        x = self.wte(idx)  # (b, s, d)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(past, past + s, device=idx.device) + self.wpe.offset)
        if self.head is None:
            for block in self.blocks:
                x = self._run(block, x, cache=cache)
        else:  # several streams: each starts as the embedding or at zero
            streams = [x if start == "embedding" else torch.zeros_like(x)
                       for start in self.streams.values()]
            for block in self.blocks:
                streams = self._run(block, *streams, cache=cache)
            x = self.head(*streams)
        if cache is not None:
            cache.length += s
        if self.ln_f is not None:
            x = self.ln_f(x)
        logits = self.lm_head(x)  # (b, s, V)
        if targets is None:
            return logits
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

    def _run(self, block, *streams, cache=None):
        if self.recompute == "full" and torch.is_grad_enabled():  # keep only the block's inputs
            return checkpoint(block, *streams, use_reentrant=True, preserve_rng_state=False)
        return block(*streams, cache=cache)


def build_model(variant, dims: dict | None = None, *, preset: str = DEFAULT_PRESET,
                device="cpu", dtype=None, seed: int | None = None, init_std: float = 0.02,
                residual_scaling: bool = True, init: str | None = None, **overrides) -> GPT:
    """The runnable model of ``variant`` (a catalog name, a graph file path or a graph).

    ``dims`` (as from :func:`blockalg.graphs.presets.resolve_dims`) or ``preset`` plus keyword overrides
    give the shape; ``device="meta"`` builds without memory, at any size. ``init_std`` replaces
    GPT-2's 0.02; ``residual_scaling=False`` drops the 1/sqrt(2L) factor of residual projections;
    ``init`` replaces the graph's initialisation scheme (``"gpt2"``, ``"deepnorm"``, ``"xiong"``).
    """
    graph, dims = resolve(variant, preset, dims, **overrides)
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise BlockalgError("--device cuda: no CUDA device is available here")
    check_buildable(graph, dims)
    if seed is not None:
        torch.manual_seed(seed)
    with out_of_memory_is_bad_input(device), torch.device(device):
        model = GPT(graph, dims)
    scheme = init or graph.graph.get("init", "gpt2")
    if scheme not in INIT_SCHEMES:
        raise BlockalgError(f"unknown init scheme '{scheme}' (known: {', '.join(INIT_SCHEMES)})")
    if torch.device(device).type != "meta":  # meta tensors hold no values to initialise
        init_model_(model, Init(scheme, dims["n_layers"], init_std, residual_scaling,
                                n_tables=1 if model.wpe is None else 2))
    return model.to(dtype=dtype) if dtype is not None else model


def check_buildable(graph, dims: dict, batch: int | None = None) -> None:
    """Refuse, before torch sees them, a model torch could not build or index: more than
    :data:`~blockalg.limits.MAX_TORCH_LAYERS` blocks, or a tensor (a parameter, the activations
    of ``batch`` sequences, the attention scores) of more elements than int64 holds.

    >>> from blockalg.graphs.resolve import resolve
    >>> check_buildable(*resolve("pre-ln", "tiny", vocab=2**60))
    Traceback (most recent call last):
    ...
    blockalg.errors.BlockalgError: tensor wte.weight would hold 73,786,976,294,838,206,464 elements; torch indexes at most 2**63 - 1
    """
    blocks = sum(evaluate(count, dims, "layers") for _, count in segments(graph))
    if blocks > MAX_TORCH_LAYERS:
        raise BlockalgError(f"{blocks:,} blocks: a torch model is built with at most "
                            f"{MAX_TORCH_LAYERS:,}")
    b, s = batch or dims["batch"], dims["seq_len"]
    widest = max(dims["d_model"], dims["d_ff"], dims["vocab"], dims["n_experts"],
                 (dims["n_heads"] + 2 * dims["n_kv_heads"]) * dims["d_head"])
    sizes = {f"tensor {leaf}": evaluate(expr, dims) for leaf, expr in leaf_params(graph).items()}
    sizes.update({"the activations": b * s * widest,
                  "the attention scores": b * dims["n_heads"] * s * s})
    for name, size in sizes.items():
        if size > MAX_DIMENSION:
            raise BlockalgError(f"{name} would hold {size:,} elements; torch indexes at most "
                                f"2**63 - 1")


@contextlib.contextmanager
def out_of_memory_is_bad_input(device):
    """Running out of memory on ``device`` is the machine's limit, not a bug: a one-line error."""
    try:
        yield
    except (MemoryError, RuntimeError) as e:
        if not isinstance(e, MemoryError) and not re.search(r"out of memory|can't allocate", str(e)):
            raise
        raise BlockalgError(f"--device {device}: out of memory ({escape_line(str(e))[:160]})") from None
