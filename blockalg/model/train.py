"""Training the variants: a language model built from each block graph, trained with AdamW.

One run is one variant at one learning rate, warm-up and seed (:class:`RunConfig`); a sweep is
the product variants × learning rates × warm-ups × seeds (:func:`sweep_runs`), run in order in one
process, sharded across the ranks of a ``torchrun`` job, or with each run data-parallel across the
ranks (:func:`run_sweep`). Every run is fully determined by its seed (``torch.manual_seed`` for the
initialisation, its own ``torch.Generator`` for the batches), so a sharded sweep gives the numbers
of the single-process sweep.

The recipe, kept simple on purpose:

* **Data** (:func:`load_corpus`). ``text``: the English text of CPython's ``pydoc_data.topics``
  (the values in sorted key order, ~466 KB of UTF-8) as bytes, vocab 256; the first 90 % trains,
  the last 10 % validates. ``synthetic``: a first-order Markov chain over a small vocab (32 by
  default) whose next token is a fixed successor with probability 0.9 and uniform otherwise: a
  bigram model reaches its entropy floor (:func:`markov_floor`) quickly.
* **Batches**: ``batch`` windows of ``seq_len + 1`` tokens at uniform random offsets of the
  training split, drawn from a generator seeded with the run's seed; the next token is the target.
  Validation uses fixed, evenly spaced windows of the validation split (the same for every run).
* **Optimiser**: AdamW, betas (0.9, 0.95), weight decay 0.1 on matrices (parameters with two or
  more dimensions) except the embedding tables (and the unembedding tied to them); no decay on
  norm gains, biases, scales and embeddings (:func:`parameter_groups`).
* **Schedule** (:func:`learning_rate`): linear warm-up from lr/warmup to lr over ``warmup`` steps,
  then constant or cosine down to 10 % of lr at the last step. Gradient clipping is off unless
  ``clip`` is given; the recorded gradient norm is always the total norm before clipping.
* **Precision**: float32, or bfloat16 autocast over float32 weights (``dtype="bfloat16"``).
* **Divergence**: a non-finite loss or gradient norm, or a loss above ``max_loss`` (default
  2·ln(vocab) + 5: a uniform guess scores ln(vocab), so this is far beyond anything a training
  model produces), ends the run with status ``"diverged"`` at that step; the sweep goes on.

>>> from blockalg.graphs.presets import resolve_dims
>>> config = RunConfig(lr=3e-3, warmup=10, steps=20, batch=4, data="synthetic", eval_every=10)
>>> result = train_run("pre-ln", resolve_dims("tiny", {"vocab": 32, "n_ctx": 16}), config)
>>> result["status"], len(result["steps"]), [e["step"] for e in result["eval"]]
('ok', 20, [0, 10, 20])
>>> result["eval"][-1]["val_loss"] < result["eval"][0]["val_loss"]
True
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from dataclasses import asdict, dataclass, replace

from ..errors import BlockalgError
from ..graphs.resolve import resolve_graph
from .data import DATASETS, eval_windows, load_corpus, sample_batch
from .distributed import World

SCHEDULES = ("cosine", "constant")
DTYPES = ("float32", "bfloat16")
DEVICES = ("cpu", "cuda")
MIN_LR_RATIO = 0.1  # the cosine schedule ends at 10 % of the peak
BETAS = (0.9, 0.95)
#: Fields of a run's record that measure the machine, not the run (excluded from equality checks).
TIMING_FIELDS = ("tokens_per_s", "mfu")

#: Dense peak FLOP/s per GPU (vendor datasheets, no sparsity) by a substring of
#: ``torch.cuda.get_device_name``, first match wins. float32 is the non-tensor-core rate: blockalg
#: leaves ``torch.backends.cuda.matmul.allow_tf32`` at its default (off).
PEAK_FLOPS = (
    ("H100 PCIe", {"bfloat16": 756e12, "float32": 51e12}),
    ("H100", {"bfloat16": 989e12, "float32": 67e12}),  # SXM
    ("H200", {"bfloat16": 989e12, "float32": 67e12}),
    ("A100", {"bfloat16": 312e12, "float32": 19.5e12}),
)


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one training run except the graph and its dimensions.

    >>> RunConfig(lr=1e-3, steps=0)
    Traceback (most recent call last):
    ...
    blockalg.errors.BlockalgError: steps = 0: must be a positive integer
    """

    lr: float
    warmup: int = 0
    seed: int = 0
    steps: int = 200
    batch: int = 16
    schedule: str = "cosine"
    clip: float | None = None
    weight_decay: float = 0.1
    eval_every: int = 50
    eval_batches: int = 8
    max_loss: float | None = None  # None: 2·ln(vocab) + 5
    data: str = "text"
    device: str = "cpu"
    dtype: str = "float32"
    compile: bool = False

    def __post_init__(self):
        for name in ("steps", "batch", "eval_every", "eval_batches"):
            _require(name, getattr(self, name), lambda v: type(v) is int and v > 0,
                     "must be a positive integer")
        _require("warmup", self.warmup, lambda v: type(v) is int and v >= 0,
                 "must be a non-negative integer")
        _require("seed", self.seed, lambda v: type(v) is int and v >= 0,
                 "must be a non-negative integer")
        for name in ("lr", "clip", "max_loss"):
            _require(name, getattr(self, name), lambda v: v is None and name != "lr" or
                     isinstance(v, (int, float)) and math.isfinite(v) and v > 0,
                     "must be a positive number")
        _require("weight_decay", self.weight_decay, lambda v: math.isfinite(v) and v >= 0,
                 "must be a non-negative number")
        for name, allowed in (("schedule", SCHEDULES), ("data", DATASETS), ("dtype", DTYPES),
                              ("device", DEVICES)):
            _require(name, getattr(self, name), lambda v: v in allowed,
                     f"must be one of {', '.join(allowed)}")


