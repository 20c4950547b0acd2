"""What blockalg prints and draws: terminal tables that fit 100 columns, numbers written the same
way everywhere, LaTeX cells that need only booktabs, figures that keep coinciding curves apart."""

import json
import os
import stat

import pytest
from support import run

from blockalg.files import current_umask, write_atomic
from blockalg.graphs.variants import catalog
from blockalg.output.plots import coinciding, seq_lengths
from blockalg.output.render import (
    TEXT_WIDTH,
    Table,
    format_value,
    latex_cell,
    latex_escape,
)

ALL = [v.name for v in catalog()]


def widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


@pytest.mark.parametrize("args", [
    ["variants"], ["variants", "--full"],
    ["compare", "pre-ln", "post-ln", "--symbolic"],
    ["compare", "moe", "normformer", "resi-dual", "--symbolic"],
    ["paths", "pre-ln", "resi-dual", "--layers", "1000"],
    ["memory", "pre-ln", "post-ln", "--preset", "gpt3-175b"], ["inference", "pre-ln", "llama"],
])
def test_terminal_tables_fit_100_columns(args):
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert widest(result.output) <= TEXT_WIDTH == 100


def test_whole_catalog_fits_and_keeps_every_variant_beside_its_difference():
    """Split into blocks of columns within 100 columns, each block repeats the quantity column,
    and a variant stays next to its Δ column."""
    text = run("compare", *ALL, "--preset", "tiny").output
    assert widest(text) <= TEXT_WIDTH
    headers = [line.split() for line in text.splitlines() if line.startswith("quantity")]
    assert len(headers) > 1
    named = [h for header in headers for h in header[1:] if h not in ("Δ", "vs", "pre-ln")]
    assert named == ALL[1:]  # every variant once, in order (pre-ln appears in every Δ header)
    for header in headers[1:]:
        assert header.count("Δ") == len(header[1:]) // 4  # pairs: name, Δ vs pre-ln


def test_closed_forms_wrap_one_variant_per_block():
    text = run("compare", "pre-ln", "post-ln", "--symbolic").output
    closed = text[text.index("closed forms"):]
    assert [line.split()[1] for line in closed.splitlines() if line.startswith("quantity")] == \
        ["pre-ln", "post-ln"]
    assert "\n                               13*d_model)" in closed  # a wrapped, indented expression


def test_big_integers_are_abbreviated_the_same_everywhere():
    """4**1000 paths at L = 1000: 603 digits, in paths' table and as format_value writes it."""
    assert format_value(4**1000) == "1.1481e+602 (603 digits)"
    assert format_value(-(10**30)) == "-1.0000e+30 (31 digits)"
    assert "1.1481e+602 (603 digits)" in run("paths", "pre-ln", "--layers", "1000").output
    from blockalg.output.tables import number

    assert number(6277101735386680763835789423207666416102355444464034512896) == \
        "6.2771e+57 (58 digits)"  # check's predicted/measured path counts at gpt3-175b
    assert number(124439808) == "124,439,808" and number(0.5) == "0.5"


def test_dense_headers_leave_out_the_expert_dimensions():
    assert "n_experts" not in run("compare", "pre-ln", "post-ln").output
    assert "n_experts" not in run("memory", "pre-ln", "--preset", "tiny").output
    moe = run("compare", "pre-ln", "moe").output
    assert "n_experts=8" in moe and "top_k=2" in moe


def test_variants_lists_papers_and_json_everything():
    text = run("variants").output
    assert "Xiong et al. 2020" in text and "paper" in text.splitlines()[1]
    data = json.loads(run("variants", "--format", "json").output)
    pre = data[0]
    assert pre["paper"] == "Radford et al. 2019 (GPT-2); Xiong et al. 2020"
    assert pre["reference"].startswith("Radford et al. 2019") and pre["equations"]


def test_hf_config_takes_its_place_among_the_variants(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "gpt2", "n_embd": 64, "n_head": 4, "n_layer": 2,
                                  "n_positions": 32, "vocab_size": 96}))
    for args, order in ((["pre-ln", "--hf-config", config, "post-ln"], ["pre-ln", "gpt2", "post-ln"]),
                        (["--hf-config", config, "pre-ln"], ["gpt2", "pre-ln"]),
                        (["pre-ln", "post-ln", f"--hf-config={config}"], ["pre-ln", "post-ln", "gpt2"])):
        data = json.loads(run("compare", *args, "--format", "json").output)
        assert [v["name"] for v in data["variants"]] == order
    table = run("compare", "pre-ln", "--hf-config", config).output
    assert "Δ vs pre-ln" in table  # the first column is the baseline


def test_latex_cells_need_only_booktabs():
    assert latex_cell("-1,536") == r"$-$1\,536" and latex_cell("+0") == "$+$0"
    assert latex_cell("124,439,808", ",") == "124,439,808"
    assert latex_cell("1.1481e+602 (603 digits)") == r"$1.1481\times10^{602}$ (603 digits)"
    assert latex_escape("Δ vs pre-ln") == r"$\Delta$ vs pre-ln"
    assert latex_escape("‖∇W₂‖ ± 1") == r"$\| \nabla$W$_{2} \|$ $\pm$ 1"
    assert latex_escape("$d^{2}$ and d_ff") == r"$d^{2}$ and d\_ff"  # maths kept as is


def test_latex_float_has_caption_and_label_and_no_float_is_a_bare_tabular():
    table = Table("t", ["a", "b"], [["x", "1,234"]], caption="At preset tiny.", label="tab:t")
    floated = table.to_latex()
    assert floated.startswith(r"\begin{table}[htbp]") and r"\caption{At preset tiny.}" in floated
    assert r"\label{tab:t}" in floated and floated.endswith(r"\end{table}")
    bare = table.to_latex(float_=False)
    assert bare.startswith("% At preset tiny.") and r"\begin{table}" not in bare
    assert run("compare", "pre-ln", "--preset", "tiny", "--format", "latex",
               "--no-float").output.startswith("% pre-ln at preset tiny")


def test_written_files_get_the_usual_mode(tmp_path):
    """Atomic writes (figures of gradients --plot, reports) are 0666 less the umask, not 0600."""
    path = tmp_path / "f.txt"
    write_atomic(path, "x")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~current_umask()


def test_coinciding_curves_are_drawn_once_and_labelled():
    curves = {"pre-ln": ([1, 2], [5, 6]), "post-ln": ([1, 2], [5, 6]), "rezero": ([1, 2], [5, 7])}
    assert coinciding(curves) == [["pre-ln", "post-ln"], ["rezero"]]
    assert coinciding({"a": ([1], [100.0]), "b": ([1], [100.5])}, rel_tol=0.01) == [["a", "b"]]


def test_flops_axis_follows_the_preset():
    assert seq_lengths(64)[-1] == 64 and seq_lengths(1024) == [16, 32, 64, 128, 256, 512, 1024]
    assert seq_lengths(2048)[-1] == 2048


def test_nothing_cites_a_path_outside_the_repository():
    """Every claim the project checks or cites is stated inside it: no pointer to the design notes
    or the seed material that lived next to the repository."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    outside = ["shared" + "/seed", "../" + "shared", "DESIGN" + ".md"]
    files = [root / "README.md", *(p for folder in ("blockalg", "analyses", "reports", "tests", "examples")
                                   for p in (root / folder).rglob("*")
                                   if p.suffix in (".py", ".md", ".tex", ".csv", ".json", ".ipynb"))]
    cited = [(str(p.relative_to(root)), s) for p in files for s in outside if s in p.read_text()]
    assert cited == []
