"""Report folders, the studies' committed outputs, and the example notebook."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from blockalg import BlockalgError
from blockalg.cli import main
from blockalg.output.render import latex_escape
from blockalg.output.report import ReportFolder, reports_dir, study_main

ROOT = Path(__file__).resolve().parents[1]


#: The report the tests below share (one build): two variants at tiny, LaTeX thousands thin.
REPORT = ["report", "pre-ln", "post-ln", "--preset", "tiny", "--thousands", "thin"]


# one xdist worker runs this file's tests, so its module fixture is built once
pytestmark = pytest.mark.xdist_group("test_report")


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
    assert "sequence length" in svg and "kFLOPs per token" in svg  # axis labels with units
    assert "n_ctx = 64" in svg and "pre-ln = post-ln (identical)" in svg  # tiny's s; equal curves


def test_latex_tables_are_booktabs_and_balanced(report):
    for tex in (report / "tables").rglob("*.tex"):
        text = tex.read_text()
        assert "\\toprule" in text and "\\bottomrule" in text
        assert text.count("\\begin{") == text.count("\\end{")
        lines = text.splitlines()
        header = lines[lines.index("\\toprule") + 1]
        assert all(line.count("&") == header.count("&") for line in lines if line.endswith("\\\\"))


def pdflatex(folder: Path, name: str) -> str:
    """Compile ``folder/name`` once (stopping at the first error); returns the log."""
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", name],
                         cwd=folder, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:]
    return (folder / name).with_suffix(".log").read_text(errors="replace")


needs_latex = pytest.mark.skipif(shutil.which("pdflatex") is None,
                                 reason="no LaTeX engine installed (.ci/run installs texlive)")
MINIMAL = r"\documentclass{article}\usepackage{booktabs,amsmath}"


@needs_latex
def test_every_latex_output_compiles_in_a_minimal_article(report, tmp_path):
    """Every table of every command (--format latex, floats and bare tabulars), every .tex of a
    report folder and of the committed studies, in one plain article with booktabs and amsmath."""
    commands = [["variants"], ["variants", "--full"], ["compare", "pre-ln", "post-ln", "--preset", "tiny"],
                ["compare", "pre-ln", "moe", "--preset", "tiny", "--symbolic", "--no-float"],
                ["check", "pre-ln", "--preset", "tiny"], ["paths", "pre-ln", "resi-dual", "--preset", "tiny"],
                ["paths", "pre-ln", "--layers", "1000"], ["memory", "pre-ln", "moe", "--preset", "tiny"],
                ["inference", "pre-ln", "--preset", "tiny", "--no-float"],
                ["gradients", "pre-ln", "--preset", "tiny", "--seeds", "1", "--batch", "2"],
                ["train", "pre-ln", "--steps", "2", "--eval-every", "1", "--batch", "2"]]
    files = []
    for i, args in enumerate(commands):
        result = CliRunner().invoke(main, [*args, "--format", "latex"])
        assert result.exit_code == 0, result.output
        path = tmp_path / f"command{i}.tex"
        path.write_text(result.stdout)
        files.append((f"blockalg {' '.join(args)}", path))
    assert "\\begin{table}" not in (tmp_path / "command3.tex").read_text()  # --no-float
    tex = [p for p in report.rglob("*.tex") if p.name != "report.tex"]
    tex += sorted((reports_dir()).rglob("*.tex"))
    files += [(str(p), p) for p in tex]
    body = [f"\\clearpage\\section*{{{latex_escape(title)}}}\n\\input{{{path}}}" for title, path in files]
    (tmp_path / "all.tex").write_text("\n".join([MINIMAL, r"\begin{document}", *body, r"\end{document}"]))
    log = pdflatex(tmp_path, "all.tex")
    assert "Output written on all.pdf" in log
    for _, path in files:  # every float has a caption and a label; symbols are in math mode
        text = path.read_text()
        assert text.count("\\begin{table}") == text.count("\\caption{") == text.count("\\label{tab:")
        assert not re.search(r"[^\x00-\x7f]", text), path  # Δ, −, ×... as LaTeX, never raw


@needs_latex
def test_report_pdf_is_a_document_with_every_figure(report, tmp_path):
    shutil.copytree(report, tmp_path / "r")
    log = pdflatex(tmp_path / "r", "report.tex")
    pages = int(re.search(r"Output written on report.pdf \((\d+) pages?", log).group(1))
    assert pages >= 4
    if shutil.which("pdftoppm"):  # each page renders, and there are as many as the log says
        subprocess.run(["pdftoppm", "-r", "20", "-png", "report.pdf", "page"], cwd=tmp_path / "r",
                       check=True, timeout=120)
        assert len(list((tmp_path / "r").glob("page*.png"))) == pages
    included = set(re.findall(r"<(figures/[^>,]+\.png)", log))
    assert included == {str(p.relative_to(report)) for p in (report / "figures").rglob("*.png")}
    labels = set(re.findall(r"\\newlabel\{([^}]+)\}", (tmp_path / "r" / "report.aux").read_text()))
    assert {"tab:compare-tiny", "fig:tiny-params", "fig:tiny-flops_per_token", "fig:tiny-paths",
            "tab:closed-forms-pre-ln", "tab:closed-forms-post-ln", "fig:graph-pre-ln"} <= labels
    document = (report / "report.tex").read_text()
    for piece in (r"\maketitle", r"\date{\today}", r"\section{Conventions}", r"\section{Preset tiny}",
                  "$V$ = vocab", "$L$ = n\\_layers"):
        assert piece in document, piece
    closed = (report / "closed_forms.tex").read_text()
    assert "norm parameters & params.norm & $4 d L + 2 d$" in closed  # named, labelled rows


def test_rerun_is_byte_identical_and_check_sees_drift(report):
    args = [*REPORT, "--out", str(report)]
    same = CliRunner().invoke(main, [*args, "--drift"])
    assert same.exit_code == 0 and "no drift" in same.output  # says so on success too
    table = report / "tables/tiny/compare.md"
    table.write_text(table.read_text().replace("136,960", "136,961"))
    result = CliRunner().invoke(main, [*args, "--check"])
    assert result.exit_code == 1 and "tables/tiny/compare.md" in result.output
    assert CliRunner().invoke(main, args).exit_code == 0  # rewriting repairs it
    assert CliRunner().invoke(main, [*args, "--check"]).exit_code == 0  # a rerun: byte-identical


def test_thousands_separator_in_latex(report, tmp_path):
    assert r"136\,960" in (report / "tables/tiny/compare.tex").read_text()  # a thin space by default
    out = tmp_path / "comma"
    CliRunner().invoke(main, ["report", "pre-ln", "--preset", "tiny", "--out", str(out), "--thousands", "comma"])
    assert "136,960" in (out / "tables/tiny/compare.tex").read_text()


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
            raise OSError(28, "No space left on device")
        return original(self, data)

    monkeypatch.setattr(Path, "write_bytes", failing_write_bytes)
    with pytest.raises(BlockalgError, match="cannot write .No space left on device"):
        new.write(out)
    monkeypatch.undo()
    assert (out / "a.md").read_text() == "old\n" and not (out / "b.md").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["r"]  # no temporary folder left behind


def test_empirical_report_adds_gradient_figure_and_its_drift_check_does_not_measure(tmp_path,
                                                                                     monkeypatch):
    out = tmp_path / "e"
    args = ["report", "pre-ln", "--preset", "tiny", "--out", str(out), "--empirical"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (out / "figures/gradients.png").stat().st_size > 10_000
    assert "gradients" in json.loads((out / "data.json").read_text())
    assert "fig:gradients" in (out / "report.tex").read_text()

    def no_measuring(*args, **kwargs):
        raise AssertionError("the drift check measured the gradients again")

    monkeypatch.setattr("blockalg.model.gradients.gradient_norms", no_measuring)
    result = CliRunner().invoke(main, [*args, "--drift"])
    assert result.exit_code == 0 and "not measured again" in result.output, result.output


def test_study_check_says_so_when_nothing_drifted(tmp_path, capsys):
    def build(quick=False):
        folder = ReportFolder()
        folder.add_text("README.md", "# a study")
        return folder

    assert study_main(build, "demo", ["--out", str(tmp_path / "demo")]) == 0
    assert study_main(build, "demo", ["--check", "--out", str(tmp_path / "demo")]) == 0
    assert "no drift: the 1 text files" in capsys.readouterr().err


def test_regenerate_help_is_its_own(capsys):
    import regenerate

    with pytest.raises(SystemExit):
        regenerate.main(["--help"])
    usage = capsys.readouterr().out
    assert usage.startswith("usage: analyses/regenerate.py") and "--only" in usage


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
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()  # runs in ROOT
    outputs = {cell.source: cell.outputs for cell in notebook.cells if cell.cell_type == "code"}
    assert outputs['c["pre-ln"].values["params.total"]'][0]["data"]["text/plain"] == "124439808"
    assert any("image/png" in o.get("data", {}) for cells in outputs.values() for o in cells)
    assert "text/markdown" in outputs['g = variants.get("pre-ln")\ng'][0]["data"]
    # the block written in PyTorch in the notebook imports to pre-ln's numbers exactly
    mine = outputs['blockalg.compare(["pre-ln", mine], preset="gpt2-small")'][0]["data"]["text/markdown"]
    assert "| params.total | 124,439,808 | 124,439,808 | +0 |" in mine
