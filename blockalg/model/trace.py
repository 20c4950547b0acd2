"""Tracing a block written in PyTorch on the meta device, and what each traced node computes.

Part of :mod:`blockalg.model.importer`. :func:`trace` runs torch.fx's meta tracer (concrete sizes,
so user code may compute with ``x.size(-1)``) with the linear maps and norms kept whole: torch's
own, and custom modules found by :func:`custom_leaves` to compute one (nanoGPT's ``LayerNorm``,
LLaMA's ``RMSNorm``, GPT-2's ``Conv1D``), tested numerically on a small real copy. :func:`node_kind`
says what a traced node computes; :func:`source_line` where in the user's code it was made.

>>> import torch.nn as nn
>>> class Conv1D(nn.Module):  # GPT-2's: a linear map whose weight is stored (in, out)
...     def __init__(self, nf, nx):
...         super().__init__()
...         self.weight, self.bias = nn.Parameter(torch.randn(nx, nf)), nn.Parameter(torch.zeros(nf))
...     def forward(self, x):
...         return x @ self.weight + self.bias
>>> custom_leaves(nn.Sequential(Conv1D(6, 4)))
{'0': Leaf(kind='linear', bias=True, transposed=True)}
"""

from __future__ import annotations

import copy
import inspect
import operator
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.experimental.meta_tracer import MetaProxy, MetaTracer, proxys_to_metas

from ..errors import BlockalgError, one_line

BATCH = 2  # the batch of the traced input



# Custom leaves: modules computing a norm or a linear map, recognised by what they compute.


@dataclass(frozen=True)
class Leaf:
    """A module kept whole in the trace: ``kind`` is ``linear``, ``layernorm`` or ``rmsnorm``."""

    kind: str
    bias: bool = True
    transposed: bool = False  # a linear whose weight is (in, out), as GPT-2's Conv1D


def builtin_leaf(module: nn.Module) -> Leaf | None:
    if isinstance(module, nn.Linear):
        return Leaf("linear", module.bias is not None)
    if isinstance(module, nn.LayerNorm) and module.elementwise_affine:
        return Leaf("layernorm", module.bias is not None)
    if isinstance(module, nn.RMSNorm) and module.elementwise_affine:
        return Leaf("rmsnorm", False)
    return None


def custom_leaves(module: nn.Module) -> dict[str, Leaf]:
    """Path → :class:`Leaf` of the childless custom modules that compute a LayerNorm, an RMSNorm
    or a linear map: tested on a real copy, with random weights, against torch's own."""
    leaves = {}
    for path, sub in module.named_modules():
        if not path or list(sub.children()) or builtin_leaf(sub) is not None \
                or type(sub).__module__.startswith("torch."):
            continue
        params = dict(sub.named_parameters())
        shapes = [tuple(p.shape) for p in params.values()]
        leaf = None
        if 1 <= len(shapes) <= 2 and all(len(s) == 1 and s == shapes[0] for s in shapes):
            leaf = _norm_leaf(sub, shapes[0][0], len(shapes) == 2)
        elif shapes and len(shapes[0]) == 2 and len(shapes) <= 2:
            leaf = _linear_leaf(sub, shapes)
        if leaf is not None:
            leaves[path] = leaf
    return leaves


def _real_copy(sub: nn.Module) -> nn.Module:
    real = copy.deepcopy(sub).to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in real.parameters():
            p.copy_(torch.rand(p.shape, generator=generator) + 0.5)
    return real


def _agrees(sub, x, expected) -> bool:
    try:
        with torch.no_grad():
            out = sub(x)
    except Exception:  # noqa: BLE001 (not the computation we test for: not this kind of leaf)
        return False
    return isinstance(out, torch.Tensor) and out.shape == expected.shape \
        and torch.allclose(out.float(), expected, rtol=1e-3, atol=1e-4)


