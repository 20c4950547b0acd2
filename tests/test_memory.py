"""Memory and inference: the symbolic figures of blockalg.analysis.memory against the built model
(saved tensors recorded by autograd's hooks, optimizer states, the KV cache of incremental
decoding, FlopCounterMode over a decode step) and against Hugging Face's caches."""

import json

import pytest
import torch
from support import GPT2_SMALL_PARAMS, run

from blockalg.analysis.memory import Setting, memory_expressions
from blockalg.graphs.expr import evaluate
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


def test_saved_activations_on_cpu_tensors():
    # torch's fused CPU kernel on the flash path; real routing for the mixture
    assert_activations("pre-ln", "cpu", policies=POLICIES[:2] + POLICIES[3:5])
    assert_activations("moe", "cpu", policies=[("eager", "none"), ("flash", "selective")])


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
    memory = json.loads(run("memory", "pre-ln", "--preset", "gpt2-small", "--format", "json").output)
    figures = memory["variants"][0]["memory"]
    assert memory["setting"] == {"dtype": "fp32", "optimizer": "adamw", "recompute": "none",
                                 "attention": "eager", "data_parallel": 1, "zero": 0}
    measured = {c.name: c.measured for c in check_memory("pre-ln", Setting(), preset="gpt2-small")}
    for key, value in figures.items():
        if key != "recompute_flops":  # inside step_flops
            assert measured[f"memory.{key}"] == value, key
    # 4 bytes per parameter for weights and gradients; AdamW: two fp32 moments and a 4-byte step
    # count for each of the 148 parameter tensors
    params = GPT2_SMALL_PARAMS["pre-ln"]
    assert figures["weights"] == figures["gradients"] == 4 * params
    assert figures["optimizer"] == 8 * params + 4 * 148
    # 12 layers · 2 (k, v) · 768 · 1024 tokens · 4 bytes
    assert figures["kv_cache"] == 12 * 2 * 768 * 1024 * 4


def test_incremental_decoding_reproduces_the_full_forward():
    for variant in ("pre-ln", "llama"):  # learned positions; rotary and GQA
        model = build_model(variant, preset="tiny", seed=0, n_kv_heads=2)
        idx = torch.randint(0, 512, (2, 9), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            full = model(idx)
            cache = KVCache()
            steps = [model(idx[:, :5], cache=cache)] + [model(idx[:, t:t + 1], cache=cache)
                                                       for t in range(5, 9)]
        assert (torch.cat(steps, dim=1) - full).abs().max() < 1e-5, variant
        assert cache.length == 9


def test_memory_and_inference_commands():
    data = json.loads(run("memory", "pre-ln", "llama", "--preset", "tiny", "--batch", "4", "--seq-len",
                          "32", "--dtype", "bf16", "--recompute", "selective", "--attention", "flash",
                          "--data-parallel", "4", "--zero", "3", "--hardware", "h100-sxm",
                          "--format", "json").output)
    pre = data["variants"][0]
    assert data["dims"]["batch"] == 4 and data["setting"]["zero"] == 3
    assert set(pre["memory"]) >= {"weights", "gradients", "optimizer", "activations", "kv_cache",
                                  "peak_training"}
    assert all(isinstance(v, int) for v in pre["memory"].values())
    # ZeRO-3 over 4 ranks: every state a quarter (rounded up) of the single-rank figure
    single = json.loads(run("memory", "pre-ln", "--preset", "tiny", "--dtype", "bf16",
                            "--format", "json").output)["variants"][0]["memory"]
    assert pre["memory"]["weights"] == -(-single["weights"] // 4)
    assert pre["memory"]["optimizer"] == -(-single["optimizer"] // 4)
    assert pre["roofline"]["fits"] is True and "memory.activations" in pre["expressions"]
    inference = json.loads(run("inference", "llama", "--preset", "tiny", "--context", "48",
                               "--hardware", "a100-80gb", "--format", "json").output)
    figures = inference["variants"][0]["inference"]
    assert inference["position"] == 47 and figures["kv_cache"] == 2 * 2 * 64 * 48 * 2
    assert figures["arithmetic_intensity"] > 0 and inference["variants"][0]["roofline"]["decode_tokens_per_s"] > 0
    for fmt in ("table", "markdown", "latex", "csv"):
        assert run("memory", "moe", "--preset", "tiny", "--hardware", "l4", "--format", fmt).exit_code == 0
        assert run("inference", "moe", "--preset", "tiny", "--format", fmt).exit_code == 0


def test_check_measures_in_the_memory_setting():
    result = run("check", "pre-ln", "--preset", "tiny", "--dtype", "bf16", "--recompute", "full",
                 "--format", "json")
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.output)["variants"][0]["checks"]}
    assert checks["memory.activations"]["ok"] and "bf16" in checks["memory.activations"]["detail"]


@pytest.mark.parametrize(("variant", "device", "setting"), [
    ("pre-ln", "meta", Setting()),  # one training step serves the FLOP and the memory checks
    ("moe", "meta", Setting(optimizer="sgd")),
    ("llama", "cpu", Setting(attention="flash")),  # one model, two steps
    ("resi-dual", "meta", Setting(dtype="bf16")),  # a second model
])
def test_check_shares_its_model_and_step_and_measures_what_separate_runs_measure(variant, device,
                                                                               setting):
    from blockalg.model.check import check, check_elementwise

    shared = check(variant, preset="tiny", device=device, memory=setting)
    alone = check(variant, preset="tiny", device=device, elementwise=False)
    after_flops = [c.name for c in alone].index("flops.backward_matmul") + 1
    alone[after_flops:after_flops] = check_elementwise(*resolve(variant, "tiny"))  # its own model
    alone += check_memory(variant, setting, preset="tiny", device=device)
    assert [c.to_dict() for c in shared] == [c.to_dict() for c in alone]


def test_hardware_specs_and_bad_input(tmp_path):
    spec = tmp_path / "gpu.json"
    spec.write_text(json.dumps({"name": "my-gpu", "peak_flops_bf16": 1e14, "peak_flops_fp32": 1e13,
                                "memory_bandwidth": 1e12, "memory_capacity": 2**34}))
    data = json.loads(run("inference", "pre-ln", "--preset", "tiny", "--hardware-spec", str(spec),
                          "--format", "json").output)
    assert data["hardware"]["name"] == "my-gpu" and data["variants"][0]["roofline"]["fits"] is True
    bad = [({"name": "x"}, "missing 'peak_flops_bf16'"),
           ({"name": "x", "peak_flops_bf16": -1, "peak_flops_fp32": 1, "memory_bandwidth": 1,
             "memory_capacity": 1}, "'peak_flops_bf16' must be a positive number"),
           ([], "no hardware")]
    for content, message in bad:
        spec.write_text(json.dumps(content))
        result = run("memory", "pre-ln", "--hardware-spec", str(spec))
        assert result.exit_code == 2 and message in result.output and result.output.count("\n") == 1
    spec.write_text("{")
    assert "not valid JSON" in run("memory", "pre-ln", "--hardware-spec", str(spec)).output
    result = run("memory", "pre-ln", "--hardware", "tpu-v9")
    assert result.exit_code == 2 and "unknown hardware 'tpu-v9'" in result.output
    result = run("inference", "pre-ln", "--context", "5000")
    assert result.exit_code == 2 and "exceeds the context" in result.output
