"""Block graphs: construction, validation, the model around a block, and JSON files.

A block is a :class:`networkx.DiGraph` whose nodes are sublayers. Every node has an ``op``
attribute naming a kind from :mod:`blockalg.graphs.ops` plus that kind's attributes; edges carry
residual-stream-shaped tensors and may carry a constant ``scale`` (a number or an expression such as
``"(2*L)**(1/4)"``). There is exactly one ``input`` node (the source) and one ``output`` node (the
sink).

The model around the block is described by graph attributes:

* ``final_norm``: ``null``, an op name (``"layernorm"``) or ``{"op": ..., attrs...}``: the norm after
  the last block;
* ``positions``: ``"learned"`` (a position table, as GPT-2) or ``"none"``;
* ``tied_embeddings``: whether the unembedding reuses the token table;
* ``init``: the initialisation scheme the torch model uses;
* ``position_offset``: extra rows of the position table (OPT keeps 2);
* ``streams`` and ``head``: for blocks that carry several residual streams (ResiDual), the streams
  in order with their start (``{"a": "embedding", "d": "zero"}``), and the head: a small graph
  with one input per stream and one output, which combines them before the final norm.

A model is token (+ position) embedding → ``n_layers`` copies of the block → final norm →
unembedding. Analyses work on one block and multiply by the symbol ``n_layers``.

>>> b = BlockBuilder("toy")
>>> x = b.input()
>>> h = b.node("ln", "layernorm", x)
>>> b.output(b.node("add", "add", x, b.node("ffn", "ffn", h)))
>>> g = b.graph()
>>> list(nx.topological_sort(g))
['x', 'ln', 'ffn', 'add', 'out']
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import networkx as nx
import sympy as sp

from ..errors import BlockalgError, quote
from ..limits import (
    MAX_BLOCK_EDGES,
    MAX_BLOCK_NODES,
    MAX_DIMENSION,
    MAX_SEGMENTS,
    MAX_STREAMS,
)
from . import magnitude
from .expr import parse_expression
from .ops import INPUT, NORM, OUTPUT, OpKind, get_op
from .symbols import DIMENSIONS, d_model, n_layers

MODEL_DEFAULTS = {"final_norm": None, "positions": "learned", "tied_embeddings": True,
                  "init": "gpt2", "position_offset": 0, "streams": None, "head": None}
STREAM_INITS = ("embedding", "zero")
POSITIONS = ("learned", "none")
INIT_SCHEMES = ("gpt2", "deepnorm", "xiong")  # implemented by blockalg.model.modules.Init
_NODE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class BlockGraph(nx.DiGraph):
    """A block: a plain networkx DiGraph, of its own type so that notebooks can display it (the
    equations, a Mermaid diagram and a drawing; registered by :mod:`blockalg.output.display`)."""


class BlockBuilder:
    """Write a block as code: ``node(name, op, *inputs, **attrs)`` returns the node's name.

    Model attributes (``final_norm``, ``positions``, ...) are keyword arguments of the constructor.
    """

    def __init__(self, name: str, **model_attrs):
        self._graph = BlockGraph(name=name, **{**MODEL_DEFAULTS, **model_attrs})

    def input(self, name: str = "x", stream: str | None = None) -> str:
        self._graph.add_node(name, op=INPUT, **({"stream": stream} if stream else {}))
        return name

    def node(self, name: str, op: str, *inputs: str, scales: dict | None = None, **attrs) -> str:
        """Add node ``name`` computing ``op`` of ``inputs``; ``scales`` maps an input to its edge scale."""
        if name in self._graph:
            raise BlockalgError(f"node '{name}' is defined twice")
        self._graph.add_node(name, op=op, **attrs)
        for source in inputs:
            edge = {"scale": scales[source]} if scales and source in scales else {}
            self._graph.add_edge(source, name, **edge)
        return name

    def output(self, source: str, name: str = "out", stream: str | None = None) -> None:
        self.node(name, OUTPUT, source, **({"stream": stream} if stream else {}))

    def graph(self, head: bool = False) -> nx.DiGraph:
        """The validated graph (``head``: a model head, one input per stream and one output)."""
        return validate_block(self._graph, head=head)


def stack(name: str, parts, **model_attrs) -> nx.DiGraph:
    """A model of non-identical blocks: ``parts`` is ``[(block graph, layers), ...]`` in forward
    order, ``layers`` an expression in ``L`` (they must add up to L); model attributes as for
    :class:`BlockBuilder` (the blocks' own are ignored)."""
    graph = BlockGraph(name=name, **{**MODEL_DEFAULTS, **model_attrs},
                       segments=[{"block": block, "layers": layers} for block, layers in parts])
    return validate_block(graph)


# ---------------------------------------------------------------------------------------------
# Validation: once, at the boundary, with one-line messages naming the node.


def validate_block(graph, head: bool = False) -> nx.DiGraph:
    """Check that ``graph`` is a well-formed block and return it; raise :class:`BlockalgError`.

    Checks: a simple directed graph; node names usable as module names; every ``op`` known and
    allowed in a block, with known attributes of the right type; one input and one output node;
    no cycle; every node has as many inputs as its op takes and feeds something (no dangling node);
    edge scales parse; the model attributes are valid. Several streams: one input and one output
    per stream (a ``head``: one input per stream and a single output).
    """
    if not isinstance(graph, nx.DiGraph) or graph.is_multigraph():
        raise BlockalgError("a block must be a networkx.DiGraph (not a multigraph)")
    if graph.graph.get("segments"):
        return _validate_stack(graph)
    name = graph.graph.get("name", "block")
    if graph.number_of_nodes() > MAX_BLOCK_NODES or graph.number_of_edges() > MAX_BLOCK_EDGES:
        raise BlockalgError(f"block {quote(name)} has {graph.number_of_nodes()} nodes and "
                            f"{graph.number_of_edges()} edges; at most {MAX_BLOCK_NODES} and "
                            f"{MAX_BLOCK_EDGES}")
    for node, data in graph.nodes(data=True):
        _check_node(node, data)
    _check_endpoints(graph, head)
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        path = " → ".join([str(u) for u, _ in cycle] + [str(cycle[0][0])])
        raise BlockalgError(f"block {quote(name)} has a cycle: {path}")
    for node, data in graph.nodes(data=True):
        _check_arity(graph, node, get_op(data["op"]))
    for u, v in graph.edges:
        _check_shapes(graph, u, v)
    for u, v, data in graph.edges(data=True):
        for key in data:
            if key != "scale":
                raise BlockalgError(f"edge {u} → {v}: unknown attribute {quote(key)} (known: scale)")
        if "scale" in data:
            try:
                parse_expression(data["scale"])
            except BlockalgError as e:
                raise BlockalgError(f"edge {u} → {v}: scale: {e}") from None
    if not head:
        _check_model_attributes(graph)
    return graph


#: The layer counts at which a stack's segments are checked: every L up to 64, and some beyond.
STACK_CHECK_LAYERS = (*range(1, 65), 100, 1000, 4099, 10**6, 2**31 - 1, 10**12 + 39, MAX_DIMENSION)


def _validate_stack(graph) -> nx.DiGraph:
    """A stack: no nodes of its own, segments of valid blocks whose layer counts are whole,
    non-negative numbers summing to L (checked at every L up to 64 and at a few larger L,
    each value computed exactly: an expression's size is bounded when it is parsed)."""
    if graph.number_of_nodes():
        raise BlockalgError("a stack holds 'segments' and no nodes of its own")
    streams = graph.graph.get("streams")
    if streams is not None and (not isinstance(streams, dict) or len(streams) > 1):
        raise BlockalgError("a stack of blocks with several streams is not supported")
    spec = graph.graph["segments"]
    if not isinstance(spec, list) or len(spec) > MAX_SEGMENTS:
        raise BlockalgError(f"'segments' must be a list of at most {MAX_SEGMENTS} segments")
    counts = []
    for i, segment in enumerate(spec):
        if not isinstance(segment, dict) or set(segment) != {"block", "layers"}:
            raise BlockalgError(f"segment {i}: expected {{'block': ..., 'layers': ...}}")
        try:
            layers = parse_expression(segment["layers"])
            counts.append([_segment_count(layers, segment["layers"], depth)
                           for depth in STACK_CHECK_LAYERS])
            block = segment["block"]
            if not isinstance(block, nx.DiGraph) or block.graph.get("segments"):
                raise BlockalgError("'block' must be a block graph (not a stack)")
            validate_block(block)
        except BlockalgError as e:
            raise BlockalgError(f"segment {i}: {e}") from None
    for depth, total in zip(STACK_CHECK_LAYERS, map(sum, zip(*counts))):
        if total != depth:
            raise BlockalgError(f"segments cover {total} layers at L = {depth}, not L")
    _check_model_attributes(graph)
    return graph


def _segment_count(layers, text, depth: int) -> int:
    """The number of blocks ``layers`` gives at L = ``depth``, which must be a whole,
    non-negative number."""
    value = magnitude.value(layers, {n_layers: depth})
    if not isinstance(value, int) or value < 0:
        raise BlockalgError(f"layers = {quote(str(text), 60)} is {value} at L = {depth}; it must be "
                            f"a non-negative integer at every L")
    return value


#: Attribute names of torch modules and of blockalg's Block: a node cannot be called so, since
#: nodes become submodules of the same name (tests check this list against torch).
RESERVED_NODE_NAMES = frozenset("""
    T_destination add_module apply bfloat16 buffers call_super_init children compile cpu cuda
    double dump_patches eval extra_repr float forward get_buffer get_extra_state get_parameter
    get_submodule half inputs ipu load_state_dict modules mtia named_buffers named_children
    named_modules named_parameters outputs parameters plan register_backward_hook
    register_buffer register_forward_hook register_forward_pre_hook register_full_backward_hook
    register_full_backward_pre_hook register_load_state_dict_post_hook
    register_load_state_dict_pre_hook register_module register_parameter
    register_state_dict_post_hook register_state_dict_pre_hook requires_grad_ set_extra_state
    set_submodule share_memory smart_apply state_dict to to_empty train training type xpu
    zero_grad""".split())


def _check_node(node, data) -> None:
    if not isinstance(node, str) or not _NODE_NAME.match(node):
        raise BlockalgError(f"node {node!r}: names must be identifiers (letters, digits, _)")
    if node in RESERVED_NODE_NAMES:
        raise BlockalgError(f"node {quote(node)}: the name is taken by torch modules; choose another")
    if "op" not in data:
        raise BlockalgError(f"node {quote(node)} has no 'op' attribute")
    try:
        op = get_op(data["op"])
    except BlockalgError as e:
        raise BlockalgError(f"node {quote(node)}: {e}") from None
    if not op.in_block:
        raise BlockalgError(f"node {quote(node)}: op '{op.name}' belongs to the model, not inside a block")
    _check_attributes(f"node {quote(node)} ({op.name})", op, {k: v for k, v in data.items() if k != "op"})


def _check_attributes(where: str, op: OpKind, attrs: dict) -> None:
    for key, value in attrs.items():
        if key not in op.attributes:
            known = ", ".join(op.attributes) or "none"
            raise BlockalgError(f"{where}: unknown attribute {quote(key)} (known: {known})")
        kind = op.attributes[key][1]
        if kind == "expression":
            try:
                parse_expression(value)
            except BlockalgError as e:
                raise BlockalgError(f"{where}: {key}: {e}") from None
        elif isinstance(kind, tuple):
            if not any(value is allowed or (type(value) is type(allowed) and value == allowed)
                       for allowed in kind):
                raise BlockalgError(f"{where}: {key} = {quote(value, 60)} is not one of {list(kind)}")
        elif type(value) is not kind:
            raise BlockalgError(f"{where}: {key} = {quote(value, 60)} must be a {kind.__name__}")


def _check_endpoints(graph, head: bool = False) -> None:
    for role in (INPUT, OUTPUT):
        nodes = [n for n, op in graph.nodes(data="op") if op == role]
        if not nodes:
            raise BlockalgError(f"a block needs exactly one '{role}' node, found none")
        streams = [graph.nodes[n].get("stream", "x") for n in nodes]
        if len(set(streams)) != len(streams) or (head and role == OUTPUT and len(nodes) != 1):
            raise BlockalgError(f"a block needs exactly one '{role}' node per stream, found "
                                f"{len(nodes)} ({', '.join(nodes)})")
    if not head and set(stream_nodes(graph, INPUT)) != set(stream_nodes(graph, OUTPUT)):
        raise BlockalgError(f"streams in {sorted(stream_nodes(graph, INPUT))} and out "
                            f"{sorted(stream_nodes(graph, OUTPUT))} differ")


def stream_nodes(graph, role: str = INPUT) -> dict[str, str]:
    """stream → the block's ``input`` (or ``output``) node of that stream."""
    return {graph.nodes[n].get("stream", "x"): n for n, op in graph.nodes(data="op") if op == role}


def model_streams(graph) -> dict[str, str]:
    """The model's residual streams in order, each with its start (``embedding`` or ``zero``)."""
    return graph.graph.get("streams") or {"x": "embedding"}


def _check_arity(graph, node, op: OpKind) -> None:
    n_in = graph.in_degree(node)
    low, high = op.arity
    if n_in < low or (high is not None and n_in > high):
        wanted = f"{low}" if low == high else f"{low} or more" if high is None else f"{low}..{high}"
        raise BlockalgError(f"node '{node}' ({op.name}) has {n_in} inputs, takes {wanted}")
    if op.role != OUTPUT and graph.out_degree(node) == 0:
        raise BlockalgError(f"node '{node}' ({op.name}) is dangling: nothing uses its output")


def node_op(graph, node) -> tuple[OpKind, dict]:
    """The op of ``node`` and its attributes with the op's defaults filled in."""
    op = get_op(graph.nodes[node]["op"])
    return op, op.with_defaults(graph.nodes[node])


def _check_shapes(graph, u, v) -> None:
    (op_u, attrs_u), (op_v, attrs_v) = node_op(graph, u), node_op(graph, v)
    gives, takes = op_u.out_width(attrs_u), op_v.in_width(attrs_v)
    if gives != takes:
        raise BlockalgError(f"edge {u} → {v}: shape mismatch: '{u}' gives width {gives}, "
                            f"'{v}' takes {takes}")


def _check_streams(graph) -> None:
    streams, head = model_streams(graph), graph.graph.get("head")
    if not isinstance(streams, dict) or any(not isinstance(v, str) or v not in STREAM_INITS
                                            for v in streams.values()) \
            or "embedding" not in streams.values():
        raise BlockalgError(f"streams = {quote(streams, 60)}: a mapping of stream to one of "
                            f"{list(STREAM_INITS)}, with at least one 'embedding'")
    if len(streams) > MAX_STREAMS:
        raise BlockalgError(f"{len(streams)} streams: a model carries at most {MAX_STREAMS}")
    if len(streams) > 1 and head is None:
        raise BlockalgError("a model of several streams needs a 'head' combining them")
    if head is not None:
        if not isinstance(head, nx.DiGraph):
            raise BlockalgError("'head' must be a graph")
        try:
            validate_block(head, head=True)
        except BlockalgError as e:
            raise BlockalgError(f"head: {e}") from None
        if set(stream_nodes(head)) != set(streams):
            raise BlockalgError(f"head: inputs {sorted(stream_nodes(head))} are not the streams "
                                f"{list(streams)}")
    if not graph.graph.get("segments") and set(stream_nodes(graph)) != set(streams):
        raise BlockalgError(f"the block's streams {sorted(stream_nodes(graph))} are not the model's "
                            f"{list(streams)}")


GRAPH_KEYS = {*MODEL_DEFAULTS, "name", "equations", "reference", "segments", "relations", "notes",
              "source"}


def _check_relations(relations) -> None:
    """``relations``: dimension → expression in the other dimensions, set by the block itself
    (a block imported from PyTorch: ``{"d_ff": "4*d_model"}``); applied in order."""
    if relations is None:
        return
    if not isinstance(relations, dict):
        raise BlockalgError("relations must map a dimension to an expression")
    for name, text in relations.items():
        if name not in DIMENSIONS:
            raise BlockalgError(f"relations: unknown dimension {quote(name, 60)} "
                                f"(known: {', '.join(DIMENSIONS)})")
        try:
            expr = parse_expression(text)
        except BlockalgError as e:
            raise BlockalgError(f"relations: {name}: {e}") from None
        if DIMENSIONS[name] in expr.free_symbols:
            raise BlockalgError(f"relations: {name} = {quote(text, 60)} refers to {name} itself")


def _check_model_attributes(graph) -> None:
    unknown = sorted(set(graph.graph) - GRAPH_KEYS)
    if unknown:
        raise BlockalgError(f"unknown graph attribute {quote(unknown[0])} "
                            f"(known: {', '.join(sorted(GRAPH_KEYS))})")
    if not isinstance(graph.graph.get("name", ""), str):
        raise BlockalgError(f"name = {quote(graph.graph['name'], 60)} must be a string")
    _check_relations(graph.graph.get("relations"))
    for key in ("notes", "equations"):
        lines = graph.graph.get(key, [])
        if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
            raise BlockalgError(f"{key} = {quote(lines, 60)} must be a list of strings")
    for key in ("reference", "source"):
        if not isinstance(graph.graph.get(key, ""), str):
            raise BlockalgError(f"{key} = {quote(graph.graph[key], 60)} must be a string")
    _check_streams(graph)
    final = final_norm(graph)
    if final is not None:
        op, attrs = final
        if op.role != NORM:
            raise BlockalgError(f"final_norm: op '{op.name}' is not a norm")
        _check_attributes(f"final_norm ({op.name})", op, attrs)
        if op.in_width(op.with_defaults(attrs)) != d_model:
            raise BlockalgError("final_norm: it normalises the stream, its width is d_model")
    if not isinstance(graph.graph.get("positions", "learned"), str) or \
            graph.graph.get("positions", "learned") not in POSITIONS:
        raise BlockalgError(f"positions = {quote(graph.graph['positions'], 60)} is not one of "
                            f"{list(POSITIONS)}")
    offset = graph.graph.get("position_offset", 0)
    if type(offset) is not int or not 0 <= offset <= MAX_DIMENSION:
        raise BlockalgError(f"position_offset = {quote(offset, 60)} must be an integer from 0 to "
                            f"2**63 - 1")
    if not isinstance(graph.graph.get("tied_embeddings", True), bool):
        raise BlockalgError("tied_embeddings must be true or false")
    if not isinstance(graph.graph.get("init", "gpt2"), str) or \
            graph.graph.get("init", "gpt2") not in INIT_SCHEMES:
        raise BlockalgError(f"init = {quote(graph.graph['init'], 60)} is not one of "
                            f"{list(INIT_SCHEMES)}")


# ---------------------------------------------------------------------------------------------
# Reading a validated block.


def final_norm(graph) -> tuple[OpKind, dict] | None:
    """The final norm's op and attributes, or None."""
    spec = graph.graph.get("final_norm")
    if spec is None:
        return None
    if isinstance(spec, str):
        spec = {"op": spec}
    if not isinstance(spec, dict) or "op" not in spec:
        raise BlockalgError(f"final_norm = {quote(spec, 60)}: expected null, an op name or "
                            f"{{'op': ...}}")
    try:
        op = get_op(spec["op"])
    except BlockalgError as e:
        raise BlockalgError(f"final_norm: {e}") from None
    return op, {k: v for k, v in spec.items() if k != "op"}


def source(graph) -> str:
    """The block's input node."""
    return next(n for n, op in graph.nodes(data="op") if op == INPUT)


def sink(graph) -> str:
    """The block's output node."""
    return next(n for n, op in graph.nodes(data="op") if op == OUTPUT)


def edge_scale(graph, u, v) -> sp.Expr:
    """The constant scale on edge u → v (1 when absent)."""
    return parse_expression(graph.edges[u, v].get("scale", 1))


def segments(graph) -> list[tuple[nx.DiGraph, sp.Expr]]:
    """The model's blocks in forward order, each with the number of layers it covers (an
    expression in ``n_layers``): ``[(graph, n_layers)]`` for a plain block, a stack's segments
    otherwise (mix-ln: ``floor(n_layers/4)`` post-LN blocks, then pre-LN ones).

    >>> from blockalg.graphs.variants import get
    >>> [(b.graph["name"], n) for b, n in segments(get("mix-ln"))]
    [('post-ln', floor(n_layers/4)), ('pre-ln', n_layers - floor(n_layers/4))]
    """
    spec = graph.graph.get("segments")
    if not spec:
        return [(graph, n_layers)]
    return [(segment["block"], parse_expression(segment["layers"])) for segment in spec]


def segment_prefix(graph, index: int) -> str:
    """Node paths of segment ``index``: ``block`` for a plain block, ``segment<i>`` in a stack."""
    return "block" if not graph.graph.get("segments") else f"segment{index}"


@dataclass(frozen=True)
class ModelNode:
    """One node of the model: ``path`` is ``block.<node>`` for block nodes (present ``count`` =
    ``n_layers`` times; ``segment<i>.<node>`` in a stack) and a top-level name (``wte``, ``wpe``,
    ``ln_f``, ``lm_head``) otherwise."""

    path: str
    op: OpKind
    attrs: dict
    n_inputs: int
    count: sp.Expr


def model_nodes(graph) -> list[ModelNode]:
    """Every node of the model built around ``graph``, in forward order.

    >>> from blockalg.graphs.variants import get
    >>> [(m.path, m.count) for m in model_nodes(get("pre-ln")) if m.op.params(m.attrs)]
    [('wte', 1), ('wpe', 1), ('block.ln_1', n_layers), ('block.attn', n_layers), \
('block.ln_2', n_layers), ('block.ffn', n_layers), ('ln_f', 1)]
    """
    one = sp.Integer(1)
    nodes = [ModelNode("wte", get_op("token_embedding"), {}, 0, one)]
    if graph.graph.get("positions", "learned") == "learned":
        positions = get_op("position_embedding")
        offset = {"offset": graph.graph.get("position_offset", 0)}
        nodes.append(ModelNode("wpe", positions, positions.with_defaults(offset), 0, one))
    for i, (block, count) in enumerate(segments(graph)):
        for node in nx.topological_sort(block):
            op, attrs = node_op(block, node)
            nodes.append(ModelNode(f"{segment_prefix(graph, i)}.{node}", op, attrs,
                                   block.in_degree(node), count))
    head = graph.graph.get("head")
    if head is not None:
        for node in nx.topological_sort(head):
            op, attrs = node_op(head, node)
            nodes.append(ModelNode(f"head.{node}", op, attrs, head.in_degree(node), one))
    final = final_norm(graph)
    if final is not None:
        op, attrs = final
        nodes.append(ModelNode("ln_f", op, op.with_defaults(attrs), 1, one))
    unembedding = get_op("unembedding")
    tied = {"tied": graph.graph.get("tied_embeddings", True)}
    nodes.append(ModelNode("lm_head", unembedding, unembedding.with_defaults(tied), 1, one))
    return nodes


def scaled_edges(graph) -> list[tuple[str, str, sp.Expr]]:
    """The edges whose scale is not 1, with their scale."""
    return [(u, v, edge_scale(graph, u, v)) for u, v in graph.edges if edge_scale(graph, u, v) != 1]


def edge_width(graph, u, v) -> sp.Expr:
    """The width of the tensor edge u → v carries."""
    op, attrs = node_op(graph, u)
    return op.out_width(attrs)
