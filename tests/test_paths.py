"""Gradient paths: hand-worked generating functions, closed-form statistics, and the traced model."""

import json
import math

import networkx as nx
import pytest
import sympy as sp
from support import run

from blockalg import build_model
from blockalg.analysis.paths import model_terms, path_stats
from blockalg.analysis.terms import a, block_polynomial, f, n, path_polynomial
from blockalg.graphs.graph import BlockBuilder
from blockalg.graphs.serialize import to_json
from blockalg.graphs.symbols import n_layers as L
from blockalg.graphs.variants import catalog, get
from blockalg.model.check import check_paths, traced_generating_function

VARIANTS = ["pre-ln", "post-ln", "hybrid-ln"]



@pytest.mark.parametrize("variant,T", [
    ("pre-ln", (1 + n * a) * (1 + n * f)),
    ("post-ln", n**2 * (1 + a) * (1 + f)),
    ("hybrid-ln", n**2 * (1 + n * a) * (1 + f)),
])
def test_block_generating_functions_of_design_md(variant, T):
    assert sp.expand(block_polynomial(get(variant)) - T) == 0


def test_a_diamond_by_hand():
    # x → y → z and x → z; y is a norm: paths x→z (1) and x→y→z (n)
    g = nx.DiGraph([("x", "y"), ("y", "z"), ("x", "z")])
    assert path_polynomial(g, "x", "z", lambda v: n if v == "y" else 1) == n + 1


def parallel_block():
    """GPT-J's parallel block with one shared LN: out = x + Attn(LN x) + FFN(LN x)."""
    b = BlockBuilder("parallel", final_norm="layernorm")
    x = b.input()
    h = b.node("ln", "layernorm", x)
    b.output(b.node("add", "add", x, b.node("attn", "attention", h), b.node("ffn", "ffn", h)))
    return b.graph()


def test_parallel_block_has_3_to_the_L_paths_and_a_one_norm_shortest_path():
    stats = path_stats(parallel_block())
    assert sp.expand(stats.block - (1 + n * a + n * f)) == 0
    assert stats.expressions["count"] == 3**L
    at = stats.at(10)
    assert at["count"] == 3**10 and at["shortest"] == {"norms": 1, "sublayers": 0}
    assert at["longest"] == {"norms": 11, "sublayers": 10}
    assert at["mean_sublayers"] == "20/3"  # each block: 2 of 3 paths cross one sublayer


def test_pre_ln_closed_forms_and_binomial_distribution():
    stats = path_stats(get("pre-ln"))
    e = stats.expressions
    assert e["count"] == 4**L and e["shortest.norms"] == 1 and e["longest.norms"] == 2 * L + 1
    assert e["mean_sublayers"] == L
    assert "Binomial(2*n_layers, 1/2)" in stats.sublayer_distribution[1]
    assert stats.distribution(5) == {k: math.comb(10, k) for k in range(11)}
    assert stats.distribution(5, "norms") == {k + 1: math.comb(10, k) for k in range(11)}


def test_post_ln_every_path_crosses_2L_norms():
    stats = path_stats(get("post-ln"))
    assert stats.distribution(7, "norms") == {14: 4**7}
    assert [r["norms"] for r in stats.shortest_to_layer(4)] == [8, 6, 4, 2]


def test_hybrid_ln_norm_distribution():
    # per block n²(1 + f)(1 + n a): 2 or 3 norms, each with 2 paths → Binomial(L, 1/2) + 2L
    stats = path_stats(get("hybrid-ln"))
    assert stats.distribution(3, "norms") == {6: 8, 7: 24, 8: 24, 9: 8}


def test_compare_json_paths_contract_at_gpt2_small():
    data = json.loads(run("compare", *VARIANTS, "--preset", "gpt2-small", "--format", "json").output)
    p = {v["name"]: v["paths"] for v in data["variants"]}
    assert p["pre-ln"]["count"] == 16777216 == 4**12
    assert p["pre-ln"]["shortest"] == {"norms": 1, "sublayers": 0}
    assert p["pre-ln"]["longest"] == {"norms": 25, "sublayers": 24}
    assert p["pre-ln"]["mean_sublayers"] == "12"
    assert p["post-ln"]["shortest"] == {"norms": 24, "sublayers": 0}
    assert p["post-ln"]["longest"] == {"norms": 24, "sublayers": 24}
    assert p["hybrid-ln"]["shortest"] == {"norms": 24, "sublayers": 0}
    assert p["hybrid-ln"]["longest"] == {"norms": 36, "sublayers": 24}
    assert sp.sympify(p["pre-ln"]["generating_function"]).has(sp.Symbol("n_layers"))


def test_deep_models_are_never_unrolled():
    """4^200 paths: enumerating them could not finish in the suite's runtime; the closed form
    answers at once."""
    at = path_stats(get("pre-ln")).at(200)
    assert at["count"] == 4**200 and at["longest"] == {"norms": 401, "sublayers": 400}
    assert path_stats(get("pre-ln")).distribution(200)[200] == math.comb(400, 200)


def test_paths_command_at_1000_layers():
    result = run("paths", "pre-ln", "--layers", "1000", "--format", "json")
    assert result.exit_code == 0
    entry = json.loads(result.output)["variants"][0]
    assert entry["paths"]["count"] == 4**1000
    assert entry["closed_forms"]["count"] == "4**n_layers"
    assert "counts" not in entry["distributions"]["sublayers"]  # detail is off past 48 layers


