"""Does post-LN need learning-rate warm-up, and pre-LN not? (Xiong et al. 2020), at CPU scale.

    python analyses/warmup.py                  # writes reports/warmup/ (about 5 min on 2 cores)
    python analyses/warmup.py --quick --out /tmp/w   # seconds
    python analyses/warmup.py --gpu            # a larger size on a lent GPU: reports/warmup_gpu/

pre-LN, post-LN and hybrid-LN models built from the block graphs are trained on the byte-level
text of CPython's pydoc topics (``blockalg.model.train``) at a few peak learning rates, each with and
without a linear warm-up, over several seeds. The report tabulates the final validation loss per
variant × learning rate × warm-up, lists the divergences, draws the loss curves and states which
of the paper's claims the numbers reproduce at this scale and which they do not.

Every run is fully determined by its seed, so the committed numbers are what a rerun on the same
CPU and torch computes (one thread per process; floats rounded to 4 significant digits).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

from blockalg.graphs.presets import resolve_dims
from blockalg.model.data import data_dims, data_summary
from blockalg.model.distributed import threads
from blockalg.model.train import RunConfig, divergence_bound, sweep_runs, train_run
from blockalg.output.render import Table
from blockalg.output.report import ReportFolder, study_main
from blockalg.output.training import loss_curves, lr_sweep_figure, sig

VARIANTS = ("pre-ln", "post-ln", "hybrid-ln")
#: A difference in final validation loss below this (nats per byte) is read as no difference.
MARGIN = 0.02
#: A run ending less than this below the unigram baseline learnt nothing but byte frequencies.
STUCK = 0.05
#: A last/first gradient ratio further than this from 1 is a trend across layers.
GROWTH = 0.1
YMAX = 6.0  # loss axis of the figures: above ln 256 = 5.55, where every run starts


@dataclass(frozen=True)
class Scale:
    """One size of the study: the model, the sweep and the processes that run it."""

    label: str
    dims: dict
    lrs: tuple[float, ...]
    warmups: tuple[int, ...]
    seeds: tuple[int, ...]
    base: RunConfig
    workers: int = 1


def scale(mode: str) -> Scale:
    """The sizes: ``quick`` (CI, seconds), ``full`` (the committed CPU report), ``gpu``."""
    if mode == "quick":
        dims = resolve_dims("tiny", {"n_layers": 2, "n_ctx": 32})
        return Scale("quick", data_dims(dims, "text"), (1e-3, 1e-2), (0, 10), (0,),
                     RunConfig(lr=1e-3, steps=20, batch=8, eval_every=10))
    if mode == "gpu":
        dims = resolve_dims("tiny", {"d_model": 256, "n_heads": 8, "n_layers": 12, "n_ctx": 256,
                                     "d_ff": 1024})
        return Scale("gpu", data_dims(dims, "text"), (3e-4, 1e-3, 3e-3, 1e-2), (0, 400),
                     (0, 1, 2), RunConfig(lr=1e-3, steps=2000, batch=32, eval_every=200,
                                          device="cuda", dtype="bfloat16"))
    dims = resolve_dims("tiny", {"n_layers": 6})
    return Scale("full", data_dims(dims, "text"), (1e-3, 3e-3, 1e-2), (0, 100), (0, 1),
                 RunConfig(lr=1e-3, steps=300, batch=8, eval_every=50, eval_batches=16),
                 workers=2)


def run_all(s: Scale) -> list[dict]:
    """Every run of the sweep, in sweep order: in this process, or dealt to ``s.workers``
    one-thread worker processes (each run is determined by its seed, so the numbers are the same)."""
    runs = sweep_runs(VARIANTS, s.lrs, s.warmups, s.seeds, s.base)
    jobs = [(VARIANTS[r.variant], s.dims, r.config, r.index) for r in runs]
    if s.workers == 1:
        with threads(1):
            return [_report_progress(_train(job), len(jobs)) for job in jobs]
    with ProcessPoolExecutor(s.workers, mp_context=get_context("spawn"),
                             initializer=_one_thread) as pool:
        return [_report_progress(r, len(jobs)) for r in pool.map(_train, jobs)]


def _one_thread():
    import torch

    torch.set_num_threads(1)


def _train(job) -> dict:
    name, dims, config, index = job
    return train_run(name, dims, config, index=index)


def _report_progress(run: dict, total: int) -> dict:
    status = f"{run['final_val_loss']:.4g}" if run["status"] == "ok" else \
        f"diverged at step {run['diverged_at']}"
    print(f"[{run['index'] + 1}/{total}] {run['variant']} lr={run['lr']:g} "
          f"warmup={run['warmup']} seed={run['seed']}: {status}", file=sys.stderr)
    return run


# ---------------------------------------------------------------------------------------------
# Summaries of the runs.


@dataclass(frozen=True)
class Cell:
    """The seeds of one variant × lr × warm-up."""

    finals: tuple[float, ...]  # final validation losses of the seeds that finished
    diverged_at: tuple[int, ...]  # steps where the other seeds diverged
    unigram: float  # the unigram baseline: a run ending near it learnt nothing but frequencies

    @property
    def mean(self) -> float | None:
        """Mean final loss over seeds; None if any seed diverged."""
        return statistics.fmean(self.finals) if self.finals and not self.diverged_at else None

    @property
    def stuck(self) -> int:
        """Seeds that finished but learnt nothing beyond byte frequencies."""
        return sum(f >= self.unigram - STUCK for f in self.finals)

    @property
    def trained(self) -> bool:
        """Every seed finished clearly below the unigram baseline."""
        return not self.diverged_at and not self.stuck

    def failures(self) -> str:
        """How many seeds did not train, and how: "2 of 2 stuck", "1 of 2 diverged"."""
        n = len(self.finals) + len(self.diverged_at)
        parts = [f"{k} of {n} {what}" for k, what in ((self.stuck, "stuck"),
                                                       (len(self.diverged_at), "diverged")) if k]
        return ", ".join(parts)

    def show(self) -> str:
        """A table cell: mean ± half the range over seeds, a mark when stuck, or divergences."""
        if self.diverged_at:
            ok = f"; {len(self.finals)} ok" if self.finals else ""
            return f"diverged ×{len(self.diverged_at)} (step {min(self.diverged_at)}){ok}"
        spread = (max(self.finals) - min(self.finals)) / 2
        text = f"{sig(self.mean):g}" + (f" ± {sig(spread, 2):g}" if len(self.finals) > 1 else "")
        return text if self.trained else f"{text} ({self.failures()})"


def cells(runs: list[dict], unigram: float) -> dict:
    """(variant, lr, warm-up) → :class:`Cell`."""
    groups = {}
    for r in runs:
        groups.setdefault((r["variant"], r["lr"], r["warmup"]), []).append(r)
    return {key: Cell(tuple(r["final_val_loss"] for r in members if r["status"] == "ok"),
                      tuple(r["diverged_at"] for r in members if r["status"] == "diverged"),
                      unigram)
            for key, members in groups.items()}


def grid_table(s: Scale, title: str, value) -> Table:
    """Rows variant × warm-up, one column per learning rate; ``value(variant, lr, warm-up)``."""
    rows = [[v, str(w), *(value(v, lr, w) for lr in s.lrs)] for v in VARIANTS for w in s.warmups]
    return Table(title, ["variant", "warm-up", *(f"lr {lr:g}" for lr in s.lrs)], rows,
                 align="lr" + "r" * len(s.lrs))


def early_step(s: Scale) -> int:
    """The evaluation nearest the middle of the run: how far each run got in half the steps."""
    evals = [*range(0, s.base.steps, s.base.eval_every), s.base.steps]
    return min(evals, key=lambda step: (abs(step - s.base.steps / 2), step))


def val_at(runs: list[dict], key: tuple, step: int) -> float | None:
    """Mean validation loss at ``step`` over the seeds of ``key`` (None if a seed lacks it)."""
    losses = [next((e["val_loss"] for e in r["eval"] if e["step"] == step), None)
              for r in runs if (r["variant"], r["lr"], r["warmup"]) == key]
    return None if None in losses or not losses else statistics.fmean(losses)


def init_gradients(s: Scale, runs: list[dict]) -> dict:
    """Last layer / first layer at initialisation, per variant: the whole block's gradient norm on
    the first training batch (from the runs), and the FFN's W₂ alone (the matrix of Xiong et al.'s
    Fig. 3, from :func:`blockalg.model.gradients.gradient_norms` on random tokens, the study's seeds)."""
    from blockalg.graphs.variants import get
    from blockalg.model.gradients import gradient_norms

    out = {}
    for v in VARIANTS:
        firsts = [r["layer_grad_norms"]["0"] for r in runs if r["variant"] == v
                  and r["lr"] == s.lrs[0] and r["warmup"] == s.warmups[0]]
        w2 = gradient_norms(get(v), {**s.dims, "seq_len": min(s.dims["seq_len"], 64)},
                            seeds=s.seeds, device=s.base.device)
        per_layer = w2.mean(w2.weights[w2.headline])
        out[v] = {"block_first": statistics.fmean(n[0] for n in firsts),
                  "block_last": statistics.fmean(n[-1] for n in firsts),
                  "w2_first": per_layer[0], "w2_last": per_layer[-1],
                  "largest_first": largest_gradient(v, s)}
    return out


