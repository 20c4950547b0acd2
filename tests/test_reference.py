"""Independent implementation: HF transformers' GPT-2, built from its config on the meta device,
has the parameter count and matmul FLOPs that blockalg derives for pre-ln."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from blockalg import analyze
from blockalg.graphs.presets import PRESETS
from support import GPT2_SMALL_FORWARD_MATMUL, GPT2_SMALL_PARAMS

transformers = pytest.importorskip("transformers")


def hf_gpt2(preset):
    p = PRESETS[preset]
    config = transformers.GPT2Config(n_embd=p["d_model"], n_head=p["n_heads"], n_layer=p["n_layers"],
                                     n_positions=p["n_ctx"], vocab_size=p["vocab"], n_inner=p["d_ff"],
                                     attn_implementation="sdpa")
    with torch.device("meta"):
        return transformers.GPT2LMHeadModel(config), p


@pytest.mark.parametrize("preset", ["tiny", "gpt2-small"])
def test_hf_gpt2_matches_pre_ln(preset):
    model, p = hf_gpt2(preset)
    predicted = analyze("pre-ln", preset=preset).values
    assert sum(t.numel() for t in model.parameters()) == predicted["params.total"]
    idx = torch.zeros(1, p["n_ctx"], dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as forward:
        logits = model(idx).logits
    with FlopCounterMode(display=False) as backward:
        logits.float().sum().backward()
    assert forward.get_total_flops() == predicted["flops.forward_matmul"]
    assert backward.get_total_flops() == predicted["flops.backward_matmul"]
    if preset == "gpt2-small":  # the golden numbers the other tests use are HF's
        assert sum(t.numel() for t in model.parameters()) == GPT2_SMALL_PARAMS["pre-ln"]
        assert forward.get_total_flops() == GPT2_SMALL_FORWARD_MATMUL
