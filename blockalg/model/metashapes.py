"""Meta-device runs at the cost of their distinct ops: a dispatch mode that replays output shapes.

On the meta device torch computes no values, only each op's output metadata (shape, stride,
dtype), many of them in Python (``torch._refs``, about half a millisecond a call here). A GPT of
96 identical layers asks the same questions 96 times. Under :func:`replay_shapes`, an op called
again with the same arguments (tensors by their metadata) gets fresh meta tensors of the
metadata it gave the first time, or the same views of its inputs: a meta kernel is a function
of exactly that, so nothing measured changes (:func:`output_spec` says when an output can be
made again so). An in-place op (an optimizer's update) that kept its inputs' metadata the first
time returns the same inputs again. Every op that touches a tensor not on the meta device runs.

Enter it *outside* a ``FlopCounterMode``, so that the counter still sees every op:

>>> import torch
>>> from torch.utils.flop_counter import FlopCounterMode
>>> x, w = torch.empty(4, 8, device="meta"), torch.empty(8, 16, device="meta")
>>> with replay_shapes("meta") as replay, FlopCounterMode(display=False) as counter:
...     y = [x @ w for _ in range(3)]
>>> counter.get_total_flops(), replay.replayed >= 2, y[2].shape
(3072, True, torch.Size([4, 16]))
"""

from __future__ import annotations

import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class _Uncacheable(Exception):
    pass


#: Argument types keyed by value (with the type, which keeps 1, 1.0 and True apart).
_SCALARS = frozenset({type(None), bool, int, float, str, torch.dtype, torch.device, torch.layout,
                      torch.memory_format})


def _call_key(func, args, kwargs) -> tuple:
    """The op and its arguments' metadata (:func:`_key`); raises on what it cannot key."""
    return (id(func), tuple([_key(v) for v in args]), _key(kwargs) if kwargs else None)


def _key(value):
    """A hashable stand-in for an op argument; tensors by metadata; raises on anything else."""
    kind = type(value)
    if kind in _SCALARS:
        return (kind, value)
    if isinstance(value, torch.Tensor):
        if value.is_meta:
            return (value.shape, value.stride(), value.dtype, value.storage_offset())  # NB: 4 items
        raise _Uncacheable
    if kind is list or kind is tuple or isinstance(value, (list, tuple)):
        return (kind, tuple([_key(v) for v in value]))
    if isinstance(value, dict):
        return (dict, tuple((k, _key(v)) for k, v in value.items()))
    raise _Uncacheable


_KINDS: dict[int, str] = {}  # NB: by id: an OpOverload hashes in Python, and lives forever


def _kind(func) -> str:
    """From ``func``'s schema: ``functional`` (no input aliased), ``view`` (may return a view of
    an input), ``inplace`` (writes to inputs, returns nothing or them) or ``mutating`` (writes
    to an input and returns something else)."""
    kind = _KINDS.get(id(func))
    if kind is None:
        schema = func._schema
        arguments = [a.alias_info for a in schema.arguments if a.alias_info is not None]
        returns = [r.alias_info for r in schema.returns]
        if not arguments and not any(returns):
            kind = "functional"
        elif not any(a.is_write for a in arguments) and not any(r and r.is_write for r in returns):
            kind = "view"
        elif all(a.is_write for a in arguments) and all(r is not None and r.is_write for r in returns):
            kind = "inplace"
        else:
            kind = "mutating"
        _KINDS[id(func)] = kind
    return kind


_COMPOSITE: dict[int, bool] = {}


def has_composite_kernel(func) -> bool:
    """Whether ``func`` has a C++ CompositeImplicitAutograd kernel (a decomposition), by id."""
    found = _COMPOSITE.get(id(func))
    if found is None:
        found = _COMPOSITE[id(func)] = torch._C._dispatch_has_kernel_for_dispatch_key(
            func.name(), torch._C.DispatchKey.CompositeImplicitAutograd)
    return found