def largest_gradient(variant: str, s: Scale) -> list:
    """The parameter of block 1 with the largest gradient norm on the first training batch of
    seed ``s.seeds[0]`` (the batch its runs start with), and that norm."""
    import torch

    from blockalg import build_model
    from blockalg.model.data import load_corpus, sample_batch

    model = build_model(variant, s.dims, seed=s.seeds[0])
    x, y = sample_batch(load_corpus("text").train, s.base.batch, s.dims["seq_len"],
                        torch.Generator().manual_seed(s.seeds[0]))
    model(x, y)[1].backward()
    name, p = max(model.blocks[0].named_parameters(), key=lambda item: float(item[1].grad.norm()))
    return [name, float(p.grad.norm())]


def init_table(s: Scale, grads: dict) -> Table:
    """First and last layer: the whole block's gradient norm, W₂'s, and block 1's largest."""
    L = s.dims["n_layers"]
    rows = [[v, *(f"{sig(g[k]):g}" for k in ("block_first", "block_last")),
             f"{sig(g['block_last'] / g['block_first'], 3):g}",
             *(f"{sig(g[k]):g}" for k in ("w2_first", "w2_last")),
             f"{sig(g['w2_last'] / g['w2_first'], 3):g}",
             f"{g['largest_first'][0]} ({sig(g['largest_first'][1]):g})"] for v, g in grads.items()]
    return Table("Gradient norms at initialisation, first and last layer (mean over seeds; the "
                 "largest of block 1: seed 0's first batch)",
                 ["variant", "block 1", f"block {L}", "block last/first", "W2 layer 1",
                  f"W2 layer {L}", "W2 last/first", "largest in block 1"], rows)


