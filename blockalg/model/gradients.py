"""Gradients at initialisation, layer by layer: the experiment of Xiong et al. 2020 (Fig. 3).

For each seed, the model built from the graph is initialised, one batch of random tokens with
random targets goes forward and backward, and per layer we record the Frobenius norm of the
gradient of every weight matrix and of the residual stream at the block's input (∂loss/∂x_l).

What theory expects (Xiong et al. 2020, Theorem 1 and Fig. 3): in post-LN the gradient norm of the
last layers' weights is large and shrinks toward the input layers (the norms on every path scale
the gradient per block), so it *grows toward the output*; in pre-LN it stays roughly flat across
layers (the identity paths carry it unchanged). The measured numbers are reported as they come.

>>> r = gradient_norms("pre-ln", preset="tiny", seeds=(0,))
>>> r.headline, len(r.weights["ffn.proj"]), len(r.weights["ffn.proj"][0])
('ffn.proj', 1, 2)
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from ..graphs.ops import get_op
from ..graphs.resolve import resolve

DEFAULT_PRESET = "tiny-deep"


@dataclass
class GradientNorms:
    """Per-seed, per-layer gradient norms of one variant."""

    name: str
    dims: dict
    seeds: tuple[int, ...]
    weights: dict[str, list[list[float]]]  # leaf matrix ("attn.qkv") -> [seed][layer]
    residual: list[list[float]]  # [seed][layer]: ‖∂loss/∂x_l‖ at block l's input
    losses: list[float]
    init_std: float = 0.02
    residual_scaling: bool = True
    ffn_outputs: tuple[str, ...] = ()
    stream: list[list[float]] = field(default_factory=list)  # [seed][layer]: RMS of x_l
    init: str | None = None  # the scheme, when not the graph's own

    def mean(self, series: list[list[float]]) -> list[float]:
        return [statistics.fmean(column) for column in zip(*series)]

    def std(self, series: list[list[float]]) -> list[float]:
        return [statistics.pstdev(column) for column in zip(*series)]

    @property
    def headline(self) -> str:
        """The leaf to plot: the FFN's output projection (W2), else the last matrix."""
        return next((leaf for leaf in self.weights if leaf in self.ffn_outputs), list(self.weights)[-1])

    def trend(self, series: list[list[float]]) -> float | None:
        """Mean over seeds of last layer / first layer: > 1 grows toward the output (None when
        the first layer's gradient is exactly 0, as in ReZero at init)."""
        ratios = [run[-1] / run[0] for run in series if run[0] != 0]
        return statistics.fmean(ratios) if ratios else None

    def to_dict(self) -> dict:
        return {"name": self.name, "seeds": list(self.seeds), "init": self.init,
                "init_std": self.init_std,
                "residual_scaling": self.residual_scaling, "ffn_outputs": list(self.ffn_outputs),
                "losses": self.losses,
                "weights": {leaf: {"per_seed": s, "mean": self.mean(s), "std": self.std(s),
                                   "last_over_first": self.trend(s)}
                            for leaf, s in self.weights.items()},
                "residual": {"per_seed": self.residual, "mean": self.mean(self.residual),
                             "std": self.std(self.residual),
                             "last_over_first": self.trend(self.residual)},
                "stream_rms": {"per_seed": self.stream, "mean": self.mean(self.stream)}}

    @classmethod
    def from_dict(cls, data: dict, dims: dict) -> GradientNorms:
        """The result back from :meth:`to_dict` (what a report's ``data.json`` holds)."""
        return cls(data["name"], dims, tuple(data["seeds"]),
                   {leaf: entry["per_seed"] for leaf, entry in data["weights"].items()},
                   data["residual"]["per_seed"], data["losses"], data["init_std"],
                   data["residual_scaling"], tuple(data.get("ffn_outputs", ())),
                   data.get("stream_rms", {}).get("per_seed", []), data.get("init"))


def gradient_norms(variant, dims: dict | None = None, *, preset: str = DEFAULT_PRESET,
                   seeds=(0, 1, 2), batch: int = 8, device: str = "cpu", init_std: float = 0.02,
                   residual_scaling: bool = True, init: str | None = None,
                   **overrides) -> GradientNorms:
    """Measure per-layer gradient norms at init of ``variant`` over ``seeds`` (``init_std``: the
    std of the weight init, GPT-2's 0.02 by default; ``residual_scaling``: GPT-2's 1/sqrt(2L) on
    residual projections; ``init``: another scheme than the graph's, e.g. ``"xiong"``, the
    setting of Xiong et al. 2020's Theorem 1, where those two do not apply)."""
    from .build import check_buildable, out_of_memory_is_bad_input

    graph, dims = resolve(variant, preset, dims, **overrides)
    check_buildable(graph, dims, batch)
    with out_of_memory_is_bad_input(device):
        return _measure(graph, dims, seeds, batch, device, init_std, residual_scaling, init)


def _measure(graph, dims, seeds, batch, device, init_std, residual_scaling, init) -> GradientNorms:
    from .build import build_model

    weights, residual, losses, stream = {}, [], [], []
    for seed in seeds:
        model = build_model(graph, dims, device=device, seed=seed, init_std=init_std,
                            residual_scaling=residual_scaling, init=init)
        inputs = []

        def keep_input(module, args):
            args[0].retain_grad()
            inputs.append(args[0])

        handles = [block.register_forward_pre_hook(keep_input) for block in model.blocks]
        _, loss = model(*random_batch(dims, batch, seed, device))
        loss.backward()
        for handle in handles:
            handle.remove()
        losses.append(float(loss.detach()))
        residual.append([float(x.grad.norm()) for x in inputs])
        stream.append([float(x.detach().pow(2).mean().sqrt()) for x in inputs])
        ffn_outputs = tuple(ffn_output_projections(model.blocks[0]))
        for leaf, norms in layer_weight_norms(model).items():
            weights.setdefault(leaf, []).append(norms)
    return GradientNorms(graph.graph["name"], dims, tuple(seeds), weights, residual, losses, init_std,
                         residual_scaling, ffn_outputs, stream, init)


def random_batch(dims: dict, batch: int, seed: int, device: str = "cpu"):
    """The tokens and targets of seed ``seed``: uniform over the vocabulary, batch × seq_len."""
    import torch

    generator = torch.Generator().manual_seed(10_000 + seed)
    return tuple(torch.randint(0, dims["vocab"], (batch, dims["seq_len"]), generator=generator)
                 .to(device) for _ in range(2))


def layer_weight_norms(model) -> dict[str, list[float]]:
    """‖∇W‖_F of every weight matrix of every block, per leaf (``ffn.proj``), in layer order."""
    per_leaf = {}
    for layer in model.blocks:
        for name, p in layer.named_parameters():
            if p.dim() >= 2:
                per_leaf.setdefault(name.removesuffix(".weight"), []).append(float(p.grad.norm()))
    return per_leaf


def ffn_output_projections(block):
    """The leaves of ``block`` that are an FFN's output projection (its W2, the matrix Xiong et al.
    plot), as each registered module names it."""
    for node, module in block.named_children():
        if get_op(module.kind).component == "ffn" and module.output_projection:
            yield f"{node}.{module.output_projection}"
