"""How fast blockalg answers for absurdly deep models, in every output format (goal: under a
second each, beyond the interpreter's start-up).

    python analyses/huge_layers.py

Runs each command in-process (after one warm-up command, so sympy's first-use imports are not
counted) and prints CPU and wall seconds per format, then one cold run of the whole process for
comparison with `blockalg compare pre-ln` (the start-up alone).
"""

from __future__ import annotations

import subprocess
import sys
import time

from click.testing import CliRunner

from blockalg.cli import main

COMMANDS = (["paths", "pre-ln", "--layers", "1000000000"],
            ["compare", "pre-ln", "--set", "n_layers=100000"],
            ["compare", "pre-ln", "post-ln", "mix-ln", "--set", "n_layers=1000000000"],
            ["paths", "resi-dual", "--layers", str(2**63 - 1)])
FORMATS = ("table", "markdown", "latex", "csv", "json")


def timed(args) -> tuple[float, float, int]:
    cpu, wall = time.process_time(), time.perf_counter()
    result = CliRunner().invoke(main, args)
    return time.process_time() - cpu, time.perf_counter() - wall, result.exit_code


def cold(args) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "blockalg", *args], capture_output=True, check=True)
    return time.perf_counter() - start


def main_() -> int:
    timed(["compare", "pre-ln"])
    timed(["paths", "resi-dual", "--layers", "3"])
    worst = 0.0
    print(f"{'command':<72} {'format':<9} {'CPU s':>6} {'wall s':>7}")
    for args in COMMANDS:
        for fmt in FORMATS:
            cpu, wall, code = timed([*args, "--format", fmt])
            assert code == 0, (args, fmt)
            worst = max(worst, cpu)
            print(f"{' '.join(args):<72} {fmt:<9} {cpu:>6.3f} {wall:>7.3f}")
    print(f"slowest: {worst:.3f} CPU s")
    print(f"cold process, blockalg compare pre-ln: {cold(['compare', 'pre-ln']):.2f} s wall; "
          f"blockalg paths pre-ln --layers 1000000000: "
          f"{cold(['paths', 'pre-ln', '--layers', '1000000000']):.2f} s wall")
    return 0


if __name__ == "__main__":
    sys.exit(main_())
