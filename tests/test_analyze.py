"""Symbolic analyses of the three base variants: closed forms and exact values at two presets."""

from pathlib import Path

import pytest
import sympy as sp
from support import GPT2_SMALL_FORWARD_MATMUL, GPT2_SMALL_PARAMS

from blockalg import analyze
from blockalg.analysis.analyze import MEMORY_KEYS, exact_values, numbers_only, quantity_keys
from blockalg.analysis.memory import Setting, memory_expressions
from blockalg.analysis.params import leaf_params, param_counts
from blockalg.files import read_json
from blockalg.graphs.expr import evaluate
from blockalg.graphs.hf import from_hf_config
from blockalg.graphs.ops import COMPONENTS
from blockalg.graphs.symbols import d_model as d
from blockalg.graphs.symbols import default_relations, n_ctx
from blockalg.graphs.symbols import n_layers as L
from blockalg.graphs.symbols import seq_len as s
from blockalg.graphs.symbols import vocab as V
from blockalg.graphs.variants import catalog, get

# Per block, with d_ff = 4d and biases: attention 4d² + 4d, FFN 8d² + 5d, each LayerNorm 2d.
BLOCK = 12 * d**2 + 9 * d
EMBEDDING = V * d + n_ctx * d


def closed(variant, key):
    return analyze(variant).expressions[key].subs(default_relations())


@pytest.mark.parametrize("variant,norms_per_block,final", [("pre-ln", 2, 1), ("post-ln", 2, 0), ("hybrid-ln", 3, 0)])
def test_params_total_closed_form(variant, norms_per_block, final):
    expected = EMBEDDING + L * (BLOCK + norms_per_block * 2 * d) + final * 2 * d
    assert sp.expand(closed(variant, "params.total") - expected) == 0


def test_params_total_keeps_n_layers_symbolic():
    expr = analyze("pre-ln").expressions["params.total"]
    assert expr.has(L)
    assert sp.degree(sp.expand(expr), L) == 1  # not an unrolled sum


def test_forward_matmul_closed_form_is_the_reference():
    # L·(24·s·d² + 4·s²·d) + 2·s·d·V: HF's GPT-2 on the meta device (tests/test_reference.py)
    expected = L * (24 * s * d**2 + 4 * s**2 * d) + 2 * s * d * V
    for variant in ("pre-ln", "post-ln", "hybrid-ln"):
        assert sp.expand(closed(variant, "flops.forward_matmul") - expected) == 0
        assert sp.expand(closed(variant, "flops.backward_matmul") - 2 * expected) == 0


@pytest.mark.parametrize("preset,expected", [
    # GPT-2 small: 38,597,376 wte + 786,432 wpe + 12 × 7,087,872 blocks + 1,536 ln_f
    ("gpt2-small", {"pre-ln": GPT2_SMALL_PARAMS["pre-ln"], "post-ln": GPT2_SMALL_PARAMS["pre-ln"] - 1536, "hybrid-ln": GPT2_SMALL_PARAMS["pre-ln"] - 1536 + 12 * 1536}),
    # GPT-2 medium: 51,463,168 wte + 1,048,576 wpe + 24 × 12,596,224 + 2,048 ln_f = 354,823,168
    ("gpt2-medium", {"pre-ln": 354823168, "post-ln": 354823168 - 2048, "hybrid-ln": 354823168 - 2048 + 24 * 2048}),
])
def test_params_total_at_presets(preset, expected):
    for variant, total in expected.items():
        assert analyze(variant, preset=preset).values["params.total"] == total


def test_gpt2_small_flops_reference_numbers():
    values = analyze("pre-ln", preset="gpt2-small").values
    assert values["flops.forward_matmul"] == GPT2_SMALL_FORWARD_MATMUL
    assert values["flops.backward_matmul"] == 583_296_614_400


@pytest.mark.parametrize("preset", ["tiny", "gpt2-small"])
@pytest.mark.parametrize("variant", [v.name for v in catalog()])
def test_components_sum_to_the_total_for_every_variant(variant, preset):
    v = analyze(variant, preset=preset).values
    assert v["params.total"] == sum(v[f"params.{c}"] for c in COMPONENTS)


def test_per_block_is_the_sum_of_the_block_leaves():
    leaves = leaf_params(get("hybrid-ln"))
    per_block = sum(expr for key, expr in leaves.items() if key.startswith("block."))
    assert analyze("hybrid-ln").expressions["params.per_block"] == per_block


def test_values_are_python_ints_even_at_gpt3_size():
    a = analyze("pre-ln", preset="gpt3-175b")
    assert all(type(x) is int for x in a.values.values())
    # 96 × (12·12288² + 13·12288) + 50257·12288 + 2048·12288 + 2·12288
    assert a.values["params.total"] == 96 * (12 * 12288**2 + 13 * 12288) + 50257 * 12288 + 2048 * 12288 + 2 * 12288


def test_overrides_change_the_numbers():
    base = analyze("pre-ln", preset="gpt2-small")
    deeper = analyze("pre-ln", preset="gpt2-small", n_layers=24)
    assert deeper.values["params.total"] - base.values["params.total"] == 12 * base.values["params.per_block"]


def test_result_displays_itself_in_notebooks():
    from blockalg.output.display import markdown

    md = markdown(analyze("pre-ln", preset="tiny"))
    assert "| params.total |" in md and "$" in md


def test_every_quantity_is_reported():
    assert set(analyze("post-ln").values) == set(quantity_keys())


HF_CONFIGS = sorted((Path(__file__).parent / "data" / "hf").glob("*.json"))
SETTINGS = [Setting(), Setting(dtype="bf16", optimizer="sgd", recompute="selective", attention="flash"),
            Setting(dtype="fp16", recompute="full", data_parallel=4, zero=3)]


def assert_values_are_the_canonical_expressions_values(a, settings=SETTINGS[:1]):
    assert a.values == exact_values(a.expressions, a.dims)
    for setting in settings:
        memory = memory_expressions(a.graph, setting)  # canonical: outside numbers_only
        a.add_memory(setting)
        assert {key: a.values[f"memory.{key}"] for key in MEMORY_KEYS} == \
            exact_values({key: memory[key] for key in MEMORY_KEYS}, a.dims)


@pytest.mark.parametrize("variant", [v.name for v in catalog()])
def test_values_from_unevaluated_trees_equal_those_of_the_canonical_expressions(variant):
    # analyze() computes values from unevaluated sympy trees (numbers_only); the expressions,
    # built canonical when asked for, must give the very same exact numbers
    assert_values_are_the_canonical_expressions_values(analyze(variant, "gpt2-small"), SETTINGS)
    assert_values_are_the_canonical_expressions_values(analyze(variant, "gpt2-small", n_layers=10**9))


@pytest.mark.parametrize("path", HF_CONFIGS, ids=lambda p: p.stem)
def test_values_of_hf_models_equal_those_of_the_canonical_expressions(path):
    model = from_hf_config(read_json(path))
    assert_values_are_the_canonical_expressions_values(analyze(model.graph, dims=model.dims))


def test_expressions_are_canonical_and_values_exact():
    a = analyze("pre-ln", preset="gpt2-small").add_memory()
    with numbers_only():
        tree = param_counts(a.graph)["total"]
    assert tree != a.expressions["params.total"]  # the values came from another tree
    assert a.expressions["params.total"] == param_counts(a.graph)["total"]
    assert a.values["params.total"] == evaluate(tree, a.dims) == GPT2_SMALL_PARAMS["pre-ln"]