def test_paths_command_detail_and_formats():
    result = run("paths", "pre-ln", "post-ln", "--layers", "3")
    assert result.exit_code == 0
    assert "Binomial(2*n_layers, 1/2)" in result.output and "shortest path from the output" in result.output
    data = json.loads(run("paths", "post-ln", "--layers", "3", "--format", "json").output)
    assert data["variants"][0]["distributions"]["norms"]["counts"] == {"6": 64}
    assert run("paths", "pre-ln", "--format", "latex").exit_code == 0


def test_a_norm_added_on_the_skip_path_in_a_file_adds_one_norm_per_block(tmp_path):
    data = json.loads(to_json(get("pre-ln")))
    data["nodes"].append({"id": "ln_skip", "op": "layernorm"})
    data["edges"] = [e for e in data["edges"] if not (e["source"] == "x" and e["target"] == "add_1")]
    data["edges"] += [{"source": "x", "target": "ln_skip"}, {"source": "ln_skip", "target": "add_1"}]
    path = tmp_path / "skip_norm.json"
    path.write_text(json.dumps(data))
    p = json.loads(run("compare", str(path), "--preset", "gpt2-small", "--format", "json").output)["variants"][0]["paths"]
    assert p["shortest"] == {"norms": 12 + 1, "sublayers": 0}
    assert p["count"] == 4**12


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_traced_model_has_the_symbolic_generating_function(variant, layers):
    model = build_model(variant, preset="tiny", n_layers=layers, device="meta")
    traced = traced_generating_function(model)
    symbolic = sp.expand(path_stats(get(variant)).generating_function.subs(L, layers))
    assert traced == {m: int(c) for m, c in sp.Poly(symbolic, n, a, f).terms()}


def test_paths_check_fails_for_a_model_of_another_graph():
    model = build_model("pre-ln", preset="tiny", device="meta")
    assert check_paths(get("pre-ln"), model).ok
    assert not check_paths(get("hybrid-ln"), model).ok


def test_paths_check_finds_one_foreign_layer_among_40():
    """Random points, not expansion: one hybrid-LN block among 40 pre-LN ones has the same number
    of paths (4 per block) but another polynomial, which the exact terms confirm."""
    from blockalg.model.build import Block

    graph = get("pre-ln")
    model = build_model(graph, preset="tiny", n_layers=40, device="meta")
    assert check_paths(graph, model).ok
    model.blocks[23] = Block(get("hybrid-ln"), model.dims)
    result = check_paths(graph, model)
    assert result.predicted == result.measured == 4**40
    assert not result.ok and "differs at" in result.detail
    assert traced_generating_function(model) != model_terms(graph, 40)


def unrolled_model(graph, layers: int) -> nx.DiGraph:
    """The model as a plain DAG, written independently of blockalg's path code: every block node
    copied per layer, each stream's output wired to the next block's input of that stream, the
    head and final norm after the last block. Node attribute ``role`` is the op's path role."""
    from blockalg.graphs.graph import final_norm, segments
    from blockalg.graphs.ops import get_op
    from blockalg.graphs.symbols import n_layers

    dag = nx.DiGraph()
    dag.add_node("embedding", role=None)
    starts = graph.graph.get("streams") or {"x": "embedding"}
    current = {s: "embedding" if start == "embedding" else None for s, start in starts.items()}
    blocks = [b for b, count in segments(graph) for _ in range(int(count.subs(n_layers, layers)))]

    def copy_in(block, prefix):
        for node, data in block.nodes(data=True):
            dag.add_node((prefix, node), role=get_op(data["op"]).role)
        dag.add_edges_from(((prefix, u), (prefix, v)) for u, v in block.edges)
        for node, data in block.nodes(data=True):
            if data["op"] == "input" and current[data.get("stream", "x")] is not None:
                dag.add_edge(current[data.get("stream", "x")], (prefix, node))
        return [(prefix, n) for n, data in block.nodes(data=True) if data["op"] == "output"]

    for i, block in enumerate(blocks):
        outs = copy_in(block, i)
        current = {block.nodes[o[1]].get("stream", "x"): o for o in outs}
    last = list(current.values())
    if graph.graph.get("head") is not None:
        last = copy_in(graph.graph["head"], "head")
    final = final_norm(graph)
    if final is not None:
        dag.add_node("ln_f", role=final[0].role)
        dag.add_edges_from((o, "ln_f") for o in last)
        last = ["ln_f"]
    dag.add_edges_from((o, "lm_head") for o in last)
    return dag


def enumerated_terms(dag) -> dict:
    """Every embedding → lm_head path, enumerated, counted by (norms, attention, ffn) crossed."""
    counts = {}
    for path in nx.all_simple_paths(dag, "embedding", "lm_head"):
        roles = [dag.nodes[v].get("role") for v in path]
        key = (roles.count("norm"), roles.count("attention"), roles.count("ffn"))
        counts[key] = counts.get(key, 0) + 1
    return counts


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("variant", [v.name for v in catalog()])
def test_generating_function_equals_enumerated_paths(variant, layers):
    """Oracle: enumerating the paths of the unrolled model gives the generating function's
    coefficients, for every catalog variant."""
    graph = get(variant)
    assert enumerated_terms(unrolled_model(graph, layers)) == model_terms(graph, layers)