# ---------------------------------------------------------------------------------------------
# The reading: each claim of the paper against these numbers.


def verdicts(s: Scale, table: dict, runs: list[dict], grads: dict) -> list[str]:
    """One bullet per claim of Xiong et al. (2020), written from the numbers."""
    return ["* **Post-LN needs warm-up.** " + _post_needs_warmup(s, table),
            "* **Pre-LN trains without warm-up.** " + _pre_without_warmup(s, table),
            "* **Pre-LN tolerates larger learning rates.** " + _largest_lr(s, table),
            "* **Pre-LN trains faster and reaches a lower loss.** " + _best(s, table, runs),
            "* **Post-LN's gradients at initialisation are largest near the output** (Fig. 3). "
            + _init(grads)]


def _lrs(lrs) -> str:
    return ", ".join(f"{lr:g}" for lr in lrs) or "none"


def _post_needs_warmup(s: Scale, table: dict) -> str:
    no, wu = s.warmups[0], s.warmups[-1]
    rescued = [lr for lr in s.lrs if not table["post-ln", lr, no].trained
               and table["post-ln", lr, wu].trained]
    worse = [lr for lr in s.lrs if table["post-ln", lr, no].trained
             and table["post-ln", lr, wu].trained
             and table["post-ln", lr, no].mean - table["post-ln", lr, wu].mean > MARGIN]
    neither = [lr for lr in s.lrs if not table["post-ln", lr, no].trained
               and not table["post-ln", lr, wu].trained]
    parts = []
    if rescued:
        parts.append(f"without warm-up post-LN did not train at lr {_lrs(rescued)} ("
                     + "; ".join(table["post-ln", lr, no].failures() for lr in rescued)
                     + f"), with {wu} warm-up steps every seed did")
    if worse:
        parts.append(f"without warm-up it ended more than {MARGIN} nats worse at lr {_lrs(worse)}")
    if neither:
        parts.append(f"at lr {_lrs(neither)} it did not train with or without warm-up")
    verdict = ("reproduced" if rescued or worse else
               "not measurable here (post-LN trained at no lr)" if len(neither) == len(s.lrs)
               else "not reproduced")
    said = "; ".join(parts or ["warm-up made no difference to post-LN"])
    return f"{said[0].upper()}{said[1:]}. Verdict: {verdict}."


