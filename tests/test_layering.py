"""The package layering (graphs → analysis → model → output → cli) and the import-cycle rule,
checked by import-linter's contracts in pyproject.toml, and shown to fail on a broken copy."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
        "sys.exit(lint_imports_command())"]


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*LINT, "--config", str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, env={"PYTHONPATH": str(root), "PATH": ""}, text=True,
                          capture_output=True)


def test_the_package_keeps_every_contract():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout
    assert "3 kept, 0 broken" in result.stdout


def _broken_copy(tmp_path, module: str, line: str) -> Path:
    shutil.copytree(ROOT / "blockalg", tmp_path / "blockalg",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    path = tmp_path / "blockalg" / module
    path.write_text(f"{line}\n{path.read_text()}")
    return tmp_path


@pytest.mark.parametrize("module,line,broken", [
    ("graphs/symbols.py", "import torch", "The symbolic core imports neither torch nor matplotlib"),
    ("analysis/params.py", "from ..output import render", "The packages follow the pipeline"),
    ("graphs/symbols.py", "from . import ops", "No import cycle"),
])
def test_a_wrong_import_breaks_its_contract(tmp_path, module, line, broken):
    result = lint(_broken_copy(tmp_path, module, line))
    assert result.returncode != 0
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout.split(broken, 1)[1].splitlines()[0]
