"""Empirical checks: the model built from a graph measured against the symbolic prediction.

Each :class:`Check` holds a name, the predicted number, the measured one and whether they agree:

* ``params`` and ``params.<component>``: ``numel`` of the built model's parameters;
  ``params.leaves``: every named parameter has the size its registry formula gives;
* ``flops.forward_matmul`` / ``flops.backward_matmul``: :func:`flop_counter` (``FlopCounterMode``'s
  count) over one forward and one backward of a batch of ``batch`` sequences of ``seq_len`` tokens;
* ``structure``: the built block, traced with torch.fx and collapsed to graph nodes, has exactly the
  edges (and op kinds) of the block graph, in every layer;
* ``paths.generating_function``: the whole built model, traced and collapsed, has the path
  generating function T**L · final of :mod:`blockalg.analysis.paths` (predicted/measured: number
  of paths, exact; the polynomials are compared at random points, see :func:`check_paths`);
* ``flops.forward_other.<kind>`` / ``flops.backward_other.<kind>`` (``elementwise=True``): the
  elementwise work of one sequence, counted on torch's own decomposition of the built model
  (:mod:`blockalg.model.elementwise`), against the registry's non-matmul FLOPs per op kind: equal
  where the registry claims exactness, otherwise reported with the ratio (and failing only when
  one side counts work the other does not); ``flops.forward_other`` / ``flops.backward_other``:
  the totals, passing when every kind does;
* ``numerics.finite`` and ``numerics.init_loss`` (not on meta): a forward/backward on random tokens is
  finite and the loss at initialisation is within 10% of ln(vocab);
* ``original.params``, ``original.flops.forward_matmul`` and ``original.flops.backward_matmul``, for a
  block imported from PyTorch (:func:`blockalg.from_module`): the module as written, built at the same
  dimensions, against one block of the graph;
* with ``memory`` (a :class:`~blockalg.analysis.memory.Setting`), the ``memory.*`` checks of
  :mod:`blockalg.model.memory`: weights, gradients, optimizer states, buffers, saved activations,
  the KV cache and the FLOPs of one decode step, on a model built in the setting's dtype.

NB on attention FLOPs: on the meta device SDPA decomposes into ``bmm``s (backward = 2× forward).
On real CPU tensors torch 2.13 runs ``_scaled_dot_product_flash_attention_for_cpu``, for which
``FlopCounterMode`` has no formula (it counts 0): :func:`flop_counter` registers the formulas
torch uses for its other fused kernels, whose backward recomputes the scores (2.5× forward). The
backend that ran is read from the counted ops and the prediction made for it.

>>> [c.ok for c in check("pre-ln", preset="tiny", device="meta", elementwise=False)]
[True, True, True, True, True, True, True, True, True, True, True]
>>> [c.name for c in check("pre-ln", preset="tiny") if not c.ok]
[]
"""

from __future__ import annotations

import contextlib
import gc
import math
import random
import re
from collections.abc import Mapping

import networkx as nx
import torch

from ..analysis.flops import flop_counts
from ..analysis.params import leaf_params, param_counts
from ..analysis.terms import ROLE_MARK, path_terms, path_values
from ..graphs.expr import evaluate
from ..graphs.graph import edge_scale, model_nodes, segment_prefix, segments
from ..graphs.ops import COMPONENTS, get_op, op_names
from ..graphs.presets import DEFAULT_PRESET
from ..graphs.resolve import resolve
from .build import Block, build_model, out_of_memory_is_bad_input
from .measure import (  # noqa: F401 (Check, flop_counter: re-exported)
    Check,
    Factory,
    block_flops,
    flop_counter,
    is_fused_attention,
    measure,
    node_params,
    random_batch,
)
from .memory import check_memory, flop_check_step
from .metashapes import replay_shapes

INIT_LOSS_TOLERANCE = 0.1  # relative to ln(vocab)




