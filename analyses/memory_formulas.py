"""Published memory formulas against blockalg's exact figures: Korthikanti et al. 2022's
activations per layer, the "16 bytes per parameter" rule of mixed-precision Adam, the usual
KV-cache formula and what torchinfo reports, each across the presets; then which variants keep
more activations and why. ``python analyses/memory_formulas.py`` writes reports/memory_formulas/;
``--check`` compares it with a fresh build; ``--quick --out DIR``.

blockalg's figures are exact and measured: every activation figure here equals the bytes of the
storages autograd keeps in the built model (tests/test_memory.py and
``python analyses/memory_check.py``). torchinfo's numbers come from
analyses/data/torchinfo_memory.json, written by ``analyses/torchinfo_memory.py``.

Symbols map to Korthikanti et al.'s as follows: s = seq_len, b = batch, h = d_model, a = n_heads,
L = n_layers; their activations are 16-bit, so blockalg's are taken at bf16 (mixed precision).
"""

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import sympy as sp

from blockalg.analysis.memory import Setting, inference_expressions, memory_expressions
from blockalg.graphs.expr import evaluate
from blockalg.graphs.hf import from_hf_config
from blockalg.graphs.presets import PUBLISHED_PRESETS, resolve_dims
from blockalg.graphs.symbols import (
    batch,
    d_model,
    n_heads,
    n_layers,
    relations_holding_at,
    seq_len,
)
from blockalg.graphs.variants import catalog, get
from blockalg.output.render import Table, format_value
from blockalg.output.report import ReportFolder, latex_math, study_main

VARIANT = "pre-ln"
QUICK_PRESETS = ("gpt2-small", "gpt3-175b")
TORCHINFO = Path(__file__).resolve().parent / "data" / "torchinfo_memory.json"
BF16 = Setting(dtype="bf16")

#: Korthikanti et al. 2022, 'Reducing Activation Recomputation in Large Transformer Models',
#: Sections 4.1-4.3: activation bytes per layer with 16-bit activations and dropout.
KORTHIKANTI = {
    "none": seq_len * batch * d_model * (34 + 5 * n_heads * seq_len / d_model),
    "selective": 34 * seq_len * batch * d_model,
    "full": 2 * seq_len * batch * d_model,
}

#: Hugging Face configs (config.json fields; no weights) of released models, for the KV cache.
HF_CONFIGS = {
    "LLaMA-2-7B": dict(model_type="llama", hidden_size=4096, intermediate_size=11008,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                       vocab_size=32000, max_position_embeddings=4096),
    "LLaMA-2-70B": dict(model_type="llama", hidden_size=8192, intermediate_size=28672,
                        num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8,
                        vocab_size=32000, max_position_embeddings=4096),
    "Mistral-7B": dict(model_type="mistral", hidden_size=4096, intermediate_size=14336,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       vocab_size=32000, max_position_embeddings=32768),
}
KV_CONTEXT = 4096


@dataclass(frozen=True)
class Row:
    """One comparison: what, where, blockalg's exact figure, the formula's, and the error."""

    formula: str
    where: str
    exact: int
    approx: sp.Rational

    @property
    def error(self) -> sp.Rational:
        return sp.Rational(self.approx - self.exact, self.exact)


def percent(error) -> str:
    """(approx − exact)/exact in percent, 4 significant digits; an exact match says so."""
    return "0 (exact)" if error == 0 else f"{float(100 * error):+#.4g}%"


def per_layer(graph, setting: Setting) -> sp.Expr:
    """Activation bytes one more layer adds (the coefficient of L)."""
    return sp.diff(memory_expressions(graph, setting)["activations"], n_layers)


