"""Training the variants (blockalg.model.train, the train command, the warm-up study): losses fall, runs
are reproducible and shard across torchrun ranks to the same numbers, divergence ends a run and not
the sweep, bad input is one line and exit code 2."""

import csv
import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from blockalg.cli.train import standalone, train_command
from blockalg.errors import BlockalgError
from blockalg.graphs.presets import resolve_dims
from blockalg.model.data import data_dims
from blockalg.model.train import (
    RunConfig,
    comparable,
    learning_rate,
    step_flops,
    sweep_runs,
    train_run,
)

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["pre-ln", "post-ln", "--preset", "tiny", "--steps", "8", "--seeds", "1", "--lr", "1e-3",
         "--lr", "3e-2", "--eval-every", "4", "--format", "json"]


def train(*args):
    """The command's JSON output (asserting it succeeded)."""
    result = CliRunner().invoke(train_command, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def hundred_steps():
    return train("pre-ln", "post-ln", "--preset", "tiny", "--steps", "100")


def test_hundred_steps_of_text_lower_the_validation_loss(hundred_steps):
    assert hundred_steps["preset"] == "tiny" and hundred_steps["dims"]["vocab"] == 256  # bytes
    assert [r["variant"] for r in hundred_steps["runs"]] == ["pre-ln", "post-ln"]
    for run in hundred_steps["runs"]:
        assert run["status"] == "ok" and run["diverged_at"] is None
        evals = run["eval"]
        assert [e["step"] for e in evals] == [0, 50, 100]
        assert evals[0]["val_loss"] == pytest.approx(math.log(256), rel=0.05)  # about uniform at init
        assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 1.5
        assert run["final_val_loss"] == evals[-1]["val_loss"]
        assert [s["step"] for s in run["steps"]] == list(range(100))
        assert all(s["loss"] > 0 and s["grad_norm"] > 0 and 0 < s["lr"] <= 1e-3 for s in run["steps"])
        assert run["steps"][0]["lr"] == 1e-3 and run["steps"][-1]["lr"] == pytest.approx(1e-4, rel=0.01)
        assert sorted(run["layer_grad_norms"], key=int) == ["0", "50"]
        assert all(len(v) == 2 and min(v) > 0 for v in run["layer_grad_norms"].values())
        assert run["tokens_per_s"] > 0 and run["mfu"] is None  # no known peak on a CPU


def test_synthetic_markov_chain_is_learned_quickly():
    run = train("pre-ln", "--data", "synthetic", "--steps", "60", "--lr", "1e-2", "--warmup", "5",
                "--set", "n_ctx=32", "--eval-every", "30")["runs"][0]
    first, last = run["eval"][0]["val_loss"], run["eval"][-1]["val_loss"]
    assert first == pytest.approx(math.log(32), rel=0.05) and last < 1.2  # floor 0.651


def test_a_run_is_determined_by_its_seed():
    dims = data_dims(resolve_dims("tiny", {"n_ctx": 16}), "synthetic")
    config = RunConfig(lr=3e-3, steps=8, batch=4, data="synthetic", eval_every=4)
    a, b = (comparable(train_run("post-ln", dims, config)) for _ in range(2))
    c = comparable(train_run("post-ln", dims, replace(config, seed=1)))
    assert a == b and a["steps"] != c["steps"]


def test_divergence_ends_one_run_and_the_sweep_goes_on():
    runs = train("post-ln", "--steps", "30", "--lr", "1e-3", "--lr", "10")["runs"]
    ok, blown = runs
    assert ok["status"] == "ok" and ok["final_val_loss"] < ok["eval"][0]["val_loss"]
    assert blown["status"] == "diverged" and blown["final_val_loss"] is None
    assert 0 <= blown["diverged_at"] < 30 and len(blown["steps"]) == blown["diverged_at"] + 1
    json.dumps(runs, allow_nan=False)  # NaN and inf are written as null


def test_a_forced_bound_marks_the_run_diverged_at_that_step():
    run = train("pre-ln", "--steps", "10", "--max-loss", "5.45")["runs"][0]
    assert run["status"] == "diverged" and run["diverged_at"] == 0  # first batch's loss ≈ 5.5


def test_torchrun_shards_give_the_single_process_numbers(tmp_path):
    single = train(*SWEEP[:-2])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc-per-node", "2", "-m", "blockalg", "train", *SWEEP],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    sharded = json.loads(out.stdout)  # rank 0 alone prints
    assert sharded["config"]["mode"] == "sharded" and sharded["config"]["world_size"] == 2
    key = lambda r: (r["variant"], r["lr"], r["warmup"], r["seed"])  # noqa: E731
    assert len(sharded["runs"]) == len(single["runs"]) == 4
    assert {r["status"] for r in single["runs"]} == {"ok"}
    by_run = {key(r): comparable(r) for r in single["runs"]}
    for run in sharded["runs"]:
        assert comparable(run) == by_run[key(run)]  # bitwise: same floats, every step


def test_ddp_trains_one_run_on_two_processes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc-per-node", "2", "-m", "blockalg.cli.train", "pre-ln", "--ddp",
                          "--steps", "20", "--lr", "1e-2", "--eval-every", "10", "--format", "json"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout)
    (run,) = data["runs"]
    assert data["config"]["mode"] == "ddp" and run["status"] == "ok"
    assert run["eval"][-1]["val_loss"] < run["eval"][0]["val_loss"] - 1


