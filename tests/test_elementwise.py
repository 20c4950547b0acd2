"""Non-matmul FLOPs against an independent count: torch's own decomposition of the built model."""

import json

import pytest
import sympy as sp
from click.testing import CliRunner

from blockalg.analysis.flops import other_by_kind
from blockalg.cli import main
from blockalg.graphs.expr import evaluate
from blockalg.graphs.ops import get_op
from blockalg.graphs.presets import resolve_dims
from blockalg.graphs.symbols import d_model, n_layers, seq_len, vocab
from blockalg.graphs.variants import catalog, get
from blockalg.model.check import check_elementwise
from blockalg.model.elementwise import compare, count_elementwise, make_fx_total

TINY = resolve_dims("tiny")  # d 64, 4 heads of 16, d_ff 256, 2 layers, s 64, V 512
S, D, H, FF, L = TINY["seq_len"], TINY["d_model"], TINY["n_heads"], TINY["d_ff"], TINY["n_layers"]


# one xdist worker runs this file's tests, so its module fixture is built once
pytestmark = pytest.mark.xdist_group("test_elementwise")


@pytest.fixture(scope="module")
def pre_ln():
    return count_elementwise(get("pre-ln"), TINY)


@pytest.mark.parametrize("variant", [v.name for v in catalog()])
def test_every_variant_at_tiny_agrees_per_op_kind(variant):
    checks = check_elementwise(get(variant), TINY)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    rows = {c.name: c for c in checks}
    # every kind the registry claims exact is exact; the residual adds always are
    assert all(c.predicted == c.measured for c in checks if c.detail.startswith("exact"))
    assert rows["flops.forward_other.add"].detail.startswith("exact")
    # gradient sums are exact except where routing decides how often a tensor is reused (MoE)
    routed = any(op == "moe" for block in [get(variant)] for _, op in block.nodes(data="op"))
    assert rows["flops.backward_other.gradient_accumulation"].detail.startswith(
        "convention" if routed else "exact")


def test_decomposition_counts_what_torchs_decompositions_compute(pre_ln):
    """Expected counts read off torch/_decomp (not off blockalg's registry), per layer at tiny."""
    ops = pre_ln.by_kind()
    # native_layer_norm: var_mean (s·d − s), + eps and rsqrt per row, x − mean, ·rstd, ·w, + b
    assert ops["layernorm"]["forward"] == (2 * L + 1) * (5 * S * D + S)
    # sdpa math: q and k scaled by √scale (2·s·d), + the causal mask (h·s²), _softmax: amax and
    # sum (h·s² − h·s each), − max, exp, ÷ sum; the biases of qkv (3·s·d) and proj (s·d)
    assert ops["attention"]["forward"] == L * (2 * S * D + H * S * S + 5 * H * S * S - 2 * H * S + 4 * S * D)
    # gelu (tanh): x·x, ·x, ·0.044715, +x, ·√(2/π), tanh, +1, ·0.5, ·x: 9 per element; fc and proj bias
    assert ops["ffn"]["forward"] == L * (9 * S * FF + S * FF + S * D)
    # the engine sums the gradients at both forks of every block and of the tied table
    assert ops["gradient_accumulation"]["backward"] == L * 2 * S * D + TINY["vocab"] * D
    assert ops["add"] == {"forward": L * 2 * S * D, "backward": 0}


def test_ratios_of_the_conventions_at_tiny(pre_ln):
    rows = {(r.kind, r.phase): r for r in compare(get("pre-ln"), TINY, pre_ln)}
    assert rows["layernorm", "forward"].ratio == pytest.approx((5 + 1 / D) / 7)  # 7 per element, per-row dropped
    assert rows["ffn", "forward"].registry == L * (8 * S * FF + S * FF + S * D)  # gelu 8 by convention
    assert not rows["ffn", "forward"].exact and rows["ffn", "forward"].ok


def test_a_wrong_formula_fails(monkeypatch):
    add = get_op("add")
    monkeypatch.setattr(add, "forward_other", lambda attrs, n: (n - 1) * seq_len * d_model * 2)
    layernorm = get_op("layernorm")
    monkeypatch.setattr(layernorm, "backward_other", lambda attrs, n: sp.Integer(0))
    failed = {c.name for c in check_elementwise(get("pre-ln"), TINY) if not c.ok}
    assert failed == {"flops.forward_other.add", "flops.forward_other",
                      "flops.backward_other.layernorm", "flops.backward_other"}


def test_backward_other_is_symbolic_and_in_the_json():
    kinds = other_by_kind(get("pre-ln"))
    assert kinds["gradient_accumulation"]["backward"] == 2 * n_layers * seq_len * d_model + vocab * d_model
    result = CliRunner().invoke(main, ["compare", "pre-ln", "--preset", "gpt2-small", "--format", "json"])
    flops = json.loads(result.output)["variants"][0]["flops"]
    total = sum(evaluate(k["backward"], resolve_dims("gpt2-small")) for k in kinds.values())
    assert flops["backward_other"] == total > flops["forward_other"]


def test_the_count_is_what_make_fx_traces():
    """The dispatch-mode count equals the nodes of make_fx's trace with the same decompositions."""
    one_layer = resolve_dims("tiny", {"n_layers": 1})  # (make_fx takes ~10x longer to trace)
    assert make_fx_total(get("llama"), one_layer) == count_elementwise(get("llama"), one_layer).total()


def test_the_counter_finds_each_decomposition_of_torchs_table():
    """decomposition_of looks an op up without building torch's whole core table: the same
    decomposition for every op of the table (a composite op's as torch wraps it), none elsewhere."""
    from functools import partial

    import torch

    from blockalg.model.elementwise import decomposition_of, decompositions

    def same(f):  # NB: torch wraps each composite op's kernel in a new closure
        return (f.func.__code__, f.keywords) if isinstance(f, partial) else f

    table = decompositions()
    assert all(same(decomposition_of(op)) == same(f) for op, f in table.items())
    aten = torch.ops.aten
    kept = [aten.mm.default, aten.bmm.default, aten.upsample_bilinear2d.vec]  # (torch keeps the last)
    assert not set(kept) & set(table) and [decomposition_of(op) for op in kept] == [None] * 3
