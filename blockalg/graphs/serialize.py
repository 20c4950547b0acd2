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

from ..errors import BlockalgError
from ..files import write_atomic
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

    The file's name (without suffix) names the block when the file does not.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise BlockalgError(f"{path}: cannot read ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BlockalgError(f"{path}: not valid JSON ({e})") from None
    try:
        return validate_block(block_from_data(data, default_name=path.stem))
    except BlockalgError as e:
        raise BlockalgError(f"{path}: {e}") from None


def block_from_data(data, default_name: str = "block") -> nx.DiGraph:
    """A block graph from node-link data (a dict), before validation."""
    if not isinstance(data, dict) or "nodes" not in data:
        raise BlockalgError("not a node-link graph (expected an object with 'nodes' and 'edges')")
    edges_key = "links" if "links" in data and "edges" not in data else "edges"
    try:
        graph = BlockGraph(nx.node_link_graph(data, directed=True, multigraph=False, edges=edges_key))
    except (KeyError, TypeError, nx.NetworkXError) as e:
        raise BlockalgError(f"malformed node-link data ({type(e).__name__}: {e})") from None
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