def _require(name, value, ok, what: str) -> None:
    if not ok(value):
        raise BlockalgError(f"{name} = {value!r}: {what}")


@dataclass(frozen=True)
class Run:
    """One run of a sweep: its position, the index of its graph in the sweep's list, and config."""

    index: int
    variant: int
    name: str
    config: RunConfig

    def __str__(self) -> str:
        c = self.config
        return f"{self.name} lr={c.lr:g} warmup={c.warmup} seed={c.seed}"


def sweep_runs(names, lrs, warmups, seeds, base: RunConfig) -> list[Run]:
    """The runs of a sweep in order: variants × learning rates × warm-ups × seeds.

    >>> [str(r) for r in sweep_runs(["pre-ln"], [1e-3, 1e-2], [0], [0, 1], RunConfig(lr=1))]
    ['pre-ln lr=0.001 warmup=0 seed=0', 'pre-ln lr=0.001 warmup=0 seed=1', 'pre-ln lr=0.01 warmup=0 seed=0', 'pre-ln lr=0.01 warmup=0 seed=1']
    """
    grid = itertools.product(enumerate(names), lrs, warmups, seeds)
    return [Run(i, v, name, replace(base, lr=lr, warmup=warmup, seed=seed))
            for i, ((v, name), lr, warmup, seed) in enumerate(grid)]


def divergence_bound(vocab: int, max_loss: float | None = None) -> float:
    """The loss above which a run counts as diverged: ``max_loss``, else 2·ln(vocab) + 5.

    >>> round(divergence_bound(256), 3)
    16.09
    """
    return max_loss if max_loss is not None else 2 * math.log(vocab) + 5