def _pre_without_warmup(s: Scale, table: dict) -> str:
    no, wu = s.warmups[0], s.warmups[-1]
    comparable = [lr for lr in s.lrs if table["pre-ln", lr, wu].trained]
    if not comparable:
        return "Pre-LN did not train with warm-up either at any lr. Verdict: not measurable here."
    failed = [lr for lr in comparable if not table["pre-ln", lr, no].trained]
    fine = [lr for lr in comparable if lr not in failed]
    helped = [f"{lr:g} ({sig(table['pre-ln', lr, no].mean - table['pre-ln', lr, wu].mean, 3):g} "
              f"nats)" for lr in fine
              if table["pre-ln", lr, no].mean - table["pre-ln", lr, wu].mean > MARGIN]
    said = [f"Without warm-up pre-LN trained at lr {_lrs(fine)}" if fine else
            "Without warm-up pre-LN trained at no lr"]
    if failed:
        said.append("not every seed at lr " + "; ".join(
            f"{lr:g} ({table['pre-ln', lr, no].failures()})" for lr in failed))
    if helped:
        said.append(f"{wu} warm-up steps lowered its final loss at lr {', '.join(helped)}")
    verdict = ("not reproduced" if not fine else "partly reproduced" if failed or helped else
               "reproduced")
    return "; ".join(said) + f". Verdict: {verdict}."


def _largest_lr(s: Scale, table: dict) -> str:
    largest = {v: {w: max([lr for lr in s.lrs if table[v, lr, w].trained], default=None)
                   for w in s.warmups} for v in VARIANTS}
    parts = [f"{v} " + ", ".join(f"{'—' if lr is None else f'{lr:g}'} (warm-up {w})"
                                 for w, lr in by_wu.items()) for v, by_wu in largest.items()]
    pre = max((lr or 0) for lr in largest["pre-ln"].values())
    post = max((lr or 0) for lr in largest["post-ln"].values())
    verdict = ("not measurable here (neither trained)" if not pre and not post else
               "reproduced" if pre > post else "contradicted" if pre < post else
               "not reproduced: no difference within the learning rates tried")
    return (f"Largest lr tried at which every seed trained: {'; '.join(parts)}. "
            f"Verdict: {verdict}.")


