"""``blockalg train``: train variants as language models, one run or a sweep, alone or under torchrun.

Registered on the ``blockalg`` group by :mod:`blockalg.cli`; also runs on its own, which is what
``torchrun`` needs for ``-m``::

    python -m blockalg.cli.train pre-ln post-ln --preset tiny --steps 100
    torchrun --nproc-per-node 2 -m blockalg.cli.train pre-ln post-ln --lr 1e-3 --lr 1e-2 --seeds 2

Importing this module does not import torch (the library imports it inside its functions).
"""

from __future__ import annotations

import sys

import click

from ..errors import BlockalgError
from ..graphs.presets import parse_assignments
from ..model.data import DATASETS
from ..model.train import DTYPES, SCHEDULES
from .options import (
    BATCH,
    CONTEXT,
    POSITIVE,
    SEEDS,
    TABLE_FORMATS,
    accepts_modules,
    device_option,
    dims_options,
    format_option,
    real_device,
    render_table,
    resolve_inputs,
    run_command,
    step_progress,
)


@click.command("train", context_settings=CONTEXT)
@click.argument("variants", nargs=-1)
@dims_options(default="tiny")
@click.option("--steps", type=click.IntRange(min=1, max=10**9), default=200, show_default=True,
              help="Optimizer updates per run.")
@click.option("--lr", "lrs", type=POSITIVE, multiple=True, default=(1e-3,), show_default=True,
              help="Peak learning rate (repeatable: one run per value).")
@click.option("--warmup", "warmups", type=click.IntRange(min=0), multiple=True, default=(0,),
              show_default=True, help="Linear warm-up steps (repeatable: one run per value).")
@click.option("--seeds", type=SEEDS, default=1, show_default=True,
              help="Seeds 0..K-1 per setting; a seed fixes the init and the batches.")
@click.option("--schedule", type=click.Choice(SCHEDULES), default="cosine", show_default=True,
              help="After warm-up: cosine down to 10% of the peak at the last step, or constant.")
@click.option("--clip", type=POSITIVE, default=None,
              help="Clip the gradient's total norm to this value (default: no clipping).")
@device_option(default="cpu")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True,
              help="bfloat16: autocast over float32 weights.")
@click.option("--compile", "compile_", is_flag=True, help="Train the torch.compile'd model.")
@click.option("--data", type=click.Choice(DATASETS), default="text", show_default=True,
              help="text: CPython's pydoc topics as bytes (sets vocab to 256); synthetic: a "
                   "Markov chain over a small vocab (32 unless --set vocab=N).")
@click.option("--batch", type=BATCH, default=16, show_default=True,
              help="Sequences of seq_len tokens per update (per rank with --ddp).")
@click.option("--eval-every", type=click.IntRange(min=1), default=50, show_default=True,
              help="Validation loss (and per-layer gradient norms) every N steps, and at the end.")
@click.option("--max-loss", type=POSITIVE, default=None,
              help="A loss above this ends the run as diverged (default 2·ln(vocab) + 5).")
@click.option("--threads", type=click.IntRange(min=1, max=1024), default=1, show_default=True,
              help="CPU threads per process; keep it equal across layouts for equal numbers.")
@click.option("--ddp", is_flag=True,
              help="Under torchrun: every run data-parallel over all ranks (DDP) instead of "
                   "dealing the runs out to the ranks.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Also write JSON, CSV and figures to this folder (replaced atomically).")
@format_option(*TABLE_FORMATS, "json")
@accepts_modules
def train_command(variants, preset, assignments, hf_config, steps, lrs, warmups, seeds, schedule,
                  clip, device, dtype, compile_, data, batch, eval_every, max_loss, threads, ddp,
                  out, fmt):
    """Train VARIANTS as byte-level language models: a sweep over --lr × --warmup × seeds.

    AdamW (weight decay 0.1 on matrices, none on norms, biases and embeddings), linear warm-up,
    cosine or constant schedule. Per step: loss, gradient norm (before clipping), learning rate;
    validation loss at step 0, every --eval-every steps and at the end. A NaN/inf or too large
    loss marks a run "diverged" and the sweep goes on. Under torchrun the runs are dealt out to
    the ranks (same numbers as one process) or, with --ddp, each run is data-parallel.
    """
    from ..model import data as corpora
    from ..model import distributed, train

    world = distributed.world_from_env()
    try:
        real_device(device, "training")
        graphs, dims, label = resolve_inputs(variants, preset, assignments, hf_config)
        dims = corpora.data_dims(dims, data, parse_assignments(assignments).get("vocab"))
        base = train.RunConfig(lr=lrs[0], steps=steps, batch=batch, schedule=schedule, clip=clip,
                               eval_every=eval_every, max_loss=max_loss, data=data, device=device,
                               dtype=dtype, compile=compile_)
        if out and world.rank == 0:
            from ..output.report import replaceable

            replaceable(out)  # before training, not after
        names = [g.graph.get("name", f"graph{i}") for i, g in enumerate(graphs)]
        runs = train.sweep_runs(names, dict.fromkeys(lrs), dict.fromkeys(warmups), range(seeds),
                                base)
        train.check_device(device)
    except BlockalgError:
        if world.rank != 0:
            sys.exit(2)  # rank 0 says it once
        raise
    from ..model.build import out_of_memory_is_bad_input

    steps_here = sum(run.config.steps for run in train.my_runs(runs, world, ddp))
    with distributed.threads(threads), distributed.process_group(world, device), \
            step_progress(steps_here if world.rank == 0 else 0, "training") as advance, \
            out_of_memory_is_bad_input(device):
        results = train.run_sweep(graphs, dims, runs, world=world, ddp=ddp, on_step=advance)
    if world.rank != 0:
        return
    _emit({"runs": results, "dims": dims, "preset": label,
           "config": train.config_summary(base, world, ddp),
           "data": corpora.data_summary(data, dims["vocab"])}, fmt, out)


def _emit(result: dict, fmt: str, out) -> None:
    """Print the result (JSON or one line per run) and write the folder of ``--out``."""
    from ..output.render import json_text
    from ..output.training import summary_table, sweep_report

    if out:
        folder = sweep_report(result)
        folder.write(out)
        click.echo(f"wrote {len(folder.files)} files to {out}", err=True)
    if fmt == "json":
        click.echo(json_text(result))
    else:
        dims = result["dims"]
        title = (f"blockalg train · preset {result['preset']} (d_model={dims['d_model']}, "
                 f"n_layers={dims['n_layers']}, seq_len={dims['seq_len']}, vocab={dims['vocab']})"
                 f" · {result['config']['steps']} steps")
        click.echo(render_table(summary_table(result["runs"], title), fmt))


def standalone(args=None) -> int:
    """Run the command outside the ``blockalg`` group, with its error handling: bad input is one
    line on stderr (from rank 0 only, under torchrun) and exit code 2."""
    from ..model.distributed import world_from_env

    say = (lambda line: click.echo(line, err=True)) if world_from_env().rank == 0 else (lambda line: None)
    return run_command(train_command, args, "blockalg train", say)


if __name__ == "__main__":
    sys.exit(standalone())
