"""Every performance figure of blockalg in one run, each as a ratio or a time against its goal.

    python analyses/benchmarks.py              # all but the suite (about a minute on an idle machine)
    python analyses/benchmarks.py --suite      # also time the whole test suite (minutes)
    python analyses/benchmarks.py --rounds 3   # fewer repetitions

Figures (goal in brackets):

* start-up: ``blockalg compare pre-ln post-ln`` / ``python -c "import sympy, networkx, click"``,
  the bare imports it needs [≤ 1.15];
* paths at any depth: ``blockalg paths pre-ln --layers 1000000000`` / ``--layers 12`` [≤ 1.5];
  where 10⁹ layers do not run yet, 1000 layers are measured and the note says so;
* the 175B check: ``blockalg check pre-ln --preset gpt3-175b --device meta`` in seconds [≤ 6],
  and with pre-ln, post-ln and hybrid-ln [≤ 15], each noted beside the bare imports a check
  needs (sympy, networkx, click, torch and torch._dynamo, which torch itself imports);
* step time on CPU: the model built from the pre-ln graph / the nanoGPT-style reference, from
  analyses/benchmark.py [≤ 1.03];
* with ``--suite``: ``python -m pytest -p no:cacheprovider`` in seconds [≤ 150].

Each process is timed as a whole (wall clock; the children's CPU time is noted beside it, since
the machine may be shared). The two sides of a ratio run interleaved, round by round, and their
medians are compared, so a change in the machine's load hits both alike. Before timing, blockalg
is compiled to bytecode once (an installed package has its .pyc files; this environment sets
PYTHONDONTWRITEBYTECODE) and every command runs once untimed. Subprocesses get PYTHONPATH set to
this checkout, so the figures are this tree's.

Prints one table and exits 0: a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from blockalg.output.render import Table  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
HUGE_LAYERS, FALLBACK_LAYERS = 1_000_000_000, 1000


def blockalg_command() -> list[str]:
    """The installed ``blockalg`` script next to this Python, or ``python -m blockalg``."""
    script = Path(sys.executable).with_name("blockalg")
    return [str(script)] if script.exists() else [sys.executable, "-m", "blockalg"]


BLOCKALG = blockalg_command()
BARE_IMPORTS = [sys.executable, "-c", "import sympy, networkx, click"]
#: What a check imports before it measures anything: torch imports torch._dynamo itself, the
#: first time any TorchDispatchMode dispatches (FlopCounterMode's too) and in Optimizer.step.
CHECK_IMPORTS = [sys.executable, "-c", "import sympy, networkx, click, torch, torch._dynamo"]


@dataclass
class Run:
    wall: float
    cpu: float  # user + system time of the process
    returncode: int | None  # None: killed at the timeout
    stdout: str = ""


def timed(command, timeout=None) -> Run:
    """Run ``command`` in this checkout, timing the process as a whole."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True,
                              timeout=timeout)
        returncode, stdout = done.returncode, done.stdout
    except subprocess.TimeoutExpired:
        returncode, stdout = None, ""
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return Run(wall, cpu, returncode, stdout)


def interleaved(commands: dict[str, list[str]], rounds: int) -> dict[str, list[Run]]:
    """Each command once untimed, then ``rounds`` rounds of all of them, the order alternating."""
    for command in commands.values():
        timed(command)
    runs = {name: [] for name in commands}
    names = list(commands)
    for i in range(rounds):
        for name in names if i % 2 == 0 else reversed(names):
            run = timed(commands[name])
            if run.returncode != 0:
                raise SystemExit(f"benchmarks: {' '.join(commands[name])} exited {run.returncode}")
            runs[name].append(run)
    return runs


def median(runs: list[Run], what: str = "wall") -> float:
    return statistics.median(getattr(r, what) for r in runs)


@dataclass
class Figure:
    name: str
    value: float
    goal: float
    unit: str  # "×" for a ratio, "s" for seconds
    note: str

    def row(self) -> list[str]:
        value = f"{self.value:.3f}" if self.unit == "×" else f"{self.value:.1f} s"
        goal = f"≤ {self.goal:g}" + ("" if self.unit == "×" else " s")
        return [self.name, value, goal, "ok" if self.value <= self.goal else "over", self.note]


def ratio_figure(name, goal, numerator, denominator, rounds, label) -> Figure:
    runs = interleaved({"a": numerator, "b": denominator}, rounds)
    a, b = runs["a"], runs["b"]
    note = (f"{label}: median {median(a):.3f} s / {median(b):.3f} s wall; "
            f"CPU {median(a, 'cpu'):.3f} s / {median(b, 'cpu'):.3f} s "
            f"(×{median(a, 'cpu') / median(b, 'cpu'):.3f}); {rounds} rounds")
    return Figure(name, median(a) / median(b), goal, "×", note)


