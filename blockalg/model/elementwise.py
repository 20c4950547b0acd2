"""Elementwise work counted independently of the registry: the built model's forward and backward
run through torch's own decompositions on the meta device, counted per graph node and op kind.

:func:`count_elementwise` builds the model of a graph on the meta device and runs one forward,
the cross-entropy loss and the backward of one sequence of ``seq_len`` tokens (the registry's
unit) under a dispatch mode that applies torch's **core ATen decomposition table**, extended with
torch's own decompositions of the core ops that bundle elementwise arithmetic (:data:`COMPOSITES`:
``native_layer_norm``, ``_softmax``, ``gelu``, ``addmm``, ...; the core table keeps them whole),
exactly as ``make_fx(..., decomposition_table=decompositions())`` does: :func:`make_fx_total`
traces the same step with ``make_fx`` and the test suite checks that both count the same.
Every op left is then a matmul, a data movement (view, copy, gather, cat, ...) or an op torch
itself tags ``pointwise`` or ``reduction``, and :func:`elements` counts it so:

* a pointwise op with a floating-point output: its output's elements, except the ops that only
  copy or select (:data:`NOT_ARITHMETIC`: clone, where) and products with the constant 1
  (torch's ``addmm`` decomposition writes alpha·mm + beta·bias with alpha = beta = 1);
* a reduction of N floating-point elements to M results: N − M (a sum of n numbers is n − 1
  additions; ``var_mean``, one op, counts once);
* a scatter-add (``index_put`` with ``accumulate``, the backward of an embedding lookup): its
  values' elements.

Each op is booked to the graph node whose module ran it (modules are named after graph nodes:
``blocks.<i>.<node>``, ``head.<node>``, ``wte``, ``wpe``, ``ln_f``, ``lm_head``): forward ops by
module hooks, backward ops by hooks on the autograd nodes each module's forward created. What no
node module runs is booked to a pseudo-kind: ``edge_scale`` (a block's constant edge scales),
``gradient_accumulation`` (the autograd engine summing the gradients of a tensor used twice: a
fork of the stream, a tied weight, an op using its input twice), ``loss`` (outside blockalg's
counts) and ``model`` (the model's own forward; with learned positions it adds the position table
to the token embeddings, which is the ``position_embedding``'s work).

:func:`compare` sets the count per op kind beside the registry's
(:func:`blockalg.analysis.flops.other_by_kind`): equal where the registry claims exactness
(:meth:`blockalg.graphs.ops.OpKind.exact_phases`), a documented convention with its ratio elsewhere.

>>> from blockalg.graphs.variants import get
>>> from blockalg.graphs.presets import resolve_dims
>>> counts = count_elementwise(get("pre-ln"), resolve_dims("tiny"))
>>> counts.by_kind()["add"]  # 2 layers × 2 residual adds × 64 tokens × d_model 64; no backward work
{'forward': 16384, 'backward': 0}

Importing this module imports torch.
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from dataclasses import dataclass

import torch

from ..graphs.graph import model_nodes, segments
from ..graphs.ops import PHASES
from .metashapes import CountingReplay, has_composite_kernel, replay_shapes

aten = torch.ops.aten

#: Core ATen ops that bundle elementwise arithmetic; torch's own decompositions of them are
#: applied on top of the core table, so their arithmetic reaches the count as pointwise and
#: reduction ops.
COMPOSITES = (
    aten.native_layer_norm.default, aten.native_layer_norm_backward.default,
    aten._softmax.default, aten._softmax_backward_data.default,
    aten._log_softmax.default, aten._log_softmax_backward_data.default,
    aten.gelu.default, aten.gelu_backward.default, aten.silu.default, aten.silu_backward.default,
    aten.sigmoid_backward.default, aten.addmm.default,
)

#: Pointwise ops that only copy or select elements: no arithmetic.
NOT_ARITHMETIC = (aten.clone.default, aten.where.self, aten.where.ScalarOther,
                  aten.where.ScalarSelf, aten.where.Scalar)

PSEUDO_KINDS = ("edge_scale", "model", "gradient_accumulation", "loss")
_SCATTERS = (aten.index_put.default, aten.index_put_.default)
_PRODUCTS = (aten.mul.Tensor, aten.mul.Scalar)


@functools.cache
def decompositions() -> dict:
    """torch's core ATen decomposition table plus torch's decompositions of :data:`COMPOSITES`."""
    from torch._decomp import core_aten_decompositions

    return {**core_aten_decompositions(), **_listed_decompositions()}


@functools.cache
def _listed_decompositions() -> dict:
    """The decompositions torch's core table lists by name, and those of :data:`COMPOSITES`."""
    from torch._decomp import _core_aten_decompositions_post_autograd, get_decompositions

    return {**_core_aten_decompositions_post_autograd(), **get_decompositions(list(COMPOSITES))}


