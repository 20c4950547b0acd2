"""Regenerate every committed study in reports/, or check that none has drifted.

    python analyses/regenerate.py                    # rewrite reports/<study>/ for every study
    python analyses/regenerate.py --check            # exit 1 if a committed text file differs
    python analyses/regenerate.py --only ffn_claims  # one study (repeatable)

The test suite runs the same drift check for the symbolic studies (tests/test_report.py and
tests/test_study_*.py); the warm-up study trains for minutes, so the tests run its --quick mode;
the gradient-scaling test renders the committed data again and measures one of its points.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from blockalg.output.report import study_main  # noqa: E402

#: warmup: ~3 min of training; gradient_scaling: a few minutes of forward and backward passes
STUDIES = ("pre_vs_post_ln", "ffn_claims", "flop_formulas", "memory_formulas", "warmup",
           "gradient_scaling")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="analyses/regenerate.py",
                                description="Rewrite every study's folder in reports/, or check "
                                            "them for drift.")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if a committed text file differs")
    p.add_argument("--only", action="append", choices=STUDIES, metavar="STUDY",
                   help=f"only this study (repeatable; one of {', '.join(STUDIES)})")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    failed = 0
    for name in args.only or STUDIES:
        print(f"{name}:", file=sys.stderr)
        module = importlib.import_module(name)
        failed += study_main(module.build, name, ["--check"] if args.check else []) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