def _best(s: Scale, table: dict, runs: list[dict]) -> str:
    best, early = {}, {}
    step = early_step(s)
    for v in VARIANTS:
        options = [(c.mean, lr, w) for (name, lr, w), c in table.items()
                   if name == v and c.trained]
        best[v] = min(options) if options else None
        starts = [val_at(runs, (v, lr, w), step) for lr in s.lrs for w in s.warmups]
        early[v] = min((x for x in starts if x is not None), default=None)
    parts = [f"{v} {sig(b[0]):g} (lr {b[1]:g}, warm-up {b[2]})" if b else f"{v} —"
             for v, b in best.items()]
    starts = ", ".join(f"{v} {'—' if x is None else f'{sig(x):g}'}" for v, x in early.items())
    gap = best["post-ln"][0] - best["pre-ln"][0] if best["post-ln"] and best["pre-ln"] else None
    verdict = ("not measurable (a variant never trained)" if gap is None else
               "reproduced" if gap > MARGIN else "contradicted" if gap < -MARGIN else
               f"not reproduced: the best final losses are within {MARGIN} nats")
    return (f"Best final validation loss per variant over the grid: {', '.join(parts)}. Best "
            f"validation loss half-way (step {step}): {starts}. Verdict: {verdict}.")


def _init(grads: dict) -> str:
    ratios = {v: g["w2_last"] / g["w2_first"] for v, g in grads.items()}
    blocks = {v: g["block_last"] / g["block_first"] for v, g in grads.items()}
    grows = {v: x > 1 + GROWTH for v, x in ratios.items()}
    flat = abs(ratios["pre-ln"] - 1) <= GROWTH
    verdict = ("reproduced" if grows["post-ln"] and flat else
               "partly reproduced (post-LN grows, pre-LN is not flat)" if grows["post-ln"] else
               f"not reproduced: post-LN's ‖∇W₂‖ does not grow by more than {GROWTH:.0%} from the "
               f"first layer to the last")
    return ("Last layer / first layer of ‖∇W₂‖: "
            + ", ".join(f"{v} {sig(x, 3):g}" for v, x in ratios.items())
            + "; of the whole block's gradient on the first batch: "
            + ", ".join(f"{v} {sig(x, 3):g}" for v, x in blocks.items())
            + f" (GPT-2 init: std 0.02, residual projections × 1/√(2L)). Verdict: {verdict}.")


# ---------------------------------------------------------------------------------------------


