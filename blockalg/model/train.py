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

>>> config = RunConfig(lr=3e-3, warmup=10, steps=20, batch=4, data="synthetic", eval_every=10)
>>> result = train_run("pre-ln", resolve_dims("tiny", {"vocab": 32, "n_ctx": 16}), config)
>>> result["status"], len(result["steps"]), [e["step"] for e in result["eval"]]
('ok', 20, [0, 10, 20])
>>> result["eval"][-1]["val_loss"] < result["eval"][0]["val_loss"]
True
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import itertools
import math
import os
import time
from dataclasses import asdict, dataclass, replace

import networkx as nx

from ..errors import BlockalgError
from ..graphs.presets import resolve_dims
from ..graphs.variants import get

DATASETS = ("text", "synthetic")
SCHEDULES = ("cosine", "constant")
DTYPES = ("float32", "bfloat16")
DEVICES = ("cpu", "cuda")
TEXT_VOCAB = 256  # byte-level
SYNTHETIC_VOCAB = 32
SYNTHETIC_TOKENS = 1 << 17
SYNTHETIC_P = 0.9  # probability of the fixed successor in the synthetic chain
VAL_FRACTION = 0.1
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


def data_dims(dims: dict, data: str, vocab: int | None = None) -> dict:
    """``dims`` with the vocabulary the data needs: 256 for ``text`` (bytes; any other explicit
    ``vocab`` is an error), ``vocab`` or 32 for ``synthetic``.

    >>> data_dims(resolve_dims("tiny"), "text")["vocab"]
    256
    """
    if data == "text":
        if vocab not in (None, TEXT_VOCAB):
            raise BlockalgError(f"vocab = {vocab}: --data text is byte-level, its vocab is "
                                f"{TEXT_VOCAB}")
        vocab = TEXT_VOCAB
    elif data == "synthetic":
        vocab = vocab or SYNTHETIC_VOCAB
        if vocab < 2:
            raise BlockalgError(f"vocab = {vocab}: the synthetic chain needs at least 2 tokens")
    else:
        raise BlockalgError(f"unknown data '{data}' (known: {', '.join(DATASETS)})")
    return resolve_dims(dims, {"vocab": vocab})


def divergence_bound(vocab: int, max_loss: float | None = None) -> float:
    """The loss above which a run counts as diverged: ``max_loss``, else 2·ln(vocab) + 5.

    >>> round(divergence_bound(256), 3)
    16.09
    """
    return max_loss if max_loss is not None else 2 * math.log(vocab) + 5


# ---------------------------------------------------------------------------------------------
# Data.


@dataclass(frozen=True)
class Corpus:
    """A token stream split into training and validation parts (1-D int64 tensors)."""

    name: str
    vocab: int
    train: object
    val: object
    floor: float | None = None  # the lowest achievable loss, where known


@functools.lru_cache(maxsize=4)
def load_corpus(name: str, vocab: int = TEXT_VOCAB) -> Corpus:
    """The ``text`` or ``synthetic`` corpus (cached per process; see the module docstring).

    >>> c = load_corpus("text")
    >>> c.vocab, round(len(c.val) / (len(c.train) + len(c.val)), 3)
    (256, 0.1)
    """
    import torch

    if name == "text":
        tokens = torch.tensor(list(topics_text().encode("utf-8")), dtype=torch.long)
        floor = None
    else:
        tokens = markov_tokens(vocab)
        floor = markov_floor(vocab)
    cut = int(len(tokens) * (1 - VAL_FRACTION))
    return Corpus(name, vocab, tokens[:cut], tokens[cut:], floor)


def topics_text() -> str:
    """CPython's pydoc topics (the help() pages of the language reference), one string."""
    from pydoc_data.topics import topics

    return "".join(topics[key] for key in sorted(topics))


def markov_tokens(vocab: int, length: int = SYNTHETIC_TOKENS, p: float = SYNTHETIC_P):
    """A fixed (seed 0) chain: the next token is ``successor[token]`` with probability ``p``,
    else uniform over the vocab."""
    import torch

    g = torch.Generator().manual_seed(0)
    successor = torch.randperm(vocab, generator=g).tolist()
    jumps = (torch.rand(length, generator=g) >= p).tolist()
    uniform = torch.randint(0, vocab, (length,), generator=g).tolist()
    tokens, token = [], 0
    for jump, u in zip(jumps, uniform):
        token = u if jump else successor[token]
        tokens.append(token)
    return torch.tensor(tokens, dtype=torch.long)


