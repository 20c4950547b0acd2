"""The module as written, measured: building a block from its factory, and counting its
parameters and matmul FLOPs as ``FlopCounterMode`` counts them.

Shared by the empirical checks (:mod:`blockalg.model.check`, which also measure a block imported
from PyTorch as written) and the importer (:mod:`blockalg.model.importer`). :func:`flop_counter`
counts as ``FlopCounterMode`` does, without its per-module tracking and much faster (a memo on the
meta device), and also counts torch's fused CPU attention kernel, for which torch 2.13's
``FlopCounterMode`` has no formula.

>>> import torch.nn as nn
>>> mlp = Factory.of(lambda d_model: nn.Linear(d_model, 2 * d_model)).build({"d_model": 8})
>>> measure(mlp, 2, 3, 8).forward  # 2 · (2·3 rows) · 8 · 16
1536
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import sympy as sp
import torch
from torch import nn

from ..errors import BlockalgError, one_line
from ..graphs.expr import evaluate
from ..graphs.ops import get_op
from ..graphs.symbols import DIMENSIONS
from .metashapes import CountingReplay, has_composite_kernel

aten = torch.ops.aten


@dataclass
class Check:
    """One comparison of a predicted with a measured number."""

    name: str
    predicted: int | float
    measured: int | float
    ok: bool
    detail: str = ""

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "detail" or v}


def random_batch(dims, device, seed: int = 0):
    """Token ids and targets, ``batch`` × ``seq_len``, drawn on the CPU and moved to ``device``."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return [torch.randint(0, dims["vocab"], (dims["batch"], dims["seq_len"]), generator=generator).to(device)
            for _ in range(2)]


def _fused_cpu_attention() -> dict:
    """FLOP formulas for torch's fused CPU attention kernel and its backward, which torch 2.13's
    ``FlopCounterMode`` lacks: those of its other fused kernels (backward 2.5× forward)."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    def forward(query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_backward_flop_count(grad_out, query, key, value)

    return {aten._scaled_dot_product_flash_attention_for_cpu: forward,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: backward}


def module_flop_counter():
    """torch's ``FlopCounterMode``, counting per module too, with :func:`_fused_cpu_attention`
    (the reference :func:`flop_counter` is tested against)."""
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping=_fused_cpu_attention())


def flop_counter() -> FlopCount:
    """A :class:`FlopCount`: ``FlopCounterMode``'s totals and per-op counts, including torch's
    fused CPU attention kernel and its backward."""
    return FlopCount()


#: Size, stride and layout queries, which FlopCounterMode leaves to the tensor (NotImplemented).
_QUERIES = frozenset({
    aten.sym_is_contiguous.default, aten.is_contiguous.default, aten.is_contiguous.memory_format,
    aten.is_strides_like_format.default, aten.is_non_overlapping_and_dense.default,
    aten.size.default, aten.sym_size.default, aten.stride.default, aten.sym_stride.default,
    aten.storage_offset.default, aten.sym_storage_offset.default, aten.numel.default,
    aten.sym_numel.default, aten.dim.default, torch.ops.prim.layout.default})

#: Per size of torch's ``flop_registry`` (``register_flop_formula`` adds formulas and never
#: replaces one), the FLOPs and output metadata of meta-device calls by op and argument
#: metadata: shared by every count in the process (variants at one shape share their layers).
_MEMOS: dict[int, dict] = {}


def _memo() -> dict:
    """The memo of :data:`_MEMOS` for torch's formulas of this moment."""
    from torch.utils.flop_counter import flop_registry

    return _MEMOS.setdefault(len(flop_registry), {})


def _decomposes(func) -> bool:
    """Whether ``func.decompose`` does anything (a CompositeImplicitAutograd kernel)."""
    return torch._C.DispatchKey.CompositeImplicitAutograd in func.py_kernels \
        or has_composite_kernel(func)


class FlopCount(CountingReplay):
    """``FlopCounterMode`` without its module tracking (hooks on every module call and on every
    backward node, the bulk of its cost): the same ops counted by the same formulas, totals and
    per-op counts only.

    As ``FlopCounterMode``: size and stride queries pass through, an op with a
    CompositeImplicitAutograd decomposition runs decomposed (under this mode), any other runs
    and is counted by ``torch.utils.flop_counter.flop_registry`` (with
    :func:`_fused_cpu_attention`), keyed by its overload packet. On the meta device a call
    repeated with the same argument metadata is booked from its first count
    (:class:`~blockalg.model.metashapes.CountingReplay`), so a 96-layer model costs about one
    layer.

    >>> x, w = torch.empty(4, 8, device="meta"), torch.empty(8, 16, device="meta")
    >>> with flop_counter() as counter:
    ...     y = [torch.relu(x @ w) for _ in range(3)]
    >>> counter.get_total_flops(), counter.get_flop_counts()["Global"]
    (3072, {<OpOverloadPacket(op='aten.mm')>: 3072})
    """

    def __init__(self):
        from torch.utils.flop_counter import flop_registry, shape_wrapper

        super().__init__(_memo())
        # NB: built as FlopCounterMode builds its registry, from the registry of this moment
        self.registry = {**flop_registry,
                         **{op: shape_wrapper(f) for op, f in _fused_cpu_attention().items()}}
        self.counts = {}  # op packet -> FLOPs: FlopCounterMode's "Global" counts

    def get_total_flops(self) -> int:
        return sum(self.counts.values())

    def get_flop_counts(self) -> dict[str, dict]:
        """``{"Global": {op packet: FLOPs}}``, as ``FlopCounterMode.get_flop_counts`` has it."""
        return {"Global": dict(self.counts)}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in _QUERIES:
            return NotImplemented
        return super().__torch_dispatch__(func, types, args, kwargs)

    def counted(self, func, args, kwargs):
        if func is not torch.ops.prim.device.default and _decomposes(func):
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        formula = self.registry.get(func._overloadpacket)
        if formula is not None:
            self.book(func._overloadpacket, formula(*args, **kwargs, out_val=out))
        return out

    def book(self, packet, flops: int) -> None:
        self.counts[packet] = self.counts.get(packet, 0) + flops
        super().book(packet, flops)