_DECOMPOSITION: dict[int, object] = {}  # NB: by id, as metashapes' kinds


def decomposition_of(op):
    """``decompositions().get(op)``, without building the whole table: torch adds to the ops it
    lists every composite op of every namespace, a quarter of a second to collect, of which a
    model meets a few (the test suite checks both agree on every op of the table)."""
    if id(op) not in _DECOMPOSITION:
        _DECOMPOSITION[id(op)] = _listed_decompositions().get(op) or _composite_decomposition(op)
    return _DECOMPOSITION[id(op)]


def _composite_decomposition(op):
    """What torch's core table (``torch.export``'s ``CustomDecompTable``) holds for an op it does
    not list: its CompositeImplicitAutograd kernel, if torch would not preserve the op."""
    from torch._export.utils import _get_decomp_for_cia, _is_aten_op, _is_preservable_cia_op
    from torch.export.decomp_utils import PRESERVED_ATEN_CIA_OPS

    if not _is_preservable_cia_op(op) or (_is_aten_op(op) and op in PRESERVED_ATEN_CIA_OPS):
        return None
    return _get_decomp_for_cia(op)


def elements(op, args, kwargs, out) -> int:
    """Elements of elementwise arithmetic one decomposed op performs (0 for the rest)."""
    tags = op.tags
    if torch.Tag.pointwise in tags:
        if op in NOT_ARITHMETIC or not _floating(out) or (
                op in _PRODUCTS and any(not isinstance(a, torch.Tensor) and a == 1 for a in args)):
            return 0
        return out.numel()
    if torch.Tag.reduction in tags:
        result = out[0] if isinstance(out, (tuple, list)) else out
        return args[0].numel() - result.numel() if _floating(args[0]) else 0
    if op in _SCATTERS and (args[3] if len(args) > 3 else kwargs.get("accumulate", False)):
        return args[2].numel()
    return 0


def _floating(value) -> bool:
    return isinstance(value, torch.Tensor) and value.dtype.is_floating_point


#: Counts and outputs of the calls :class:`_Counter` recorded (see
#: :class:`~blockalg.model.metashapes.CountingReplay`): shared by every count in the process
#: (variants at one shape share their layers).
_MEMO: dict = {}


