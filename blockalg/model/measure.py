"""What every empirical check shares: the :class:`Check` record, a ``FlopCounterMode`` that
counts torch's fused CPU attention kernel, and the random batch a check runs on. Imports torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

aten = torch.ops.aten


@dataclass
class Check:
    """One comparison of a predicted with a measured number."""

    name: str
    predicted: int | float
    measured: int | float
    ok: bool
    detail: str = ""

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "detail" or v}


def flop_counter():
    """A ``FlopCounterMode`` that also counts torch's fused CPU attention kernel and its backward."""
    from torch.utils.flop_counter import (
        FlopCounterMode,
        sdpa_backward_flop_count,
        sdpa_flop_count,
    )

    def forward(query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_backward_flop_count(grad_out, query, key, value)

    return FlopCounterMode(display=False, custom_mapping={
        aten._scaled_dot_product_flash_attention_for_cpu: forward,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: backward})


def random_batch(dims, device, seed: int = 0):
    """Token ids and targets, ``batch`` × ``seq_len``, drawn on the CPU and moved to ``device``."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return [torch.randint(0, dims["vocab"], (dims["batch"], dims["seq_len"]), generator=generator).to(device)
            for _ in range(2)]