def is_fused_attention(op_names) -> bool:
    """Whether the counted ops include a fused attention kernel (which recomputes the scores in
    its backward)."""
    return any(re.search(r"(flash|efficient|cudnn)_attention", name) for name in op_names)


# The factory: which dimensions it takes, and building it.


@dataclass
class Factory:
    """A callable building the block from keyword dimensions, and which dimensions it takes."""

    call: object
    name: str
    taken: tuple[str, ...]
    options: dict

    @classmethod
    def of(cls, factory, name=None) -> Factory:
        if not callable(factory):
            raise BlockalgError(f"from_module: {factory!r} is not a class or a callable")
        label = name or getattr(factory, "__name__", type(factory).__name__)
        try:
            parameters = inspect.signature(factory).parameters.values()
        except (TypeError, ValueError):
            raise BlockalgError(f"{label}: cannot read which dimensions it takes") from None
        taken = []
        for p in parameters:
            if p.name in DIMENSIONS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                taken.append(p.name)
            elif p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY,
                                                     p.POSITIONAL_ONLY):
                raise BlockalgError(
                    f"{label}: argument '{p.name}' is not a dimension and has no default (the "
                    f"factory takes keyword dimensions: {', '.join(DIMENSIONS)}; wrap it in a function)")
        if "d_model" not in taken:
            raise BlockalgError(f"{label}: takes no 'd_model' (the width of the stream it maps)")
        options = getattr(factory, "blockalg_options", None) or {}
        if not isinstance(options, Mapping):
            raise BlockalgError(f"{label}.blockalg_options must be a dict")
        return cls(factory, label, tuple(taken), dict(options))

    def dims_at(self, point: Mapping) -> dict:
        """The full dimensions at a probe point: what the factory does not take is derived."""
        dims = {k: point[k] for k in DIMENSIONS if k in point}
        if "d_head" not in self.taken and "n_heads" in self.taken:
            dims["d_model"] = dims["n_heads"] * dims["d_head"]
        if "n_kv_heads" not in self.taken:
            dims["n_kv_heads"] = dims["n_heads"]
        return dims

    def build(self, dims: Mapping, device="meta") -> nn.Module:
        arguments = {k: dims[k] for k in self.taken}
        try:
            with torch.device(device):
                module = self.call(**arguments)
        except Exception as e:  # the user's code
            shown = ", ".join(f"{k}={v}" for k, v in arguments.items())
            raise BlockalgError(f"{self.name}({shown}) raised {one_line(e)}") from None
        if not isinstance(module, nn.Module):
            raise BlockalgError(f"{self.name}(...) returned {type(module).__name__}, not an nn.Module")
        return module.eval()  # dropout is the identity


# ---------------------------------------------------------------------------------------------
# Measuring the module as written: parameters and FlopCounterMode.


@dataclass
class Measured:
    """FLOPs of one forward and one backward of the module (batch × seq_len tokens)."""

    forward: int
    backward: int
    forward_by_path: dict  # module path -> forward FLOPs ('' is the whole block)
    fused: bool  # the attention ran a fused kernel (its backward recomputes the scores)
    functions: list  # custom autograd Functions met in the backward graph


def measure(module: nn.Module, batch: int, seq_len: int, width: int, device="meta") -> Measured:
    """One forward and backward of ``module`` on a (batch, seq_len, width) input, counted."""
    if str(device) == "meta":
        x = torch.empty(batch, seq_len, width, device="meta", requires_grad=True)
    else:
        generator = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(batch, seq_len, width, generator=generator).to(device).requires_grad_()
    with module_flop_counter() as forward:  # per module: the importer checks each sublayer
        y = module(x)
    functions = _custom_functions(y)
    with flop_counter() as backward:
        y.float().sum().backward()
    counts = forward.get_flop_counts()
    by_path = {key.partition(".")[2]: sum(v.values()) for key, v in counts.items() if key != "Global"}
    ops = [str(op) for op in backward.get_flop_counts()["Global"]]
    return Measured(forward.get_total_flops(), backward.get_total_flops(), by_path,
                    is_fused_attention(ops), functions)


def _custom_functions(y) -> list[str]:
    """Names of the custom ``torch.autograd.Function`` s in the graph that computed ``y``."""
    found, stack, seen = [], [getattr(y, "grad_fn", None)], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if isinstance(fn, torch.autograd.function.BackwardCFunction):
            found.append(type(fn).__name__.removesuffix("Backward"))
        stack += [next_fn for next_fn, _ in fn.next_functions]
    return sorted(set(found))


def block_flops(graph, dims, kind: str) -> int:
    """One block's FLOPs of ``kind`` (``forward_matmul``, ...) at ``dims``, for one sequence."""
    total = 0
    for node in graph.nodes:
        op = get_op(graph.nodes[node]["op"])
        attrs = op.with_defaults(graph.nodes[node])
        total += evaluate(getattr(op, kind)(attrs, graph.in_degree(node)), dims)
    return total


def node_params(graph, node, dims) -> int:
    op = get_op(graph.nodes[node]["op"])
    return evaluate(sum(op.params(op.with_defaults(graph.nodes[node])).values(), sp.Integer(0)), dims)
