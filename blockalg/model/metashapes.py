"""Meta-device runs at the cost of their distinct ops: a dispatch mode that replays output shapes.

On the meta device torch computes no values, only each op's output metadata (shape, stride,
dtype), many of them in Python (``torch._refs``, about half a millisecond a call here). A GPT of
96 identical layers asks the same questions 96 times. Under :func:`replay_shapes`, an op called
again with the same arguments (tensors by their metadata) gets fresh meta tensors of the
metadata it gave the first time: a meta kernel is a function of exactly that, so nothing
measured changes. Ops that alias or mutate an input (views, in-place ops) always run, and so
does every op that touches a tensor not on the meta device.

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


def _key(value):
    """A hashable stand-in for an op argument; tensors by metadata; raises on anything else."""
    if isinstance(value, torch.Tensor):
        if value.device.type != "meta":
            raise _Uncacheable
        return ("tensor", tuple(value.shape), value.stride(), value.dtype, value.storage_offset())
    if isinstance(value, (list, tuple)):
        return (type(value), tuple(_key(v) for v in value))
    if isinstance(value, dict):
        return (dict, tuple((k, _key(v)) for k, v in value.items()))
    if value is None or isinstance(value, (bool, int, float, str, torch.dtype, torch.device,
                                           torch.layout, torch.memory_format)):
        return (type(value), value)  # NB: the type keeps 1, 1.0 and True apart
    raise _Uncacheable


def _spec(value):
    """What to rebuild an op's output from: tensors as fresh meta tensors of the same metadata."""
    if isinstance(value, torch.Tensor):
        if value.device.type != "meta" or value.storage_offset() != 0:
            raise _Uncacheable
        return ("tensor", tuple(value.shape), value.stride(), value.dtype)
    if type(value) in (list, tuple):
        return (type(value), [_spec(v) for v in value])
    if value is None or isinstance(value, (bool, int, float)):
        return ("value", value)
    raise _Uncacheable


def _rebuild(spec):
    kind = spec[0]
    if kind == "tensor":
        return torch.empty_strided(spec[1], spec[2], dtype=spec[3], device="meta")
    if kind == "value":
        return spec[1]
    return kind(_rebuild(s) for s in spec[1])


_ALIASING: dict[int, bool] = {}  # NB: by id: an OpOverload hashes in Python, and lives forever


def _aliasing(func) -> bool:
    """Whether ``func`` may return a view of an input or write to one (its schema says so)."""
    aliasing = _ALIASING.get(id(func))
    if aliasing is None:
        schema = func._schema
        aliasing = _ALIASING[id(func)] = any(a.alias_info is not None
                                             for a in (*schema.arguments, *schema.returns))
    return aliasing


#: Output metadata by op and argument metadata, shared by every replay in the process (the
#: checks of several variants at one shape ask the same questions); cleared when full.
_OUTPUTS: dict = {}
MAX_ENTRIES = 100_000


class ShapeReplay(TorchDispatchMode):
    """Answers a repeated meta-device op from a cache of output metadata (see the module)."""

    def __init__(self):
        super().__init__()
        self.outputs = _OUTPUTS
        self.replayed = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        try:
            if _aliasing(func):
                raise _Uncacheable
            key = (id(func), _key(args), _key(kwargs))
        except _Uncacheable:
            return func(*args, **kwargs)
        spec = self.outputs.get(key)
        if spec is not None:
            self.replayed += 1
            return _rebuild(spec)
        out = func(*args, **kwargs)
        if len(self.outputs) >= MAX_ENTRIES:
            self.outputs.clear()
        with contextlib.suppress(_Uncacheable):
            self.outputs[key] = _spec(out)
        return out


def replay_shapes(device):
    """A :class:`ShapeReplay` on the meta device, a no-op context anywhere else."""
    return ShapeReplay() if torch.device(device).type == "meta" else contextlib.nullcontext()