def _tensors(value, found: list) -> list:
    """The tensors in ``value`` (args or kwargs), in lists and dicts too."""
    if isinstance(value, torch.Tensor):
        found.append(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _tensors(v, found)
    elif isinstance(value, dict):
        for v in value.values():
            _tensors(v, found)
    return found


def storage_id(t) -> int:
    """The identity of ``t``'s storage, on every device (meta too)."""
    return t.untyped_storage()._cdata


def _places(args, kwargs) -> list:
    """Each argument with where it is: a position in ``args`` or a name in ``kwargs``."""
    return [*enumerate(args), *kwargs.items()]


def _argument(args, kwargs, where):
    """The argument at ``where``: a position in ``args`` or a name in ``kwargs``."""
    return kwargs[where] if isinstance(where, str) else args[where]


def _tensor_arguments(args, kwargs) -> dict:
    """Where each tensor argument is (a position in ``args``, a name in ``kwargs``) by its
    storage, the first of those that share one (tensors nested in lists are not included)."""
    found = {}
    for where, value in _places(args, kwargs):
        if isinstance(value, torch.Tensor):
            found.setdefault(storage_id(value), where)
    return found


def _written(out, args, kwargs):
    """What an in-place op returned, as the arguments it returned."""
    if out is None:
        return ("value", None)
    if isinstance(out, torch.Tensor):
        where = next((w for w, value in _places(args, kwargs) if value is out), None)
        if where is None:
            raise _Uncacheable
        return ("input", where)
    if type(out) in (list, tuple):
        return (type(out), [_written(v, args, kwargs) for v in out])
    raise _Uncacheable


def _rewritten(spec, args, kwargs):
    kind = spec[0]
    if kind == "value":
        return spec[1]
    if kind == "input":
        return _argument(args, kwargs, spec[1])
    return kind(_rewritten(s, args, kwargs) for s in spec[1])


#: Output metadata by op and argument metadata, shared by every replay in the process (the
#: checks of several variants at one shape ask the same questions); cleared when full.
_OUTPUTS: dict = {}
MAX_ENTRIES = 100_000


def memo_key(func, args, kwargs):
    """A key for the call of an op that writes no input (a functional or view op) on meta
    tensors: the op and its arguments' metadata; None for any other call."""
    if _kind(func) not in ("functional", "view"):
        return None
    try:
        return _call_key(func, args, kwargs)
    except _Uncacheable:
        return None


def output_spec(out, args, kwargs):
    """What :func:`rebuild` makes ``out`` from again, given arguments of the same metadata, or
    None. Each tensor of ``out`` is either a view of a tensor argument's storage (rebuilt as the
    same view of it) or fresh: a storage of its own, shared with no input, that it fills
    (rebuilt by ``empty_strided``); so the tensors rebuilt have the storages and sizes the op's
    own outputs had. None for a tensor that is neither (a view of a larger intermediate, of a
    tensor in a list argument), a view changing the dtype, or what a spec cannot hold.

    >>> x = torch.empty(4, 6, device="meta")
    >>> spec = output_spec((x.t(), x + 1), (x,), {})
    >>> view, fresh = rebuild(spec, (x,), {})
    >>> view.stride(), storage_id(view) == storage_id(x), storage_id(fresh) == storage_id(x)
    ((1, 6), True, False)
    >>> output_spec(x[:, :3] + 0, (x,), {}) is not None, output_spec((x + 1)[:, :3], (x,), {})
    (True, None)
    """
    inputs = {storage_id(t) for t in _tensors(kwargs, _tensors(args, []))}
    try:
        return _output_spec(out, args, kwargs, _tensor_arguments(args, kwargs), inputs, set())
    except _Uncacheable:
        return None


def _output_spec(value, args, kwargs, arguments: dict, inputs: set, fresh: set):
    if isinstance(value, torch.Tensor):
        if value.device.type != "meta":
            raise _Uncacheable
        storage = storage_id(value)
        if storage in arguments:
            where = arguments[storage]
            if value.dtype != _argument(args, kwargs, where).dtype:
                raise _Uncacheable
            return ("view", where, tuple(value.shape), value.stride(), value.storage_offset())
        if storage in inputs or storage in fresh or value.storage_offset() != 0 \
                or not _fills_storage(value):
            raise _Uncacheable
        fresh.add(storage)
        return ("tensor", tuple(value.shape), value.stride(), value.dtype)
    if isinstance(value, (list, tuple)):  # a decomposition's named tuple as a tuple (C++ reads both)
        return (list if isinstance(value, list) else tuple,
                [_output_spec(v, args, kwargs, arguments, inputs, fresh) for v in value])
    if value is None or isinstance(value, (bool, int, float)):
        return ("value", value)
    raise _Uncacheable


def _fills_storage(t) -> bool:
    """Whether ``t``'s storage is exactly what ``empty_strided`` of its shape and stride makes.

    >>> x = torch.empty(4, 6, device="meta")
    >>> _fills_storage(x), _fills_storage(x.t()), _fills_storage(x[:, :3])
    (True, True, False)
    """
    extent = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride())) if t.numel() else 0
    return t.untyped_storage().nbytes() == extent * t.element_size()


