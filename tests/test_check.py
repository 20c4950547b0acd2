"""The torch model built from the graph, and the empirical checks against the symbolic numbers."""

import contextlib
import json
import math

import pytest
import torch
from support import GPT2_SMALL_FORWARD_MATMUL, GPT2_SMALL_PARAMS, run
from torch.utils.flop_counter import FlopCounterMode

from blockalg import build_model
from blockalg.analysis.params import leaf_params
from blockalg.graphs.ops import get_op
from blockalg.graphs.presets import resolve_dims
from blockalg.graphs.variants import get
from blockalg.model.check import (
    check,
    check_structure,
    flop_counter,
    traced_block_graph,
)
from blockalg.model.measure import module_flop_counter

VARIANTS = ["pre-ln", "post-ln", "hybrid-ln"]



def by_name(checks):
    return {c.name: c for c in checks}


def test_check_gpt2_small_on_meta_passes_with_the_reference_numbers():
    result = run("check", *VARIANTS, "--preset", "gpt2-small", "--device", "meta", "--no-elementwise",
                 "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    checks = {v["name"]: {c["name"]: c for c in v["checks"]} for v in data["variants"]}
    assert [checks[v]["params"]["measured"] for v in VARIANTS] == [GPT2_SMALL_PARAMS["pre-ln"], GPT2_SMALL_PARAMS["post-ln"], GPT2_SMALL_PARAMS["hybrid-ln"]]
    assert checks["pre-ln"]["flops.forward_matmul"]["measured"] == GPT2_SMALL_FORWARD_MATMUL
    assert checks["pre-ln"]["flops.backward_matmul"]["measured"] == 583296614400
    assert all(c["ok"] for v in checks.values() for c in v.values())


def test_check_gpt3_on_meta():
    checks = by_name(check("pre-ln", preset="gpt3-175b", device="meta", elementwise=False))
    assert all(c.ok for c in checks.values())
    # 96·(12·12288² + 13·12288) + (50257 + 2048 + 2)·12288
    assert checks["params"].measured == 174_604_259_328
    # 96·(24·2048·12288² + 4·2048²·12288) + 2·2048·12288·50257
    assert checks["flops.forward_matmul"].measured == 96 * (24 * 2048 * 12288**2 + 4 * 2048**2 * 12288) \
        + 2 * 2048 * 12288 * 50257


@pytest.mark.parametrize("variant", VARIANTS)
def test_check_tiny_on_cpu_runs_real_tensors(variant):
    checks = by_name(check(variant, preset="tiny", device="cpu", elementwise=False))
    assert all(c.ok for c in checks.values()), [c for c in checks.values() if not c.ok]
    assert checks["numerics.finite"].measured == 1
    assert abs(checks["numerics.init_loss"].measured - math.log(512)) < 0.1 * math.log(512)
    assert "fused" in checks["flops.backward_matmul"].detail


def test_cpu_attention_flops_are_counted():
    """torch's FlopCounterMode counts 0 for the CPU flash kernel; ours must not."""
    dims = resolve_dims("tiny")
    model = build_model("pre-ln", dims, device="cpu", seed=0)
    idx = torch.randint(0, 512, (1, 64))
    with FlopCounterMode(display=False) as plain:
        model(idx)
    with flop_counter() as ours:
        model(idx)
    # attention scores and mix: 2 layers × 2 products × 2·4 heads·64²·16 = 1,048,576
    assert ours.get_total_flops() - plain.get_total_flops() == 2 * 2 * 2 * 4 * 64**2 * 16
    assert ours.get_total_flops() == by_name(check("pre-ln", dims, device="cpu", elementwise=False))[
        "flops.forward_matmul"].predicted


def test_a_wrong_formula_makes_check_fail_and_exit_1(monkeypatch):
    attention = get_op("attention")
    original = attention.forward_matmul
    monkeypatch.setattr(attention, "forward_matmul", lambda attrs, n: original(attrs, n) + 1)
    layernorm = get_op("layernorm")
    original_params = layernorm.params
    monkeypatch.setattr(layernorm, "params", lambda attrs: {**original_params(attrs), "extra": 1})
    result = run("check", "pre-ln", "--preset", "tiny", "--no-elementwise", "--format", "json")
    assert result.exit_code == 1
    failed = {c["name"] for c in json.loads(result.stdout)["variants"][0]["checks"] if not c["ok"]}
    assert {"params", "params.norm", "params.leaves", "flops.forward_matmul"} <= failed


def test_structure_check_sees_a_model_built_from_another_graph():
    model = build_model("pre-ln", preset="tiny", device="meta")
    assert check_structure(get("pre-ln"), model).ok
    assert not check_structure(get("post-ln"), model).ok


def test_structure_check_traces_every_distinct_block():
    """Identical layers are traced once; a layer built from another graph is still seen."""
    from blockalg.model.build import Block

    model = build_model("pre-ln", preset="tiny", n_layers=5, device="meta")
    assert check_structure(get("pre-ln"), model).ok
    model.blocks[3] = Block(get("post-ln"), model.dims)
    assert not check_structure(get("pre-ln"), model).ok


def test_replaying_meta_shapes_changes_no_count():
    """The FLOPs of a meta model counted (by torch's own counter, which memoizes nothing) with
    every meta kernel run, and with repeated ops replayed from the cache, agree op by op."""
    from blockalg.model.metashapes import replay_shapes

    model = build_model("hybrid-ln", preset="tiny", n_layers=4, n_kv_heads=2, device="meta")
    idx = torch.zeros(2, 64, dtype=torch.long, device="meta")

    def counts(context):
        with context, module_flop_counter() as counter:
            model(idx, idx)[1].backward()
        return counter.get_flop_counts()["Global"]

    replay = replay_shapes("meta")
    assert counts(replay) == counts(contextlib.nullcontext())
    assert replay.replayed > 100


def step_counts(model, idx, counter, context=None) -> list:
    """Total and per-op FLOPs that ``counter()`` counts over the forward and the backward."""
    model.zero_grad(set_to_none=True)
    with context or contextlib.nullcontext():
        with counter() as forward:
            _, loss = model(idx, idx)
        with counter() as backward:
            loss.backward()
    return [(c.get_total_flops(), c.get_flop_counts()["Global"]) for c in (forward, backward)]


@pytest.mark.parametrize("device", ["meta", "cpu"])
@pytest.mark.parametrize(("variant", "shape"), [
    ("pre-ln", {}), ("llama", {"n_kv_heads": 2}),  # gated, rotary, grouped-query
    ("resi-dual", {}), ("deepnorm", {})])  # two streams; scaled edges
def test_flop_counter_counts_what_flop_counter_mode_counts(variant, shape, device):
    """blockalg's lean counter against torch's FlopCounterMode (with the same fused CPU attention
    formulas): equal totals and per-op counts, forward and backward, on cpu (the fused kernel)
    and on meta, where repeated layers (and the second count, whole) come from its memo."""
    model = build_model(variant, preset="tiny", n_layers=3, device=device, seed=0, **shape)
    idx = torch.zeros(2, 64, dtype=torch.long, device=device)
    reference = step_counts(model, idx, module_flop_counter)
    assert step_counts(model, idx, flop_counter) == reference
    assert step_counts(model, idx, flop_counter) == reference
    if device == "cpu":
        assert "aten._scaled_dot_product_flash_attention_for_cpu" in map(str, reference[0][1])


def test_flop_counter_counts_the_fused_kernel_on_meta_as_flop_counter_mode():
    from blockalg.model.modules import attention_path

    model = build_model("llama", preset="tiny", n_kv_heads=2, device="meta")
    idx = torch.zeros(2, 64, dtype=torch.long, device="meta")
    reference = step_counts(model, idx, module_flop_counter, attention_path("flash"))
    assert step_counts(model, idx, flop_counter, attention_path("flash")) == reference
    assert "aten._scaled_dot_product_flash_attention_for_cpu_backward" in map(str, reference[1][1])


def test_traced_block_equals_the_graph():
    for variant in VARIANTS:
        graph = get(variant)
        model = build_model(graph, preset="tiny", device="meta")
        traced = traced_block_graph(model.blocks[1])
        assert set(traced.edges) == set(graph.edges)
        assert all(traced.nodes[n]["op"] == graph.nodes[n]["op"] for n in graph)


def test_named_parameters_line_up_with_the_leaf_breakdown():
    dims = resolve_dims("tiny")
    model = build_model("hybrid-ln", dims, device="meta")
    leaves = leaf_params(get("hybrid-ln"))
    names = {n.replace("blocks.0.", "block.") for n, _ in model.named_parameters() if not n.startswith("blocks.1.")}
    assert names == set(leaves)


def test_gpt2_init_scales_residual_projections():
    model = build_model("pre-ln", preset="tiny", n_layers=8, device="cpu", seed=0)
    assert abs(model.blocks[0].attn.qkv.weight.std().item() - 0.02) < 0.002
    assert abs(model.blocks[0].ffn.proj.weight.std().item() - 0.02 / math.sqrt(16)) < 0.0005
    assert torch.all(model.blocks[0].ln_1.weight == 1)
    assert model.lm_head.weight is model.wte.weight


def test_compare_check_adds_measured_columns():
    result = run("compare", "pre-ln", "post-ln", "--preset", "tiny", "--check")
    assert result.exit_code == 0, result.output
    assert "measured" in result.output and "136,960 ok" in result.output
    data = json.loads(run("compare", "pre-ln", "--preset", "tiny", "--check", "--format", "json").output)
    assert {"params", "flops.forward_matmul", "flops.backward_matmul"} <= {c["name"] for c in data["variants"][0]["checks"]}


def test_gqa_and_a_scaled_edge_build_and_check(tmp_path):
    data = json.loads(run("show", "pre-ln", "--format", "json").output)
    next(e for e in data["edges"] if e["source"] == "x" and e["target"] == "add_1")["scale"] = "(2*L)**(1/4)"
    path = tmp_path / "scaled.json"
    path.write_text(json.dumps(data))
    result = run("check", str(path), "--preset", "tiny", "--set", "n_kv_heads=2", "--device", "cpu",
                 "--format", "json")
    assert result.exit_code == 0, result.output


def test_the_built_model_compiles_as_one_graph():
    """torch.compile captures the whole model (fullgraph: no graph break in the graph executor);
    aot_eager keeps the test fast, the benchmark in analyses/ runs the default inductor backend."""
    model = build_model("hybrid-ln", preset="tiny", n_kv_heads=2, seed=0)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    idx, targets = torch.randint(0, 512, (2, 64)), torch.randint(0, 512, (2, 64))
    _, loss = compiled(idx, targets)
    loss.backward()
    assert torch.allclose(loss, model(idx, targets)[1])
    assert model.blocks[0].attn.qkv.weight.grad is not None


def test_built_pre_ln_computes_what_a_hand_written_nanogpt_computes():
    """Oracle: the nanoGPT-style GPT-2 of analyses/ with the same weights gives the same loss."""
    from nanogpt_reference import copy_weights, reference_for

    dims = resolve_dims("tiny")
    built = build_model("pre-ln", dims, seed=0)
    reference = reference_for(dims)
    copy_weights(built, reference)
    assert sum(p.numel() for p in reference.parameters()) == sum(p.numel() for p in built.parameters())
    idx, targets = torch.randint(0, 512, (2, 64)), torch.randint(0, 512, (2, 64))
    assert torch.allclose(built(idx, targets)[1], reference(idx, targets)[1], rtol=1e-6)
