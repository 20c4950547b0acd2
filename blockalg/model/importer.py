"""Bring your own block: a transformer block written in PyTorch, imported as a block graph.

:func:`from_module` takes a *factory* (a class whose ``__init__`` takes keyword dimensions named
after blockalg's symbols, ``d_model``, ``n_heads``, ``n_kv_heads``, ``d_ff``, ``n_ctx``, ...,
or any callable that does) and returns an ordinary :class:`~blockalg.graphs.graph.BlockGraph`:
closed forms, paths, ``compare``, ``report`` and ``check`` work on it as on a catalog variant.

How (every step on the meta device, so any size is free):

1. **Trace** the module with ``torch.fx`` (its meta tracer, so sizes are concrete and code such as
   ``math.sqrt(k.size(-1))`` runs). ``nn.Linear``, ``nn.LayerNorm``, ``nn.RMSNorm``, and custom
   modules that compute a LayerNorm, an RMSNorm or a linear map (checked numerically on a small
   copy: nanoGPT's ``LayerNorm``, LLaMA's ``RMSNorm``, GPT-2's ``Conv1D``) stay whole.
2. **Sublayers** are what lies between projections: remove the linear maps from the traced
   dataflow; what can neither be reached from the block's input nor reach its output without
   crossing one is inside a sublayer. A sublayer that computes attention scores
   (``F.scaled_dot_product_attention``, or ``q @ kᵀ``, scale, mask, softmax, ``@ v`` written out)
   is an ``attention``, one with an activation (GELU, SiLU, ReLU, or GELU written with ``tanh``)
   between its projections, gated or not, an ``ffn``. What is left is the residual stream:
   norms, residual adds, scalings, dropout and free reshapes. ``roles`` maps a module path to
   ``attention`` or ``ffn`` where the structure says otherwise (ReLU or sigmoid attention).
3. **Dimensions**: the module is built at five probe points where no two dimensions coincide
   (and at the ``dims`` given). Head counts, head width and FFN width are read from the trace and
   written as exact expressions in the dimensions the factory takes (:mod:`blockalg.model.fit`);
   the ones it does not take become the graph's ``relations`` (``d_ff = 4*d_model`` for nanoGPT,
   ``256*ceiling(d_model/96)`` for Meta's LLaMA FFN), applied wherever the graph is evaluated.
   Every weight shape is written so too, in the graph's ``notes``.
4. **Verified**: at every probe point, each sublayer's parameter count equals the graph's
   formula; at the ``dims`` given (else at the first probe point), so do the block's forward and
   backward matmul FLOPs counted by ``FlopCounterMode``, and no custom autograd Function runs.

Anything not recognised (a custom ``torch.autograd.Function``, an op on the stream that is not an
add or a scaling, an attention without projections) is refused with one line naming the fx node
and its source line; nothing is silently counted as zero. The model around the block (final norm,
position table, tied embeddings) is not in the module: it is inferred, stated in the notes and
can be given (``final_norm=``, ``positions=``, ``tied_embeddings=``).

>>> import torch.nn as nn
>>> class MLPBlock(nn.Module):
...     def __init__(self, d_model, d_ff):
...         super().__init__()
...         self.ln = nn.LayerNorm(d_model)
...         self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Linear(d_ff, d_model))
...     def forward(self, x):
...         return x + self.mlp(self.ln(x))
>>> g = from_module(MLPBlock)
>>> sorted(g.nodes(data="op"))
[('add', 'add'), ('ln', 'layernorm'), ('mlp', 'ffn'), ('out', 'output'), ('x', 'input')]
>>> g.nodes["mlp"]["activation"], g.graph["final_norm"]
('relu', 'layernorm')

Importing a file (``path/to/file.py:Name``, :func:`import_file`) runs its code.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import networkx as nx
from torch import nn

from ..errors import BlockalgError, one_line
from ..graphs.expr import parse_expression
from ..graphs.graph import MODEL_DEFAULTS, BlockGraph, validate_block
from ..graphs.ops import NORM, get_op
from ..graphs.presets import DEFAULT_PRESET, resolve_dims
from ..graphs.serialize import to_data
from ..graphs.symbols import DIMENSIONS, d_head, d_model, n_heads, n_kv_heads
from ..graphs.variants import MODULE_SPEC
from .fit import fit
from .measure import Factory, Measured, block_flops, measure, node_params
from .recognise import Recognised, Recognizer
from .trace import BATCH, Refused, custom_leaves, describe, source_line, trace

#: Probe points: values for every dimension a factory may take. Within a point no two values
#: coincide; across points the ratios (n_heads / n_kv_heads: 3, 4, 3, 8, 7) and the residues of
#: d_model modulo powers of 2 and 3 vary, so that a rounded width cannot pass for a polynomial.
#: d_model = n_heads · d_head unless the factory takes d_head (then the free d_model below).
PROBES = [
    dict(n_heads=45, n_kv_heads=15, d_head=590, d_model=27906, d_ff=71234, n_ctx=41, seq_len=23,
         n_layers=5, vocab=331, n_experts=6, top_k=2),
    dict(n_heads=28, n_kv_heads=7, d_head=938, d_model=25370, d_ff=66918, n_ctx=37, seq_len=19,
         n_layers=7, vocab=293, n_experts=10, top_k=3),
    dict(n_heads=33, n_kv_heads=11, d_head=852, d_model=29341, d_ff=80123, n_ctx=53, seq_len=29,
         n_layers=6, vocab=359, n_experts=5, top_k=4),
    dict(n_heads=40, n_kv_heads=5, d_head=718, d_model=28012, d_ff=74470, n_ctx=47, seq_len=31,
         n_layers=11, vocab=401, n_experts=9, top_k=3),
    dict(n_heads=63, n_kv_heads=9, d_head=470, d_model=30675, d_ff=85006, n_ctx=59, seq_len=17,
         n_layers=13, vocab=383, n_experts=7, top_k=2),
]
#: A small point, for the numeric tests of custom leaf modules (on real CPU tensors).
SMALL = dict(n_heads=6, n_kv_heads=2, d_head=10, d_model=66, d_ff=94, n_ctx=13, seq_len=11,
             n_layers=3, vocab=37, n_experts=5, top_k=2)
ROLES = ("attention", "ffn")
#: The model around the block, which a module does not say (from_module's keywords).
MODEL_OPTIONS = ("final_norm", "positions", "tied_embeddings", "init", "position_offset")
#: The symbols a graph's sublayers are measured in, in the order relations are applied.
MEASURED = (d_head, n_heads, n_kv_heads, DIMENSIONS["d_ff"])


# ---------------------------------------------------------------------------------------------
# Entry points.


def from_module(factory, *, roles: Mapping[str, str] | None = None, name: str | None = None,
                **options) -> BlockGraph:
    """Import the block ``factory`` builds (see the module docstring) as a block graph.

    Keyword arguments named after dimensions (``d_model=768``, or a whole preset's ``dims``) are
    one more point the import is verified at; ``final_norm``, ``positions``, ``tied_embeddings``
    and ``init`` set the model around the block. A factory's ``blockalg_options`` attribute (a
    dict of these keywords, and ``roles``) is read first. The graph keeps the factory as
    ``graph.factory`` (not saved to JSON) so that :func:`blockalg.check` can measure the original.
    """
    return _import(factory, roles, name, options)


def import_file(spec: str, dims: Mapping | None = None) -> BlockGraph:
    """Import ``path/to/file.py:Name``: **runs the file's code**, then :func:`from_module` at
    ``dims`` (a full dimension dict; the default preset's when None)."""
    factory, label = load_factory(spec)
    return _import(factory, None, label, dict(dims or resolve_dims(DEFAULT_PRESET)), source=spec)


def _import(factory, roles, name, options, source=None) -> BlockGraph:
    factory = Factory.of(factory, name)
    options = {**factory.options, **options}
    roles = {**options.pop("roles", {}), **(roles or {})}
    for path, role in roles.items():
        if role not in ROLES:
            raise BlockalgError(f"roles: '{path}': role {role!r} is not one of {list(ROLES)}")
    model_attrs = {k: options.pop(k) for k in MODEL_OPTIONS if k in options}
    unknown = sorted(set(options) - set(DIMENSIONS))
    if unknown:
        raise BlockalgError(f"from_module: unknown option '{unknown[0]}' (dimensions, roles, "
                            f"{', '.join(MODEL_OPTIONS)})")
    return _Importer(factory, roles, model_attrs, source).run(options or None)


def load_factory(spec: str):
    """The object ``Name`` of ``path/to/file.py:Name`` (executing the file) and a label for it."""
    match = MODULE_SPEC.match(spec)
    if not match:
        raise BlockalgError(f"'{spec}': expected path/to/file.py:Name")
    path = Path(match["path"])
    if not path.is_file():
        raise BlockalgError(f"{path}: no such file")
    module_name = f"blockalg_user_{re.sub(r'[^0-9A-Za-z_]', '_', str(path.resolve()))}"
    source = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(source)
    sys.modules[module_name] = module  # as an import would (dataclasses look their module up)
    sys.path.insert(0, str(path.resolve().parent))  # the file's own imports, as when run
    try:
        source.loader.exec_module(module)
    except Exception as e:  # the user's code: any error is bad input, told in one line
        raise BlockalgError(f"{path}: running it raised {one_line(e)}") from None
    finally:
        sys.path.remove(str(path.resolve().parent))
    if not hasattr(module, match["name"]):
        defined = sorted(k for k, v in vars(module).items()
                         if isinstance(v, type) and issubclass(v, nn.Module) and v.__module__ == module_name)
        raise BlockalgError(f"{path} has no '{match['name']}' (its nn.Modules: {', '.join(defined) or 'none'})")
    return getattr(module, match["name"]), f"{path.stem}.{match['name']}"


# ---------------------------------------------------------------------------------------------
# The import: probes, dimensions, verification, the graph.


_WHAT = {"d_ff": "the FFN's hidden width", "n_heads": "the number of query heads",
         "n_kv_heads": "the number of key/value heads", "d_head": "the width of a head"}


class _Importer:
    def __init__(self, factory: Factory, roles: Mapping, model_attrs: dict, source: str | None = None):
        self.factory, self.roles, self.model_attrs = factory, dict(roles), model_attrs
        self.source = source or f"{getattr(factory.call, '__module__', '?')}." \
                                f"{getattr(factory.call, '__qualname__', factory.name)}"
        self.leaves = {}

    def run(self, at: Mapping | None) -> BlockGraph:
        self.leaves = custom_leaves(self.factory.build(self.factory.dims_at(SMALL)))
        points = [self.factory.dims_at(p) for p in PROBES]
        # NB: parameters are checked at every point, FLOPs (a forward and a backward, the slow
        # part) at one: ``at`` when given, else the first probe point.
        results = [self.probe(dims, count_flops=i == 0 and at is None)
                   for i, dims in enumerate(points)]
        first = results[0]
        for dims, result in zip(points[1:], results[1:]):
            if _structure(result.graph) != _structure(first.graph):
                raise BlockalgError(f"{self.factory.name}: its structure changes with the dimensions "
                                    f"(compare d_model={points[0]['d_model']} and d_model={dims['d_model']})")
        relations, stated = self.relations(points, results)
        graph = self.graph(first, relations, stated, points, results)
        if at is not None:
            self.verify_at(graph, resolve_dims(DEFAULT_PRESET, {k: v for k, v in at.items()
                                                                if k in DIMENSIONS}))
        return graph

    # -- one point
    def probe(self, dims: Mapping, count_flops: bool = True) -> Recognised:
        """Build, trace and recognise the block at ``dims``, and verify its numbers there."""
        module = self.factory.build(dims)
        try:
            recognised = Recognizer(module, trace(module, dims, self.leaves), self.leaves,
                                     self.roles).run(dims["d_model"])
            measured = measure(module, BATCH, dims["seq_len"], dims["d_model"]) if count_flops else None
            if measured and measured.functions:
                raise Refused(None, f"uses the custom torch.autograd.Function "
                                    f"{', '.join(measured.functions)}, whose backward blockalg cannot read")
        except Refused as e:
            raise self.located(e, module, dims) from None
        at = {**dims, **{str(k): v for k, v in recognised.observed.items()}}
        self.verify(recognised, module, at, measured)
        return recognised

    def located(self, error: Refused, module, dims) -> BlockalgError:
        """The refusal, found again in a trace that records source lines, as one line."""
        try:
            Recognizer(module, trace(module, dims, self.leaves, stack_traces=True), self.leaves,
                        self.roles).run(dims["d_model"])
        except Refused as again:
            error = again
        if error.node is None:
            return BlockalgError(f"{self.factory.name}: {error.why}")
        return BlockalgError(f"{self.factory.name}: fx node '{error.node.name}' "
                             f"({describe(error.node)}){source_line(error.node)} {error.why}")

    def verify(self, recognised: Recognised, module, dims, measured: Measured | None) -> None:
        """Parameters of each node, and the block's matmul FLOPs, against the registry's formulas."""
        graph, params = recognised.graph, dict(module.named_parameters())
        shown = ", ".join(f"{k}={dims[k]}" for k in self.factory.taken)
        owned = [name for names in recognised.params.values() for name in names]
        for name in params:
            if owned.count(name) != 1:
                how = "shared by two sublayers" if owned.count(name) else "used by no recognised sublayer"
                raise BlockalgError(f"{self.factory.name}: parameter '{name}' is {how}")
        for node, names in recognised.params.items():
            have = sum(params[n].numel() for n in names)
            want = node_params(graph, node, dims)
            if have != want:
                op = graph.nodes[node]["op"]
                raise BlockalgError(f"{self.factory.name}: '{recognised.paths[node] or node}' has "
                                    f"{have:,} parameters at {shown}, blockalg's {op} "
                                    f"{_attrs_text(graph.nodes[node])} has {want:,}")
        if measured is None:
            return
        per_token = {node: BATCH * block_flops(graph.subgraph([node]), dims, "forward_matmul")
                     for node in graph.nodes}
        paths = [p for p in recognised.paths.values() if p]
        for node, path in recognised.paths.items():
            if path and paths.count(path) == 1 and measured.forward_by_path.get(path, 0) != per_token[node]:
                raise BlockalgError(f"{self.factory.name}: '{path}' runs "
                                    f"{measured.forward_by_path.get(path, 0):,} matmul FLOPs at {shown}, "
                                    f"blockalg's {graph.nodes[node]['op']} {per_token[node]:,}")
        kinds = (("forward", "forward_matmul", measured.forward),
                 ("backward", "backward_matmul_fused" if measured.fused else "backward_matmul",
                  measured.backward))
        for label, kind, have in kinds:
            want = BATCH * block_flops(graph, dims, kind)
            if have != want:
                raise BlockalgError(f"{self.factory.name}: the block's {label} runs {have:,} matmul "
                                    f"FLOPs at {shown}, its graph predicts {want:,}")

    # -- dimensions
    def relations(self, points, results) -> tuple[dict, dict]:
        """The graph's relations (symbol → expression text) for the measured symbols the factory
        does not take, and a sentence for each, saying what the module does."""
        fit_points, identities = self._fit_points(points)
        relations, stated = {}, {}
        for symbol in MEASURED:
            name = str(symbol)
            values = [r.observed.get(symbol) for r in results]
            if values[0] is None:
                continue
            what = f"{_WHAT[name]} ({name})"
            found = fit(values, fit_points, identities, what=f"{self.factory.name}: {what}")
            if name in self.factory.taken:
                if found.expr != symbol:
                    raise BlockalgError(f"{self.factory.name}: {what} is {found.description or found.expr}"
                                        f", not the {name} it is given")
                continue
            expr = found.expr
            if symbol == d_head and "d_head" not in self.factory.taken and "n_heads" in self.factory.taken \
                    and all(v * p["n_heads"] == p["d_model"] for v, p in zip(values, points)):
                expr = d_model / n_heads
            relations[name] = str(expr)
            how = f" ({found.description})" if found.description else ""
            stated[name] = f"{name} = {expr}{how}: {_WHAT[name]}, set by the module itself"
        return relations, stated

    def _fit_points(self, points):
        taken = [DIMENSIONS[k] for k in self.factory.taken]
        derived = "d_head" not in self.factory.taken and "n_heads" in self.factory.taken
        symbols = taken + ([d_head] if derived else [])
        identities = {d_model: n_heads * d_head} if derived else {}
        return [{s: p[str(s)] for s in symbols} for p in points], identities

    def shapes(self, points, results, relations) -> dict[str, str]:
        """Every parameter's shape, written in the dimensions (and the graph's relations)."""
        fit_points, identities = self._fit_points(points)
        for name, expr in relations.items():
            symbol = DIMENSIONS[name]
            if symbol in fit_points[0]:  # d_head, derived: already a symbol of the fit
                continue
            identities[symbol] = parse_expression(expr)
            for p, r in zip(fit_points, results):
                p[symbol] = r.observed[symbol]
        written = {}
        for param, shape in results[0].shapes.items():
            axes = []
            for axis in range(len(shape)):
                values = [r.shapes[param][axis] for r in results]
                axes.append(str(fit(values, fit_points, identities,
                                    what=f"{self.factory.name}: axis {axis} of '{param}'").expr))
            written[param] = f"[{', '.join(axes)}]"
        return written

    # -- the graph
    def graph(self, first: Recognised, relations, stated, points, results) -> BlockGraph:
        graph = first.graph
        shapes = self.shapes(points, results, relations)
        attrs = {**model_around(graph), **self.model_attrs}
        notes = [f"imported from {self.source}: {self.factory.name}({', '.join(self.factory.taken)}), "
                 f"verified at {len(PROBES)} dimension points (parameters per sublayer) and "
                 f"at one (matmul FLOPs, forward and backward)"]
        notes += stated.values()
        for node, names in first.params.items():
            path = first.paths[node]
            written = ", ".join(f"{n.removeprefix(path + '.') if path else n} {shapes[n]}" for n in names)
            notes.append(f"{node} ← {path or 'inline'}: {graph.nodes[node]['op']}"
                         f"{_attrs_text(graph.nodes[node])}; {written}")
        notes += first.notes
        guessed = {k: attrs[k] for k in ("final_norm", "positions", "tied_embeddings")
                   if k not in self.model_attrs}
        if guessed:
            notes.append("the model around the block is not in the module: "
                         + ", ".join(f"{k}={v}" for k, v in guessed.items())
                         + " (inferred; pass them to from_module to change)")
        graph.graph.update({**MODEL_DEFAULTS, **attrs, "name": self.factory.name,
                            "relations": relations, "notes": notes, "source": self.source})
        graph = validate_block(graph)
        graph.factory = self.factory.call
        return graph

    def verify_at(self, graph, dims: Mapping) -> None:
        """The graph, with its relations, is the module at ``dims`` too."""
        from ..graphs.resolve import apply_relations

        full = apply_relations(graph, dims)
        recognised = self.probe(full)
        if _structure(recognised.graph) != _structure(graph):
            raise BlockalgError(f"{self.factory.name}: its structure at the given dimensions differs "
                                f"from the one at the probe points")
        for symbol, value in recognised.observed.items():
            name = str(symbol)
            if full[name] != value:
                rule = graph.graph["relations"].get(name)
                said = f"{name} = {rule}" if rule else name
                raise BlockalgError(f"{self.factory.name}: at the given dimensions {_WHAT[name]} is "
                                    f"{value}, where {said} is {full[name]}")


def model_around(graph) -> dict:
    """The model a block implies: after a pre-norm block (a path from input to output crosses
    no norm) a final norm of its kind, none after a post-norm one; no position table with rotary
    attention; tied embeddings (GPT-2's default).

    >>> from blockalg.graphs.variants import get
    >>> model_around(get("post-ln")), model_around(get("llama"))["final_norm"]
    ({'final_norm': None, 'positions': 'learned', 'tied_embeddings': True}, 'rmsnorm')
    """
    norms = [n for n in graph.nodes if get_op(graph.nodes[n]["op"]).role == NORM]
    free = graph.subgraph([n for n in graph.nodes if n not in norms])
    final = None
    if norms and nx.has_path(free, "x", "out"):
        spec = dict(graph.nodes[norms[0]])
        final = spec["op"] if len(spec) == 1 else spec
    rotary = any(graph.nodes[n].get("rotary") for n in graph.nodes)
    return {"final_norm": final, "positions": "none" if rotary else "learned", "tied_embeddings": True}


def _structure(graph) -> dict:
    data = to_data(graph)
    return {"nodes": sorted(map(str, data["nodes"]), key=str),
            "edges": sorted(map(str, data["edges"]), key=str)}


def _attrs_text(attrs) -> str:
    shown = {k: v for k, v in attrs.items() if k != "op"}
    return "(" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")" if shown else ""
