"""Hostile input, case by case (issue 11, "What was found"): every case gives one line and exit 2,
or a correct result, and no input hangs. The error contract itself (exit 3 with --debug, 130) and
the report folder's one-step replacement under signals are tested here too."""

import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import mpmath
import pytest
from support import run, write_json

from blockalg import BlockalgError
from blockalg.graphs.expr import parse_expression
from blockalg.graphs.serialize import to_json
from blockalg.graphs.variants import get
from blockalg.output import report as report_module
from blockalg.output.report import ReportFolder

HF = Path(__file__).parent / "data" / "hf"


def one_line_error(*args, code=2):
    """Run ``blockalg ARGS``: exit ``code``, one line on stderr naming what is wrong."""
    result = run(*args)
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def block_data(name="pre-ln"):
    return json.loads(to_json(get(name)))


def with_edge_scale(scale):
    data = block_data()
    data["edges"][0]["scale"] = scale
    return data


# ---------------------------------------------------------------------------------------------
# Loaders: graph files and Hugging Face configs.


@pytest.mark.parametrize("text,message", [
    ("[" * 100_000 + "]" * 100_000, "nested deeper than 64"),
    ('{"nodes": [], "edges": [], "x": ' + "[" * 70 + "]" * 70 + "}", "nested deeper than 64"),
    ('{"nodes": [], "edges": [], "graph": {"position_offset": 1' + "0" * 5000 + "}}", "5001 digits"),
    ('{"nodes": [], "edges": [{"source": "x", "target": "y", "scale": Infinity}]}', "Infinity is not a number"),
    ('{"nodes": [], "edges": [{"source": "x", "target": "y", "scale": NaN}]}', "NaN is not a number"),
    ('{"nodes": [], "edges": [{"source": "x", "target": "y", "scale": 1e400}]}', "does not fit a float"),
], ids=["deep", "deep-inside", "4300-digits", "Infinity", "NaN", "1e400"])
def test_hostile_json_is_refused_as_a_file(tmp_path, text, message):
    for name, option in (("block.json", ()), ("config.json", ("--hf-config",))):
        path = tmp_path / name
        path.write_text(text)
        assert message in one_line_error("compare", *option, path)


def test_invalid_utf8_is_refused_by_both_readers(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b'{"model_type": "gpt2", "n_embd": 768, "name": "\xff\xfe"}')
    assert "not UTF-8 text (byte 47)" in one_line_error("compare", "--hf-config", path)
    assert "not UTF-8 text" in one_line_error("compare", path)


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d["nodes"].append(["ln", "layernorm"]), "expected an object with a string 'id'"),
    (lambda d: d["nodes"].append("ln"), "expected an object with a string 'id'"),
    (lambda d: d["nodes"].append(7), "expected an object with a string 'id'"),
    (lambda d: d["nodes"].append({"id": None, "op": "layernorm"}), "string 'id'"),
    (lambda d: d["edges"].append({"source": None, "target": "out"}), "string 'source' and 'target'"),
    (lambda d: d["edges"].append({"source": "x", "target": None}), "string 'source' and 'target'"),
    (lambda d: d["edges"].append({"source": "x", "target": "nowhere"}), "no node 'nowhere'"),
    (lambda d: d.update(nodes={"x": 1}), "'nodes' must be a JSON array"),
    (lambda d: d["nodes"][1].update(op=["layernorm"]), "unknown op ['layernorm']"),
    (lambda d: d["nodes"][1].update(op={"op": "ffn"}), "unknown op {'op': 'ffn'}"),
    (lambda d: d["edges"][0].update(scale="1e400"), "not a finite number"),
    (lambda d: d["edges"][0].update(scale="\ud800"), "not valid arithmetic"),
    (lambda d: d["edges"][0].update(scale="-" * 10_000 + "1"), "longer than 200 characters"),
    (lambda d: d["edges"][0].update(scale="1+" * 5_000 + "1"), "longer than 200 characters"),
    (lambda d: d["edges"][0].update(scale="d_model**d_model**d_model"), "exponents must be rational"),
    (lambda d: d["nodes"].append({"id": "ln\nmalicious", "op": "layernorm"}), "names must be identifiers"),
    (lambda d: d["graph"].update(position_offset=2**63), "position_offset = 9223372036854775808"),
])
def test_malformed_graph_files_are_one_line(tmp_path, mutate, message):
    data = block_data()
    mutate(data)
    path = tmp_path / "block.json"
    path.write_text(json.dumps(data))
    assert message in one_line_error("compare", path)


