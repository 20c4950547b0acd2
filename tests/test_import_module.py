"""Blocks written in PyTorch, imported as graphs: ``blockalg.from_module`` and ``file.py:Name``.

The blocks in tests/blocks/ are written in the style of public code (nanoGPT, Hugging Face's
LLaMA, GPT-J and GPT-1, Meta's LLaMA), not with blockalg's modules; each must import to a graph
whose closed forms equal its catalog variant's. Everything runs on the meta device.
"""

import json
import math
from pathlib import Path

import pytest
import sympy as sp
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from blockalg import BlockalgError, analyze, from_module
from blockalg.analysis.analyze import quantity_keys
from blockalg.analysis.flops import flop_counts
from blockalg.analysis.params import param_counts
from blockalg.analysis.paths import block_polynomial, final_polynomial
from blockalg.cli import main
from blockalg.graphs.expr import parse_expression
from blockalg.graphs.serialize import load_block
from blockalg.graphs.symbols import d_model
from blockalg.graphs.variants import get
from blockalg.model.importer import load_factory

ROOT = Path(__file__).resolve().parents[1]
#: catalog variant -> the block written in PyTorch that must equal it
CASES = {"pre-ln": "nanogpt_block.py:Block", "llama": "llama_block.py:Block",
         "parallel": "gptj_block.py:Block", "post-ln": "postln_block.py:Block"}
#: the catalog's llama is grouped-query through n_kv_heads: measure it with fewer kv heads
EXTRA = {"llama": [{"n_kv_heads": 2}, {"n_kv_heads": 4}]}


def run(*args):
    return CliRunner().invoke(main, list(args))


def factory(spec):
    return load_factory(str(ROOT / "tests" / "blocks" / spec))[0]


# one xdist worker runs this file's tests, so its module fixture is built once
pytestmark = pytest.mark.xdist_group("test_import_module")


@pytest.fixture(scope="module")
def imported():
    return {variant: from_module(factory(spec)) for variant, spec in CASES.items()}


@pytest.fixture
def in_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the command lines below spell paths as a user in the repo would


@pytest.mark.parametrize("variant", CASES)
def test_imported_block_has_its_catalog_variants_closed_forms(imported, variant):
    graph, catalog = imported[variant], get(variant)
    assert sp.expand(param_counts(graph)["total"] - param_counts(catalog)["total"]) == 0
    for kind in ("forward_matmul", "backward_matmul"):
        assert sp.expand(flop_counts(graph)[kind] - flop_counts(catalog)[kind]) == 0
    assert block_polynomial(graph) == block_polynomial(catalog)
    assert final_polynomial(graph) == final_polynomial(catalog)
    for preset, extra in zip(("tiny", "gpt2-small"), EXTRA.get(variant, [{}, {}])):
        assert analyze(graph, preset, **extra).values == analyze(catalog, preset, **extra).values


def test_nanogpt_hidden_width_is_what_the_module_does(imported):
    graph = imported["pre-ln"]
    # nanoGPT's MLP is nn.Linear(n_embd, 4 * n_embd), whatever d_ff says
    assert graph.graph["relations"] == {"d_head": "d_model/n_heads", "n_kv_heads": "n_heads",
                                        "d_ff": "4*d_model"}
    assert any(note.startswith("d_ff = 4*d_model") for note in graph.graph["notes"])
    assert analyze(graph, "tiny", d_ff=100).dims["d_ff"] == 4 * 64


def test_meta_llama_ffn_width_is_eight_thirds_rounded_up():
    meta_block = factory("llama_block.py:MetaBlock")
    graph = from_module(meta_block)
    assert graph.graph["relations"]["d_ff"] == "256*ceiling(d_model/96)"
    assert any("8/3·d_model rounded up to a multiple of 256" in n for n in graph.graph["notes"])
    rule = parse_expression(graph.graph["relations"]["d_ff"])
    # LLaMA 7B and 13B have intermediate_size 11008 and 13824 (their released configs)
    assert [rule.subs(d_model, d) for d in (4096, 5120)] == [11008, 13824]
    for width in (96 * 7, 1000, 4096):
        with torch.device("meta"):
            built = meta_block(d_model=width, n_heads=8, n_kv_heads=2)
        assert built.feed_forward.w1.out_features == rule.subs(d_model, width)
    assert analyze(graph, "gpt2-small").values == analyze("llama", "gpt2-small", d_ff=2048).values