def _norm_leaf(sub, width, has_bias) -> Leaf | None:
    real = _real_copy(sub)
    x = torch.randn(2, 3, width, generator=torch.Generator().manual_seed(1))
    weight, *rest = list(real.parameters())
    bias = rest[0] if rest else None
    if _agrees(real, x, F.layer_norm(x, (width,), weight, bias)):
        return Leaf("layernorm", has_bias)
    if not has_bias and _agrees(real, x, F.rms_norm(x, (width,), weight, 1e-6)):
        return Leaf("rmsnorm", False)
    return None


def _linear_leaf(sub, shapes) -> Leaf | None:
    real = _real_copy(sub)
    weight, *rest = list(real.parameters())
    bias = rest[0] if rest else None
    rows, cols = weight.shape
    generator = torch.Generator().manual_seed(1)
    for transposed, width_in, width_out in ((False, cols, rows), (True, rows, cols)):
        if bias is not None and tuple(bias.shape) != (width_out,):
            continue
        x = torch.randn(2, 3, width_in, generator=generator)
        expected = x @ (weight if transposed else weight.T) + (bias if bias is not None else 0)
        if _agrees(real, x, expected):
            return Leaf("linear", bias is not None, transposed)
    return None


def leaf_of(module: nn.Module, path: str, leaves: dict) -> Leaf | None:
    return leaves.get(path) or builtin_leaf(module.get_submodule(path))


# Tracing on the meta device.


class _Proxy(MetaProxy):
    """MetaProxy with the concrete sizes user code branches on (``x.ndim``, ``len(x)``)."""

    def _meta(self):
        return getattr(self, "_tensor_meta", None)

    def size(self, dim=None):
        # NB: MetaProxy.size(0) returns the whole size (it tests ``if dim``).
        if isinstance(self._meta(), torch.Tensor) and dim is not None:
            return self._meta().size(dim)
        return super().size(dim)

    @property
    def ndim(self):
        return self._meta().dim() if isinstance(self._meta(), torch.Tensor) else super().__getattr__("ndim")

    def numel(self):
        return self._meta().numel() if isinstance(self._meta(), torch.Tensor) else super().__getattr__("numel")()

    def __len__(self):
        if isinstance(self._meta(), (torch.Tensor, tuple, list)):
            return len(self._meta())
        return super().__len__()


class _Tracer(MetaTracer):
    def __init__(self, leaves):
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m, qualified_name):
        return (qualified_name in self.leaves or builtin_leaf(m) is not None
                or super().is_leaf_module(m, qualified_name))

    def proxy(self, node):
        return _Proxy(node, self)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None,
                     proxy_factory_fn=None):
        rv = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        if getattr(rv, "_tensor_meta", None) is None and kind == "call_function":
            # NB: MetaTracer's own stand-ins fail on some arguments (torch.where with a number)
            try:
                rv.install_tensor_meta(target(*fx.node.map_aggregate(args, proxys_to_metas),
                                              **fx.node.map_aggregate(kwargs, proxys_to_metas)))
            except Exception:  # noqa: BLE001 (left without a shape: refused where it is used)
                pass
        meta = getattr(rv, "_tensor_meta", None)
        if meta is not None:
            rv.node.meta["val"] = meta
        return rv