def korthikanti_rows(presets) -> list[Row]:
    graph = get(VARIANT)
    rows = []
    for policy, attention in (("none", "eager"), ("selective", "eager"), ("full", "eager")):
        exact = per_layer(graph, BF16.with_(recompute=policy, attention=attention))
        for p in presets:
            dims = resolve_dims(p)
            rows.append(Row(f"korthikanti_{policy}", p, evaluate(exact, dims),
                            evaluate(KORTHIKANTI[policy], dims, integer=False)))
    flash = per_layer(graph, BF16.with_(attention="flash"))
    rows += [Row("korthikanti_selective_vs_flash", p, evaluate(flash, resolve_dims(p)),
                 evaluate(KORTHIKANTI["selective"], resolve_dims(p), integer=False)) for p in presets]
    return rows


def dropped(policy: str, attention: str = "eager", formula: str | None = None) -> sp.Expr:
    """exact − Korthikanti (``formula``, default ``policy``'s) per layer at bf16, with
    gpt2-small's relations (d_head = d/h)."""
    exact = per_layer(get(VARIANT), BF16.with_(recompute=policy, attention=attention))
    diff = exact - KORTHIKANTI[formula or policy]
    return sp.expand(diff.subs(relations_holding_at(resolve_dims("gpt2-small"))))


def adam_rows(presets) -> list[Row]:
    graph = get(VARIANT)
    rows = []
    for dtype in ("bf16", "fp32"):
        e = memory_expressions(graph, Setting(dtype=dtype))
        states = e["weights"] + e["gradients"] + e["optimizer"]
        for p in presets:
            dims = resolve_dims(p)
            params = evaluate(e["weights"], dims) // Setting(dtype=dtype).bytes
            rows.append(Row(f"16_bytes_{dtype}", p, evaluate(states, dims), sp.Integer(16 * params)))
    return rows


def kv_rows(presets) -> list[Row]:
    usual = 2 * n_layers * d_model * seq_len * batch * 2  # bf16: 2 bytes
    rows = []
    for p in presets:
        dims = resolve_dims(p)
        exact = inference_expressions(get(VARIANT), BF16)["kv_cache"]
        rows.append(Row("kv_usual", p, evaluate(exact, dims), evaluate(usual, dims, integer=False)))
    for name, config in HF_CONFIGS.items():
        m = from_hf_config(config, seq_len=KV_CONTEXT, batch=1)
        exact = inference_expressions(m.graph, BF16)["kv_cache"]
        rows.append(Row("kv_usual", f"{name} (h_kv = {m.dims['n_kv_heads']})", evaluate(exact, m.dims),
                        evaluate(usual, m.dims, integer=False)))
    return rows


def torchinfo_rows(presets) -> tuple[list[Row], dict]:
    data = json.loads(TORCHINFO.read_text())
    graph = get(VARIANT)
    e = memory_expressions(graph, Setting(dtype="fp32"))
    rows = []
    for p in presets:
        dims, t = resolve_dims(p), data["presets"][p]
        rows.append(Row("torchinfo_params", p, evaluate(e["weights"], dims), sp.Integer(t["params_bytes"])))
        rows.append(Row("torchinfo_activations", p, evaluate(e["activations"], dims),
                        sp.Integer(t["forward_backward_bytes"])))
    return rows, data


def variant_table(folder: ReportFolder, preset: str) -> tuple[str, dict]:
    """Activations of every variant at ``preset``, bf16, under each policy; Δ vs pre-ln."""
    dims = resolve_dims(preset)
    policies = [("eager", "none"), ("flash", "none"), ("eager", "selective"), ("eager", "full")]
    base = get(VARIANT)
    values, rows = {}, []
    for v in catalog():
        graph = v.graph()
        values[v.name] = [evaluate(memory_expressions(graph, BF16.with_(attention=a, recompute=r))
                                   ["activations"], dims) for a, r in policies]
    for v in catalog():
        graph = v.graph()
        counts = values[v.name]
        ratio = [percent(sp.Rational(c - b, b)) if v.name != VARIANT else "" for c, b in
                 zip(counts, values[VARIANT])]
        if graph.graph.get("segments"):
            diff = "(a stack: its blocks' differences)"
        else:
            delta = per_layer(graph, BF16) - per_layer(base, BF16)
            diff = latex_math(sp.expand(delta.subs(relations_holding_at(dims))))
        rows.append([v.name, *(f"{format_value(c)} ({r})" if r else format_value(c)
                               for c, r in zip(counts, ratio)), diff])
    table = Table(f"Activation bytes at {preset}, bf16, batch 1, s = {dims['seq_len']}, whole model "
                  f"(Δ vs {VARIANT}); last column: bytes per layer more than {VARIANT} (eager, no "
                  "recomputation)",
                  ["variant", "eager", "flash", "selective (eager)", "full", "per layer − pre-ln"],
                  rows, align="lrrrrl")
    return folder.add_table("tables/variants", table), values


