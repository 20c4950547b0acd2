"""Training results: the summary table, CSV of every record, loss curves, the learning-rate
sweep figure and the report folder of ``blockalg train --out``."""

from __future__ import annotations

import csv
import io
import itertools

from ..model.train import divergence_bound
from .render import Table
from .report import ReportFolder


def sig(x: float | None, digits: int = 4) -> float | None:
    """``x`` rounded to ``digits`` significant digits (None stays None).

    >>> sig(3.14159265)
    3.142
    """
    return None if x is None else float(f"{x:.{digits}g}")


def summary_table(runs: list[dict], title: str = "blockalg train"):
    """One row per run: variant, lr, warm-up, seed, status, final validation loss, tokens/s."""
    rows = [[r["variant"], f"{r['lr']:g}", str(r["warmup"]), str(r["seed"]),
             r["status"] if r["status"] == "ok" else f"diverged@{r['diverged_at']}",
             _cell(r["final_val_loss"]), _cell(r["tokens_per_s"], 3)] for r in runs]
    return Table(title, ["variant", "lr", "warmup", "seed", "status", "final val loss",
                         "tokens/s"], rows, align="lrrrlrr", label="tab:train-runs")


def _cell(x, digits: int = 4) -> str:
    return "—" if x is None else f"{sig(x, digits):g}"


def records_csv(runs: list[dict], key: str, fields: tuple[str, ...]) -> str:
    """One CSV row per entry of ``run[key]`` (``steps`` or ``eval``), prefixed by the run's labels
    (its learning rate as ``peak_lr``: a step's own ``lr`` is the schedule's value at that step)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    labels = {"variant": "variant", "lr": "peak_lr", "warmup": "warmup", "seed": "seed"}
    writer.writerow([*labels.values(), *fields])
    for run in runs:
        for entry in run[key]:
            writer.writerow([run[k] for k in labels] + ["" if entry[f] is None else repr(entry[f])
                                                        for f in fields])
    return out.getvalue()


def loss_curves(runs: list[dict], title: str = "", ymax: float | None = None,
                baseline: float | None = None):
    """Training loss (lines) and validation loss (dots) per step: one panel per variant and
    warm-up, one colour (and line style) per learning rate; a dashed grey line the ``baseline``
    (e.g. the unigram loss). The loss axis is fitted to the data (at most ``ymax``); a run that
    diverged is marked by a cross at the top edge where it ended, and only then does the title
    say so."""
    from .plots import LINESTYLES, PALETTE, pyplot

    plt = pyplot()
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    warmups = sorted({r["warmup"] for r in runs})
    lrs = sorted({r["lr"] for r in runs})
    styles = {lr: (PALETTE[i % len(PALETTE)], LINESTYLES[i % len(LINESTYLES)]) for i, lr in enumerate(lrs)}
    fig, axes = plt.subplots(len(warmups), len(variants), squeeze=False, sharex=True, sharey=True,
                             figsize=(3.3 * len(variants) + 1, 2.6 * len(warmups) + 0.7),
                             constrained_layout=True)
    bottom, top = loss_range(runs, baseline, ymax)
    first_seed = min(r["seed"] for r in runs)
    for r in runs:
        ax = axes[warmups.index(r["warmup"])][variants.index(r["variant"])]
        color, line = styles[r["lr"]]
        steps = [(e["step"], e["loss"]) for e in r["steps"] if e["loss"] is not None]
        if steps:
            ax.plot(*zip(*steps), color=color, linestyle=line, lw=0.9, alpha=0.8,
                    label=f"lr {r['lr']:g}" if r["seed"] == first_seed else None)
        evals = [(e["step"], e["val_loss"]) for e in r["eval"] if e["val_loss"] is not None]
        if evals:
            ax.plot(*zip(*evals), "o", color=color, ms=3.5, markeredgecolor="white", mew=0.4)
        if r["status"] == "diverged":
            ax.plot([r["diverged_at"]], [top], "x", color=color, ms=9, mew=2, clip_on=False)
    for (i, wu), (j, v) in itertools.product(enumerate(warmups), enumerate(variants)):
        ax = axes[i][j]
        ax.set_title(f"{v}, warm-up {wu}", fontsize=9)
        _baseline(ax, baseline)
        if i == len(warmups) - 1:
            ax.set_xlabel("step")
        if j == 0:
            ax.set_ylabel("loss (nats/token)")
    axes[0][0].set_ylim(bottom, top)
    axes[0][0].legend(fontsize=7, loc="upper right")
    diverged = any(r["status"] == "diverged" for r in runs)
    fig.suptitle(title or "Training loss (lines) and validation loss (dots)"
                 + ("; × = diverged" if diverged else ""))
    return fig


def loss_range(runs: list[dict], baseline: float | None = None, cap: float | None = None):
    """The loss axis that holds the data: from below the lowest loss to above the loss at the
    start (the highest a healthy run reaches), at most ``cap``; spikes beyond it leave the panel.

    >>> loss_range([{"steps": [{"loss": 5.0}, {"loss": 3.0}], "eval": [{"val_loss": 3.2}]}])
    (2.9, 5.1)
    """
    losses = [e["loss"] for r in runs for e in r["steps"] if e["loss"] is not None]
    losses += [e["val_loss"] for r in runs for e in r["eval"] if e["val_loss"] is not None]
    if baseline is not None:
        losses.append(baseline)
    if not losses:
        return 0.0, cap or 1.0
    starts = [e["loss"] for r in runs for e in r["steps"][:1] if e["loss"] is not None]
    starts += [e["val_loss"] for r in runs for e in r["eval"][:1] if e["val_loss"] is not None]
    high = max(starts or losses)
    low = min(losses)
    margin = 0.05 * (high - low or 1.0)
    top = high + margin if cap is None else min(cap, high + margin)
    return round(low - margin, 6), round(top, 6)


def lr_sweep_figure(runs: list[dict], title: str = "", ymax: float | None = None,
                    baseline: float | None = None):
    """Final validation loss against learning rate (log): one line per variant and warm-up,
    mean over seeds, every seed a dot; a diverged seed is a cross at the top of the panel (and
    only then does the title mention it)."""
    from .plots import pyplot, series_style

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    finals = [r["final_val_loss"] for r in runs if r["final_val_loss"] is not None]
    top = ymax or (max(finals + ([baseline] if baseline else []), default=1.0) * 1.05)
    groups = {}
    for r in runs:
        groups.setdefault((r["variant"], r["warmup"]), []).append(r)
    for i, ((variant, warmup), members) in enumerate(groups.items()):
        style = series_style(i)
        lrs = sorted({r["lr"] for r in members})
        means = [_mean([r["final_val_loss"] for r in members if r["lr"] == lr]) for lr in lrs]
        shown = [(lr, m) for lr, m in zip(lrs, means) if m is not None]
        if shown:
            ax.plot(*zip(*shown), label=f"{variant}, warm-up {warmup}", **style)
        for r in members:
            y, symbol = (r["final_val_loss"], ".") if r["status"] == "ok" else (top, "x")
            ax.plot([r["lr"]], [y], symbol, color=style["color"], ms=8 if symbol == "x" else 4,
                    clip_on=False)
    _baseline(ax, baseline)
    ax.set_xscale("log")
    ax.set_ylim(top=top)
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("final validation loss (nats/token)")
    diverged = any(r["status"] == "diverged" for r in runs)
    ax.set_title(title or "Final validation loss against learning rate"
                 + (" (× = diverged)" if diverged else ""))
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