def startup(rounds) -> Figure:
    return ratio_figure("start-up: compare pre-ln post-ln / bare imports", 1.15,
                        [*BLOCKALG, "compare", "pre-ln", "post-ln"], BARE_IMPORTS, rounds,
                        "compare / import sympy, networkx, click")


def paths(rounds) -> Figure:
    """L = 10⁹ against L = 12 when 10⁹ runs; else L = 1000, said in the note."""
    layers, why = HUGE_LAYERS, ""
    trial = timed([*BLOCKALG, "paths", "pre-ln", "--layers", str(HUGE_LAYERS)], timeout=30)
    if trial.returncode != 0:
        layers = FALLBACK_LAYERS
        why = (f"--layers {HUGE_LAYERS} " + ("timed out after 30 s" if trial.returncode is None
                                            else f"exits {trial.returncode}")
               + f" in this tree, so L = {FALLBACK_LAYERS}; ")
    figure = ratio_figure(f"paths pre-ln: L = {layers:,} / L = 12", 1.5,
                          [*BLOCKALG, "paths", "pre-ln", "--layers", str(layers)],
                          [*BLOCKALG, "paths", "pre-ln", "--layers", "12"], rounds,
                          f"{why}L = {layers:,} / 12")
    return figure


def checks_175b(rounds) -> list[Figure]:
    """The one- and three-variant checks, each noted beside the bare imports a check needs."""
    base = [*BLOCKALG, "check", "--preset", "gpt3-175b", "--device", "meta"]
    runs = interleaved({"one": [*base, "pre-ln"], "three": [*base, "pre-ln", "post-ln", "hybrid-ln"],
                        "imports": CHECK_IMPORTS}, rounds)
    floor = median(runs["imports"])
    return [Figure(f"check gpt3-175b on meta: {label}", median(runs[key]), goal, "s",
                   f"median of {rounds}; CPU {median(runs[key], 'cpu'):.1f} s; "
                   f"{median(runs[key]) - floor:.1f} s beyond its bare imports ({floor:.1f} s: "
                   f"{CHECK_IMPORTS[-1]})")
            for key, label, goal in (("one", "pre-ln", 6), ("three", "pre-ln, post-ln, hybrid-ln", 15))]


def step_time() -> Figure:
    run = timed([sys.executable, str(ROOT / "analyses" / "benchmark.py"), "--json"])
    if run.returncode != 0:
        raise SystemExit(f"benchmarks: analyses/benchmark.py exited {run.returncode}")
    result = json.loads(run.stdout)
    dims = result["dims"]
    return Figure("step time on CPU: built / nanoGPT reference", result["ratio"], 1.03, "×",
                  f"{result['built_s'] * 1e3:.1f} / {result['reference_s'] * 1e3:.1f} ms per "
                  f"forward+backward, batch {result['batch']} × {dims['seq_len']}, d_model "
                  f"{dims['d_model']}, {dims['n_layers']} layers (analyses/benchmark.py)")


def suite() -> tuple[Figure, str]:
    """The suite's figure, and its slowest tests as pytest lists them (``--durations``)."""
    run = timed([sys.executable, "-m", "pytest", "-p", "no:cacheprovider"])
    lines = run.stdout.splitlines()
    summary = next((line for line in reversed(lines) if " in " in line), "")
    start = next((i for i, line in enumerate(lines) if "slowest" in line), len(lines))
    durations = "\n".join(line for line in lines[start:] if line.strip() and "durations <" not in line
                          and "short test summary" not in line and not line.startswith("FAILED"))
    return (Figure("test suite", run.wall, 150, "s",
                   f"CPU {run.cpu:.0f} s; {summary.strip('= ')}; exit {run.returncode}"), durations)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds of each quick ratio")
    parser.add_argument("--check-rounds", type=int, default=3, help="rounds of the 175B checks")
    parser.add_argument("--suite", action="store_true", help="also time the test suite")
    args = parser.parse_args(argv)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "blockalg")], check=True,
                   stdout=subprocess.DEVNULL)
    started, load_before = time.perf_counter(), load()
    figures = [startup(args.rounds), paths(args.rounds), *checks_175b(args.check_rounds),
               step_time()]
    durations = ""
    if args.suite:
        figure, durations = suite()
        figures.append(figure)
    notes = [f"{os.cpu_count()} CPUs; load average (1, 5, 15 min) {load_before} before, {load()} "
             f"after; {time.perf_counter() - started:.0f} s in all. Wall-clock medians; the CPU "
             f"time beside them is less sensitive to other load."]
    print(Table("blockalg benchmarks", ["figure", "value", "goal", "ok", "measured"],
                [f.row() for f in figures], notes=notes, align="lrrll").to_text())
    if durations:
        print(f"\n{durations}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