def check(variant, dims: dict | None = None, *, preset: str = DEFAULT_PRESET, device: str = "meta",
          seed: int = 0, memory=None, elementwise: bool = True, **overrides) -> list[Check]:
    """Build ``variant`` at ``dims`` on ``device`` and run every check (``elementwise``: also
    count the non-matmul work on torch's decomposition, about 0.1 s per layer here; the memory
    checks too when ``memory`` gives their setting).

    One model serves every check that measures it as built: the elementwise count on the meta
    device, the memory checks in fp32; and the memory checks' training step serves
    :func:`check_flops` where it is the same step (:func:`~blockalg.model.memory.flop_check_step`).
    It runs first, on the fresh model, and every later step starts from cleared gradients."""
    graph, dims = resolve(variant, preset, dims, **overrides)
    with heap_frozen():
        return _checks(graph, dims, device, seed, memory, elementwise)


def _checks(graph, dims, device, seed, memory, elementwise) -> list[Check]:
    model = build_model(graph, dims, device=device, seed=seed)
    with out_of_memory_is_bad_input(device):
        step = flop_check_step(model, dims, memory, device) if memory is not None else None
        counted = (step.forward, step.backward) if step is not None else None
        meta = torch.device(device).type == "meta"
        checks = [*check_params(graph, model, dims), *check_flops(graph, model, dims, device, counted),
                  *(check_elementwise(graph, dims, model if meta else None) if elementwise else []),
                  check_structure(graph, model), check_paths(graph, model),
                  *check_numerics(model, dims, device, seed)]
        if getattr(graph, "factory", None) is not None:  # imported from PyTorch: measure it too
            checks += check_original(graph, dims, device)
        if memory is not None:
            shared = None if memory.reduced else model
            del model  # below fp32 a second model is built in the memory setting's dtype
            checks += check_memory(graph, memory, dims, device=device, seed=seed, model=shared,
                                   step=step)
    return checks


@contextlib.contextmanager
def heap_frozen():
    """Python's cyclic collector leaves alone the objects that exist on entry (torch's import
    heap: over 300,000 objects, and a full collection of them took 0.4 s of each GPT-3 check);
    they are handed back on exit. Nothing is done where the process froze objects itself."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def check_params(graph, model, dims) -> list[Check]:
    """Total, per-component and per-leaf parameter counts of ``model`` against the graph's."""
    predicted = {key: evaluate(expr, dims) for key, expr in param_counts(graph).items()}
    component_of = {m.path: m.op.component for m in model_nodes(graph)}
    measured = dict.fromkeys(COMPONENTS, 0)
    leaves = {key: evaluate(expr, dims) for key, expr in leaf_params(graph).items()}
    matching, wrong = 0, []
    def leaf_of(name):
        return re.sub(r"^blocks\.(\d+)\.",
                      lambda m: segment_prefix(graph, model.segment_of[int(m.group(1))]) + ".", name)

    for name, p in model.named_parameters():
        leaf = leaf_of(name)
        node = next((path for path in component_of if leaf.startswith(path + ".")), None)
        if component_of.get(node):
            measured[component_of[node]] += p.numel()
        if leaves.get(leaf) == p.numel():
            matching += 1
        else:
            wrong.append(name)
    n_leaves = sum(len(m.op.params(m.attrs)) * evaluate(m.count, dims) for m in model_nodes(graph))
    total = sum(p.numel() for p in model.parameters())
    checks = [Check("params", predicted["total"], total, predicted["total"] == total)]
    checks += [Check(f"params.{c}", predicted[c], measured[c], predicted[c] == measured[c])
               for c in COMPONENTS]
    checks.append(Check("params.leaves", n_leaves, matching, matching == n_leaves and not wrong,
                        f"unexpected: {', '.join(wrong[:5])}" if wrong else ""))
    return checks


