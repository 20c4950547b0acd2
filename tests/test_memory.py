"""Memory and inference: the symbolic figures of blockalg.analysis.memory against the built model
(saved tensors recorded by autograd's hooks, optimizer states, the KV cache of incremental
decoding, FlopCounterMode over a decode step) and against Hugging Face's caches."""

import json
import warnings

import pytest
import torch
from click.testing import CliRunner

from blockalg.analysis.memory import Setting, inference_expressions, memory_expressions, values_at
from blockalg.cli import main
from blockalg.graphs.expr import evaluate
from blockalg.graphs.hf import from_hf_config
from blockalg.graphs.resolve import resolve
from blockalg.graphs.variants import catalog
from blockalg.model.build import build_model
from blockalg.model.memory import check_memory, forward_saved_bytes
from blockalg.model.modules import KVCache

SHAPE = dict(seq_len=8, batch=2, n_kv_heads=2)  # GQA everywhere; batch 1 is tested apart
POLICIES = [(a, r) for a in ("eager", "flash") for r in ("none", "selective", "full")]


def predicted_activations(graph, dims, setting):
    return evaluate(memory_expressions(graph, setting)["activations"], dims)


def assert_activations(variant, device, dtype="fp32", policies=POLICIES, **shape):
    graph, dims = resolve(variant, "tiny", **{**SHAPE, **shape})
    model = build_model(graph, dims, device=device, seed=0,
                        dtype={"fp32": torch.float32, "bf16": torch.bfloat16}[dtype])
    for attention, recompute in policies:
        setting = Setting(dtype=dtype, attention=attention, recompute=recompute)
        measured = forward_saved_bytes(model, dims, setting, device)
        assert measured == predicted_activations(graph, dims, setting), (variant, setting)


@pytest.mark.parametrize("variant", [v.name for v in catalog()])
def test_saved_activations_of_every_variant_on_meta(variant):
    # (python analyses/memory_check.py runs every policy of every variant, meta, CPU and bf16)
    assert_activations(variant, "meta", policies=[("eager", "none"), ("flash", "selective"),
                                                  ("eager", "full")])


@pytest.mark.parametrize("variant", ["pre-ln", "moe"])
def test_saved_activations_on_cpu_tensors(variant):
    # real routing for the mixture; torch's fused CPU kernel on the flash path
    assert_activations(variant, "cpu", policies=POLICIES[:2] + POLICIES[3:5])


@pytest.mark.parametrize("variant", ["pre-ln", "output-ln"])
def test_saved_activations_in_bf16_and_at_batch_one(variant):
    # bf16: norm statistics and the math attention path stay fp32; batch 1 without GQA: the math
    # path's v is a view of the qkv output
    assert_activations(variant, "meta", "bf16", policies=[("eager", "none"), ("flash", "none")])
    assert_activations(variant, "meta", batch=1, n_kv_heads=4, policies=[("eager", "none")])


@pytest.mark.parametrize("setting", [Setting(dtype="bf16", optimizer="adamw", recompute="full"),
                                     Setting(dtype="fp16", optimizer="sgd", recompute="selective",
                                             attention="flash")])
def test_every_memory_check_passes_in_other_settings(setting):
    checks = check_memory("llama", setting, preset="tiny", device="meta", **SHAPE)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    by_name = {c.name: c.measured for c in checks}
    assert (by_name["memory.activations_recompute"] > 0) == (setting.recompute == "full")


def test_memory_command_equals_what_check_measures_at_gpt2_small():
    args = ["--preset", "gpt2-small", "--format", "json"]
    memory = json.loads(CliRunner().invoke(main, ["memory", "pre-ln", *args]).output)
    figures = memory["variants"][0]["memory"]
    assert memory["setting"] == {"dtype": "fp32", "optimizer": "adamw", "recompute": "none",
                                 "attention": "eager", "data_parallel": 1, "zero": 0}
    measured = {c.name: c.measured for c in check_memory("pre-ln", Setting(), preset="gpt2-small")}
    for key, value in figures.items():
        if key != "recompute_flops":  # inside step_flops
            assert measured[f"memory.{key}"] == value, key
    # 124,439,808 parameters: 4 bytes each for weights and gradients; AdamW: two fp32 moments
    # and a 4-byte step count for each of the 148 parameter tensors
    assert figures["weights"] == figures["gradients"] == 4 * 124_439_808
    assert figures["optimizer"] == 8 * 124_439_808 + 4 * 148
    # 12 layers · 2 (k, v) · 768 · 1024 tokens · 4 bytes
    assert figures["kv_cache"] == 12 * 2 * 768 * 1024 * 4


def test_incremental_decoding_reproduces_the_full_forward():
    for variant in ("pre-ln", "llama"):  # learned positions; rotary and GQA
        model = build_model(variant, preset="tiny", seed=0, n_kv_heads=2)
        idx = torch.randint(0, 512, (2, 12), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            full = model(idx)
            cache = KVCache()
            steps = [model(idx[:, :5], cache=cache)] + [model(idx[:, t:t + 1], cache=cache)
                                                       for t in range(5, 12)]
        assert (torch.cat(steps, dim=1) - full).abs().max() < 1e-5, variant
        assert cache.length == 12


transformers = pytest.importorskip("transformers")
BASE = dict(vocab_size=96, hidden_size=64, num_attention_heads=4, num_hidden_layers=2,
            intermediate_size=80, max_position_embeddings=32)
HF = {  # as in tests/test_hf.py; mistral's window (8) keeps window − 1 tokens: prefill 7 at most
    "gpt2": lambda: transformers.GPT2Config(vocab_size=96, n_embd=64, n_head=4, n_layer=2,
                                            n_positions=32, n_inner=80),
    "llama": lambda: transformers.LlamaConfig(**BASE, num_key_value_heads=2),
    "mistral": lambda: transformers.MistralConfig(**BASE, num_key_value_heads=2, sliding_window=8),
    "qwen2": lambda: transformers.Qwen2Config(**BASE, num_key_value_heads=2, tie_word_embeddings=False),
    "gemma2": lambda: transformers.Gemma2Config(**BASE, num_key_value_heads=2, head_dim=24),
}


def hf_cache_bytes(config, batch, tokens, dtype=torch.float32):
    """Bytes of the keys and values in a transformers model's cache after a prefill (meta)."""
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
        with torch.no_grad():
            cache = model(torch.zeros(batch, tokens, dtype=torch.long), use_cache=True).past_key_values
    return sum(t.nbytes for layer in cache.layers for t in (layer.keys, layer.values))


@pytest.mark.parametrize("name", list(HF))
def test_kv_cache_equals_transformers(name):
    m = from_hf_config(HF[name](), seq_len=7, batch=3)
    kv = values_at(inference_expressions(m.graph, Setting(dtype="fp32")), m.dims)["kv_cache"]
    assert kv == hf_cache_bytes(HF[name](), 3, 7)


def test_llama_2_7b_kv_cache_at_4096_tokens():
    config = transformers.LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                      num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                                      max_position_embeddings=4096)
    m = from_hf_config(config, seq_len=4096, batch=1)
    kv = values_at(inference_expressions(m.graph, Setting(dtype="bf16")), m.dims)["kv_cache"]
    assert kv == 2 * 32 * 32 * 128 * 4096 * 2 == 2_147_483_648
    assert kv == hf_cache_bytes(config, 1, 4096, torch.bfloat16)