def build(quick: bool = False, mode: str | None = None) -> ReportFolder:
    """The warm-up study (quick: 2 layers, 20 steps, one seed, two learning rates)."""
    s = scale(mode or ("quick" if quick else "full"))
    runs = run_all(s)
    d = s.dims
    refs = data_summary("text", d["vocab"])
    table = cells(runs, refs["unigram_val_loss"])
    grads = init_gradients(s, runs)
    folder = ReportFolder()
    final = grid_table(s, f"Final validation loss (nats/byte) after {s.base.steps} steps, mean "
                          f"over seeds {list(s.seeds)} (± half the range)",
                       lambda v, lr, w: table[v, lr, w].show())
    unigram = refs["unigram_val_loss"]
    sweep_figure = lr_sweep_figure(runs, baseline=unigram)
    curves_figure = loss_curves(runs, ymax=YMAX, baseline=unigram)
    step = early_step(s)
    early = grid_table(s, f"Validation loss at step {step} (half-way), mean over seeds",
                       lambda v, lr, w: _cell(val_at(runs, (v, lr, w), step)))
    md = ["# Warm-up: pre-LN vs post-LN vs hybrid-LN in training (Xiong et al. 2020)", "",
          "Produced by `python analyses/warmup.py` with `blockalg.model.train` "
          f"(`{s.label}` size). Each model is built from its block graph and trained as a "
          "byte-level language model on the English text of CPython's `pydoc_data.topics` "
          f"(90 % train: {refs['train_tokens']:,} bytes; 10 % validation: "
          f"{refs['val_tokens']:,} bytes).", "",
          f"* model: d_model {d['d_model']}, {d['n_heads']} heads, {d['n_layers']} layers, d_ff "
          f"{d['d_ff']}, context {d['seq_len']} bytes, vocab {d['vocab']}, GPT-2 init (std 0.02, "
          "residual projections × 1/√(2L)), tied embeddings",
          f"* training: {s.base.steps} AdamW steps (betas 0.9/0.95, weight decay 0.1 on "
          f"matrices), batch {s.base.batch} × {d['seq_len']} bytes, linear warm-up over "
          f"{' or '.join(map(str, s.warmups))} steps then cosine to 10 % of the peak, no "
          f"gradient clipping, {s.base.device} {s.base.dtype}",
          f"* grid: peak lr {_lrs(s.lrs)} × warm-up {', '.join(map(str, s.warmups))} × seeds "
          f"{list(s.seeds)}; validation loss every {s.base.eval_every} steps on "
          f"{s.base.batch * s.base.eval_batches} fixed windows of the validation split",
          f"* references: guessing uniformly scores ln 256 = {sig(refs['uniform_loss']):g} "
          f"nats/byte; the byte frequencies of the training split score "
          f"{sig(refs['unigram_val_loss']):g} (the *unigram baseline*). A run that ends within "
          f"{STUCK} nats of it, or above, learnt nothing but frequencies: marked *stuck*",
          f"* diverged: a NaN/inf loss or gradient, or a loss above 2·ln(256) + 5 = "
          f"{sig(divergence_bound(d['vocab'])):g} nats", "",
          "## Final validation loss", "", folder.add_table("tables/final_val_loss", final), "",
          f"![final loss against lr]({folder.add_figure('figures/lr_sweep', sweep_figure)})",
          "", "## Loss curves", "",
          f"![loss curves]({folder.add_figure('figures/loss_curves', curves_figure)})",
          "", f"Validation loss at step {step} (half-way), mean over seeds:", "",
          folder.add_table("tables/early_val_loss", early), "",
          "## Divergences", "", *divergence_lines(runs), "",
          "## Gradient norms at initialisation", "",
          folder.add_table("tables/init_gradients", init_table(s, grads)), "",
          "## What reproduced and what did not", "",
          "Xiong et al. (2020) train 6- to 12-layer models (d = 512–1024) for tens of thousands of "
          "steps on translation and BERT pre-training. The verdicts below are computed from this "
          f"run's numbers (a difference under {MARGIN} nats counts as none; *trained* means every "
          f"seed ended more than {STUCK} nats below the unigram baseline):", "",
          *verdicts(s, table, runs, grads), "", *READING.get(s.label, [])]
    folder.add_json("data.json", data(s, runs, refs, grads))
    folder.add_text("README.md", "\n".join(md))
    return folder


def _cell(x) -> str:
    return "—" if x is None else f"{sig(x):g}"


def divergence_lines(runs: list[dict]) -> list[str]:
    """One bullet per diverged run, or a sentence saying none did."""
    lines = [f"* {r['variant']}, lr {r['lr']:g}, warm-up {r['warmup']}, seed {r['seed']}: "
             f"diverged at step {r['diverged_at']}" for r in runs if r["status"] == "diverged"]
    return lines or ["No run diverged (NaN/inf or a loss above the bound)."]


def data(s: Scale, runs: list[dict], refs: dict, grads: dict) -> dict:
    """The committed numbers: settings, references, per run its status, final and validation
    losses and gradient norms per block at initialisation (4 significant digits; no timings)."""
    return {"scale": s.label, "dims": s.dims, "lrs": list(s.lrs), "warmups": list(s.warmups),
            "seeds": list(s.seeds), "steps": s.base.steps, "batch": s.base.batch,
            "references": {k: sig(v) if isinstance(v, float) else v for k, v in refs.items()},
            "init_gradients": {v: {k: [x[0], sig(x[1])] if isinstance(x, list) else sig(x)
                                   for k, x in g.items()} for v, g in grads.items()},
            "runs": [{"variant": r["variant"], "lr": r["lr"], "warmup": r["warmup"],
                      "seed": r["seed"], "status": r["status"], "diverged_at": r["diverged_at"],
                      "final_val_loss": sig(r["final_val_loss"]),
                      "eval": [[e["step"], sig(e["val_loss"])] for e in r["eval"]],
                      "init_layer_grad_norms": [sig(x) for x in r["layer_grad_norms"].get("0", [])]}
                     for r in runs]}


