"""Every op formula against an independent count: numel of an equivalent plain torch module, and
FlopCounterMode over an equivalent functional computation on the meta device."""

import pytest
import sympy as sp
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from blockalg.graphs.expr import evaluate
from blockalg.graphs.ops import OpKind, get_op, matmul_flops, op_names, register
from blockalg.model.modules import module_for


def test_matmul_flops_is_two_per_multiply_add():
    assert matmul_flops(2, 3, 4) == 48  # 2·3·4 multiply-adds × 2


def test_registry_refuses_a_duplicate_name():
    class Again(OpKind):
        name = "layernorm"

    with pytest.raises(ValueError, match="registered twice"):
        register(Again)


def test_every_block_op_is_registered():
    assert {"input", "output", "add", "scale", "layernorm", "rmsnorm", "attention", "ffn"} <= set(
        op_names(in_block=True))


def reference_module(name, attrs, dims):
    """Plain torch modules written here, independently of blockalg.model.modules."""
    d, dff = dims["d_model"], dims["d_ff"]
    h, hkv, dh = dims["n_heads"], dims["n_kv_heads"], dims["d_head"]
    bias = attrs.get("bias", True)
    if name == "layernorm":
        return nn.LayerNorm(d, bias=bias)
    if name == "rmsnorm":
        return nn.RMSNorm(d)
    if name == "attention":
        return nn.ModuleList([nn.Linear(d, (h + 2 * hkv) * dh, bias=bias), nn.Linear(h * dh, d, bias=bias)])
    if name == "ffn":
        n_in = 2 if attrs.get("gated") else 1
        return nn.ModuleList([nn.Linear(d, dff, bias=bias) for _ in range(n_in)] + [nn.Linear(dff, d, bias=bias)])
    raise AssertionError(name)


CASES = [("layernorm", {"bias": True}), ("layernorm", {"bias": False}), ("rmsnorm", {}),
         ("attention", {"bias": True}), ("attention", {"bias": False}),
         ("ffn", {"activation": "gelu"}), ("ffn", {"activation": "relu", "bias": False}),
         ("ffn", {"activation": "silu", "gated": True, "bias": False}),
         ("ffn", {"activation": "silu", "gated": True, "bias": True})]


def gqa_dims(dims):
    return {**dims, "n_kv_heads": 2}


@pytest.mark.parametrize("name,attrs", CASES)
@pytest.mark.parametrize("gqa", [False, True])
def test_params_match_numel_of_an_equivalent_torch_module(name, attrs, gqa, small_dims):
    dims = gqa_dims(small_dims) if gqa else small_dims
    op = get_op(name)
    full = op.with_defaults(attrs)
    predicted = evaluate(sum(op.params(full).values(), sp.Integer(0)), dims)
    assert predicted == sum(p.numel() for p in reference_module(name, full, dims).parameters())
    # and the registry's own factory builds exactly the leaves the formula names
    built = dict(module_for(op, full, dims).named_parameters())
    assert {k: evaluate(v, dims) for k, v in op.params(full).items()} == {k: p.numel() for k, p in built.items()}


def reference_forward(name, attrs, dims, x):
    """The op's computation in plain functional torch."""
    h, hkv, dh = dims["n_heads"], dims["n_kv_heads"], dims["d_head"]
    mods = reference_module(name, attrs, dims).to("meta")
    if name in ("layernorm", "rmsnorm"):
        return mods(x)
    if name == "attention":
        b, s, _ = x.shape
        q, k, v = mods[0](x).split([h * dh, hkv * dh, hkv * dh], dim=-1)
        q = q.view(b, s, h, dh).transpose(1, 2)
        k = k.view(b, s, hkv, dh).transpose(1, 2).repeat_interleave(h // hkv, dim=1)
        v = v.view(b, s, hkv, dh).transpose(1, 2).repeat_interleave(h // hkv, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return mods[1](y.transpose(1, 2).reshape(b, s, h * dh))
    if name == "ffn":
        if attrs["gated"]:
            return mods[2](F.silu(mods[1](x)) * mods[0](x))
        return mods[1](F.gelu(mods[0](x)))
    raise AssertionError(name)


@pytest.mark.parametrize("name,attrs", CASES)
@pytest.mark.parametrize("gqa", [False, True])
def test_matmul_flops_match_flop_counter_mode_on_meta(name, attrs, gqa, small_dims):
    dims = gqa_dims(small_dims) if gqa else small_dims
    op = get_op(name)
    full = op.with_defaults(attrs)
    x = torch.randn(1, dims["seq_len"], dims["d_model"], device="meta", requires_grad=True)
    with FlopCounterMode(display=False) as forward:
        y = reference_forward(name, full, dims, x)
    with FlopCounterMode(display=False) as backward:
        y.sum().backward()
    assert forward.get_total_flops() == evaluate(op.forward_matmul(full, 1), dims)
    assert backward.get_total_flops() == evaluate(op.backward_matmul(full, 1), dims)


def test_attention_flops_by_hand(small_dims):
    # s=12, d=48, h=6, d_head=8: qkv 2·12·48·144 = 165888; proj 2·12·48·48 = 55296;
    # scores and mix 2 · (2·6·12·12·8) = 27648
    assert evaluate(get_op("attention").forward_matmul({"bias": True}, 1), small_dims) == 165888 + 55296 + 27648


def test_causal_count_keeps_only_unmasked_scores(small_dims):
    op = get_op("attention")
    dense = evaluate(op.forward_matmul({"bias": True}, 1), small_dims)
    causal = evaluate(op.forward_matmul_causal({"bias": True}, 1), small_dims)
    # scores and mix: 2·(2·h·d_head) per score; dense has 144 scores per head, causal 78
    assert dense - causal == 2 * 2 * 6 * 8 * (144 - 78)


def test_other_flops_follow_the_documented_per_element_costs(small_dims):
    s, d, dff, h = 12, 48, 80, 6
    ev = lambda name, attrs, k=1: evaluate(get_op(name).forward_other(get_op(name).with_defaults(attrs), k), small_dims)
    assert ev("layernorm", {}) == 7 * s * d
    assert ev("layernorm", {"bias": False}) == 6 * s * d
    assert ev("rmsnorm", {}) == 4 * s * d
    assert ev("add", {}, 3) == 2 * s * d
    assert ev("ffn", {"activation": "relu", "bias": False}) == s * dff
    assert ev("ffn", {"activation": "silu", "gated": True, "bias": False}) == 4 * s * dff + s * dff
    assert ev("attention", {"bias": False}) == 6 * h * s * s
