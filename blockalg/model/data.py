"""Training data: CPython's English documentation as bytes, or a synthetic Markov chain.

* ``text``: the English text of CPython's ``pydoc_data.topics`` (the values in sorted key order,
  ~466 KB of UTF-8) as bytes, vocab 256; the first 90 % trains, the last 10 % validates.
* ``synthetic``: a first-order Markov chain over a small vocab (32 by default) whose next token is
  a fixed successor with probability 0.9 and uniform otherwise: a bigram model reaches its entropy
  floor (:func:`markov_floor`) quickly.

Batches are ``batch`` windows of ``seq_len + 1`` tokens at uniform random offsets of the training
split (:func:`sample_batch`); validation uses fixed, evenly spaced windows (:func:`eval_windows`).

>>> round(markov_floor(32), 4)  # -(0.903 ln 0.903 + 31 · 0.003125 ln 0.003125)
0.6508
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from ..errors import BlockalgError
from ..graphs.presets import resolve_dims

DATASETS = ("text", "synthetic")
TEXT_VOCAB = 256  # byte-level
SYNTHETIC_VOCAB = 32
SYNTHETIC_TOKENS = 1 << 17
SYNTHETIC_P = 0.9  # probability of the fixed successor in the synthetic chain
VAL_FRACTION = 0.1


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
        raise BlockalgError(f"unknown data {data!r} (known: {', '.join(DATASETS)})")
    return resolve_dims(dims, {"vocab": vocab})


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
