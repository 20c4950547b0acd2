"""Block graph files: networkx node-link JSON. Loading never evaluates code.

>>> from blockalg.graphs.variants import get
>>> data = to_data(get("pre-ln"))
>>> validate_block(block_from_data(data)).number_of_nodes() == get("pre-ln").number_of_nodes()
True
"""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx

from ..errors import BlockalgError, quote
from ..files import read_json, write_atomic
from ..limits import MAX_BLOCK_EDGES, MAX_BLOCK_NODES
from .graph import MODEL_DEFAULTS, BlockGraph, validate_block


def to_data(graph) -> dict:
    """The block (or stack) as node-link data, ready for JSON."""
    spec, head = graph.graph.get("segments"), graph.graph.get("head")
    if spec or head is not None:
        graph = graph.copy()
    if spec:
        graph.graph["segments"] = [{"layers": str(seg["layers"]), "block": to_data(seg["block"])}
                                   for seg in spec]
    if head is not None:
        graph.graph["head"] = to_data(head)
    return nx.node_link_data(graph, edges="edges")


def to_json(graph) -> str:
    """The block as node-link JSON text (stable key order, so files diff cleanly)."""
    return json.dumps(to_data(graph), indent=2, sort_keys=True) + "\n"


def save_block(graph, path) -> None:
    """Write the block to ``path`` as node-link JSON, atomically."""
    write_atomic(path, to_json(graph))


def load_block(path) -> nx.DiGraph:
    """Read and validate a block from a node-link JSON file (``edges`` or the older ``links`` key).

    The file's name (without suffix) names the block when the file does not. The file is read
    within the limits of :func:`blockalg.files.read_json` (size, nesting, integer digits).
    """
    path = Path(path)
    data = read_json(path)
    try:
        return validate_block(block_from_data(data, default_name=path.stem))
    except BlockalgError as e:
        raise BlockalgError(f"{quote(str(path))}: {e}") from None


def block_from_data(data, default_name: str = "block") -> nx.DiGraph:
    """A block graph from node-link data (a dict), before validation.

    The shape is checked here, so that nothing a file holds reaches networkx unchecked: nodes
    are objects with a string ``id`` given once, edges objects whose ``source`` and ``target``
    name nodes, at most :data:`~blockalg.limits.MAX_BLOCK_NODES` nodes and
    :data:`~blockalg.limits.MAX_BLOCK_EDGES` edges.
    """
    if not isinstance(data, dict) or "nodes" not in data:
        raise BlockalgError("not a node-link graph (expected an object with 'nodes' and 'edges')")
    edges_key = "links" if "links" in data and "edges" not in data else "edges"
    nodes, edges, attributes = data["nodes"], data.get(edges_key, []), data.get("graph", {})
    if data.get("directed", True) is not True or data.get("multigraph", False) is not False:
        raise BlockalgError("a block is a directed graph without parallel edges "
                            "('directed': true, 'multigraph': false)")
    for key, value, kind in (("nodes", nodes, list), (edges_key, edges, list),
                             ("graph", attributes, dict)):
        if not isinstance(value, kind):
            raise BlockalgError(f"{quote(key)} must be a JSON {'array' if kind is list else 'object'}")
    if len(nodes) > MAX_BLOCK_NODES or len(edges) > MAX_BLOCK_EDGES:
        raise BlockalgError(f"{len(nodes)} nodes and {len(edges)} edges: a block has at most "
                            f"{MAX_BLOCK_NODES} nodes and {MAX_BLOCK_EDGES} edges")
    graph = BlockGraph()
    graph.graph.update(attributes)
    for i, node in enumerate(nodes):
        if not isinstance(node, dict) or not isinstance(node.get("id"), str):
            raise BlockalgError(f"node {i}: expected an object with a string 'id', got {quote(node, 60)}")
        if node["id"] in graph:
            raise BlockalgError(f"node {quote(node['id'])} is defined twice")
        graph.add_node(node["id"], **{k: v for k, v in node.items() if k != "id"})
    for i, edge in enumerate(edges):
        if not isinstance(edge, dict) or not all(isinstance(edge.get(k), str) for k in ("source", "target")):
            raise BlockalgError(f"edge {i}: expected an object with string 'source' and 'target', "
                                f"got {quote(edge, 60)}")
        u, v = edge["source"], edge["target"]
        for end in (u, v):
            if end not in graph:
                raise BlockalgError(f"edge {quote(u)} → {quote(v)}: no node {quote(end)}")
        if graph.has_edge(u, v):
            raise BlockalgError(f"edge {quote(u)} → {quote(v)} is listed twice")
        graph.add_edge(u, v, **{k: x for k, x in edge.items() if k not in ("source", "target")})
    graph.graph.setdefault("name", default_name)
    for key, value in MODEL_DEFAULTS.items():
        graph.graph.setdefault(key, value)
    spec = graph.graph.get("segments")
    if spec:
        if not isinstance(spec, list):
            raise BlockalgError("'segments' must be a list")
        graph.graph["segments"] = [
            {**seg, "block": block_from_data(seg.get("block"), f"{default_name}.segment{i}")}
            if isinstance(seg, dict) else seg for i, seg in enumerate(spec)]
    if isinstance(graph.graph.get("head"), dict):
        graph.graph["head"] = block_from_data(graph.graph["head"], f"{default_name}.head")
    return graph