def test_a_stack_segment_of_nested_powers_is_refused_at_once(tmp_path):
    data = block_data("mix-ln")
    for layers, message in (("L**L**L", "exponents must be rational"),
                            ("((((2**64)**64)**64)**64)**64", "could exceed 256 bits"),
                            ("floor(L/100) - floor(L/101) + L", "cover")):
        data["graph"]["segments"][1]["layers"] = layers
        start = time.process_time()
        assert message in one_line_error("compare", write_json(tmp_path, data))
        assert time.process_time() - start < 5


def test_nested_powers_are_refused_in_microseconds():
    start = time.process_time()
    for _ in range(100):
        with pytest.raises(BlockalgError, match="too large"):
            parse_expression("((((((2**64)**64)**64)**64)**64)**64)")
    assert time.process_time() - start < 1  # 100 refusals; the computation would not finish


@pytest.mark.parametrize("field,value,message", [
    ("n_embd", {"a": 1}, "n_embd = {'a': 1}: expected a positive integer"),
    ("n_embd", True, "n_embd = True: expected a positive integer"),
    ("n_layer", 2**63, "n_layer = 9223372036854775808: expected a positive integer up to 2**63 - 1"),
    ("n_head", "12", "n_head = '12': expected a positive integer"),
    ("tie_word_embeddings", "yes", "tie_word_embeddings = 'yes': expected true or false"),
])
def test_hf_config_fields_of_the_wrong_type_are_named(tmp_path, field, value, message):
    config = json.loads((HF / "gpt2.json").read_text())
    config[field] = value
    assert message in one_line_error("compare", "--hf-config", write_json(tmp_path, config, "config.json"))


def test_hf_config_hidden_size_dict_and_names_that_are_not_strings(tmp_path):
    config = json.loads((HF / "llama.json").read_text())
    config["hidden_size"] = {"value": 4096}
    assert "hidden_size = {'value': 4096}" in one_line_error(
        "compare", "--hf-config", write_json(tmp_path, config, "config.json"))
    for name in (["a", "b"], 7):  # not a name: the model type names the model
        config = {**json.loads((HF / "gpt2.json").read_text()), "_name_or_path": name}
        result = run("compare", "--hf-config", write_json(tmp_path, config, "config.json"),
                     "--format", "json")
        assert result.exit_code == 0 and '"name": "gpt2"' in result.output
    # `report` with the int name: test_out_follows_a_symlink_only_to_a_report_folder


def test_deepest_config_answers_and_beyond_int64_is_refused(tmp_path):
    config = {**json.loads((HF / "gpt2.json").read_text()), "n_layer": 2**63 - 1}
    result = run("compare", "--hf-config", write_json(tmp_path, config, "config.json"), "--format", "json")
    assert result.exit_code == 0, result.output
    count = json.loads(result.output)["variants"][0]["paths"]["count"]
    with mpmath.workdps(40):  # 4^L has floor(L·log10 4) + 1 digits
        assert count["digits"] == int(mpmath.floor((2**63 - 1) * mpmath.log10(4))) + 1


# ---------------------------------------------------------------------------------------------
# Dimensions and flags that torch would choke on.


def test_dimensions_beyond_int64_never_reach_torch(tmp_path):
    assert "up to 2**63 - 1" in one_line_error("check", "pre-ln", "--set", "vocab=100000000000000000000")
    assert "up to 2**63 - 1" in one_line_error("check", "pre-ln", "--set", "n_layers=" + "9" * 5000)
    assert "tensor wte.weight would hold" in one_line_error("check", "pre-ln", "--set", f"vocab={2**62}")
    data = block_data()
    data["graph"]["position_offset"] = 2**62
    assert "tensor wpe.weight would hold" in one_line_error("check", write_json(tmp_path, data), "--preset", "tiny")
    assert "at most 10,000" in one_line_error("check", "pre-ln", "--preset", "tiny", "--set", "n_layers=1000000000")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e308", "0"])
def test_init_std_must_be_a_sensible_number(value):
    assert "--init-std" in one_line_error("gradients", "pre-ln", "--preset", "tiny", "--init-std", value)


