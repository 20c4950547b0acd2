"""The command line: outputs, the JSON contract, error paths and the fast start."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from support import (
    GPT2_SMALL_FORWARD_MATMUL,
    GPT2_SMALL_PARAMS,
    GPT2_SMALL_PER_BLOCK,
    run,
)

from blockalg.cli import main


def test_compare_json_contract():
    result = run("compare", "pre-ln", "post-ln", "hybrid-ln", "--preset", "gpt2-small", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["preset"] == "gpt2-small"
    assert data["dims"]["d_model"] == 768 and data["dims"]["seq_len"] == 1024 and data["dims"]["vocab"] == 50257
    totals = [v["params"]["total"] for v in data["variants"]]
    assert totals == [GPT2_SMALL_PARAMS["pre-ln"], GPT2_SMALL_PARAMS["post-ln"], GPT2_SMALL_PARAMS["hybrid-ln"]]
    pre = data["variants"][0]
    assert pre["name"] == "pre-ln"
    assert set(pre["params"]) >= {"total", "per_block", "attention", "ffn", "norm", "embedding"}
    assert pre["flops"]["forward_matmul"] == GPT2_SMALL_FORWARD_MATMUL
    assert pre["flops"]["backward_matmul"] == 583296614400
    assert "forward_other" in pre["flops"]
    assert "n_layers" in pre["expressions"]["params.total"]


def test_compare_accepts_vs_and_aliases():
    result = run("compare", "pre-LN", "vs", "post-LN")
    assert result.exit_code == 0, result.output
    assert "124,439,808" in result.output and "124,438,272" in result.output and "-1,536" in result.output


@pytest.mark.parametrize("fmt,marker", [("markdown", "| params.total |"), ("latex", r"\toprule"),
                                        ("csv", "quantity,pre-ln,post-ln"), ("table", "params.total")])
def test_compare_formats(fmt, marker):
    result = run("compare", "pre-ln", "post-ln", "--preset", "tiny", "--format", fmt)
    assert result.exit_code == 0 and marker in result.output


def test_compare_csv_holds_plain_exact_integers():
    result = run("compare", "pre-ln", "post-ln", "--preset", "gpt2-small", "--format", "csv")
    lines = result.output.splitlines()
    pre, post = GPT2_SMALL_PARAMS["pre-ln"], GPT2_SMALL_PARAMS["post-ln"]
    assert f"params.total,{pre},{post},{post - pre}" in lines
    flops = GPT2_SMALL_FORWARD_MATMUL
    assert f"flops.forward_matmul,{flops},{flops},+0" in lines


def test_compare_symbolic_shows_closed_forms():
    result = run("compare", "pre-ln", "--preset", "tiny", "--symbolic")
    assert result.exit_code == 0
    unwrapped = " ".join(result.output.split())  # long expressions wrap to fit the terminal
    assert "n_layers*(12*d_model**2 + 13*d_model)" in unwrapped


def test_compare_set_overrides_a_dimension():
    data = json.loads(run("compare", "pre-ln", "--set", "n_layers=24", "--format", "json").output)
    assert data["dims"]["n_layers"] == 24
    assert data["variants"][0]["params"]["total"] == GPT2_SMALL_PARAMS["pre-ln"] + 12 * GPT2_SMALL_PER_BLOCK


def test_compare_a_graph_file(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(run("show", "post-ln", "--format", "json").output)
    data = json.loads(run("compare", "pre-ln", str(path), "--format", "json").output)
    assert [v["name"] for v in data["variants"]] == ["pre-ln", "post-ln"]
    assert data["variants"][1]["params"]["total"] == GPT2_SMALL_PARAMS["post-ln"]


def test_variants_json():
    data = json.loads(run("variants", "--format", "json").output)
    names = [v["name"] for v in data]
    assert names[:3] == ["pre-ln", "post-ln", "hybrid-ln"]
    assert all({"name", "aliases", "equations", "reference"} <= set(v) for v in data)


@pytest.mark.parametrize("fmt,marker", [("text", "attn = attention(ln_1)"), ("mermaid", "flowchart TD"),
                                        ("dot", "digraph"), ("json", '"op": "attention"')])
def test_show_formats(fmt, marker):
    result = run("show", "pre-ln", "--format", fmt)
    assert result.exit_code == 0 and marker in result.output


@pytest.mark.parametrize("args,culprit", [
    (["compare", "pre-lm"], "unknown variant 'pre-lm'"),
    (["compare", "pre-ln", "--preset", "gpt5"], "gpt5"),
    (["compare", "pre-ln", "--set", "d_modle=5"], "unknown dimension 'd_modle'"),
    (["compare", "pre-ln", "--set", "n_layers=0"], "positive integers"),
    (["compare", "pre-ln", "--set", "n_layers=x"], "'x' is not an integer"),
    (["compare", "pre-ln", "--set", "n_heads=7"], "not divisible by n_heads = 7"),
    (["compare", "pre-ln", "--set", "seq_len=4096"], "seq_len = 4096 exceeds"),
    (["compare", "./missing.json"], "missing.json"),
    (["show", "nope"], "unknown variant 'nope'"),
])
def test_bad_input_is_one_line_and_exit_2(args, culprit):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and culprit in lines[0], result.output
    assert "Traceback" not in result.output


def test_invalid_graph_file_is_one_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text(json.dumps({"directed": True, "graph": {}, "nodes": [{"id": "x", "op": "input"}], "edges": []}))
    result = run("compare", str(path))
    assert result.exit_code == 2 and "broken.json" in result.output and "'output'" in result.output


def test_compare_does_not_import_torch():
    code = ("import sys\nfrom click.testing import CliRunner\nfrom blockalg.cli import main\n"
            "r = CliRunner().invoke(main, ['compare', 'pre-ln', 'post-ln'])\n"
            "assert r.exit_code == 0, r.output\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_console_script_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "blockalg", "compare", "pre-ln", "--preset", "tiny",
                          "--format", "json"], capture_output=True, text=True)
    assert out.returncode == 0 and json.loads(out.stdout)["preset"] == "tiny"


def test_two_graphs_of_the_same_name_stay_apart(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(run("show", "pre-ln", "--format", "json").output)  # a file that calls itself pre-ln
    data = json.loads(run("compare", "pre-ln", str(path), "--format", "json").output)
    assert [v["name"] for v in data["variants"]] == ["pre-ln", "pre-ln-2"]


def test_compare_json_components_sum_to_the_total_with_learned_scales():
    """admin's ω and rezero's α are parameters of the 'scale' component, not of no component."""
    data = json.loads(run("compare", "admin", "rezero", "--format", "json").output)
    for entry in data["variants"]:
        params = entry["params"]
        assert params["scale"] > 0
        assert params["total"] == sum(params[c] for c in ("attention", "ffn", "norm", "scale", "embedding"))
