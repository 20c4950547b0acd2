"""Memory measured on the built model, against :mod:`blockalg.analysis.memory`.

* saved activations: one forward (with the loss) under ``torch.autograd.graph.saved_tensors_hooks``,
  the bytes of the distinct storages autograd keeps, parameters and buffers excluded;
* weights, gradients (after one backward), buffers, optimizer states (after one step: the
  tensors in ``optimizer.state``, and the fp32 master copy under mixed precision);
* the KV cache of incremental decoding, and FlopCounterMode over one decode step.

>>> from blockalg.analysis.memory import Setting
>>> checks = check_memory("pre-ln", Setting(recompute="full"), preset="tiny", device="meta")
>>> [c.name for c in checks if c.ok][-3:]
['memory.kv_cache', 'memory.step_flops', 'inference.decode_flops_per_token']
>>> all(c.ok for c in checks)
True
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..analysis.memory import (
    MEMORY_KEYS,
    PEAK_PARTS,
    Setting,
    at_last_position,
    inference_expressions,
    memory_expressions,
)
from ..graphs.expr import evaluate
from ..graphs.presets import DEFAULT_PRESET
from ..graphs.resolve import resolve
from .build import build_model
from .measure import Check, FlopCount, flop_counter, random_batch
from .metashapes import replay_shapes, storage_id
from .modules import CausalSelfAttention, KVCache, attention_path

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@contextlib.contextmanager
def recompute(model, policy: str):
    """Train ``model`` under a recompute policy: ``none``, ``selective`` (checkpoint each
    attention core) or ``full`` (checkpoint each block)."""
    cores = [m for m in model.modules() if isinstance(m, CausalSelfAttention)]
    model.recompute = "full" if policy == "full" else "none"
    for m in cores:
        m.recompute_core = policy == "selective"
    try:
        yield model
    finally:
        model.recompute = "none"
        for m in cores:
            m.recompute_core = False


class SavedTensors:
    """Distinct storages autograd keeps, recorded by a ``saved_tensors_hooks`` pack hook:
    parameters and buffers excluded, each storage once. Kept storages are held (so that no
    later storage can take the identity of a freed one) until the object goes."""

    def __init__(self, model):
        self.excluded = {storage_id(t) for t in [*model.parameters(), *model.buffers()]}
        self.kept = {}  # storage -> (tensor, bytes) saved during the forward
        self.blocks = []  # per block recomputed in backward: its new storages' bytes

    def forward_pack(self, t):
        key = storage_id(t)
        if key not in self.excluded:
            self.kept.setdefault(key, (t, t.untyped_storage().nbytes()))
        return t

    def backward_pack(self, t):
        key = storage_id(t)
        if key not in self.excluded and key not in self.kept and self.blocks:
            self.blocks[-1][key] = (t, t.untyped_storage().nbytes())
        return t

    def forward_bytes(self) -> int:
        return sum(n for _, n in self.kept.values())

    def recompute_bytes(self) -> int:
        """The largest block's storages made again by its recomputation in backward."""
        return max((sum(n for _, n in block.values()) for block in self.blocks), default=0)


def forward_saved_bytes(model, dims, setting: Setting, device) -> int:
    """Bytes of the storages kept for backward by one forward with the loss (nothing else)."""
    idx, targets = random_batch(dims, device)
    saved = SavedTensors(model)
    with attention_path(setting.attention), recompute(model, setting.recompute), \
            torch.autograd.graph.saved_tensors_hooks(saved.forward_pack, lambda t: t):
        model(idx, targets)
    return saved.forward_bytes()


@dataclass
class TrainingStep:
    """One measured training step: its memory figures (see :func:`measure_training`), and the
    matmul FLOPs counted over its forward (with the loss) and over its backward."""

    measured: dict[str, int]
    forward: FlopCount
    backward: FlopCount


def measure_training(model, dims, setting: Setting, device) -> TrainingStep:
    """One step: saved activations (and, under full recomputation, one block's recomputed
    ones), matmul FLOPs of forward and backward, gradients, optimizer states, weights, buffers."""
    idx, targets = random_batch(dims, device)
    model.zero_grad(set_to_none=True)
    saved = SavedTensors(model)
    handles = [b.register_forward_pre_hook(lambda m, args: saved.blocks.append({}))
               for b in model.blocks]  # in forward they run before any save of theirs: harmless
    try:  # NB: replaying meta shapes (outside the counters) keeps every storage's size
        with attention_path(setting.attention), recompute(model, setting.recompute), \
                replay_shapes(device):
            with torch.autograd.graph.saved_tensors_hooks(saved.forward_pack, lambda t: t), \
                    flop_counter() as forward:
                _, loss = model(idx, targets)
            saved.blocks.clear()
            with torch.autograd.graph.saved_tensors_hooks(saved.backward_pack, lambda t: t), \
                    flop_counter() as backward:
                loss.backward()
    finally:
        for h in handles:
            h.remove()
    optimizer = make_optimizer(model, setting)
    if optimizer is not None:
        with replay_shapes(device):
            optimizer.step()
    unique = {storage_id(p): p for p in model.parameters()}.values()
    measured = {"weights": sum(p.nbytes for p in unique),
                "gradients": sum(p.grad.nbytes for p in unique if p.grad is not None),
                "optimizer": optimizer_bytes(optimizer),
                "buffers": sum(b.nbytes for b in model.buffers()),
                "activations": saved.forward_bytes(),
                "activations_recompute": saved.recompute_bytes(),
                "step_flops": forward.get_total_flops() + backward.get_total_flops()}
    measured["peak_training"] = sum(measured[k] for k in PEAK_PARTS)
    return TrainingStep(measured, forward, backward)