def parameter_groups(model, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: decay on matrices (≥ 2 dimensions) except embedding tables (and
    an unembedding tied to one); none on norm gains, biases, scales and embeddings.

    >>> from blockalg import build_model
    >>> groups = parameter_groups(build_model("pre-ln", preset="tiny", device="meta"), 0.1)
    >>> [len(g["params"]) for g in groups]  # 4 matrices × 2 blocks; 2 embeddings + 18 vectors
    [8, 20]
    """
    from torch import nn

    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, rest = [], []
    for p in model.parameters():
        (decay if p.dim() >= 2 and id(p) not in tables else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def learning_rate(step: int, config: RunConfig) -> float:
    """The learning rate of update ``step`` (0-based): linear warm-up, then cosine or constant.

    >>> c = RunConfig(lr=1.0, warmup=2, steps=6)
    >>> [round(learning_rate(s, c), 3) for s in range(6)]
    [0.5, 1.0, 1.0, 0.775, 0.325, 0.1]
    """
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    if config.schedule == "constant":
        return config.lr
    span = config.steps - 1 - config.warmup
    progress = (step - config.warmup) / span if span > 0 else 1.0
    return config.lr * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress)))


def run_sweep(graphs, dims: dict, runs: list[Run], *, world: World = World(), ddp: bool = False,
              on_step=None) -> list[dict]:
    """Train ``runs`` (graphs by index); returns every result on rank 0, ``[]`` on other ranks.

    Alone: in order. In a job: runs dealt round-robin to the ranks by index and gathered to
    rank 0, or with ``ddp`` every run trained by all ranks together. ``on_step(n)`` is called
    as this rank's runs advance by ``n`` steps (a progress bar; :func:`my_runs` tells how many).
    """
    results = [train_run(graphs[run.variant], dims, run.config, world=world, ddp=ddp,
                         index=run.index, on_step=on_step) for run in my_runs(runs, world, ddp)]
    if world.size == 1 or ddp:
        return results if world.rank == 0 else []
    import torch.distributed as dist

    gathered = [None] * world.size if world.rank == 0 else None
    dist.gather_object(results, gathered, dst=0)
    if world.rank != 0:
        return []
    return sorted((r for part in gathered for r in part), key=lambda r: r["index"])


def my_runs(runs: list[Run], world: World, ddp: bool = False) -> list[Run]:
    """The runs this rank trains: all of them with ``ddp``, else every ``world.size``-th."""
    return runs if ddp else runs[world.rank::world.size]


# ---------------------------------------------------------------------------------------------
# One run.


class _Clock:
    """Wall time of the counted training steps (CUDA synchronised at both ends)."""

    def __init__(self, device: str):
        self.device, self.seconds, self.steps, self.started = device, 0.0, 0, 0.0

    def _sync(self):
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    def start(self):
        self._sync()
        self.started = time.perf_counter()

    def stop(self, count: bool):
        """End a step; add it to the total if ``count`` (the first of several is warm-up)."""
        self._sync()
        if count:
            self.seconds += time.perf_counter() - self.started
            self.steps += 1


def train_run(variant, dims: dict, config: RunConfig, *, world: World = World(), ddp: bool = False,
              index: int = 0, on_step=None) -> dict:
    """Train the model of ``variant`` (a name, file or graph) at ``dims`` (its vocab must match
    the data: see :func:`data_dims`) under ``config``. Returns the run's record:

    * ``index``, ``variant``, ``lr``, ``warmup``, ``seed``: which run;
    * ``status`` (``"ok"`` or ``"diverged"``) and ``diverged_at`` (the step, or None);
    * ``steps``: per update ``{"step", "loss", "grad_norm", "lr"}``, the loss of the batch
      before the update and the gradient's total norm before clipping (None if not finite);
    * ``eval``: ``{"step", "val_loss"}`` after 0, ``eval_every``, 2·``eval_every``... updates
      and after the last; ``final_val_loss`` is the last one (None if the run diverged);
    * ``layer_grad_norms``: step (a string) → per block, the norm of all its parameters'
      gradients, at step 0 and every ``eval_every`` steps;
    * ``tokens_per_s`` (training steps after the first, evaluation excluded) and ``mfu``
      (model FLOPs utilisation, only on a GPU of :data:`PEAK_FLOPS`; else None).

    ``on_step(n)`` is called after every step with ``n = 1`` (and once with the steps left
    when the run ends early), for a progress bar.
    """
    import torch

    from .build import build_model, check_buildable

    check_device(config.device)
    graph = resolve_graph(variant)
    corpus = load_corpus(config.data, dims["vocab"])
    if corpus.vocab != dims["vocab"]:
        raise BlockalgError(f"vocab = {dims['vocab']}: the {config.data} data needs "
                            f"{corpus.vocab} (see data_dims)")
    device = world.device(config.device)
    parallel = ddp and world.size > 1
    check_buildable(graph, dims, config.batch)
    model = build_model(graph, dims, device=device, seed=config.seed)
    trained = _wrap(model, config, world, parallel)
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.lr,
                                  betas=BETAS)
    batches = torch.Generator().manual_seed(config.seed * world.size + world.rank if parallel
                                            else config.seed)
    val = [w.to(device) for w in eval_windows(corpus.val, config.batch * config.eval_batches,
                                              dims["seq_len"])]
    bound = divergence_bound(dims["vocab"], config.max_loss)
    record = {"index": index, "variant": graph.graph.get("name", "?"), "lr": config.lr,
              "warmup": config.warmup, "seed": config.seed, "status": "ok", "diverged_at": None,
              "steps": [], "eval": [], "layer_grad_norms": {}, "final_val_loss": None,
              "tokens_per_s": None, "mfu": None}
    clock = _Clock(device)
    for step in range(config.steps + 1):
        if step % config.eval_every == 0 or step == config.steps:
            _evaluate(model, val, config, record, step, bound)
        if step == config.steps or record["status"] != "ok":
            break
        clock.start()
        x, y = (t.to(device) for t in sample_batch(corpus.train, config.batch, dims["seq_len"],
                                                   batches))
        _step(trained, model, optimizer, x, y, config, step, record, bound, parallel)
        if on_step:
            on_step(1)
        if record["status"] != "ok":
            break
        clock.stop(count=step > 0 or config.steps == 1)  # step 0: compilation, allocator warm-up
    if on_step and len(record["steps"]) < config.steps:  # ended early: the bar still completes
        on_step(config.steps - len(record["steps"]))
    if record["status"] == "ok":
        record["final_val_loss"] = record["eval"][-1]["val_loss"]
    _throughput(record, graph, dims, config, clock, world.size if parallel else 1)
    return record


def check_device(device: str) -> None:
    """A one-line error when ``device`` is ``cuda`` and there is no GPU."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise BlockalgError("device cuda: CUDA is not available on this machine")


def _wrap(model, config, world, parallel):
    """The module that trains: DDP across the ranks when ``parallel``, compiled with ``compile``."""
    trained = model
    if parallel:
        from torch.nn.parallel import DistributedDataParallel

        ids = [world.local_rank] if config.device == "cuda" else None
        trained = DistributedDataParallel(model, device_ids=ids)
    if config.compile:
        import torch

        trained = torch.compile(trained)
    return trained


def _autocast(config, device):
    import torch

    if config.dtype == "bfloat16":
        return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _step(trained, model, optimizer, x, y, config, step, record, bound, parallel):
    """One update: forward, divergence check, backward, gradient norms, clip, AdamW step."""
    import torch

    lr = learning_rate(step, config)
    with _autocast(config, str(x.device)):
        _, loss = trained(x, y)
    value = _mean_over_ranks(loss.detach().float(), parallel)
    entry = {"step": step, "loss": _finite(value), "grad_norm": None, "lr": lr}
    record["steps"].append(entry)
    if _diverged(value, bound, record, step):
        return
    loss.backward()
    if step == 0 or step % config.eval_every == 0:
        record["layer_grad_norms"][str(step)] = layer_grad_norms(model)
    norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip or math.inf))
    entry["grad_norm"] = _finite(norm)
    if _diverged(norm, math.inf, record, step):
        return
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _mean_over_ranks(value, parallel: bool) -> float:
    """The loss averaged over the ranks of a DDP run (all ranks then take the same decisions)."""
    if parallel:
        import torch.distributed as dist

        value = value.clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return float(value)