class _Counter(CountingReplay):
    """Runs every op through :func:`decompositions` (and CompositeImplicit ops through their own
    decomposition, as ``make_fx`` does) and books the elements of what is left to the label on
    top of ``labels``, in ``phase``.

    The model calls the same ops on the same shapes layer after layer, and a decomposition on
    meta tensors is a function of the op and its arguments' metadata: so a repeated call is
    booked from the record of its first (:class:`~blockalg.model.metashapes.CountingReplay`)
    without decomposing it again."""

    def __init__(self):
        super().__init__(_MEMO)
        self.labels, self.phase = [], "forward"
        self.work = {phase: defaultdict(Counter) for phase in PHASES}

    def counted(self, op, args, kwargs):
        decomposition = decomposition_of(op) or (op.decompose if has_composite_kernel(op) else None)
        if decomposition is not None:
            with self:
                out = decomposition(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = op(*args, **kwargs)
        if count := elements(op, args, kwargs, out):
            self.book(str(op), count)
        return out

    def book(self, name: str, count: int) -> None:
        label = self.labels[-1] if self.labels else (
            "gradient_accumulation" if self.phase == "backward" else "model")
        self.work[self.phase][label][name] += count
        super().book(name, count)


@dataclass
class ElementwiseCount:
    """Elements of elementwise work per phase, per label (a module path or a pseudo-kind), per
    aten op; ``kinds`` maps every label to its op kind (or pseudo-kind)."""

    work: dict[str, dict[str, Counter]]  # phase -> label -> Counter(aten op -> elements)
    kinds: dict[str, str]

    def by_kind(self) -> dict[str, dict[str, int]]:
        """Elements per op kind and phase: ``{kind: {"forward": n, "backward": n}}``."""
        result = defaultdict(lambda: dict.fromkeys(PHASES, 0))
        for phase, labels in self.work.items():
            for label, ops in labels.items():
                result[self.kinds[label]][phase] += sum(ops.values())
        return dict(result)

    def ops_of(self, kind: str, phase: str) -> Counter:
        """Elements per aten op of one kind and phase (what the count is made of)."""
        total = Counter()
        for label, ops in self.work[phase].items():
            if self.kinds[label] == kind:
                total.update(ops)
        return total

    def total(self) -> int:
        return sum(sum(ops.values()) for labels in self.work.values() for ops in labels.values())


def count_elementwise(graph, dims: dict, model=None) -> ElementwiseCount:
    """Run the model of ``graph`` at ``dims`` on the meta device (forward, loss, backward of one
    sequence) through torch's decompositions and count its elementwise work per graph node (see
    the module docstring). ``model``: that model already built (its gradients are cleared, so
    that the backward accumulates into none)."""
    from .build import build_model

    if model is None:
        model = build_model(graph, dims, device="meta")
    model.zero_grad(set_to_none=True)
    kinds = _labels(graph, model)
    counter = _Counter()
    handles = _attach(model, kinds, counter.labels)
    try:
        with replay_shapes("meta"), counter:  # the leaf ops' shapes replayed below the counter
            loss = _step(model, dims, counter.labels)
            counter.phase = "backward"
            loss.backward()
    finally:
        for handle in handles:
            handle.remove()
    return ElementwiseCount({p: dict(w) for p, w in counter.work.items()}, kinds)


def make_fx_total(graph, dims: dict) -> int:
    """The same step traced with ``make_fx`` and :func:`decompositions`, its graph's nodes counted
    with :func:`elements`: the total that :func:`count_elementwise` must reproduce."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from .build import build_model

    model = build_model(graph, dims, device="meta")

    def step(idx):
        loss = _step(model, dims, [], idx)
        loss.backward()
        return loss

    idx = torch.zeros(1, dims["seq_len"], dtype=torch.long, device="meta")
    traced = make_fx(step, decomposition_table=decompositions())(idx)

    def value(arg):
        return arg.meta.get("val") if isinstance(arg, torch.fx.Node) else arg

    return sum(elements(node.target, [value(a) for a in node.args],
                        {k: value(v) for k, v in node.kwargs.items()}, node.meta.get("val"))
               for node in traced.graph.nodes
               if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload))


def _step(model, dims, labels, idx=None):
    """Forward and loss of one sequence of token 0 (values do not matter on meta)."""
    if idx is None:
        idx = torch.zeros(1, dims["seq_len"], dtype=torch.long, device="meta")
    logits = model(idx)
    labels.append("loss")
    loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), idx.view(-1))
    labels.pop()
    _claim(loss, {logits.grad_fn}, "loss", labels)
    return loss


def _labels(graph, model) -> dict[str, str]:
    """Module path -> op kind for every graph-node module, and the pseudo-kinds of the rest."""
    kinds = {label: label for label in PSEUDO_KINDS}
    blocks = [block for block, _ in segments(graph)]
    for i, segment in enumerate(model.segment_of):
        for node, _ in model.blocks[i].plan:
            kinds[f"blocks.{i}.{node}"] = blocks[segment].nodes[node]["op"]
        kinds[f"blocks.{i}"] = "edge_scale"
    head = graph.graph.get("head")
    if head is not None:
        kinds.update({f"head.{node}": op for node, op in head.nodes(data="op")})
        kinds["head"] = "edge_scale"
    for m in model_nodes(graph):
        if "." not in m.path:  # wte, wpe, ln_f, lm_head
            kinds[m.path] = m.op.name
    if "wpe" in kinds:
        kinds["model"] = "position_embedding"
    return kinds


def _attach(model, kinds, labels) -> list:
    """Forward hooks that put each labelled module's name on ``labels`` while it runs, and that
    label, for the backward, the autograd nodes its forward created."""
    handles = []
    modules = dict(model.named_modules())
    for label in kinds:
        module = modules.get("" if label == "model" else label)
        if module is None:
            continue

        def before(module, args, label=label):
            module._blockalg_inputs = {a.grad_fn for a in args if isinstance(a, torch.Tensor)}
            labels.append(label)

        def after(module, args, output, label=label):
            labels.pop()
            _claim(output, module.__dict__.pop("_blockalg_inputs"), label, labels)

        handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    return handles


def _claim(outputs, stop, label, labels) -> None:
    """Give ``label`` to every autograd node between ``outputs`` and the grad_fns in ``stop`` (the
    inputs) that no module inside has claimed: its backward runs with ``label`` on ``labels``."""
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    todo = [t.grad_fn for t in outputs if isinstance(t, torch.Tensor) and t.grad_fn is not None]
    seen = set()
    while todo:
        fn = todo.pop()
        if fn is None or fn in stop or fn in seen:
            continue
        seen.add(fn)
        todo += [next_fn for next_fn, _ in fn.next_functions]
        if "blockalg" not in fn.metadata:
            fn.metadata["blockalg"] = label
            fn.register_prehook(lambda grads, label=label: labels.append(label))
            fn.register_hook(lambda grads_in, grads_out: _pop(labels))


def _pop(labels) -> None:
    labels.pop()  # (a hook that returns a value would replace the gradients)


@dataclass(frozen=True)
class KindComparison:
    """One op kind in one phase: the registry's FLOPs, the decomposition's count, and whether the
    registry claims they are equal (``exact``) or states a convention."""

    kind: str
    phase: str
    registry: int
    decomposition: int
    exact: bool

    @property
    def ratio(self) -> float | None:
        """decomposition / registry (None when the registry counts 0)."""
        return self.decomposition / self.registry if self.registry else None

    @property
    def ok(self) -> bool:
        """Equal when exact; otherwise both count work or both count none."""
        if self.exact:
            return self.registry == self.decomposition
        return (self.registry == 0) == (self.decomposition == 0)


def compare(graph, dims: dict, counts: ElementwiseCount | None = None) -> list[KindComparison]:
    """Per op kind and phase, the registry's non-matmul FLOPs for one sequence at ``dims`` beside
    the decomposition's count (the loss, outside the registry, is left out; so are kinds where
    both are 0).

    >>> from blockalg.graphs.variants import get
    >>> from blockalg.graphs.presets import resolve_dims
    >>> rows = {(r.kind, r.phase): r for r in compare(get("pre-ln"), resolve_dims("tiny"))}
    >>> rows["layernorm", "forward"].registry, rows["layernorm", "forward"].decomposition
    (143360, 102720)
    """
    from ..analysis.flops import exact_by_kind, other_by_kind
    from ..graphs.expr import evaluate

    counts = counts or count_elementwise(graph, dims)
    measured = counts.by_kind()
    exact = exact_by_kind(graph)
    rows = []
    registered = other_by_kind(graph)
    for kind, phases in registered.items():
        for phase in PHASES:
            registry = evaluate(phases[phase], dims)
            found = measured.get(kind, {}).get(phase, 0)
            if registry or found:
                rows.append(KindComparison(kind, phase, registry, found, phase in exact[kind]))
    unbooked = sorted(set(measured) - set(registered) - {"loss"})
    rows += [KindComparison(kind, phase, 0, measured[kind][phase], False)
             for kind in unbooked for phase in PHASES if measured[kind][phase]]
    return rows