def flop_check_step(model, dims, setting: Setting, device) -> TrainingStep | None:
    """:func:`measure_training` on ``model`` (as built) when its step is also the one
    :func:`blockalg.model.check.check_flops` counts: fp32, eager attention, nothing recomputed,
    on the meta device (where attention takes the math path either way); else None."""
    if (torch.device(device).type != "meta" or setting.reduced or setting.attention != "eager"
            or setting.recompute != "none"):
        return None
    return measure_training(model, dims, single_rank(setting), device)


def single_rank(setting: Setting) -> Setting:
    """``setting`` on one rank: data parallelism and ZeRO are not simulated."""
    return setting.with_(data_parallel=1, zero=0)


class MasterWeights:
    """Mixed precision as Megatron-LM and DeepSpeed keep it: an fp32 master copy of the
    low-precision weights, which the optimizer updates; the model gets them back rounded."""

    def __init__(self, model, make):
        self.params = [p for p in model.parameters()]
        self.masters = [p.detach().float().requires_grad_() for p in self.params]
        self.optimizer = make(self.masters)

    @property
    def state(self):
        return self.optimizer.state

    def step(self):
        for p, master in zip(self.params, self.masters):
            master.grad = p.grad.float() if p.grad is not None else None
        self.optimizer.step()
        with torch.no_grad():
            for p, master in zip(self.params, self.masters):
                p.copy_(master)


def make_optimizer(model, setting: Setting):
    """The optimizer of ``setting`` (None for ``none``), over fp32 masters below fp32."""
    # NB: the state is the same either way; on the meta device the per-tensor update is the
    # faster one (its ops repeat layer after layer and are replayed, see metashapes), elsewhere
    # the foreach one.
    foreach = next(model.parameters()).device.type != "meta"
    makers = {"adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-4, foreach=foreach),
              "sgd": lambda ps: torch.optim.SGD(ps, lr=1e-4, momentum=0.9, foreach=foreach)}
    if setting.optimizer == "none":
        return None
    make = makers[setting.optimizer]
    return MasterWeights(model, make) if setting.reduced else make(list(model.parameters()))


def optimizer_bytes(optimizer) -> int:
    """Bytes of every tensor in ``optimizer.state``, and of the master copy if any."""
    if optimizer is None:
        return 0
    state = sum(t.nbytes for s in optimizer.state.values() for t in s.values()
                if isinstance(t, torch.Tensor))
    return state + sum(m.nbytes for m in getattr(optimizer, "masters", []))


def measure_decoding(model, dims, device) -> dict[str, int]:
    """Prefill ``seq_len − 1`` tokens, decode the token at position ``seq_len − 1`` under
    FlopCounterMode: its matmul FLOPs, and the cache's bytes (``seq_len`` tokens) after it."""
    idx, _ = random_batch(dims, device)
    cache = KVCache()
    with torch.no_grad(), replay_shapes(device):
        model(idx[:, :-1], cache=cache)
        with flop_counter() as counter:
            model(idx[:, -1:], cache=cache)
    return {"decode_flops_per_token": counter.get_total_flops(), "kv_cache": cache.nbytes()}


def check_memory(variant, setting: Setting = Setting(), dims: dict | None = None, *,
                 preset: str = DEFAULT_PRESET, device: str = "meta", seed: int = 0, model=None,
                 step: TrainingStep | None = None, **overrides):
    """Build ``variant`` in ``setting``'s dtype and compare every measured memory figure with the
    prediction (data parallel and ZeRO are not simulated: a single rank is measured).

    ``model``: that model already built (on ``device``, with ``seed``, in the dtype), and
    ``step``: what :func:`measure_training` measured on it, when the caller has them."""
    graph, dims = resolve(variant, preset, dims, **overrides)
    setting = single_rank(setting)
    if model is None:
        model = build_model(graph, dims, device=device, seed=seed, dtype=TORCH_DTYPES[setting.dtype])
    step = step or measure_training(model, dims, setting, device)
    measured = {**step.measured, **measure_decoding(model, dims, device)}
    predicted = {**memory_expressions(graph, setting), **inference_expressions(graph, setting)}
    notes = {"activations": setting.describe(), "optimizer": setting.optimizer,
             "decode_flops_per_token": f"position {dims['seq_len'] - 1}",
             "kv_cache": f"{dims['seq_len']} tokens"}
    checks = []
    for key in (*MEMORY_KEYS[:-1], "decode_flops_per_token"):
        name = f"{'inference' if key.startswith('decode') else 'memory'}.{key}"
        value = evaluate(at_last_position(predicted[key]), dims, name)
        checks.append(Check(name, value, measured[key], value == measured[key], notes.get(key, "")))
    return checks