def _diverged(value: float, bound: float, record: dict, step: int) -> bool:
    if math.isfinite(value) and value <= bound:
        return False
    record["status"], record["diverged_at"] = "diverged", step
    return True


def _finite(value: float) -> float | None:
    """``value``, or None for NaN/inf (JSON has no such numbers)."""
    return value if math.isfinite(value) else None


def _evaluate(model, val, config, record, step, bound):
    """Mean validation loss over the fixed windows, in chunks of ``batch``."""
    import torch

    x, y = val
    model.eval()
    with torch.no_grad(), _autocast(config, str(x.device)):
        losses = [float(model(xs, ys)[1].float()) for xs, ys in
                  zip(x.split(config.batch), y.split(config.batch))]
    model.train()
    value = sum(losses) / len(losses)
    record["eval"].append({"step": step, "val_loss": _finite(value)})
    _diverged(value, bound, record, step)


def layer_grad_norms(model) -> list[float]:
    """Per block: the Frobenius norm of all its parameters' gradients together."""
    import torch

    norms = []
    for block in model.blocks:
        grads = [p.grad.float().norm() for p in block.parameters() if p.grad is not None]
        norms.append(float(torch.stack(grads).norm()) if grads else 0.0)
    return norms


def _throughput(record, graph, dims, config, clock, ranks: int) -> None:
    if not clock.steps or clock.seconds <= 0:
        return
    tokens = clock.steps * config.batch * dims["seq_len"] * ranks
    record["tokens_per_s"] = tokens / clock.seconds
    peak = peak_flops(config.device, config.dtype)
    if peak is not None:
        per_step = step_flops(graph, dims, config.batch) * ranks
        record["mfu"] = per_step * clock.steps / clock.seconds / (peak * ranks)