def check_flops(graph, model, dims, device, counted=None) -> list[Check]:
    """Forward and backward matmul FLOPs counted as ``FlopCounterMode`` counts them against the
    graph's: over one training step of ``model`` (:func:`count_step`), or ``counted`` (the
    forward and backward counts of that step, measured already)."""
    forward, backward = counted or count_step(model, dims, device)
    ops = [str(op) for op in backward.get_flop_counts()["Global"]]
    fused = is_fused_attention(ops)
    counts = flop_counts(graph)
    b = dims["batch"]
    predicted_forward = b * evaluate(counts["forward_matmul"], dims)
    predicted_backward = b * evaluate(counts["backward_matmul_fused" if fused else "backward_matmul"], dims)
    backend = "fused attention: backward recomputes scores, 2.5x" if fused else "math attention: 2x"
    return [Check("flops.forward_matmul", predicted_forward, forward.get_total_flops(),
                  predicted_forward == forward.get_total_flops()),
            Check("flops.backward_matmul", predicted_backward, backward.get_total_flops(),
                  predicted_backward == backward.get_total_flops(), backend)]


def count_step(model, dims, device) -> tuple:
    """The FLOP counts (:func:`flop_counter`) of the forward with the loss and of the backward
    of one batch of ``batch`` sequences, gradients cleared first."""
    idx, targets = random_batch(dims, device)
    model.zero_grad(set_to_none=True)
    with replay_shapes(device):  # outside the counters, which still see every op
        with flop_counter() as forward:
            _, loss = model(idx, targets)
        with flop_counter() as backward:
            loss.backward()
    return forward, backward


def check_elementwise(graph, dims, model=None) -> list[Check]:
    """Non-matmul FLOPs per op kind and phase against torch's decomposition (on the meta device,
    of ``model`` when given), then the totals; see :mod:`blockalg.model.elementwise`."""
    from ..graphs.ops import PHASES
    from .elementwise import compare, count_elementwise

    rows = compare(graph, dims, count_elementwise(graph, dims, model))
    checks = []
    for phase in PHASES:
        mine = [r for r in rows if r.phase == phase]
        checks += [Check(f"flops.{phase}_other.{r.kind}", r.registry, r.decomposition, r.ok,
                         _elementwise_note(r)) for r in mine]
        registry, found = sum(r.registry for r in mine), sum(r.decomposition for r in mine)
        ratio = f"decomposition/registry {found / registry:.4g}; " if registry else ""
        checks.append(Check(f"flops.{phase}_other", registry, found, all(r.ok for r in mine),
                            f"{ratio}one sequence, per op kind above"))
    return checks


def _elementwise_note(row) -> str:
    if row.exact:
        return "exact (torch decomposition)"
    ratio = "n/a" if row.ratio is None else f"{row.ratio:.4g}"
    return f"convention; decomposition/registry {ratio}"


def collapse_trace(module, is_node, concrete_args=None, input_names=()) -> nx.DiGraph:
    """The computation ``module`` performs, traced with torch.fx and collapsed to a DiGraph.

    Submodules for which ``is_node(qualified_name)`` holds are not traced into: each call is a
    node named after the submodule, its ``op`` read from the module class's ``kind``. Inputs
    (placeholders) are ``input`` nodes; an add of two traced values is an ``add`` node; a product
    with a constant is the ``scale`` of the edge it lies on. An edge u → v means v consumed u's
    output. A ``*args`` placeholder stands for ``input_names``, one per position.
    """
    import operator

    from torch import fx

    class NodeTracer(fx.Tracer):
        def is_leaf_module(self, m, qualified_name):
            return is_node(qualified_name) or super().is_leaf_module(m, qualified_name)

    traced = NodeTracer().trace(module, concrete_args=concrete_args)
    graph = nx.DiGraph()
    carried = {}  # fx node -> (graph node whose output it is, constant scale applied since)
    varargs = None

    def add_node(name, kind, args):
        graph.add_node(name, op=kind)
        for arg in args:
            if arg in carried:
                source, scale = carried[arg]
                graph.add_edge(source, name, **({} if scale == 1.0 else {"scale": scale}))
        carried[fx_node] = (name, 1.0)

    for fx_node in traced.nodes:
        args = list(fx_node.args)
        if fx_node.op == "placeholder" and fx_node.target.startswith("*"):
            varargs = fx_node  # its items are picked by getitem below
        elif fx_node.op == "placeholder":
            add_node(fx_node.target, "input", [])
        elif fx_node.target is operator.getitem and args[0] is varargs:
            add_node(input_names[args[1]], "input", [])
        elif fx_node.op == "call_module":
            add_node(fx_node.target, getattr(module.get_submodule(fx_node.target), "kind",
                                             type(module.get_submodule(fx_node.target)).__name__), args)
        elif fx_node.target in (operator.mul, torch.mul, "mul") and len(args) == 2 \
                and isinstance(args[1], (int, float)) and args[0] in carried:
            source, scale = carried[args[0]]
            carried[fx_node] = (source, scale * args[1])  # x * constant on an edge
        elif sum(arg in carried for arg in args) >= 2 and fx_node.target in (operator.add, torch.add):
            add_node(fx_node.name, "add", args)
    return graph