#: What the committed CPU run shows beyond the computed verdicts (full size only; the numbers
#: quoted are this size's, which every rerun on a CPU reproduces).
READING = {"full": [
    "### Reading of this run", "",
    "* **Failure at this scale is a plateau, not a blow-up.** No run diverged. At a given "
    "learning rate and warm-up every variant falls to the unigram baseline (about 3.25 "
    "nats/byte: byte frequencies, no context) at the same pace, within ~30 steps without "
    "warm-up; they differ in whether they leave it. A run that does not stays there to the end. "
    "Xiong et al. likewise describe post-LN without warm-up as ending far worse, not as "
    "exploding.",
    "* **Post-LN needed warm-up at the one learning rate where it trained.** At lr 1e-3 both "
    "seeds stayed on the plateau without warm-up (3.276) and both left it with 100 warm-up steps "
    "(2.513). At 3e-3 and 1e-2 a 100-step warm-up was not enough: post-LN never left the "
    "plateau there.",
    "* **Pre-LN trained without warm-up, but warm-up still helped it.** Without warm-up pre-LN "
    "left the plateau at 1e-3 and 3e-3 in both seeds and at 1e-2 in one seed of two; its "
    "no-warm-up run at 1e-3 (2.451) beats post-LN's best run with warm-up (2.513), as the paper "
    "finds. But the paper's stronger claim, that warm-up can be dropped for pre-LN at no cost, "
    "did not hold here: warm-up lowered pre-LN's final loss at every learning rate, by 0.58 "
    "nats at 3e-3. With 300 steps a warm-up plus cosine schedule is the better recipe for "
    "pre-LN too.",
    "* **Pre-LN tolerated larger learning rates and reached the lowest loss**: 2.3 at lr 3e-3 "
    "with warm-up, against 2.513 (post-LN) and 2.496 (hybrid-LN), both at 1e-3.",
    "* **Hybrid-LN behaved like post-LN, more noisily**: it trained only at 1e-3 in every seed "
    "(without warm-up too, unlike post-LN), and at 3e-3 without warm-up one seed left the "
    "plateau and the other did not.",
    "* **The mechanism of the paper's Fig. 3 is not what differs at step 0 here.** Xiong et al. "
    "explain post-LN's need for warm-up by large gradients of the layers near the output at "
    "initialisation. With GPT-2's initialisation (std 0.02, residual projections × 1/√(2L)) "
    "post-LN's ‖∇W₂‖ is flat across layers (last/first 0.991), as in `reports/pre_vs_post_ln`. "
    "Its whole-block gradient norm *falls* toward the output (0.0594) because one parameter "
    "dominates block 1: the attention output's bias, whose gradient passes the first LayerNorm, "
    "which divides by the standard deviation of a stream still at the embedding's scale (0.02). "
    "The difference between the variants builds up during training, not at initialisation.",
    "* **Scale.** 6 layers of width 64, 300 steps of 8 × 64 bytes (about a third of an epoch), "
    "2 seeds. Whether a run leaves the plateau is a close call near the boundary (one cell's "
    "seeds differ by 0.88 nats), so single cells may flip with more seeds; the pattern across "
    "the grid (post-LN and hybrid-LN train only at 1e-3, pre-LN at all three) is the robust "
    "part. `python analyses/warmup.py --gpu` runs a 12-layer, width-256 version on a GPU.",
]}


def main(argv=None) -> int:
    """``--gpu`` picks the GPU size (written to reports/warmup_gpu unless --out); the other
    options are :func:`blockalg.output.report.study_main`'s."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--gpu", action="store_true")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if not args.gpu:
        return study_main(build, "warmup", rest)

    def build_gpu(quick: bool = False) -> ReportFolder:
        """The warm-up study at the GPU size (d_model 256, 12 layers, 2000 steps, bf16)."""
        return build(mode="quick" if quick else "gpu")

    return study_main(build_gpu, "warmup_gpu", rest)


if __name__ == "__main__":
    sys.exit(main())