def test_compare_pre_ln_with_the_nanogpt_block_differs_in_no_row(in_root):
    result = run("compare", "pre-ln", "tests/blocks/nanogpt_block.py:Block", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = [line.split(",") for line in result.output.splitlines()[1:]]
    keys = [row[0] for row in rows]
    assert keys[:len(quantity_keys())] == quantity_keys()  # then the memory.* rows
    assert all(row[3] == "+0" and row[1] == row[2] for row in rows), rows
    assert "params.total,124439808,124439808,+0" in result.output


def test_check_measures_the_original_block_too(in_root):
    result = run("check", "tests/blocks/nanogpt_block.py:Block", "--preset", "tiny", "--format", "json")
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.output)["variants"][0]["checks"]}
    assert all(c["ok"] for c in checks.values())
    # one GPT-2 block: 12·d² + 13·d parameters; forward 24·s·d² + 4·s²·d matmul FLOPs
    d, s = 64, 64
    assert checks["original.params"]["measured"] == 12 * d**2 + 13 * d
    assert checks["original.flops.forward_matmul"]["measured"] == 24 * s * d**2 + 4 * s**2 * d
    assert checks["original.flops.backward_matmul"]["measured"] == 2 * (24 * s * d**2 + 4 * s**2 * d)


def test_show_json_is_a_graph_file_that_keeps_the_relations(in_root, tmp_path):
    result = run("show", "tests/blocks/postln_block.py:Block", "--format", "json")
    assert result.exit_code == 0, result.output
    path = tmp_path / "postln.json"
    path.write_text(result.output)
    graph = load_block(path)
    assert graph.graph["relations"]["d_ff"] == "4*d_model" and graph.graph["notes"]
    assert analyze(graph, "tiny").values == analyze("post-ln", "tiny").values
    assert "original.params" not in run("check", str(path), "--preset", "tiny").output


def test_custom_autograd_function_is_refused_in_one_line(in_root):
    result = run("compare", "pre-ln", "tests/blocks/custom_function_block.py:Block")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert "fx node 'view_as'" in lines[0] and "autograd.Function" in lines[0]
    assert "custom_function_block.py:23" in lines[0] and "ScaleGradient.apply" in lines[0]


class CumulativeBlock(nn.Module):
    def __init__(self, d_model):
        super().__init__()
        self.ln = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.ReLU(), nn.Linear(2 * d_model, d_model))

    def forward(self, x):
        x = x + self.mlp(self.ln(x))
        return x.cumsum(dim=1)  # not a transformer op: must be refused, never counted as zero


def test_an_unrecognised_op_on_the_stream_is_named_with_its_line():
    with pytest.raises(BlockalgError, match=r"fx node 'cumsum' .* at test_import_module\.py:\d+ "
                                            r"\(`return x\.cumsum\(dim=1\)") as raised:
        from_module(CumulativeBlock)
    assert "\n" not in str(raised.value)


class ReluAttention(nn.Module):
    """Attention with ReLU in place of the softmax: no structure says it is attention."""

    def __init__(self, d_model, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4).unbind(0)
        scores = F.relu(q @ k.transpose(-2, -1) / math.sqrt(d // self.n_heads)) / s
        return self.proj((scores @ v).transpose(1, 2).reshape(b, s, d))


class ReluAttentionBlock(nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = ReluAttention(d_model, n_heads)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * d_model, d_model))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


def test_roles_say_what_the_structure_does_not():
    with pytest.raises(BlockalgError, match=r"roles=\{'attn': 'attention'\}"):
        from_module(ReluAttentionBlock)
    graph = from_module(ReluAttentionBlock, roles={"attn": "attention"})
    assert graph.nodes["attn"]["op"] == "attention"
    assert sp.expand(param_counts(graph)["total"] - param_counts(get("pre-ln"))["total"]) == 0
    assert block_polynomial(graph) == block_polynomial(get("pre-ln"))


def test_a_size_that_fits_no_expression_or_several_is_refused_by_name():
    from blockalg.model.fit import fit

    points = [{d_model: d} for d in (744, 700, 1092)]
    with pytest.raises(BlockalgError, match=r"axis 0 of 'mlp.w1.weight' is ambiguous: \d+\*ceiling.* or "):
        fit([2048, 2048, 3072], points, what="axis 0 of 'mlp.w1.weight'")  # 8/3·d rounded to 256? 128?
    with pytest.raises(BlockalgError, match=r"the FFN's hidden width \(.*\) is not an expression"):
        fit([d * 7919 % 1000 + 100 for d in (744, 700, 1092, 810)],
            points + [{d_model: 810}], what="the FFN's hidden width")