def traced_block_graph(block: Block) -> nx.DiGraph:
    """One block's traced computation, collapsed to its node modules (see :func:`collapse_trace`)."""
    return collapse_trace(block, lambda name: "." not in name, input_names=block.inputs)


def block_signature(block: Block) -> tuple:
    """Everything ``block.forward`` does, as data: its inputs, its plan (with each node's module
    class, which names the op a trace reports) and its outputs. Equal signatures trace alike."""
    plan = tuple((node, type(block.get_submodule(node)), tuple(inputs)) for node, inputs in block.plan)
    return tuple(block.inputs), plan, tuple(block.outputs)


def traced_model_graph(model) -> nx.DiGraph:
    """The whole model's traced computation, collapsed to the block nodes of every layer
    (``blocks.3.attn``) and the model-level modules (``wte``, ``wpe``, ``ln_f``, ``lm_head``)."""
    def is_node(name):
        parts = name.split(".")
        return (len(parts) == 1 and name not in ("blocks", "head")
                or len(parts) == 3 and parts[0] == "blocks" or len(parts) == 2 and parts[0] == "head")

    return collapse_trace(model, is_node, concrete_args={"targets": None, "cache": None})


def traced_generating_function(model) -> dict:
    """The path generating function of the built model's traced computation, from the token
    embedding to the unembedding, in term form: compare with :func:`blockalg.analysis.paths.model_terms`
    (exact, for small models; :func:`check_paths` compares at random points instead)."""
    graph = traced_model_graph(model)
    # NB: structural (unscaled) paths; the structure check compares the edge scales.
    return {e: c for e, c in path_terms(graph, "wte", "lm_head", _traced_mark(graph)).items()
            if c != 0}


def _traced_mark(graph):
    """The mark (n, a, f or 1) of a node of a traced model graph, by its op kind."""
    known = set(op_names())

    def mark(node):
        kind = graph.nodes[node]["op"]
        return ROLE_MARK.get(get_op(kind).role, 1) if kind in known else 1

    return mark


#: The modulus of the path check: a prime, so that a nonzero polynomial of total degree D
#: vanishes at no more than a fraction D/PRIME of the points (Schwartz–Zippel).
PRIME = 2**61 - 1
#: Random points the path check evaluates both generating functions at.
PATH_POINTS = 3


def check_paths(graph, model, seed: int = 0) -> Check:
    """The traced model's path generating function equals the symbolic T**L · final.

    Polynomial identity testing instead of expanding both (9,409 terms at 96 pre-LN layers):
    the number of paths (the value at n = a = f = 1) is compared exactly, and both sides are
    evaluated at :data:`PATH_POINTS` random points (n, a, f) modulo :data:`PRIME` — the traced
    side in one pass over the traced DAG, the symbolic side as final · Π T_i**count_i by
    repeated squaring. Two different polynomials of degree D ≤ 3·(3L + 1) agree at a random
    point with probability at most D/PRIME (below 10⁻¹⁵ for L = 96), so a differing model
    passes with probability below 10⁻⁴⁵; an equal one always passes.
    """
    from ..analysis.paths import model_value

    traced, layers = traced_model_graph(model), len(model.blocks)
    mark = _traced_mark(traced)

    def measured(points, modulus=None):
        return path_values(traced, "wte", "lm_head", mark, points, modulus)

    predicted_count, [measured_count] = model_value(graph, layers, (1, 1, 1)), measured([(1, 1, 1)])
    rng = random.Random(seed)
    points = [tuple(rng.randrange(2, PRIME) for _ in range(3)) for _ in range(PATH_POINTS)]
    differing = [p for p, value in zip(points, measured(points, PRIME))
                 if model_value(graph, layers, p, PRIME) != value]
    if predicted_count != measured_count:
        detail = "the numbers of paths differ"
    elif differing:
        detail = f"differs at (n, a, f) = {differing[0]} mod 2^61 - 1"
    else:
        detail = f"equal at {PATH_POINTS} random points (n, a, f) mod 2^61 - 1"
    return Check("paths.generating_function", predicted_count, measured_count,
                 predicted_count == measured_count and not differing, detail)