def rows_table(title, rows, exact_label="exact (blockalg)", approx_label="formula") -> Table:
    return Table(title, ["at", exact_label, approx_label, "relative error"],
                 [[r.where, format_value(r.exact), format_value(r.approx), percent(r.error)]
                  for r in rows])


def pick(rows, formula, where=None):
    chosen = [r for r in rows if r.formula == formula and (where is None or r.where == where)]
    return chosen if where is None else chosen[0]


def variants_figure(values, preset):
    from blockalg.output.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.2), constrained_layout=True)
    names = list(values)
    width = 0.2
    for i, label in enumerate(("eager", "flash", "selective (eager)", "full")):
        ax.bar([x + (i - 1.5) * width for x in range(len(names))],
               [values[n][i] / 2**30 for n in names], width, label=label)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("activations (GiB)")
    ax.set_title(f"Activation memory of each variant · {preset}, bf16, batch 1, s = n_ctx",
                 fontsize=10)
    ax.legend(fontsize=8)
    return fig


def reading(k, adam, kv, ti, values, presets) -> list[str]:
    small, large = presets[0], presets[-1]

    def err(rows, formula, where):
        return percent(pick(rows, formula, where).error)

    pre = values[VARIANT]
    order = sorted(values, key=lambda n: values[n][0])

    def more(name, i=0):
        return percent(sp.Rational(values[name][i] - pre[i], pre[i]))

    return [
        f"* **Korthikanti et al., no recomputation** (sbh(34 + 5as/h) per layer): "
        f"{err(k, 'korthikanti_none', small)} at {small}, {err(k, 'korthikanti_none', large)} at "
        f"{large}. The formula keeps 16-bit copies and dropout masks (1 byte per element: after "
        f"attention, after the softmax, after the FFN); the built model has no dropout, so no "
        f"masks, but torch's math attention path computes in fp32 under bf16 and keeps q and k "
        f"scaled, v and the s×s probabilities in fp32 (4·as²b instead of the formula's "
        f"2·as²b + as²b mask + 2·as²b dropout output), and it keeps the norms' fp32 mean and rstd. "
        f"The per-layer difference, exact − formula: {latex_math(dropped('none'))}.",
        f"* **Korthikanti, selective recomputation** (34sbh): {err(k, 'korthikanti_selective', small)}"
        f" at {small}, {err(k, 'korthikanti_selective', large)} at {large}; exact − formula "
        f"{latex_math(dropped('selective'))}. A fused attention kernel without recomputation keeps "
        f"almost the same (output and log-sum-exp instead of the recomputable core): "
        f"{err(k, 'korthikanti_selective_vs_flash', small)} at {small}.",
        f"* **Korthikanti, full recomputation** (2sbh, the block input): "
        f"{err(k, 'korthikanti_full', small)} at every preset.",
        f"* **16 bytes per parameter** (mixed-precision Adam: 2 + 2 + 4 master + 8 moments; also "
        f"fp32's 4 + 4 + 8) misses only torch's 4-byte step count per parameter tensor: "
        f"{err(adam, '16_bytes_bf16', small)} at {small}, {err(adam, '16_bytes_bf16', large)} at "
        f"{large}.",
        f"* **The usual KV-cache formula** 2·L·d·s·b·bytes is exact for multi-head attention "
        f"({err(kv, 'kv_usual', small)} at {small}, and for LLaMA-2-7B); with grouped-query "
        f"attention it counts every query head: {err(kv, 'kv_usual', 'LLaMA-2-70B (h_kv = 8)')} for "
        f"LLaMA-2-70B and Mistral-7B (h_kv = 8 of 64 and 32 heads). blockalg's "
        f"2·L·h_kv·d_h·s·b·bytes follows the graph. Mistral's sliding window (4096) does not bind "
        f"at s = {KV_CONTEXT}; blockalg does not model windows.",
        f"* **torchinfo** (1.8.0) double-counts the tied embedding in 'Params size' "
        f"({err(ti, 'torchinfo_params', small)} at {small}) and its 'Forward/backward pass size' "
        f"(every module's output, twice) is not what autograd keeps: "
        f"{err(ti, 'torchinfo_activations', small)} at {small}, "
        f"{err(ti, 'torchinfo_activations', large)} at {large} (fp32, against blockalg's "
        f"measured figure).",
        "",
        f"**Which variants keep more activations** ({small}, bf16, eager, whole model; table "
        f"below): the least is `{order[0]}` ({more(order[0])}), the most `{order[-1]}` "
        f"({more(order[-1])}). Every norm keeps its input and fp32 statistics: hybrid-ln's third "
        f"norm costs {more('hybrid-ln')}, sandwich-ln's two output norms {more('sandwich-ln')}, "
        f"NormFormer's d_ff-wide norm and head scale {more('normformer')}. A parallel block "
        f"shares one norm's output between attention and FFN ({more('parallel')}; with two "
        f"norms {more('parallel-2ln')}). The mixture of experts keeps, per routed token (top_k "
        f"of them), the gathered input, the expert's output and its weighted copy, and the "
        f"expert's SwiGLU hidden tensors: {more('moe')}. RMSNorm under bf16 keeps an fp32 copy of "
        f"its input and of x·rstd (llama {more('llama')}). The s² probabilities dominate the "
        f"eager column at long s; with a fused kernel (flash column) the variants differ by "
        f"their norms and FFNs only.",
    ]


