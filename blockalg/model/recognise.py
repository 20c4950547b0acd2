"""Recognising a traced block: its sublayers, its residual stream, and the block graph they make.

Part of :mod:`blockalg.model.importer`. Remove the linear maps from the traced dataflow: what can
neither be reached from the block's input nor reach its output without crossing one lies inside a
sublayer, and each connected group of such nodes, with the projections around it, is one. A group
that computes attention scores is an ``attention``, one with an activation an ``ffn``; ``roles``
(module path → role) overrides that. The rest is the residual stream: norms, adds, scalings,
dropout and free reshapes. Anything else is :class:`Refused`, naming the node.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction

import networkx as nx
import sympy as sp
import torch
import torch.nn.functional as F
from torch import fx, nn

from ..graphs.graph import RESERVED_NODE_NAMES, BlockGraph
from ..graphs.symbols import DIMENSIONS, d_head, n_heads, n_kv_heads
from .trace import (
    ACTIVATION,
    ACTIVATION_FUNCTIONS,
    ACTIVATION_MODULES,
    ADD,
    BATCH,
    DIV,
    FIRST_ONLY,
    FREE,
    LINEAR,
    MATMUL,
    MUL,
    NORM_FUNCTIONS,
    NORM_NODE,
    SDPA,
    SHAPE_ONLY,
    SOFTMAX,
    UNKNOWN,
    Refused,
    describe,
    leaf_of,
    live_nodes,
    node_kind,
)


# Recognition: the traced dataflow as a block graph, at one probe point.


@dataclass
class Sublayer:
    """An attention or FFN sublayer found in the trace."""

    role: str
    inside: list  # fx nodes strictly between the projections, in order
    linears_in: list
    linears_out: list
    path: str = ""
    name: str = ""
    attrs: dict = field(default_factory=dict)
    observed: dict = field(default_factory=dict)  # symbol -> value read from the trace


@dataclass
class Recognised:
    """The block graph read from one trace, with what was measured to write its dimensions."""

    graph: BlockGraph
    observed: dict  # symbol -> value at this point
    params: dict  # graph node -> parameter names it owns
    paths: dict  # graph node -> module path (for per-module FLOPs), "" when inline
    shapes: dict  # parameter name -> shape
    notes: list


class Recognizer:
    def __init__(self, module: nn.Module, graph: fx.Graph, leaves: dict, roles: Mapping):
        self.module, self.fx, self.leaves, self.roles = module, graph, leaves, roles
        self.nodes = live_nodes(graph)
        self.params = dict(module.named_parameters())
        self.kinds = {}
        self.active = set()  # nodes computed from the block's input
        self.notes = []

    # -- helpers
    def val(self, node):
        return node.meta.get("val") if isinstance(node, fx.Node) else None

    def inputs(self, node) -> list:
        """The active nodes whose values ``node`` computes with, in order (``y.type_as(x)`` and
        ``torch.zeros_like(x)`` read x's dtype or shape only)."""
        if node.target in SHAPE_ONLY:
            return []
        arguments = (node.args[:1] if node.op == "call_method" and node.target in FIRST_ONLY
                     else (node.args, node.kwargs))
        found = []
        fx.node.map_arg(arguments, lambda a: found.append(a) if a in self.active else None)
        return list(dict.fromkeys(found))

    def path_of(self, node) -> str:
        if node.op == "call_module":
            return node.target
        stack = node.meta.get("nn_module_stack") or {}
        return list(stack.values())[-1][0] if stack else ""

    def param_of(self, node):
        """The parameter name a get_attr node reads, or None."""
        if isinstance(node, fx.Node) and node.op == "get_attr" and node.target in self.params:
            return node.target
        return None

    # -- the pass
    def run(self, d_model_value: int) -> Recognised:
        x = next(n for n in self.fx.nodes if n.op == "placeholder")
        output = next(n for n in self.nodes if n.op == "output")
        self.active.add(x)
        for node in self.nodes:
            if node.op in ("placeholder", "output", "get_attr"):
                continue
            if self.inputs(node):
                if "val" not in node.meta:
                    raise Refused(node, "cannot be run on the meta device (no shape)")
                if _tensors(self.val(node)):
                    self.active.add(node)
        for node in self.active - {x}:
            self.kinds[node] = node_kind(node, self.module, self.leaves)
        result = output.args[0]
        if not isinstance(result, fx.Node) or result not in self.active \
                or not isinstance(self.val(result), torch.Tensor):
            raise Refused(output, "forward must return the stream tensor computed from its input")
        if tuple(self.val(result).shape) != tuple(self.val(x).shape):
            raise Refused(result, f"forward returns shape {tuple(self.val(result).shape)}, "
                                  f"not the input's {tuple(self.val(x).shape)}")
        self._check_no_autograd_function()
        sublayers = self.sublayers(x, result)
        return self.wire(x, result, sublayers, d_model_value)

    def _check_no_autograd_function(self):
        for node in self.active:
            trace_text = node.meta.get("stack_trace") or ""
            if "torch/autograd/function.py" in trace_text.replace("\\", "/"):
                raise Refused(node, "runs inside a custom torch.autograd.Function, whose backward "
                                    "blockalg cannot read")

    def sublayers(self, x, result) -> list[Sublayer]:
        active = [n for n in self.nodes if n in self.active]
        linear = {n for n in active if self.kinds.get(n) == LINEAR}
        dataflow = nx.DiGraph()
        dataflow.add_nodes_from(active)
        for node in active:
            for u in self.inputs(node):
                dataflow.add_edge(u, node)
        stream = dataflow.subgraph([n for n in active if n not in linear])
        up = nx.descendants(stream, x) | {x}
        down = (nx.ancestors(stream, result) | {result}) if result not in linear else set()
        inside = [n for n in active if n not in linear and n not in up and n not in down]
        groups = self._group(dataflow.subgraph(inside), inside)
        found = []
        for members in groups:
            member_set = set(members)
            linears_in = [n for n in active if n in linear
                          and any(u in member_set for u in dataflow.successors(n))]
            linears_out = [n for n in active if n in linear
                           and any(u in member_set for u in dataflow.predecessors(n))]
            found.append(Sublayer("", members, linears_in, linears_out))
        used = [n for s in found for n in s.linears_in + s.linears_out]
        for node in active:
            if node in linear and node not in used:
                raise Refused(node, "is a linear map outside any attention or FFN sublayer")
        for node in set(used):
            if used.count(node) > 1:
                raise Refused(node, "joins two sublayers: a projection must belong to one")
        for s in found:
            self._classify(s)
        return found

    def _group(self, subgraph, inside) -> list[list]:
        """Connected groups of inside nodes; a ``roles`` path gathers all of its groups."""
        order = {n: i for i, n in enumerate(inside)}
        groups = [sorted(c, key=order.get) for c in nx.weakly_connected_components(subgraph)]
        for path in self.roles:
            under = [g for g in groups if any(self._under(n, path) for n in g)]
            if len(under) > 1:
                merged = sorted((n for g in under for n in g), key=order.get)
                groups = [g for g in groups if g not in under] + [merged]
        return sorted(groups, key=lambda g: order[g[0]])

    def _under(self, node, path) -> bool:
        own = self.path_of(node)
        return own == path or own.startswith(path + ".")

    def _classify(self, s: Sublayer):
        paths = [self.path_of(n) for n in s.inside + s.linears_in + s.linears_out]
        s.path = _common_prefix(paths)
        forced = next((role for path, role in self.roles.items()
                       if s.path == path or s.path.startswith(path + ".")), None)
        kinds = {self.kinds[n] for n in s.inside}
        if forced:
            s.role = forced
        elif kinds & {SDPA, SOFTMAX}:
            s.role = "attention"
        elif ACTIVATION in kinds:
            s.role = "ffn"
        else:
            raise Refused(s.inside[0], "lies between projections that compute neither attention "
                                       "scores nor an activation")
        if not s.linears_in or not s.linears_out:
            raise Refused(s.inside[0], f"the {s.role} has no "
                                       f"{'input' if not s.linears_in else 'output'} projection")
        if s.role == "attention":
            self._attention(s, forced=forced is not None)
        else:
            self._ffn(s)

    # -- attention
    def _attention(self, s: Sublayer, forced: bool = False):
        kinds = [self.kinds[n] for n in s.inside]
        sdpa = [n for n in s.inside if self.kinds[n] == SDPA]
        matmuls = [n for n in s.inside if self.kinds[n] == MATMUL]
        if sdpa:
            if len(sdpa) > 1 or matmuls:
                raise Refused((sdpa[1:] or matmuls)[0], "a second attention product in one sublayer")
            q, k = sdpa[0].args[0], sdpa[0].args[1]
            scores = sdpa[0]
        else:
            if len(matmuls) != 2:
                raise Refused((matmuls[2:] or s.inside)[0],
                              f"attention written out needs two products (q @ kᵀ, p @ v), found {len(matmuls)}")
            scores = matmuls[0]
            q, k = scores.args[0], scores.args[1]
        for node, kind in zip(s.inside, kinds):
            if kind == ACTIVATION and not forced:
                raise Refused(node, "an activation inside attention")
            if kind == UNKNOWN:
                raise Refused(node, "is not recognised inside attention")
            if kind == ACTIVATION:
                self.notes.append(f"{s.path or 'attention'}: the scores pass through "
                                  f"{describe(node)}; forward_other counts a softmax")
            if kind == MUL:
                self._check_not_param(node, "attention")
        q_shape = tuple(self.val(q).shape)
        width = q_shape[-1]
        seq = q_shape[-2]
        heads = math.prod(q_shape) // (BATCH * seq * width)
        projected = sum(self._linear_width(n, out=True) for n in s.linears_in)
        kv = Fraction(projected, width) - heads
        if kv <= 0 or kv % 2 or heads % (kv // 2):
            raise Refused(scores, f"input projections of width {projected} do not split into "
                                  f"{heads} query heads of {width} and key/value heads")
        s.observed = {n_heads: heads, n_kv_heads: int(kv // 2), d_head: width}
        bias_in = {self._bias(n) for n in s.linears_in}
        if len(bias_in) > 1:
            raise Refused(s.linears_in[0], "some of q, k, v have a bias and some not")
        bias, proj_bias = bias_in.pop(), self._bias(s.linears_out[0])
        if len(s.linears_out) > 1:
            raise Refused(s.linears_out[1], "attention with more than one output projection")
        s.attrs = {"bias": bias}
        if proj_bias != bias:
            s.attrs["proj_bias"] = proj_bias
        norms = [n for n in s.inside if self.kinds[n] == NORM_NODE]
        if norms:
            kinds_of_norm = {self._norm(n)[0] for n in norms}
            if len(norms) != 2 or len(kinds_of_norm) != 1:
                raise Refused(norms[0], "norms inside attention other than one on q and one on k")
            s.attrs["qk_norm"] = kinds_of_norm.pop()
        if self._rotary(s, q, k):
            s.attrs["rotary"] = True

    def _check_not_param(self, node, where):
        for arg in node.args:
            if self.param_of(arg):
                raise Refused(node, f"multiplies by parameter '{self.param_of(arg)}' inside "
                                    f"{where}: not part of blockalg's {where} op")

    def _rotary(self, s: Sublayer, q, k) -> bool:
        """Whether q or k is multiplied by a position table (or turned complex) before the
        scores: rotary position embeddings."""
        inside = set(s.inside)
        seen, stack = set(), [q, k]
        while stack:
            node = stack.pop()
            if node in seen or node not in inside:
                continue
            seen.add(node)
            if node.target in (torch.view_as_complex, "view_as_complex", torch.polar):
                return True
            if self.kinds.get(node) == MUL and any(
                    isinstance(a, fx.Node) and a not in self.active and not self.param_of(a)
                    and isinstance(self.val(a), torch.Tensor) and self.val(a).dim() > 0
                    for a in node.args):
                return True
            stack += self.inputs(node)
        return False

    # -- ffn
    def _ffn(self, s: Sublayer):
        activations = [n for n in s.inside if self.kinds[n] == ACTIVATION]
        for node in s.inside:
            kind = self.kinds[node]
            if kind in (MATMUL, SDPA, SOFTMAX):
                raise Refused(node, f"{describe(node)} inside an FFN (if '{s.path}' is an attention, "
                                    f"say so: roles={{'{s.path}': 'attention'}})")
            if kind in (UNKNOWN, NORM_NODE):
                raise Refused(node, "is not recognised inside an FFN")
            if kind == MUL:
                self._check_not_param(node, "ffn")
        names = {self._activation(n) for n in activations}
        if len(names) > 1:
            raise Refused(activations[1], f"two different activations in one FFN ({', '.join(sorted(names))})")
        activation = names.pop()
        if len(s.linears_out) > 1:
            raise Refused(s.linears_out[1], "an FFN with more than one output projection")
        gated = any(self.kinds[n] == MUL and len(self.inputs(n)) == 2 for n in s.inside
                    if not _is_manual_activation(self, n, s))
        widths = [self._linear_width(n, out=True) for n in s.linears_in]
        if len(s.linears_in) == 2 and gated and widths[0] == widths[1]:
            hidden = widths[0]
        elif len(s.linears_in) == 1 and not gated:
            hidden = widths[0]
        elif len(s.linears_in) == 1 and gated and widths[0] % 2 == 0:
            hidden = widths[0] // 2  # one projection to gate and value, split
        else:
            raise Refused(s.linears_in[-1], f"an FFN with {len(s.linears_in)} input projections "
                                            f"({'gated' if gated else 'not gated'})")
        if self._linear_width(s.linears_out[0], out=False) != hidden:
            raise Refused(s.linears_out[0], "the output projection does not read the hidden layer")
        bias = {self._bias(n) for n in s.linears_in + s.linears_out}
        if len(bias) > 1:
            raise Refused(s.linears_out[0], "some FFN projections have a bias and some not")
        s.attrs = {"activation": activation, "bias": bias.pop()}
        if gated:
            s.attrs["gated"] = True
        s.observed = {DIMENSIONS["d_ff"]: hidden}

    def _activation(self, node) -> str:
        if node.op == "call_module":
            sub = self.module.get_submodule(node.target)
            name = ACTIVATION_MODULES[type(sub)]
            approximate = getattr(sub, "approximate", "tanh")
        else:
            name = ACTIVATION_FUNCTIONS[node.target]
            approximate = node.kwargs.get("approximate", "tanh" if node.target in (torch.tanh, "tanh")
                                          else "none")
        if name == "gelu" and approximate != "tanh":
            self.notes.append(f"{describe(node)}: GELU in its erf form, counted as blockalg's gelu "
                              f"(tanh form: the same matmul FLOPs, 8 other FLOPs per element)")
        if node.target in (torch.sigmoid, "sigmoid", F.sigmoid):
            self.notes.append(f"{describe(node)}: a sigmoid-based activation, counted as silu")
        return name

    # -- leaves
    def _linear_width(self, node, out: bool) -> int:
        sub = self.module.get_submodule(node.target)
        leaf = leaf_of(self.module, node.target, self.leaves)
        weight = next(iter(sub.parameters()))
        rows, cols = weight.shape
        if leaf.transposed:
            rows, cols = cols, rows
        return rows if out else cols

    def _bias(self, node) -> bool:
        return leaf_of(self.module, node.target, self.leaves).bias

    def _norm(self, node) -> tuple[str, bool, list]:
        """(op name, bias, parameter names) of a norm node."""
        if node.op == "call_module":
            leaf = leaf_of(self.module, node.target, self.leaves)
            names = [f"{node.target}.{p}" for p, _ in self.module.get_submodule(node.target).named_parameters()]
            return leaf.kind, leaf.bias, names
        op = NORM_FUNCTIONS[node.target]
        arguments = list(node.args) + [node.kwargs.get(k) for k in ("weight", "bias")]
        names = [self.param_of(a) for a in arguments if self.param_of(a)]
        if not names:
            raise Refused(node, "a norm without a learned gain is not in blockalg's registry")
        return op, len(names) == 2, names

    # -- the residual stream
    def wire(self, x, result, sublayers, d_model_value) -> Recognised:
        graph = BlockGraph()
        graph.add_node("x", op="input")
        carried = {x: ("x", sp.Integer(1))}
        owner = {}
        for s in sublayers:
            for n in s.inside + s.linears_in:
                owner[n] = s
        out_of = {s.linears_out[0]: s for s in sublayers}
        named = [s.path for s in sublayers] + [self.path_of(n) for n in self.nodes
                                               if self.kinds.get(n) == NORM_NODE and n not in owner]
        wrapper = _common_prefix(named) if len(named) > 1 else ""
        params, paths, names, observed = {}, {}, _Names(wrapper), {}

        def add(name, op, sources, **attrs):
            graph.add_node(name, op=op, **attrs)
            for source, scale in sources:
                if graph.has_edge(source, name):
                    raise Refused(node, "adds a value to itself")
                graph.add_edge(source, name, **({} if scale == 1 else {"scale": str(scale)}))
            return name

        for node in self.nodes:
            if node not in self.active or node is x or node in owner:
                continue
            kind = self.kinds[node]
            sources = [carried[u] for u in self.inputs(node) if u in carried]
            if node in out_of:
                s = out_of[node]
                feeds = {carried.get(u) for lin in s.linears_in for u in self.inputs(lin)}
                if None in feeds or len(feeds) != 1:
                    raise Refused(s.linears_in[0], f"the {s.role} reads more than one value "
                                                   f"(cross-attention is not supported)")
                s.name = names.take(s.path, "attn" if s.role == "attention" else "ffn")
                add(s.name, s.role, list(feeds), **s.attrs)
                params[s.name] = self._sublayer_params(s)
                paths[s.name] = s.path
                for symbol, value in s.observed.items():
                    if observed.setdefault(symbol, value) != value:
                        raise Refused(node, f"{symbol} is {value} here and {observed[symbol]} in an "
                                            f"earlier sublayer")
                carried[node] = (s.name, sp.Integer(1))
            elif len(self.inputs(node)) != len(sources):
                raise Refused(node, "uses a value from inside a sublayer")
            elif kind == NORM_NODE:
                op, bias, owned = self._norm(node)
                width = self.params[owned[0]].shape[0]
                if width != d_model_value:
                    raise Refused(node, f"a norm of width {width} on the stream of width {d_model_value}")
                name = names.take(self.path_of(node), "norm")
                add(name, op, sources, **({} if op != "layernorm" or bias else {"bias": False}))
                params[name], paths[name] = owned, self.path_of(node)
                carried[node] = (name, sp.Integer(1))
            elif kind == FREE and len(sources) == 1:
                carried[node] = sources[0]
            elif kind == ADD and len(sources) == 2:
                carried[node] = (add(names.take("", "add"), "add", sources), sp.Integer(1))
            elif kind in (MUL, DIV) and len(sources) == 1:
                carried[node] = self._scaled(node, kind, sources[0], add, names, params, paths)
            else:
                raise Refused(node, "is not recognised on the residual stream (expected a norm, "
                                    "an add, a scaling, dropout or a reshape)")
        add("out", "output", [carried[result]])
        _merge_adds(graph)
        _number_adds(graph)
        shapes = {k: tuple(p.shape) for k, p in self.params.items()}
        return Recognised(graph, observed, params, paths, shapes, list(dict.fromkeys(self.notes)))

    def _sublayer_params(self, s: Sublayer) -> list[str]:
        names = []
        for node in s.linears_in + s.linears_out:
            names += [f"{node.target}.{p}" for p, _ in self.module.get_submodule(node.target).named_parameters()]
        for node in s.inside:
            if self.kinds[node] == NORM_NODE:
                names += self._norm(node)[2]
        return names

    def _scaled(self, node, kind, source, add, names, params, paths):
        """``source`` times a constant (an edge scale) or a learned parameter (a scale node)."""
        if kind == DIV and node.args[0] not in self.active:
            raise Refused(node, "divides by the stream")
        other = next(a for a in node.args if a not in self.active)
        name, scale = source
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            factor = _exact(other)
            return name, scale * (factor if kind == MUL else 1 / factor)
        parameter = self.param_of(other)
        if kind == MUL and parameter and self.params[parameter].numel() in (1, node.meta["val"].shape[-1]):
            learnable = "scalar" if self.params[parameter].numel() == 1 else "vector"
            node_name = names.take(parameter.rpartition(".")[0] or parameter, "scale")
            add(node_name, "scale", [(name, scale)], learnable=learnable)
            params[node_name], paths[node_name] = [parameter], ""
            return node_name, sp.Integer(1)
        raise Refused(node, "scales the stream by a tensor blockalg cannot read")


def _tensors(value) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    return isinstance(value, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in value)


def _is_manual_activation(rec: Recognizer, node, s) -> bool:
    """Whether a product is part of a GELU or SiLU written by hand (x·sigmoid(x), the tanh GELU)
    rather than a gate: both factors come from the same projection (and the same part of it,
    when one projection is split into gate and value)."""
    origins = [_origin(rec, u, set(s.linears_in)) for u in rec.inputs(node)]
    return len(set(origins)) == 1


def _origin(rec: Recognizer, node, linears):
    """(input projection, part) a value inside a sublayer is computed from: the first projection
    found, and the index of the first split part on the way (None if unsplit)."""
    stack, seen = [(node, None)], set()
    while stack:
        n, part = stack.pop()
        if n in linears:
            return n, part
        if n in seen:
            continue
        seen.add(n)
        if part is None and n.target is operator.getitem and isinstance(n.args[1], int):
            part = n.args[1]
        stack += [(u, part) for u in rec.inputs(n)]
    return None, None


def _common_prefix(paths) -> str:
    parts = [p.split(".") if p else [] for p in paths]
    common = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return ".".join(common)


def _exact(value: float) -> sp.Expr:
    """A Python number as an exact sympy number: 0.5 → 1/2, 1/math.sqrt(2) → sqrt(2)/2."""
    if isinstance(value, int):
        return sp.Integer(value)
    guess = sp.nsimplify(value, [sp.sqrt(2), sp.sqrt(3)])
    return guess if float(guess) == value else sp.Rational(repr(value))


class _Names:
    """Graph node names from module paths: ``attn.c_attn`` → ``attn_c_attn``, unique, never a
    name torch modules reserve; the path of a module wrapping the whole block is left out."""

    def __init__(self, wrapper: str = ""):
        self.taken = {"x", "out"}
        self.wrapper = wrapper + "." if wrapper else ""

    def take(self, path: str, fallback: str) -> str:
        base = re.sub(r"[^0-9A-Za-z_]", "_", path.removeprefix(self.wrapper)) or fallback
        if base[0].isdigit():
            base = f"{fallback}_{base}"
        if base in RESERVED_NODE_NAMES:
            base += "_"
        name, i = base, 2
        while name in self.taken:
            name, i = f"{base}_{i}", i + 1
        self.taken.add(name)
        return name


def _merge_adds(graph) -> None:
    """An add whose only use is another add (unscaled) joins it: a + b + c is one add of three."""
    changed = True
    while changed:
        changed = False
        for node in list(graph.nodes):
            if graph.nodes[node]["op"] != "add" or graph.out_degree(node) != 1:
                continue
            (user,) = graph.successors(node)
            if graph.nodes[user]["op"] != "add" or graph.edges[node, user]:
                continue
            for source in list(graph.predecessors(node)):
                if graph.has_edge(source, user):
                    break
            else:
                for source in list(graph.predecessors(node)):
                    graph.add_edge(source, user, **graph.edges[source, node])
                graph.remove_node(node)
                changed = True
                break


def _number_adds(graph) -> None:
    """Adds named in forward order: ``add`` when there is one, else ``add_1``, ``add_2``, ..."""
    adds = [n for n in nx.topological_sort(graph) if graph.nodes[n]["op"] == "add"]
    names = ["add"] if len(adds) == 1 else [f"add_{i}" for i in range(1, len(adds) + 1)]
    taken = set(graph.nodes) - set(adds)
    mapping = {old: new for old, new in zip(adds, names) if new not in taken}
    nx.relabel_nodes(graph, {old: f"__{old}" for old in mapping}, copy=False)
    nx.relabel_nodes(graph, {f"__{old}": new for old, new in mapping.items()}, copy=False)