def trace(module: nn.Module, dims: Mapping, leaves: dict, stack_traces: bool = False) -> fx.Graph:
    """The traced forward of ``module`` on a (BATCH, seq_len, d_model) meta input."""
    signature = inspect.signature(module.forward)
    parameters = list(signature.parameters.values())
    if not parameters:
        raise BlockalgError(f"{type(module).__name__}.forward takes no input")
    extra = [p for p in parameters[1:] if p.default is p.empty
             and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if extra:
        raise BlockalgError(f"{type(module).__name__}.forward needs '{extra[0].name}': blockalg imports "
                            f"blocks whose forward(x) takes the stream only")
    concrete = {p.name: p.default for p in parameters[1:] if p.default is not p.empty}
    _settle_dynamo()
    tracer = _Tracer(leaves)
    tracer.record_stack_traces = stack_traces
    x = torch.empty(BATCH, dims["seq_len"], dims["d_model"], device="meta")
    with warnings.catch_warnings(record=True) as caught:
        try:
            graph = tracer.trace(module, meta_args={parameters[0].name: x}, concrete_args=concrete)
        except BlockalgError:
            raise
        except Exception as e:  # the user's code, traced
            raise BlockalgError(f"{type(module).__name__}: tracing it with torch.fx failed: "
                                f"{one_line(e)}") from None
    for warning in caught:  # NB: MetaTracer warns for each node it cannot give a shape; such a
        if "Could not compute metadata" not in str(warning.message):  # node is refused where used
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return graph


def _settle_dynamo() -> None:
    """Build torch.compile's table of torch functions before tracing. NB: MetaTracer swaps
    ``torch.arange``, ``torch.ones`` & co. for wrappers while it traces; a table first built in
    that window holds the wrappers, and torch.compile then refuses ``torch.arange`` for the rest
    of the process."""
    try:
        from torch._dynamo.trace_rules import get_torch_obj_rule_map
    except ImportError:  # another torch: no such table
        return
    get_torch_obj_rule_map()


def live_nodes(graph: fx.Graph) -> list:
    """The nodes the output depends on, in order (dead code is traced too)."""
    live, stack = set(), [n for n in graph.nodes if n.op == "output"]
    while stack:
        node = stack.pop()
        if node not in live:
            live.add(node)
            stack += node.all_input_nodes
    return [n for n in graph.nodes if n in live]


# What each traced node computes.

LINEAR, NORM_NODE, SDPA, SOFTMAX, MATMUL, ACTIVATION = (
    "linear", "norm", "sdpa", "softmax", "matmul", "activation")
ADD, MUL, DIV, ELEMENTWISE = "add", "mul", "div", "elementwise"
FREE, SELECT, UNKNOWN = "free", "select", "unknown"

#: Free everywhere: reshapes, casts, copies and dropout (the identity at evaluation).
_FREE_METHODS = {"view", "reshape", "transpose", "permute", "contiguous", "unsqueeze", "squeeze",
                 "flatten", "unflatten", "to", "type", "type_as", "float", "half", "bfloat16",
                 "double", "clone", "view_as", "reshape_as", "t", "movedim"}
_FREE_FUNCTIONS = {torch.reshape, torch.transpose, torch.permute, torch.flatten, torch.unsqueeze,
                   torch.squeeze, torch.movedim, torch.t, F.dropout, torch.dropout}
#: Free inside a sublayer only: selecting, joining, repeating and masking values (heads, rotary
#: halves, causal masks), which on the residual stream would change what it carries.
_SELECT_METHODS = {"split", "chunk", "expand", "expand_as", "repeat", "repeat_interleave",
                   "masked_fill", "masked_fill_", "narrow", "select", "tril", "triu",
                   "split_with_sizes", "unbind", "__getitem__"}
_SELECT_FUNCTIONS = {operator.getitem, torch.cat, torch.concat, torch.stack, torch.split,
                     torch.chunk, torch.repeat_interleave, torch.masked_fill, torch.where,
                     torch.view_as_complex, torch.view_as_real, torch.polar, torch.tril,
                     torch.triu, torch.unbind, torch.narrow, torch.select}
ACTIVATION_FUNCTIONS = {F.gelu: "gelu", F.silu: "silu", F.relu: "relu", torch.relu: "relu",
                        "relu": "relu", "silu": "silu", torch.tanh: "gelu", "tanh": "gelu",
                        torch.sigmoid: "silu", "sigmoid": "silu", F.sigmoid: "silu"}
ACTIVATION_MODULES = {nn.GELU: "gelu", nn.SiLU: "silu", nn.ReLU: "relu"}
_ELEMENTWISE = {operator.sub, operator.neg, operator.pow, operator.isub, operator.eq, torch.sub,
                torch.neg, torch.pow, torch.rsqrt, torch.sqrt, torch.exp, torch.cos, torch.sin,
                "sub", "neg", "pow", "rsqrt", "sqrt", "exp", "cos", "sin", "__rsub__"}
#: Methods whose other arguments give a dtype, device or shape only; functions that read a shape.
FIRST_ONLY = {"type_as", "expand_as", "view_as", "to", "reshape_as"}
SHAPE_ONLY = {torch.zeros_like, torch.ones_like, torch.empty_like, torch.full_like,
              torch.rand_like, torch.randn_like, "new_zeros", "new_ones", "new_empty", "new_full",
              "new_tensor"}
NORM_FUNCTIONS = {F.layer_norm: "layernorm", torch.layer_norm: "layernorm",
                  F.rms_norm: "rmsnorm", torch.rms_norm: "rmsnorm"}


def node_kind(node: fx.Node, module: nn.Module, leaves: dict) -> str:
    """What ``node`` computes (one of the kinds above), for :mod:`blockalg.model.recognise`."""
    target = node.target
    if node.op == "call_module":
        sub = module.get_submodule(target)
        leaf = leaf_of(module, target, leaves)
        if leaf is not None:
            return LINEAR if leaf.kind == "linear" else NORM_NODE
        if isinstance(sub, (nn.Dropout, nn.Identity)):
            return FREE
        if type(sub) in ACTIVATION_MODULES:
            return ACTIVATION
        return UNKNOWN
    if node.op not in ("call_function", "call_method"):
        return UNKNOWN
    if target is F.scaled_dot_product_attention or getattr(target, "__name__", "") == \
            "scaled_dot_product_attention":
        return SDPA
    if target in (F.softmax, torch.softmax, "softmax"):
        return SOFTMAX
    if target in (operator.matmul, torch.matmul, torch.bmm, "matmul", "bmm"):
        return MATMUL
    if target in NORM_FUNCTIONS:
        return NORM_NODE
    if target in ACTIVATION_FUNCTIONS:
        return ACTIVATION
    if target in (operator.add, operator.iadd, torch.add, "add", "add_"):
        return ADD
    if target in (operator.mul, operator.imul, torch.mul, "mul", "mul_"):
        return MUL
    if target in (operator.truediv, operator.itruediv, torch.div, "div", "div_"):
        return DIV
    method = node.op == "call_method"
    if target in _FREE_FUNCTIONS or (method and target in _FREE_METHODS):
        return FREE
    if target in _SELECT_FUNCTIONS or (method and target in _SELECT_METHODS):
        return SELECT
    if target in _ELEMENTWISE:
        return ELEMENTWISE
    return UNKNOWN


def describe(node: fx.Node) -> str:
    target = node.target
    if node.op == "call_method":
        return f".{target}()"
    if node.op == "call_module":
        return f"module {target}"
    return getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or str(target)


class Refused(Exception):
    """A node blockalg does not recognise: the importer adds where it is in the source."""

    def __init__(self, node: fx.Node, why: str):
        super().__init__(why)
        self.node, self.why = node, why


def source_line(node) -> str:
    """`` at file.py:12 (`code`)`` for the innermost line of the user's code that made ``node``;
    for a node inside a custom autograd Function, also where the Function was applied."""
    text = node.meta.get("stack_trace") or ""
    frames = re.findall(r'File "([^"]+)", line (\d+), in \S+\n\s*(.*)', text)
    torch_dir, own_dir = Path(torch.__file__).parent, Path(__file__).parents[1]

    def user(file):
        path = Path(file)
        return not (path.is_relative_to(torch_dir) or path.is_relative_to(own_dir)
                    or file.startswith("<frozen"))

    def shown(frame):
        file, line, code = frame
        return f"{Path(file).name}:{line} (`{code.strip()}`)"

    mine = [(i, f) for i, f in enumerate(frames) if user(f[0])]
    if not mine:
        return ""
    where = f" at {shown(mine[-1][1])}"
    applied = [i for i, f in enumerate(frames) if f[0].replace("\\", "/").endswith("torch/autograd/function.py")]
    if applied:
        callers = [f for i, f in mine if i < applied[-1]]
        if callers:
            where += f", applied at {shown(callers[-1])}"
    return where