def markov_floor(vocab: int, p: float = SYNTHETIC_P) -> float:
    """The entropy (nats per token) of the synthetic chain's next token: the best possible loss.

    >>> round(markov_floor(32), 4)
    0.6508
    """
    hit, miss = p + (1 - p) / vocab, (1 - p) / vocab
    return -(hit * math.log(hit) + (vocab - 1) * miss * math.log(miss))


def unigram_loss(corpus: Corpus) -> float:
    """Validation loss of the best model that ignores context: the training split's token
    frequencies (add-one smoothed). A run that ends near it has learnt nothing but frequencies.

    >>> round(unigram_loss(load_corpus("text")), 3)
    3.247
    """
    import torch

    counts = torch.bincount(corpus.train, minlength=corpus.vocab).double() + 1
    return float(-(counts / counts.sum()).log()[corpus.val].mean())


def data_summary(data: str, vocab: int) -> dict:
    """The data of a sweep in numbers: split sizes and the reference losses (uniform guess,
    unigram frequencies, the entropy floor where known)."""
    corpus = load_corpus(data, vocab)
    return {"name": data, "vocab": vocab, "train_tokens": len(corpus.train),
            "val_tokens": len(corpus.val), "uniform_loss": math.log(vocab),
            "unigram_val_loss": unigram_loss(corpus), "floor": corpus.floor}


def sample_batch(tokens, batch: int, seq_len: int, generator):
    """``batch`` random windows of ``tokens``: inputs and next-token targets, (batch, seq_len).

    >>> import torch
    >>> x, y = sample_batch(torch.arange(100), 2, 5, torch.Generator().manual_seed(0))
    >>> bool((y == x + 1).all()), tuple(x.shape)
    (True, (2, 5))
    """
    import torch

    starts = torch.randint(0, len(tokens) - seq_len, (batch,), generator=generator)
    windows = tokens[starts[:, None] + torch.arange(seq_len + 1)]
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


def eval_windows(tokens, count: int, seq_len: int):
    """``count`` evenly spaced windows of ``tokens`` (the same for every run), as inputs/targets."""
    import torch

    starts = torch.linspace(0, len(tokens) - seq_len - 1, count).long()
    windows = tokens[starts[:, None] + torch.arange(seq_len + 1)]
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


# ---------------------------------------------------------------------------------------------
# The optimiser and the schedule.


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


# ---------------------------------------------------------------------------------------------
# Processes: one, or the ranks of a torchrun job.