def rebuild(spec, args, kwargs):
    """The op's output again from :func:`output_spec`: fresh meta tensors, and views of the
    inputs (``args``, ``kwargs``)."""
    with torch._C._DisableTorchDispatch():  # NB: a mode below would only make the same tensors
        return _rebuilt(spec, args, kwargs)


def _rebuilt(spec, args, kwargs):
    kind = spec[0]
    if kind == "tensor":
        return torch.empty_strided(spec[1], spec[2], dtype=spec[3], device="meta")
    if kind == "view":
        return torch.as_strided(_argument(args, kwargs, spec[1]), *spec[2:])
    if kind == "value":
        return spec[1]
    return kind(_rebuilt(s, args, kwargs) for s in spec[1])


class EagerDispatchMode(TorchDispatchMode):
    """A dispatch mode whose ``__torch_dispatch__`` torch leaves unwrapped (blockalg's modes)."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # NB: nothing is ever compiled inside these modes, and torch's default wraps every
        # subclass's __torch_dispatch__ in torch._dynamo.disable: about 7 µs a call here, on
        # each of the ~10^5 ops of a GPT-3 check.
        return False


class CountingReplay(EagerDispatchMode):
    """A dispatch mode that counts work op by op and, on the meta device, counts a repeated call
    once: a subclass runs an op in :meth:`counted`, booking what it counts with :meth:`book`.
    The counts and outputs (:func:`output_spec`) of a call of an op writing no input are
    recorded in ``memo`` by op and argument metadata; a later call with the same metadata is
    booked from the record and its outputs rebuilt, without running it. Calls made inside a
    counted one (its decomposition) are counted as part of it, not recorded on their own.
    ``memo`` may be shared by every count that counts alike; it is emptied when full."""

    def __init__(self, memo: dict):
        super().__init__()
        if len(memo) >= MAX_ENTRIES:
            memo.clear()
        self.memo, self.depth, self.recording = memo, 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        key = memo_key(func, args, kwargs) if self.depth == 0 else None
        found = self.memo.get(key) if key is not None else None
        if found is not None:
            counts, spec = found
            for name, count in counts:
                self.book(name, count)
            return rebuild(spec, args, kwargs)
        if key is not None:
            self.recording = {}
        self.depth += 1
        try:
            out = self.counted(func, args, kwargs)
        finally:
            self.depth -= 1
        if key is not None:
            spec = output_spec(out, args, kwargs)
            if spec is not None:
                self.memo[key] = (tuple(self.recording.items()), spec)
            self.recording = None
        return out

    def counted(self, func, args, kwargs):
        """Run ``func`` (decomposed or not, under this mode), booking what it counts."""
        raise NotImplementedError

    def book(self, name, count: int) -> None:
        """Book ``count`` under ``name``; a subclass adds it where it keeps its counts, then
        calls this, which records it for the call under way."""
        if self.recording is not None:
            self.recording[name] = self.recording.get(name, 0) + count


class ShapeReplay(EagerDispatchMode):
    """Answers a repeated meta-device op from a cache of output metadata (see the module)."""

    def __init__(self):
        super().__init__()
        self.outputs = _OUTPUTS
        self.replayed = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = _kind(func)
        try:
            if kind in ("view", "mutating"):  # a view kernel is faster than a replay
                raise _Uncacheable
            key = _call_key(func, args, kwargs)
        except _Uncacheable:
            return func(*args, **kwargs)
        inplace = kind == "inplace"
        spec = self.outputs.get(key)
        if spec is not None:
            self.replayed += 1
            if inplace:
                return _rewritten(spec, args, kwargs)
            return rebuild(spec, args, kwargs)
        out = func(*args, **kwargs)
        if len(self.outputs) >= MAX_ENTRIES:
            self.outputs.clear()
        if not inplace:
            spec = output_spec(out, args, kwargs)
        elif _call_key(func, args, kwargs) == key:  # it kept every input's metadata
            with contextlib.suppress(_Uncacheable):
                spec = _written(out, args, kwargs)
        if spec is not None:
            self.outputs[key] = spec
        return out


def replay_shapes(device):
    """A :class:`ShapeReplay` on the meta device, a no-op context anywhere else."""
    return ShapeReplay() if torch.device(device).type == "meta" else contextlib.nullcontext()