def test_train_flags_must_be_finite():
    assert "--lr" in one_line_error("train", "pre-ln", "--lr", "nan")
    assert "--seeds" in one_line_error("gradients", "pre-ln", "--seeds", str(10**30))


# ---------------------------------------------------------------------------------------------
# Exact integers over 4,300 digits, and models a billion layers deep.


@pytest.mark.parametrize("fmt", ["table", "markdown", "latex", "csv", "json"])
def test_counts_over_4300_digits_print_in_every_format(fmt):
    for args in (("compare", "pre-ln", "--set", "n_layers=7143"), ("paths", "pre-ln", "--layers", "7143")):
        result = run(*args, "--format", fmt)
        assert result.exit_code == 0, result.output
        if fmt == "json":
            sys.set_int_max_str_digits(0)
            try:
                data = json.loads(result.output)
            finally:
                sys.set_int_max_str_digits(4300)
            assert data["variants"][0]["paths"]["count"] == 4**7143  # exact, in full
        else:
            assert "3.2697" in result.output and "4300" in result.output  # 4^7143, abbreviated
            assert "(4301 digits)" in result.output


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_a_billion_layers_answers_in_log_scale(fmt):
    result = run("paths", "pre-ln", "parallel", "--layers", "1000000000", "--format", fmt)
    assert result.exit_code == 0, result.output
    digits = math.floor(10**9 * math.log10(4)) + 1
    if fmt == "json":
        pre, parallel = (v["paths"] for v in json.loads(result.output)["variants"])
        assert pre["count"]["digits"] == digits and pre["count"]["approx"].startswith("2.1280e+")
        assert abs(parallel["count"]["log10"] - 10**9 * math.log10(3)) < 1e-3  # 3^L
        assert pre["longest"] == {"norms": 2 * 10**9 + 1, "sublayers": 2 * 10**9}
    else:
        assert f"({digits} digits)" in result.output
    result = run("compare", "pre-ln", "post-ln", "--set", "n_layers=1000000000")
    assert result.exit_code == 0 and "≈+0" in result.output  # Δ of two equal huge counts


def test_detail_past_its_limit_is_refused():
    assert "up to 1,000 layers" in one_line_error("paths", "pre-ln", "--layers", "5000", "--detail")
    assert "up to 200 layers" in one_line_error("paths", "resi-dual", "--layers", "500", "--detail")


def test_a_parallel_block_with_a_chain_of_200_norms_answers_quickly(tmp_path):
    data = block_data("parallel")
    chain = [f"n{i}" for i in range(200)]
    data["nodes"] += [{"id": c, "op": "layernorm"} for c in chain]
    data["edges"] = [e for e in data["edges"] if e["source"] != "ln_1"]
    data["edges"] += [{"source": "ln_1", "target": chain[0]}]
    data["edges"] += [{"source": u, "target": v} for u, v in zip(chain, chain[1:])]
    data["edges"] += [{"source": chain[-1], "target": t} for t in ("attn", "ffn")]
    start = time.process_time()
    result = run("paths", write_json(tmp_path, data), "--layers", "3", "--format", "json")
    assert result.exit_code == 0, result.output
    assert time.process_time() - start < 10
    paths = json.loads(result.output)["variants"][0]["paths"]
    assert paths["count"] == 3**3 and paths["longest"]["norms"] == 3 * 201 + 1
    data["nodes"] += [{"id": f"m{i}", "op": "layernorm"} for i in range(60)]
    assert "at most 256 nodes" in one_line_error("paths", write_json(tmp_path, data))


def branching_block(stages: int) -> dict:
    """Each stage adds a norm, an attention and an FFN branch beside the skip: C(stages + 3, 3)
    kinds of paths (by norms, attention and FFN crossed)."""
    nodes, edges, x = [{"id": "x", "op": "input"}], [], "x"
    for i in range(stages):
        for name, op in ((f"ln{i}", "layernorm"), (f"attn{i}", "attention"), (f"ffn{i}", "ffn")):
            nodes.append({"id": name, "op": op})
            edges += [{"source": x, "target": name}, {"source": name, "target": f"add{i}"}]
        nodes.append({"id": f"add{i}", "op": "add"})
        edges.append({"source": x, "target": f"add{i}"})
        x = f"add{i}"
    nodes.append({"id": "out", "op": "output"})
    edges.append({"source": x, "target": "out"})
    return {"directed": True, "multigraph": False, "graph": {"final_norm": "layernorm"},
            "nodes": nodes, "edges": edges}


