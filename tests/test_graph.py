"""Graph validation (one-line errors naming the node), JSON files, and analyses following edits."""

import json

import networkx as nx
import pytest
from support import write_json

from blockalg import BlockalgError, analyze, load_block, save_block, validate_block
from blockalg.graphs.graph import BlockBuilder
from blockalg.graphs.serialize import block_from_data, to_json
from blockalg.graphs.variants import get


def pre_ln_data():
    return json.loads(to_json(get("pre-ln")))



def error_of(data, tmp_path):
    with pytest.raises(BlockalgError) as info:
        load_block(write_json(tmp_path, data))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_round_trip_keeps_the_graph(tmp_path):
    graph = get("hybrid-ln")
    save_block(graph, tmp_path / "h.json")
    loaded = load_block(tmp_path / "h.json")
    assert nx.utils.graphs_equal(graph, loaded)
    assert analyze(loaded).values == analyze("hybrid-ln").values


def test_cycle_is_named(tmp_path):
    data = pre_ln_data()
    data["edges"].append({"source": "add_2", "target": "ln_1"})
    data["edges"] = [e for e in data["edges"] if not (e["source"] == "x" and e["target"] == "ln_1")]
    assert "cycle" in error_of(data, tmp_path)


def test_unknown_op_names_node(tmp_path):
    data = pre_ln_data()
    next(n for n in data["nodes"] if n["id"] == "ffn")["op"] = "mlp"
    assert "node 'ffn': unknown op 'mlp'" in error_of(data, tmp_path)


def test_wrong_arity_names_node(tmp_path):
    data = pre_ln_data()
    data["edges"].append({"source": "x", "target": "attn"})
    assert "node 'attn' (attention) has 2 inputs, takes 1" in error_of(data, tmp_path)


def test_dangling_node_is_named(tmp_path):
    data = pre_ln_data()
    data["nodes"].append({"id": "spare", "op": "layernorm"})
    data["edges"].append({"source": "x", "target": "spare"})
    assert "node 'spare' (layernorm) is dangling" in error_of(data, tmp_path)


def test_missing_source_and_sink(tmp_path):
    data = pre_ln_data()
    next(n for n in data["nodes"] if n["id"] == "x")["op"] = "layernorm"
    assert "exactly one 'input' node, found none" in error_of(data, tmp_path)
    data = pre_ln_data()
    data["nodes"].append({"id": "out2", "op": "output"})
    data["edges"].append({"source": "add_2", "target": "out2"})
    assert "exactly one 'output' node per stream, found 2" in error_of(data, tmp_path)


def test_bad_attribute_is_named(tmp_path):
    data = pre_ln_data()
    next(n for n in data["nodes"] if n["id"] == "ffn")["activation"] = "swish"
    assert "node 'ffn' (ffn): activation = 'swish'" in error_of(data, tmp_path)


def test_file_never_evaluates_code(tmp_path):
    data = pre_ln_data()
    next(e for e in data["edges"] if e["target"] == "add_1" and e["source"] == "x")["scale"] = \
        "__import__('os').system('touch pwned')"
    assert "calls are limited to sqrt" in error_of(data, tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_not_json_and_not_a_graph(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{nope")
    with pytest.raises(BlockalgError, match="not valid JSON"):
        load_block(path)
    with pytest.raises(BlockalgError, match="not a node-link graph"):
        block_from_data([1, 2])


def test_builder_refuses_a_duplicate_node():
    b = BlockBuilder("dup")
    x = b.input()
    b.node("n", "layernorm", x)
    with pytest.raises(BlockalgError, match="node 'n' is defined twice"):
        b.node("n", "layernorm", x)


def test_removing_a_norm_in_the_file_changes_the_numbers(tmp_path):
    """post-ln without its second norm: out = y + FFN(y). The numbers follow the file, not the name."""
    data = json.loads(to_json(get("post-ln")))
    data["nodes"] = [n for n in data["nodes"] if n["id"] != "ln_2"]
    data["edges"] = [e for e in data["edges"] if "ln_2" not in (e["source"], e["target"])]
    data["edges"].append({"source": "add_2", "target": "out"})
    data["graph"]["name"] = "post-ln"  # same name, different graph
    edited = analyze(write_json(tmp_path, data), preset="gpt2-small")
    original = analyze("post-ln", preset="gpt2-small")
    # one LayerNorm (2·768 parameters) fewer in each of 12 blocks
    assert original.values["params.total"] - edited.values["params.total"] == 12 * 2 * 768
    assert original.values["params.norm"] - edited.values["params.norm"] == 12 * 2 * 768
    # and 7 other FLOPs per element of the 1024×768 stream fewer per block
    assert original.values["flops.forward_other"] - edited.values["flops.forward_other"] == 12 * 7 * 1024 * 768


def test_edge_scale_costs_one_multiply_per_element(tmp_path):
    data = pre_ln_data()
    next(e for e in data["edges"] if e["target"] == "add_1" and e["source"] == "x")["scale"] = "(2*L)**(1/4)"
    scaled = analyze(write_json(tmp_path, data), preset="tiny")
    plain = analyze("pre-ln", preset="tiny")
    assert scaled.values["flops.forward_other"] - plain.values["flops.forward_other"] == 2 * 64 * 64


def test_validate_rejects_a_multigraph():
    with pytest.raises(BlockalgError, match="DiGraph"):
        validate_block(nx.MultiDiGraph())
