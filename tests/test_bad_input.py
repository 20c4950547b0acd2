"""Bad input of every kind: one line naming the culprit, exit code 2, nothing written or lost."""

import json

import pytest
from support import run, write_json

from blockalg import BlockalgError, load_block
from blockalg.graphs.expr import parse_expression
from blockalg.graphs.graph import RESERVED_NODE_NAMES
from blockalg.graphs.serialize import to_json
from blockalg.graphs.variants import get


def one_line_error(*args):
    result = run(*args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]



@pytest.mark.parametrize("text,message", [("1/0", "division by zero"), ("sqrt(-1)", "not a finite real"),
                                          ("9**9**9", "too large"), ("L**x", "unknown symbol 'x'")])
def test_unsafe_or_meaningless_expressions_are_refused(text, message):
    with pytest.raises(BlockalgError, match=message):
        parse_expression(text)


def test_a_stack_segment_must_count_whole_blocks(tmp_path):
    data = json.loads(to_json(get("mix-ln")))
    data["graph"]["segments"][0]["layers"] = "L/2"
    data["graph"]["segments"][1]["layers"] = "L/2"
    assert "non-negative integer at every L" in one_line_error("paths", write_json(tmp_path, data))
    data["graph"]["segments"][0]["layers"] = "-1"
    data["graph"]["segments"][1]["layers"] = "L + 1"
    assert "segment 0" in one_line_error("paths", write_json(tmp_path, data))


def test_a_misspelt_model_attribute_is_refused(tmp_path):
    data = json.loads(to_json(get("pre-ln")))
    data["graph"]["final_nrom"] = data["graph"].pop("final_norm")
    assert "unknown graph attribute 'final_nrom'" in one_line_error("compare", write_json(tmp_path, data))


def test_the_final_norm_normalises_the_stream(tmp_path):
    data = json.loads(to_json(get("pre-ln")))
    data["graph"]["final_norm"] = {"op": "layernorm", "width": "d_ff"}
    assert "width is d_model" in one_line_error("compare", write_json(tmp_path, data))


def test_reserved_node_names_cover_every_module_attribute(tmp_path):
    from torch import nn

    from blockalg.model.build import Block

    public = {n for n in dir(nn.Module) if not n.startswith("_")} | {"plan", "inputs", "outputs"}
    assert public <= RESERVED_NODE_NAMES, sorted(public - RESERVED_NODE_NAMES)
    assert not {n for n in dir(Block) if not n.startswith("_")} - RESERVED_NODE_NAMES
    data = json.loads(to_json(get("pre-ln")))
    for node in data["nodes"]:
        if node["id"] == "ffn":
            node["id"] = "forward"
    for edge in data["edges"]:
        edge["source"] = "forward" if edge["source"] == "ffn" else edge["source"]
        edge["target"] = "forward" if edge["target"] == "ffn" else edge["target"]
    assert "node 'forward'" in one_line_error("check", write_json(tmp_path, data))


def test_empirical_commands_refuse_what_cannot_run():
    import torch

    assert "even d_head" in one_line_error("check", "llama", "--preset", "tiny", "--set", "d_head=7")
    assert ".png, .svg or .pdf" in one_line_error("gradients", "pre-ln", "--preset", "tiny", "--plot", "g.jpg")
    if not torch.cuda.is_available():
        assert "no CUDA device" in one_line_error("check", "pre-ln", "--preset", "tiny", "--device", "cuda")


def test_report_never_replaces_a_folder_it_did_not_write(tmp_path):
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("months of work")
    assert "was not written by blockalg" in one_line_error("report", "pre-ln", "--preset", "tiny",
                                                           "--out", str(precious))
    assert (precious / "chapter1.tex").read_text() == "months of work"


def test_hf_config_with_wrong_types_is_refused(tmp_path):
    assert "is not supported" in one_line_error("compare", "--hf-config",
                                                write_json(tmp_path, {"model_type": ["llama"]}, "config.json"))
    with pytest.raises(BlockalgError):
        load_block(write_json(tmp_path, {"nodes": [], "edges": [], "graph": {"name": 5}}))