def build(quick: bool = False) -> ReportFolder:
    """Published memory formulas against blockalg's exact figures, and the variants compared."""
    presets = QUICK_PRESETS if quick else PUBLISHED_PRESETS
    k, adam, kv = korthikanti_rows(presets), adam_rows(presets), kv_rows(presets)
    ti, ti_data = torchinfo_rows(presets)
    folder = ReportFolder()
    variants_md, values = variant_table(folder, presets[0])
    md = ["# Published memory formulas against blockalg's exact figures", "",
          f"Variant `{VARIANT}` (GPT-2 style) at presets {', '.join(presets)}, batch 1, s = the "
          "preset's n_ctx. blockalg's figures are exact and equal, byte for byte, to what the built "
          "model keeps (autograd's saved tensors, optimizer states, cache tensors; see the "
          "README's memory conventions). Korthikanti et al. count 16-bit activations, so "
          "blockalg's are at bf16 (mixed precision) here; the built model has no dropout.", "",
          "Symbols in the formulas: s = seq_len, b = batch, d = d_model (Korthikanti's h), "
          "h = n_heads (Korthikanti's a), d_h = d_head, L = n_layers, E = n_experts, k = top_k.", "",
          "Relative error = (formula − exact)/exact, 4 significant digits. Regenerate with "
          "`python analyses/memory_formulas.py` (`--check` compares).", ""]
    summary = [["Korthikanti, no recompute (per layer)", "activations, eager"],
               ["Korthikanti, selective (per layer)", "activations, selective"],
               ["Korthikanti, selective vs a fused kernel", "activations, flash"],
               ["Korthikanti, full (per layer)", "activations, full"],
               ["16 bytes/parameter (bf16 Adam)", "weights + gradients + optimizer"],
               ["usual KV cache 2·L·d·s·b·bytes", "kv_cache"],
               ["torchinfo params size (fp32)", "weights"],
               ["torchinfo forward/backward size (fp32)", "activations, eager"]]
    keys = ["korthikanti_none", "korthikanti_selective", "korthikanti_selective_vs_flash",
            "korthikanti_full", "16_bytes_bf16", "kv_usual", "torchinfo_params",
            "torchinfo_activations"]
    every = [*k, *adam, *kv, *ti]
    for row, key in zip(summary, keys):
        row += [percent(pick(every, key, p).error) for p in presets]
    md += ["## Summary", "", folder.add_table("tables/summary", Table(
        "Relative error of each formula at each preset", ["formula", "blockalg figure", *presets],
        summary, align="ll" + "r" * len(presets))), "",
        "## Reading", "", *reading(k, adam, kv, ti, values, presets), "",
        f"![activations per variant]({folder.add_figure('figures/variants', variants_figure(values, presets[0]))})",
        "", variants_md, ""]
    sections = [
        ("korthikanti", "Korthikanti et al. 2022, activations per layer",
         "Korthikanti et al. 2022, 'Reducing Activation Recomputation in Large Transformer "
         "Models', Sections 4.1-4.3: per layer, 16-bit, s·b·h·(34 + 5·a·s/h) bytes without "
         "recomputation, 34·s·b·h with selective recomputation, 2·s·b·h with full. Against "
         "blockalg's per-layer bytes (the coefficient of L) at bf16.",
         [("none", "korthikanti_none"), ("selective", "korthikanti_selective"),
          ("selective against a fused kernel (flash, no recomputation)",
           "korthikanti_selective_vs_flash"), ("full", "korthikanti_full")], k),
        ("adam", "16 bytes per parameter",
         "The rule for mixed-precision Adam (Rajbhandari et al. 2020, ZeRO, Section 3.1: 2 + 2 + "
         "12 bytes): 16·P, against weights + gradients + optimizer states.",
         [("bf16 (fp32 master and moments)", "16_bytes_bf16"), ("fp32", "16_bytes_fp32")], adam),
        ("kv", "The usual KV-cache formula",
         f"2·L·d_model·s·b·bytes (keys and values, every layer), at bf16 and s = n_ctx for the "
         f"presets, s = {KV_CONTEXT} for the Hugging Face configs.",
         [("bf16", "kv_usual")], kv),
        ("torchinfo", "torchinfo",
         f"torchinfo {ti_data['torchinfo']} (torch {ti_data['torch']}), `summary(model, "
         "input_data=[ids], depth=10)` on the meta device, fp32, batch 1, s = n_ctx: 'Params size' "
         "against blockalg's weights, 'Forward/backward pass size' against blockalg's "
         "activations (fp32, eager).",
         [("Params size", "torchinfo_params"), ("Forward/backward pass size", "torchinfo_activations")], ti),
    ]
    for stem, title, source, parts, rows in sections:
        md += [f"## {title}", "", source, ""]
        for label, key in parts:
            md += [folder.add_table(f"tables/{key}", rows_table(f"{title}: {label}", pick(rows, key))), ""]
    md += ["Per layer, exact − Korthikanti (d_head = d/h applied): no recomputation "
           f"{latex_math(dropped('none'))}; selective {latex_math(dropped('selective'))}; "
           f"flash against selective {latex_math(dropped('none', 'flash', 'selective'))}; full "
           f"{latex_math(dropped('full'))}.", ""]
    folder.add_json("data.json", {
        "variant": VARIANT, "presets": list(presets),
        "formulas": {key: str(f) for key, f in KORTHIKANTI.items()},
        "rows": [{"formula": r.formula, "at": r.where, "exact": r.exact, "approx": str(r.approx),
                  "relative_error_percent": float(f"{float(100 * r.error):.4g}")} for r in every],
        "variants": {name: dict(zip(("eager", "flash", "selective", "full"), v))
                     for name, v in values.items()}})
    folder.add_text("README.md", "\n".join(md))
    return folder


if __name__ == "__main__":
    sys.exit(study_main(build, "memory_formulas"))
