"""Report folders, the studies' committed outputs, and the example notebook."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from blockalg.cli import main
from blockalg.output.report import ReportFolder, reports_dir

ROOT = Path(__file__).resolve().parents[1]


#: The report the tests below share (one build): two variants at tiny, LaTeX thousands thin.
REPORT = ["report", "pre-ln", "post-ln", "--preset", "tiny", "--thousands", "thin"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("r") / "report"
    result = CliRunner().invoke(main, [*REPORT, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_report_holds_every_form(report):
    for name in ["README.md", "report.tex", "closed_forms.tex", "data.json", "tables/tiny/compare.md",
                 "tables/tiny/compare.tex", "tables/tiny/compare.csv", "graphs/pre-ln.mmd"]:
        assert (report / name).is_file(), name
    data = json.loads((report / "data.json").read_text())
    assert data["presets"]["tiny"]["variants"][0]["params"]["total"] == 136960
    csv_lines = (report / "tables/tiny/compare.csv").read_text().splitlines()
    assert "params.total,136960,136832,-128" in csv_lines  # plain integers for spreadsheets
    markdown = (report / "README.md").read_text()
    assert "![parameters per component](figures/tiny/params.png)" in markdown and "```mermaid" in markdown


def test_figures_are_real_labelled_images(report):
    import matplotlib.image

    for name in ["tiny/params", "tiny/flops_per_token", "tiny/paths", "graph_pre-ln"]:
        png = report / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = matplotlib.image.imread(png).shape
        assert width >= 400 and height >= 300
        svg = (report / "figures" / f"{name}.svg").read_text()
        assert "<svg" in svg
    svg = (report / "figures/tiny/flops_per_token.svg").read_text()
    assert "sequence length" in svg and "GFLOPs per token" in svg  # axis labels with units


def test_latex_tables_are_booktabs_and_balanced(report):
    for tex in (report / "tables").rglob("*.tex"):
        text = tex.read_text()
        assert "\\toprule" in text and "\\bottomrule" in text
        assert text.count("\\begin{") == text.count("\\end{")
        assert all(line.count("&") == text.splitlines()[3].count("&")
                   for line in text.splitlines() if line.endswith("\\\\"))


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no LaTeX engine installed")
def test_latex_report_compiles(report, tmp_path):
    shutil.copytree(report, tmp_path / "r")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"],
                         cwd=tmp_path / "r", capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:]
    assert (tmp_path / "r" / "report.pdf").stat().st_size > 1000


def test_rerun_is_byte_identical_and_check_sees_drift(report):
    args = [*REPORT, "--out", str(report)]
    table = report / "tables/tiny/compare.md"
    table.write_text(table.read_text().replace("136,960", "136,961"))
    result = CliRunner().invoke(main, [*args, "--check"])
    assert result.exit_code == 1 and "tables/tiny/compare.md" in result.output
    assert CliRunner().invoke(main, args).exit_code == 0  # rewriting repairs it
    assert CliRunner().invoke(main, [*args, "--check"]).exit_code == 0  # a rerun: byte-identical


def test_thousands_separator_in_latex(report):
    assert r"136\,960" in (report / "tables/tiny/compare.tex").read_text()
    assert "136,960" in (report / "tables/tiny/compare.md").read_text()  # LaTeX only


def test_interrupted_write_keeps_the_old_folder(tmp_path, monkeypatch):
    out = tmp_path / "r"
    old = ReportFolder()
    old.add_text("a.md", "old")
    old.write(out)
    new = ReportFolder()
    new.add_text("a.md", "new")
    new.add_text("b.md", "new")
    calls, original = [], Path.write_bytes

    def failing_write_bytes(self, data):
        calls.append(self)
        if len(calls) == 2:
            raise OSError("disk full")
        return original(self, data)

    monkeypatch.setattr(Path, "write_bytes", failing_write_bytes)
    with pytest.raises(OSError):
        new.write(out)
    monkeypatch.undo()
    assert (out / "a.md").read_text() == "old\n" and not (out / "b.md").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["r"]  # no temporary folder left behind


def test_empirical_report_adds_gradient_figure(tmp_path):
    out = tmp_path / "e"
    result = CliRunner().invoke(main, ["report", "pre-ln", "--preset", "tiny", "--out", str(out), "--empirical"])
    assert result.exit_code == 0, result.output
    assert (out / "figures/gradients.png").stat().st_size > 10_000
    assert "gradients" in json.loads((out / "data.json").read_text())


def test_pre_vs_post_ln_report_has_not_drifted():
    import pre_vs_post_ln

    assert pre_vs_post_ln.build().differences(reports_dir() / "pre_vs_post_ln") == []


def test_pre_vs_post_ln_quick(tmp_path):
    import pre_vs_post_ln

    folder = pre_vs_post_ln.build(quick=True)
    table = folder.files["tables/numbers.csv"].decode()
    # gpt3-175b pre-ln: 96·(12·12288² + 13·12288) + (50257 + 2048 + 2)·12288 parameters
    assert "gpt3-175b,pre-ln,174604259328," in table
    assert "gpt2-small,post-ln,124438272,36864," in table


def test_notebook_runs_top_to_bottom():
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    notebook = nbformat.read(ROOT / "examples" / "tour.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", cwd=str(ROOT)).execute()
    outputs = {cell.source: cell.outputs for cell in notebook.cells if cell.cell_type == "code"}
    assert outputs['c["pre-ln"].values["params.total"]'][0]["data"]["text/plain"] == "124439808"
    assert any("image/png" in o.get("data", {}) for cells in outputs.values() for o in cells)
    assert "text/markdown" in outputs['g = variants.get("pre-ln")\ng'][0]["data"]
    # the block written in PyTorch in the notebook imports to pre-ln's numbers exactly
    mine = outputs['blockalg.compare(["pre-ln", mine], preset="gpt2-small")'][0]["data"]["text/markdown"]
    assert "| params.total | 124,439,808 | 124,439,808 | +0 |" in mine