@dataclass(frozen=True)
class World:
    """This process's place in a ``torchrun`` job (rank 0 of 1 outside one)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    def device(self, kind: str) -> str:
        """The device this rank trains on: ``cpu``, or its own GPU (``cuda:<local rank>``)."""
        return f"cuda:{self.local_rank}" if kind == "cuda" else kind


def world_from_env(env=os.environ) -> World:
    """Rank, world size and local rank from torchrun's environment variables.

    >>> world_from_env({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})
    World(rank=1, size=2, local_rank=1)
    """
    return World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


@contextlib.contextmanager
def threads(count: int):
    """Run the block with ``count`` CPU threads (``torch.set_num_threads``), then restore the
    previous count. The arithmetic of a run depends on it: runs compared bit for bit across
    processes must use the same count (1 is also the fastest for these small models)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def process_group(world: World, device: str):
    """Join the job's process group (gloo on CPU, nccl on CUDA) for the block; nothing when alone."""
    if world.size == 1:
        yield world
        return
    import torch
    import torch.distributed as dist

    if device == "cuda":
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    try:
        yield world
        # NB: without this barrier a rank that finished sending (gather_object) could tear its
        # connections down while rank 0 still receives, and gloo aborts the job (seen here).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_sweep(graphs, dims: dict, runs: list[Run], *, world: World = World(), ddp: bool = False,
              wrap=contextlib.nullcontext) -> list[dict]:
    """Train ``runs`` (graphs by index); returns every result on rank 0, ``[]`` on other ranks.

    Alone: in order. In a job: runs dealt round-robin to the ranks by index and gathered to
    rank 0, or with ``ddp`` every run trained by all ranks together. ``wrap(items)`` is a context
    manager yielding the runs this rank trains (a progress bar).
    """
    mine = runs if ddp else runs[world.rank::world.size]
    with wrap(mine) as items:
        results = [train_run(graphs[run.variant], dims, run.config, world=world, ddp=ddp,
                             index=run.index) for run in items]
    if world.size == 1 or ddp:
        return results if world.rank == 0 else []
    import torch.distributed as dist

    gathered = [None] * world.size if world.rank == 0 else None
    dist.gather_object(results, gathered, dst=0)
    if world.rank != 0:
        return []
    return sorted((r for part in gathered for r in part), key=lambda r: r["index"])


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
              index: int = 0) -> dict:
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
    """
    import torch

    from .build import build_model

    check_device(config.device)
    graph = variant if isinstance(variant, nx.DiGraph) else get(variant)
    corpus = load_corpus(config.data, dims["vocab"])
    if corpus.vocab != dims["vocab"]:
        raise BlockalgError(f"vocab = {dims['vocab']}: the {config.data} data needs "
                            f"{corpus.vocab} (see data_dims)")
    device = world.device(config.device)
    parallel = ddp and world.size > 1
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
        if record["status"] != "ok":
            break
        clock.stop(count=step > 0 or config.steps == 1)  # step 0: compilation, allocator warm-up
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

    >>> step_flops(get("pre-ln"), resolve_dims("tiny"), 2)  # 2 × (18,874,368 + 37,748,736)
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


# ---------------------------------------------------------------------------------------------
# Results: a summary table, CSV, figures, the report folder.


def sig(x: float | None, digits: int = 4) -> float | None:
    """``x`` rounded to ``digits`` significant digits (None stays None).

    >>> sig(3.14159265)
    3.142
    """
    return None if x is None else float(f"{x:.{digits}g}")


def summary_table(runs: list[dict], title: str = "blockalg train"):
    """One row per run: variant, lr, warm-up, seed, status, final validation loss, tokens/s."""
    from ..output.render import Table

    rows = [[r["variant"], f"{r['lr']:g}", str(r["warmup"]), str(r["seed"]),
             r["status"] if r["status"] == "ok" else f"diverged@{r['diverged_at']}",
             _cell(r["final_val_loss"]), _cell(r["tokens_per_s"], 3)] for r in runs]
    return Table(title, ["variant", "lr", "warmup", "seed", "status", "final val loss",
                         "tokens/s"], rows, align="lrrrlrr")


def _cell(x, digits: int = 4) -> str:
    return "—" if x is None else f"{sig(x, digits):g}"


def records_csv(runs: list[dict], key: str, fields: tuple[str, ...]) -> str:
    """One CSV row per entry of ``run[key]`` (``steps`` or ``eval``), prefixed by the run's labels."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    labels = ("variant", "lr", "warmup", "seed")
    writer.writerow([*labels, *fields])
    for run in runs:
        for entry in run[key]:
            writer.writerow([run[k] for k in labels] + ["" if entry[f] is None else repr(entry[f])
                                                        for f in fields])
    return out.getvalue()