def test_a_block_with_too_many_kinds_of_paths_is_refused_at_once(tmp_path):
    start = time.process_time()
    assert "more than 5000 kinds of paths" in one_line_error("compare", write_json(tmp_path, branching_block(60)))
    result = run("paths", write_json(tmp_path, branching_block(8)), "--layers", "2", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["variants"][0]["paths"]["count"] == (4**8) ** 2
    assert time.process_time() - start < 10


# ---------------------------------------------------------------------------------------------
# Messages stay one line.


def test_a_name_with_a_newline_cannot_split_the_error(tmp_path):
    data = block_data()
    data["graph"]["fin\nal_norm"] = None
    assert r"unknown graph attribute 'fin\nal_norm'" in one_line_error("compare", write_json(tmp_path, data))
    weird = tmp_path / "bad\nname.json"
    assert "bad\\nname.json" in one_line_error("compare", weird)
    assert "unknown dimension 'n\\nlayers'" in one_line_error("compare", "pre-ln", "--set", "n\nlayers=3")


# ---------------------------------------------------------------------------------------------
# Output paths.


def test_output_paths_that_cannot_be_written_are_one_line(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "afile' is a file, not a folder" in one_line_error("report", "pre-ln", "--preset", "tiny",
                                                               "--out", afile / "rep")
    long = tmp_path / ("r" * 300)
    assert "File name too long" in one_line_error("report", "pre-ln", "--preset", "tiny", "--out", long)
    assert "is a file, not a folder" in one_line_error("gradients", "pre-ln", "--preset", "tiny",
                                                       "--seeds", "1", "--plot", afile / "g.png")
    assert "is a file, not a folder" in one_line_error("train", "pre-ln", "--steps", "1",
                                                       "--eval-every", "1", "--out", afile / "t")


def test_a_read_only_file_system_is_one_line(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(report_module.tempfile, "mkdtemp", read_only)
    assert "cannot write (Read-only file system)" in one_line_error(
        "report", "pre-ln", "--preset", "tiny", "--out", tmp_path / "rep")


def test_out_follows_a_symlink_only_to_a_report_folder(tmp_path):
    real = tmp_path / "real"
    OLD.write(real)
    link = tmp_path / "link"
    link.symlink_to(real)
    config = {**json.loads((HF / "gpt2.json").read_text()), "_name_or_path": 7, "n_layer": 2,
              "n_embd": 64, "n_head": 4, "n_positions": 32, "vocab_size": 96}
    result = run("report", "--hf-config", write_json(tmp_path, config, "config.json"), "--out", link)
    assert result.exit_code == 0, result.output  # an int name crashed the report once
    assert link.is_symlink() and "# blockalg report: gpt2" in (real / "README.md").read_text()
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    assert "not a blockalg report folder" in one_line_error("report", "pre-ln", "--out", dangling)
    assert not (tmp_path / "nowhere").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "to_elsewhere").symlink_to(elsewhere)
    assert "not a blockalg report folder" in one_line_error("report", "pre-ln", "--out", tmp_path / "to_elsewhere")


# ---------------------------------------------------------------------------------------------
# The error contract: internal errors, --debug, Ctrl-C, SIGTERM.


def _boom(*args, **kwargs):
    raise ZeroDivisionError("synthetic bug")


def test_an_internal_error_is_one_line_with_exit_3(monkeypatch):
    monkeypatch.setattr("blockalg.analysis.analyze.compare", _boom)
    line = one_line_error("compare", "pre-ln", code=3)
    assert line.startswith("blockalg: internal error: ZeroDivisionError: synthetic bug, please report")
    result = run("compare", "pre-ln", "--debug")
    assert result.exit_code == 3 and "Traceback" in result.output and "_boom" in result.output
    monkeypatch.setenv("BLOCKALG_DEBUG", "1")
    assert "Traceback" in run("compare", "pre-ln").output


@pytest.mark.parametrize("exception,code,line", [
    (KeyboardInterrupt, 130, "blockalg: interrupted"),
    (report_module.Terminated, 143, "blockalg: terminated by signal 15"),
])
def test_ctrl_c_and_sigterm_are_one_line(monkeypatch, exception, code, line):
    def interrupt(*args, **kwargs):
        raise exception()

    monkeypatch.setattr("blockalg.analysis.analyze.compare", interrupt)
    assert one_line_error("compare", "pre-ln", code=code) == line


# ---------------------------------------------------------------------------------------------
# Report folders: replaced in one step, whatever signal arrives when.


def folder(**files):
    f = ReportFolder()
    for name, text in files.items():
        f.add_text(name, text)
    return f


OLD, NEW = folder(**{"a.md": "old"}), folder(**{"a.md": "new", "sub/b.md": "new"})


def contents(out: Path) -> dict:
    return {str(p.relative_to(out)): p.read_text() for p in sorted(out.rglob("*")) if p.is_file()}


def _steps(exchange: bool):
    if exchange:
        return [("_recover", 1), ("_stage", 1), ("_write_files", 1), ("_exchange", 1), ("_remove", 1)]
    return [("_recover", 1), ("_stage", 1), ("_write_files", 1), ("_rename", 1), ("_rename", 2),
            ("_rename", 3), ("_remove", 1)]


INJECTIONS = {
    "raise before": lambda original, args: (_ for _ in ()).throw(KeyboardInterrupt()),
    "SIGINT before": lambda original, args: (signal.raise_signal(signal.SIGINT), original(*args))[1],
    "SIGTERM after": lambda original, args: (original(*args), signal.raise_signal(signal.SIGTERM))[0],
}


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two renames"])
def test_a_signal_at_any_step_leaves_the_old_or_the_new_folder(tmp_path, monkeypatch, exchange):
    probe = tmp_path / "probe"
    (probe / "a").mkdir(parents=True)
    (probe / "b").mkdir()
    if exchange and not report_module._exchange(probe / "a", probe / "b"):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not supported here")
    out = tmp_path / "work" / "X"
    old, new = contents_of(OLD, tmp_path / "o"), contents_of(NEW, tmp_path / "n")
    cases = 0
    for step, call in _steps(exchange):
        for how, inject in INJECTIONS.items():
            OLD.write(out)
            original, calls = getattr(report_module, step), []

            def patched(*args, original=original, calls=calls, inject=inject, call=call):
                calls.append(1)
                return inject(original, args) if len(calls) == call else original(*args)

            with monkeypatch.context() as m:
                m.setattr(report_module, step, patched)
                if not exchange:
                    m.setattr(report_module, "_exchange", lambda a, b: False)
                with pytest.raises(KeyboardInterrupt):
                    NEW.write(out)
            assert contents(out) in (old, new), (step, call, how)
            NEW.write(out)  # the next run
            assert contents(out) == new and os.listdir(out.parent) == ["X"], (step, call, how)
            cases += 1
    assert cases == len(_steps(exchange)) * len(INJECTIONS)


def contents_of(report: ReportFolder, where: Path) -> dict:
    report.write(where)
    return contents(where)


def test_a_run_killed_between_the_renames_is_recovered_by_the_next(tmp_path):
    out = tmp_path / "X"
    OLD.write(out)
    retired = tmp_path / ".X.old-abc123"
    os.rename(out, retired)  # what SIGKILL between the two renames leaves
    (tmp_path / ".X.new-def456").mkdir()  # and a staging folder
    NEW.write(out)
    assert contents(out)["a.md"] == "new\n" and os.listdir(tmp_path) == ["X"]


# ---------------------------------------------------------------------------------------------
# Found by the fuzzer (analyses/fuzz.py): each failure it finds stays here as a regression test.


@pytest.mark.parametrize("fmt", ["table", "latex", "json"])
def test_paths_of_a_two_stream_model_prints_its_transfer_matrix(fmt):
    result = run("paths", "resi-dual", "--layers", "3", "--format", fmt)
    assert result.exit_code == 0, result.output
    assert "Matrix" in result.output or "matrix" in result.output or "\\left[" in result.output


def test_a_mean_of_a_4300_digit_fraction_prints(tmp_path):
    result = run("paths", "resi-dual", "--layers", "7143", "--format", "latex")
    assert result.exit_code == 0, result.output
    assert r"mean\_sublayers & $\approx$7143 (4305/4301-digit fraction)" in result.output
    data = run("paths", "resi-dual", "--layers", "7143", "--format", "json").output
    assert '"mean_sublayers": "' in data and len(data) > 2 * 4300  # the exact fraction, in full
