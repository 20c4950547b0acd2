"""Real models from Hugging Face configs: blockalg's parameter count and forward matmul FLOPs equal
the transformers implementation's, built from the same small config (no weights, no network)."""

import json
import warnings

import pytest
import torch
from click.testing import CliRunner

from blockalg import BlockalgError, analyze
from blockalg.analysis.memory import Setting, inference_expressions, values_at
from blockalg.cli import main
from blockalg.graphs.hf import from_hf_config, supported_model_types
from blockalg.model.check import check, flop_counter

transformers = pytest.importorskip("transformers")
SEQ = 16
BASE = dict(vocab_size=96, hidden_size=64, num_attention_heads=4, num_hidden_layers=2,
            intermediate_size=80, max_position_embeddings=32)
OPT = dict(vocab_size=96, hidden_size=64, num_attention_heads=4, num_hidden_layers=2, ffn_dim=80,
           max_position_embeddings=32, word_embed_proj_dim=64)
FALCON = dict(vocab_size=96, hidden_size=64, num_attention_heads=4, num_hidden_layers=2,
              max_position_embeddings=32)
CONFIGS = {
    "gpt2": lambda: transformers.GPT2Config(vocab_size=96, n_embd=64, n_head=4, n_layer=2, n_positions=32, n_inner=80),
    "gpt_neox (parallel)": lambda: transformers.GPTNeoXConfig(**BASE, rotary_pct=0.25),
    "gpt_neox (sequential)": lambda: transformers.GPTNeoXConfig(**BASE, use_parallel_residual=False),
    "llama": lambda: transformers.LlamaConfig(**BASE, num_key_value_heads=2),
    "mistral": lambda: transformers.MistralConfig(**BASE, num_key_value_heads=2, sliding_window=8),
    "qwen2": lambda: transformers.Qwen2Config(**BASE, num_key_value_heads=2, tie_word_embeddings=False),
    "opt (pre-LN)": lambda: transformers.OPTConfig(**OPT),
    "opt (post-LN)": lambda: transformers.OPTConfig(**OPT, do_layer_norm_before=False),
    "falcon (7b layout)": lambda: transformers.FalconConfig(**FALCON),
    "falcon (new architecture)": lambda: transformers.FalconConfig(**FALCON, new_decoder_architecture=True,
                                                                   num_kv_heads=2, bias=True),
    "gemma2": lambda: transformers.Gemma2Config(**BASE, num_key_value_heads=2, head_dim=24),
    "olmo2": lambda: transformers.Olmo2Config(**BASE, num_key_value_heads=2),
    "mixtral": lambda: transformers.MixtralConfig(**BASE, num_key_value_heads=2, num_local_experts=4,
                                                  num_experts_per_tok=2),
}


def hf_counts(config):
    """Parameters and forward matmul FLOPs of the transformers model of ``config``.

    Mixtral routes tokens by value, so it runs on real CPU tensors; its default grouped-matmul
    expert kernel is invisible to FlopCounterMode, so the eager expert loop is asked for.
    """
    moe = config.model_type == "mixtral"
    device = "cpu" if moe else "meta"
    config._attn_implementation = "eager" if config.model_type == "gemma2" else "sdpa"
    kwargs = {"experts_implementation": "eager"} if moe else {}
    with warnings.catch_warnings(), torch.device(device):
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config, **kwargs)
    idx = torch.randint(0, config.vocab_size, (1, SEQ), device=device)
    with flop_counter() as counter:
        model(idx)
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops()


def test_every_listed_model_type_is_supported():
    assert {"gpt2", "gpt_neox", "llama", "mistral", "qwen2", "opt", "falcon", "gemma2", "mixtral",
            "olmo2"} <= set(supported_model_types())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parameters_and_flops_equal_transformers(name):
    config = CONFIGS[name]()
    params, flops = hf_counts(config)
    model = from_hf_config(config, seq_len=SEQ)
    values = analyze(model.graph, dims=model.dims).values
    assert values["params.total"] == params
    assert values["flops.forward_matmul"] == flops


@pytest.mark.parametrize("name", ["llama", "olmo2", "falcon (7b layout)", "gemma2"])
def test_the_graph_of_a_config_passes_every_check(name):
    model = from_hf_config(CONFIGS[name](), seq_len=SEQ)
    failed = [c for c in check(model.graph, model.dims, device="cpu", elementwise=False) if not c.ok]
    assert not failed, failed


def test_compare_hf_config_reports_the_transformers_total(tmp_path):
    config = CONFIGS["llama"]()
    config.save_pretrained(tmp_path)  # a real config.json, defaults left out
    params, _ = hf_counts(config)
    result = CliRunner().invoke(main, ["compare", "pre-ln", "--hf-config", str(tmp_path / "config.json"),
                                       "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["variants"][1]["params"]["total"] == params  # after pre-ln, as on the command line
    assert data["dims"]["n_kv_heads"] == 2 and data["preset"] == "hf:llama"


def test_unmodelled_fields_are_named():
    model = from_hf_config(CONFIGS["gemma2"]())
    assert any(line.startswith("final_logit_softcapping") for line in model.not_modeled)
    result = CliRunner().invoke(main, ["show", "--hf-config", "/nonexistent/config.json"])
    assert result.exit_code == 2 and "cannot read" in result.output


def test_unsupported_and_unmodelled_configs_are_refused():
    with pytest.raises(BlockalgError, match="model_type 'bert' is not supported"):
        from_hf_config({"model_type": "bert"})
    with pytest.raises(BlockalgError, match="project_in/project_out"):
        from_hf_config(transformers.OPTConfig(**{**OPT, "word_embed_proj_dim": 32}))


#: mistral's window (8) keeps window − 1 tokens in HF's cache, so prefills stay at 7 tokens
#: (blockalg does not model sliding windows); gemma2's window (4096) does not bind.
KV_CONFIGS = ["gpt2", "llama", "mistral", "qwen2", "gemma2"]


def hf_cache_bytes(config, batch, tokens, dtype=torch.float32):
    """Bytes of the keys and values in a transformers model's cache after a prefill (meta)."""
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
        with torch.no_grad():
            cache = model(torch.zeros(batch, tokens, dtype=torch.long), use_cache=True).past_key_values
    return sum(t.nbytes for layer in cache.layers for t in (layer.keys, layer.values))


@pytest.mark.parametrize("name", KV_CONFIGS)
def test_kv_cache_equals_transformers(name):
    m = from_hf_config(CONFIGS[name](), seq_len=7, batch=3)
    kv = values_at(inference_expressions(m.graph, Setting(dtype="fp32")), m.dims)["kv_cache"]
    assert kv == hf_cache_bytes(CONFIGS[name](), 3, 7)


def test_llama_2_7b_kv_cache_at_4096_tokens():
    config = transformers.LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                      num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                                      max_position_embeddings=4096)
    m = from_hf_config(config, seq_len=4096, batch=1)
    kv = values_at(inference_expressions(m.graph, Setting(dtype="bf16")), m.dims)["kv_cache"]
    assert kv == 2 * 32 * 32 * 128 * 4096 * 2 == 2_147_483_648
    assert kv == hf_cache_bytes(config, 1, 4096, torch.bfloat16)