def step_flops(graph, dims: dict, batch: int) -> int:
    """Matmul FLOPs of one training step (forward + backward) from blockalg's own formulas.

    >>> from blockalg.graphs.presets import resolve_dims
    >>> step_flops("pre-ln", resolve_dims("tiny"), 2)  # 2 × (18,874,368 + 37,748,736)
    113246208
    """
    from ..analysis.analyze import analyze

    values = analyze(graph, dims=dims).values
    return (values["flops.forward_matmul"] + values["flops.backward_matmul"]) * batch


def peak_flops(device: str, dtype: str, name: str | None = None) -> float | None:
    """Peak dense FLOP/s of this GPU at ``dtype`` where known (:data:`PEAK_FLOPS`), else None.

    >>> peak_flops("cuda", "bfloat16", name="NVIDIA H100 80GB HBM3")
    989000000000000.0
    >>> peak_flops("cpu", "float32") is None
    True
    """
    if not device.startswith("cuda"):
        return None
    if name is None:
        import torch

        name = torch.cuda.get_device_name()
    return next((peaks[dtype] for key, peaks in PEAK_FLOPS if key in name), None)


def comparable(run: dict) -> dict:
    """A run's record without the machine-dependent fields (:data:`TIMING_FIELDS`)."""
    return {k: v for k, v in run.items() if k not in TIMING_FIELDS}


def config_summary(base: RunConfig, world: World, ddp: bool) -> dict:
    """The sweep-wide settings recorded next to the runs."""
    fields = {k: v for k, v in asdict(base).items() if k not in ("lr", "warmup", "seed")}
    return {**fields, "world_size": world.size, "mode": "ddp" if ddp and world.size > 1 else
            "sharded" if world.size > 1 else "single"}