def _edges(graph, scale_of) -> set:
    return {(u, v, graph.nodes[u]["op"], graph.nodes[v]["op"], round(scale_of(u, v), 9))
            for u, v in graph.edges}


def check_structure(graph, model) -> Check:
    """Every layer's traced computation has exactly its block graph's edges, ops and edge scales.

    Blocks with equal :func:`block_signature` trace alike, so each distinct one is traced once
    (a model of 96 identical layers: once)."""
    from ..graphs.expr import numeric_value

    expected = [_edges(block, lambda u, v: numeric_value(edge_scale(block, u, v), model.dims))
                for block, _ in segments(graph)]
    found, extra, predicted, traces = 0, set(), 0, {}
    for block, segment in zip(model.blocks, model.segment_of):
        key = block_signature(block)
        if key not in traces:
            traced = traced_block_graph(block)
            traces[key] = _edges(traced, lambda u, v: traced.edges[u, v].get("scale", 1.0))
        edges = traces[key]
        found += len(edges & expected[segment])
        extra |= edges ^ expected[segment]
        predicted += len(expected[segment])
    detail = f"differs on {sorted(extra)[:3]}" if extra else ""
    return Check("structure", predicted, found, found == predicted and not extra, detail)


def check_numerics(model, dims, device, seed) -> list[Check]:
    """A forward/backward on random tokens is finite; the loss at init is about ln(vocab)."""
    if str(device) == "meta":
        return []
    generator = torch.Generator(device="cpu").manual_seed(seed + 1)
    idx, targets = (torch.randint(0, dims["vocab"], (max(dims["batch"], 4), dims["seq_len"]),
                                  generator=generator).to(device) for _ in range(2))
    model.zero_grad(set_to_none=True)
    _, loss = model(idx, targets)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    finite = bool(torch.isfinite(loss)) and all(bool(torch.isfinite(g).all()) for g in grads)
    expected, value = math.log(dims["vocab"]), float(loss.detach())
    return [Check("numerics.finite", 1, int(finite), finite, "loss and every gradient"),
            Check("numerics.init_loss", round(expected, 4), round(value, 4),
                  abs(value - expected) <= INIT_LOSS_TOLERANCE * expected,
                  f"within {INIT_LOSS_TOLERANCE:.0%} of ln(vocab)")]


def check_original(graph, dims: Mapping, device="meta") -> list[Check]:
    """Checks of the module as written (``graph.factory``) at ``dims``: its parameter count and
    its forward and backward matmul FLOPs (``FlopCounterMode``) against one block of the graph."""
    factory = Factory.of(graph.factory, graph.graph.get("name"))
    module = factory.build(dims, device)
    params = sum(p.numel() for p in module.parameters())
    predicted = sum(node_params(graph, node, dims) for node in graph.nodes)
    measured = measure(module, dims["batch"], dims["seq_len"], dims["d_model"], device)
    backward = "backward_matmul_fused" if measured.fused else "backward_matmul"
    forward_want = dims["batch"] * block_flops(graph, dims, "forward_matmul")
    backward_want = dims["batch"] * block_flops(graph, dims, backward)
    detail = f"{factory.name} as written, one block"
    return [Check("original.params", predicted, params, predicted == params, detail),
            Check("original.flops.forward_matmul", forward_want, measured.forward,
                  forward_want == measured.forward, detail),
            Check("original.flops.backward_matmul", backward_want, measured.backward,
                  backward_want == measured.backward,
                  "fused attention: 2.5x" if measured.fused else "math attention: 2x")]