def loss_curves(runs: list[dict], title: str = "", ymax: float | None = None,
                baseline: float | None = None):
    """Training loss (lines) and validation loss (dots) per step: one panel per variant and
    warm-up, one colour per learning rate; a cross marks where a run diverged, a dashed grey
    line the ``baseline`` (e.g. the unigram loss)."""
    from ..output.plots import pyplot

    plt = pyplot()
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    warmups = sorted({r["warmup"] for r in runs})
    lrs = sorted({r["lr"] for r in runs})
    colors = {lr: plt.get_cmap("viridis")(i / max(1, len(lrs) - 1)) for i, lr in enumerate(lrs)}
    fig, axes = plt.subplots(len(warmups), len(variants), squeeze=False, sharex=True, sharey=True,
                             figsize=(3.6 * len(variants) + 1, 2.8 * len(warmups) + 0.6),
                             constrained_layout=True)
    first_seed = min(r["seed"] for r in runs)
    for r in runs:
        ax = axes[warmups.index(r["warmup"])][variants.index(r["variant"])]
        color = colors[r["lr"]]
        steps = [(e["step"], e["loss"]) for e in r["steps"] if e["loss"] is not None]
        if steps:
            ax.plot(*zip(*steps), color=color, lw=0.8, alpha=0.7,
                    label=f"lr {r['lr']:g}" if r["seed"] == first_seed else None)
        evals = [(e["step"], e["val_loss"]) for e in r["eval"] if e["val_loss"] is not None]
        if evals:
            ax.plot(*zip(*evals), "o", color=color, ms=3)
        if r["status"] == "diverged":
            y = ymax if ymax else steps[-1][1] if steps else 0.0
            ax.plot([r["diverged_at"]], [y], "x", color=color, ms=9, mew=2)
    for (i, wu), (j, v) in itertools.product(enumerate(warmups), enumerate(variants)):
        ax = axes[i][j]
        ax.set_title(f"{v}, warm-up {wu}", fontsize=9)
        _baseline(ax, baseline)
        if ymax:
            ax.set_ylim(top=ymax)
        if i == len(warmups) - 1:
            ax.set_xlabel("step")
        if j == 0:
            ax.set_ylabel("loss (nats/token)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title or "Training loss (lines) and validation loss (dots); × = diverged")
    return fig


def lr_sweep_figure(runs: list[dict], title: str = "", ymax: float | None = None,
                    baseline: float | None = None):
    """Final validation loss against learning rate (log): one line per variant and warm-up,
    mean over seeds, every seed a dot; a diverged seed is a cross at the top of the panel."""
    from ..output.plots import STYLES, pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    top = ymax or max((r["final_val_loss"] for r in runs if r["final_val_loss"] is not None),
                      default=1.0) * 1.05
    groups = {}
    for r in runs:
        groups.setdefault((r["variant"], r["warmup"]), []).append(r)
    for i, ((variant, warmup), members) in enumerate(groups.items()):
        marker, line = STYLES[i % len(STYLES)]
        lrs = sorted({r["lr"] for r in members})
        means = [_mean([r["final_val_loss"] for r in members if r["lr"] == lr]) for lr in lrs]
        shown = [(lr, m) for lr, m in zip(lrs, means) if m is not None]
        handle = ax.plot(*zip(*shown), marker=marker, linestyle=line,
                         label=f"{variant}, warm-up {warmup}")[0] if shown else None
        color = handle.get_color() if handle else None
        for r in members:
            y, symbol = (r["final_val_loss"], ".") if r["status"] == "ok" else (top, "x")
            ax.plot([r["lr"]], [y], symbol, color=color, ms=8 if symbol == "x" else 4)
    _baseline(ax, baseline)
    ax.set_xscale("log")
    ax.set_ylim(top=top)
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("final validation loss (nats/token)")
    ax.set_title(title or "Final validation loss against learning rate (× = diverged)")
    ax.legend(fontsize=7)
    return fig


def _baseline(ax, value: float | None) -> None:
    if value is not None:
        ax.axhline(value, color="grey", linestyle="--", lw=0.8, label="unigram baseline")


def _mean(values):
    """The mean of the values if none is None (a diverged seed spoils the mean), else None."""
    return None if not values or any(v is None for v in values) else sum(values) / len(values)


def sweep_report(result: dict, folder=None):
    """The files of a sweep: ``runs.json`` (the JSON output), ``runs.csv`` and ``tables/runs.*``
    (one row per run), ``steps.csv`` and ``eval.csv`` (every record), figures of the loss curves
    and of the final validation loss against the learning rate, and a README.md."""
    from ..output.report import ReportFolder

    folder = folder or ReportFolder()
    runs = result["runs"]
    ymax = divergence_bound(result["dims"]["vocab"]) if runs else None
    folder.add_json("runs.json", result)
    table = summary_table(runs)
    markdown = folder.add_table("tables/runs", table)
    folder.add_text("runs.csv", folder.files["tables/runs.csv"].decode())
    folder.add_text("steps.csv", records_csv(runs, "steps", ("step", "loss", "grad_norm", "lr")))
    folder.add_text("eval.csv", records_csv(runs, "eval", ("step", "val_loss")))
    data = result.get("data")
    unigram = data["unigram_val_loss"] if data else None
    curves = folder.add_figure("figures/loss_curves", loss_curves(runs, ymax=ymax, baseline=unigram))
    sweep = folder.add_figure("figures/lr_sweep", lr_sweep_figure(runs, baseline=unigram))
    config = ", ".join(f"{k} {v}" for k, v in result.get("config", {}).items())
    references = [f"Reference losses on the validation split: uniform {sig(data['uniform_loss']):g}, "
                  f"unigram frequencies {sig(data['unigram_val_loss']):g} nats/token.", ""] \
        if data else []
    folder.add_text("README.md", "\n".join([
        "# blockalg train", "", f"Preset {result.get('preset')}; {config}.", "",
        "Dimensions: " + ", ".join(f"{k} = {v}" for k, v in result["dims"].items()), "",
        *references, markdown, "", f"![loss curves]({curves})", "",
        f"![final loss against lr]({sweep})"]))
    return folder


def comparable(run: dict) -> dict:
    """A run's record without the machine-dependent fields (:data:`TIMING_FIELDS`)."""
    return {k: v for k, v in run.items() if k not in TIMING_FIELDS}


def config_summary(base: RunConfig, world: World, ddp: bool) -> dict:
    """The sweep-wide settings recorded next to the runs."""
    fields = {k: v for k, v in asdict(base).items() if k not in ("lr", "warmup", "seed")}
    return {**fields, "world_size": world.size, "mode": "ddp" if ddp and world.size > 1 else
            "sharded" if world.size > 1 else "single"}