def test_out_writes_json_csv_and_figures(tmp_path):
    out = tmp_path / "sweep"
    result = CliRunner().invoke(train_command, ["pre-ln", "--steps", "4", "--eval-every", "2",
                                                "--lr", "1e-3", "--lr", "1e-2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("blockalg train · preset tiny") and len(lines) == 5  # title, 2 rows
    assert lines[1].split()[:7] == ["variant", "lr", "warmup", "seed", "status", "final", "val"]
    for name in ("runs.json", "runs.csv", "steps.csv", "eval.csv", "README.md", "tables/runs.md",
                 "figures/loss_curves.png", "figures/lr_sweep.svg"):
        assert (out / name).is_file(), name
    assert len(json.loads((out / "runs.json").read_text())["runs"]) == 2
    with open(out / "steps.csv", newline="") as f:
        reader = csv.DictReader(f)
        steps = list(reader)
    assert reader.fieldnames == ["variant", "peak_lr", "warmup", "seed", "step", "loss", "grad_norm", "lr"]
    assert len(steps) == 2 * 4 and {s["peak_lr"] for s in steps} == {"0.001", "0.01"}
    assert float(steps[-1]["lr"]) < float(steps[-1]["peak_lr"])  # the schedule's value at that step
    assert "diverged" not in (out / "figures/loss_curves.svg").read_text()  # nothing diverged


def test_train_run_reports_every_step():
    """The progress bar of `blockalg train` moves per step (and completes when a run ends early)."""
    dims = data_dims(resolve_dims("tiny", {"n_layers": 1}), "synthetic")
    config = RunConfig(lr=1e-3, steps=3, batch=2, eval_every=3, data="synthetic")
    advanced = []
    train_run("pre-ln", dims, config, on_step=advanced.append)
    assert advanced == [1, 1, 1]
    advanced.clear()
    train_run("pre-ln", dims, replace(config, max_loss=0.5), on_step=advanced.append)  # diverges
    assert sum(advanced) == 3 and len(advanced) <= 2


@pytest.mark.parametrize("args,culprit", [
    (["no-such-variant"], "no-such-variant"),
    (["pre-ln", "--lr", "0"], "--lr"),
    (["pre-ln", "--lr", "-1e-3"], "--lr"),
    (["pre-ln", "--steps", "0"], "--steps"),
    (["pre-ln", "--set", "vocab=300"], "vocab"),
    (["pre-ln", "--lr", "inf"], "lr"),
])
def test_bad_input_is_one_line_and_exit_2(args, culprit, capsys):
    assert standalone(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("blockalg: error:") and culprit in err[0], err


def test_bad_input_through_the_command_object():
    result = CliRunner().invoke(train_command, ["pre-ln", "--steps", "0"])
    assert result.exit_code == 2 and "--steps" in result.output  # click.UsageError
    result = CliRunner().invoke(train_command, ["no-such-variant"])
    assert isinstance(result.exception, BlockalgError)
    with pytest.raises(click.UsageError):
        train_command.main(["pre-ln", "--lr", "0"], standalone_mode=False)


def test_importing_the_command_does_not_import_torch():
    code = "import sys, blockalg.cli.train; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_schedule_sweep_order_and_flops():
    config = RunConfig(lr=2.0, warmup=4, steps=10, schedule="constant")
    assert [learning_rate(s, config) for s in (0, 3, 4, 9)] == [0.5, 2.0, 2.0, 2.0]
    cosine = RunConfig(lr=1.0, warmup=0, steps=11)
    assert learning_rate(0, cosine) == 1.0 and learning_rate(5, cosine) == pytest.approx(0.55)
    assert learning_rate(10, cosine) == pytest.approx(0.1)
    runs = sweep_runs(["a", "b"], [1e-3, 1e-2], [0, 5], [0, 1], RunConfig(lr=1))
    assert len(runs) == 16 and [r.index for r in runs] == list(range(16))
    assert (runs[5].name, runs[5].config.lr, runs[5].config.warmup, runs[5].config.seed) == \
        ("a", 1e-2, 0, 1)
    # per step: batch × (forward + backward) matmul FLOPs of one sequence, from the formulas
    assert step_flops("pre-ln", resolve_dims("tiny"), 4) == 4 * 3 * 18_874_368


def test_the_warmup_study_quick_build():
    import warmup

    folder = warmup.build(quick=True)
    for name in ("README.md", "data.json", "tables/final_val_loss.md", "tables/final_val_loss.csv",
                 "tables/init_gradients.md", "figures/loss_curves.png", "figures/lr_sweep.png"):
        assert name in folder.files, name
    data = json.loads(folder.files["data.json"])
    assert data["scale"] == "quick" and len(data["runs"]) == 3 * 2 * 2 * 1
    assert all(r["status"] == "ok" and r["final_val_loss"] < r["eval"][0][1] for r in data["runs"])
    assert all(len(f"{r['final_val_loss']:g}".replace(".", "").lstrip("0")) <= 4 for r in data["runs"])
    readme = folder.files["README.md"].decode()
    assert "| variant | warm-up | lr 0.001 | lr 0.01 |" in readme
    assert "## What reproduced and what did not" in readme and "Verdict" in readme
