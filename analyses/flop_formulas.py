"""Published FLOP and parameter formulas (Kaplan, PaLM, Megatron-LM, Chinchilla) against blockalg's
exact counts for pre-LN, per preset and sequence length. ``python analyses/flop_formulas.py``
writes reports/flop_formulas/; ``--check`` compares it with a fresh build; ``--quick --out DIR``.

Each approximation is a sympy expression in blockalg's dimension symbols, so the same object gives
the LaTeX shown in the report, its value at every preset, and the symbolic difference to blockalg's
exact count: the terms the approximation drops (or adds) are derived, not asserted.

Symbols map to the papers' as follows: d = d_model (Kaplan's d_model, Narayanan's h), L = n_layers
(Kaplan's n_layer, Narayanan's l), h = n_heads (PaLM's H), d_h = d_head (PaLM's Q, Chinchilla's
kv_size), s = seq_len (Kaplan's n_ctx, PaLM's T), V = vocab, b = batch (Narayanan's B).
"""

import sys
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import sympy as sp

from blockalg import analyze
from blockalg.graphs.expr import evaluate
from blockalg.graphs.presets import PRESETS, PUBLISHED_PRESETS, resolve_dims
from blockalg.graphs.variants import catalog, get
from blockalg.model.elementwise import compare as elementwise_compare
from blockalg.model.elementwise import count_elementwise
from blockalg.graphs.symbols import (
    batch,
    d_ff,
    d_head,
    d_model,
    n_ctx,
    n_heads,
    n_layers,
    relations_holding_at,
    seq_len,
    vocab,
)
from blockalg.output.render import Table, format_value
from blockalg.output.report import ReportFolder, latex_math, study_main

VARIANT = "pre-ln"
SEQ_LENS = (512, 1024, 2048, 8192, 32768)
QUICK_PRESETS, QUICK_SEQ_LENS = ("gpt2-small", "gpt3-175b"), (1024, 2048)
SIZE_FIGURE_SEQ_LEN = 2048  # the sequence length of the error-vs-model-size figure (in both grids)

N = sp.Symbol("N", positive=True)  # a parameter count inside a published formula
d_attn = n_heads * d_head  # Kaplan's d_attn, PaLM's H·Q, Chinchilla's kv_size·num_heads

#: Kaplan et al. 2020, Table 1: non-embedding parameters (no biases, no norms).
KAPLAN_N = 2 * d_model * n_layers * (2 * d_attn + d_ff)

#: Hoffmann et al. 2022 (Chinchilla), Appendix F, forward FLOPs of one sequence, by component.
CHINCHILLA_PARTS = {
    "embeddings": 2 * seq_len * vocab * d_model,
    "attention: key, query, value projections (per layer)": 2 * 3 * seq_len * d_model * d_attn,
    "attention: key @ query logits (per layer)": 2 * seq_len * seq_len * d_attn,
    "attention: softmax (per layer)": 3 * n_heads * seq_len * seq_len,
    "attention: softmax @ value reductions (per layer)": 2 * seq_len * seq_len * d_attn,
    "attention: final linear (per layer)": 2 * seq_len * d_attn * d_model,
    "dense block (per layer)": 2 * seq_len * (d_model * d_ff + d_model * d_ff),
    "final logits": 2 * seq_len * d_model * vocab,
}


def chinchilla_forward() -> sp.Expr:
    """Embeddings + n_layers·(attention + dense block) + logits, as Appendix F sums them."""
    per_layer = sum(v for k, v in CHINCHILLA_PARTS.items() if "per layer" in k)
    return (CHINCHILLA_PARTS["embeddings"] + n_layers * per_layer
            + CHINCHILLA_PARTS["final logits"])


def non_embedding(e: dict) -> sp.Expr:
    """blockalg's exact non-embedding parameters (blocks + final norm: biases and norms included)."""
    return e["params.total"] - e["params.embedding"]


def total_minus_positions(e: dict) -> sp.Expr:
    """All parameters but the learned position table (n_ctx·d): nanoGPT's ``get_num_params()``,
    the N of its PaLM-based ``estimate_mfu``. The tied token table stays in because it is the
    unembedding's weight, so 6N covers the unembedding matmul."""
    return e["params.total"] - n_ctx * d_model


@dataclass(frozen=True)
class Formula:
    """A published approximation and the blockalg quantity it estimates.

    ``expr`` is written as published (per token when ``per_token``), with ``N`` standing for
    ``n_params(expressions)`` when given; ``exact`` sums blockalg quantities (per sequence of s
    tokens at batch 1; times b when ``per_batch``, Narayanan's per-iteration count).
    """

    key: str
    label: str
    source: str
    expr: sp.Expr
    exact: str
    n_params: Callable[[dict], sp.Expr] | None = None
    n_note: str = ""
    per_token: bool = False
    per_batch: bool = False

    def approx(self, e: dict) -> sp.Expr:
        """Per sequence (or per iteration) in dimension symbols, N substituted."""
        expr = self.expr.subs(N, self.n_params(e)) if self.n_params else self.expr
        return expr * seq_len if self.per_token else expr

    def exact_expr(self, e: dict) -> sp.Expr:
        """``exact`` (``"key + key"`` or ``"key − key"``) evaluated on blockalg's expressions."""
        tokens = self.exact.split()
        total = e[tokens[0]]
        for op, key in zip(tokens[1::2], tokens[2::2]):
            total = total + e[key] if op == "+" else total - e[key]
        return total * (batch if self.per_batch else 1)

    @property
    def depends_on_seq_len(self) -> bool:
        return self.per_token or self.expr.has(seq_len)


#: Kaplan et al. 2020, Table 1 (Section 2.1): forward FLOPs per token, attention as 'Attention: Mask'.
KAPLAN_C_FORWARD = 2 * N + 2 * n_layers * seq_len * d_attn
#: Chowdhery et al. 2022 (PaLM), Appendix B: training FLOPs per token (L, H, Q, T = L, h, d_h, s).
PALM = 6 * N + 12 * n_layers * n_heads * d_head * seq_len
TRAINING = "flops.forward_matmul + flops.backward_matmul"
WITH_KAPLAN_N = dict(n_params=lambda e: KAPLAN_N, n_note="N = Kaplan's non-embedding count (Table 1)",
                     per_token=True)


def megatron(flops_per_weight: int, logit_denominator: int) -> sp.Expr:
    """Narayanan et al. 2021, eq. (3): F = c·B·s·l·h²·(1 + s/(6h) + V/(k·l·h)) per iteration, with
    (c, k) = (72, 12) without and (96, 16) with activation recomputation (one more forward of every
    block, not of the logits)."""
    return (flops_per_weight * batch * seq_len * n_layers * d_model**2
            * (1 + seq_len / (6 * d_model) + vocab / (logit_denominator * n_layers * d_model)))


FORMULAS = (
    Formula("kaplan_params", "Kaplan N", "Kaplan et al. 2020, Table 1 (non-embedding parameters)",
            KAPLAN_N, "params.total − params.embedding"),
    Formula("kaplan_forward", "Kaplan C_forward", "Kaplan et al. 2020, Table 1 (forward FLOPs per token)",
            KAPLAN_C_FORWARD, "flops.forward_matmul", **WITH_KAPLAN_N),
    Formula("kaplan_forward_causal", "Kaplan C_forward vs causal",
            "Kaplan et al. 2020, Table 1, against the causal count (unmasked scores only)",
            KAPLAN_C_FORWARD, "flops.forward_matmul_causal", **WITH_KAPLAN_N),
    Formula("kaplan_6n", "Kaplan 6N", "Kaplan et al. 2020, Section 2.1 (training FLOPs C ≈ 6N per token)",
            6 * N, TRAINING, **WITH_KAPLAN_N),
    Formula("palm", "PaLM 6N + 12LHQT", "Chowdhery et al. 2022 (PaLM), Appendix B (training FLOPs per token)",
            PALM, TRAINING, n_params=total_minus_positions, per_token=True,
            n_note="N = all parameters but the position table (nanoGPT's estimate_mfu; "
                   "PaLM's own model ties its embeddings and has no position table)"),
    Formula("palm_nonembedding", "PaLM, N non-embedding",
            "Chowdhery et al. 2022 (PaLM), Appendix B, with Kaplan's non-embedding N",
            PALM, TRAINING, n_params=non_embedding, per_token=True,
            n_note="N = blockalg's exact non-embedding parameters (blocks + final norm)"),
    Formula("megatron_72", "Narayanan 72 (no recompute)",
            "Narayanan et al. 2021 (Megatron-LM), eq. (3) without activation recomputation",
            megatron(72, 12), TRAINING, per_batch=True),
    Formula("megatron_96", "Narayanan 96 (recompute)",
            "Narayanan et al. 2021 (Megatron-LM), eq. (3) with activation recomputation",
            megatron(96, 16), TRAINING, per_batch=True),
    Formula("chinchilla", "Chinchilla forward", "Hoffmann et al. 2022 (Chinchilla), Appendix F (forward FLOPs)",
            chinchilla_forward(), "flops.forward_matmul + flops.forward_other"),
)


def dropped_terms(formula: Formula, e: dict, dims: dict) -> sp.Expr:
    """exact − approximation as a closed form (relations holding at ``dims`` applied): what the
    approximation leaves out (positive terms) or counts in excess (negative terms)."""
    diff = (formula.exact_expr(e) - formula.approx(e)).subs(relations_holding_at(dims))
    return sp.collect(sp.expand(diff), n_layers)


def relative_error(approx, exact) -> sp.Rational:
    return sp.Rational(approx - exact, exact)


def percent(error: sp.Rational) -> str:
    """(approx − exact)/exact in percent, 4 significant digits; an exact match says so."""
    return "0 (exact)" if error == 0 else f"{float(100 * error):+#.4g}%"


def dims_at(preset: str, s: int) -> dict:
    """The preset at sequence length ``s``; the context grows with it (only the position table's
    parameter count depends on n_ctx, and no formula here uses it)."""
    return resolve_dims(preset, {"seq_len": s, "n_ctx": max(s, PRESETS[preset]["n_ctx"])})


def compare_all(presets, seq_lens) -> list[dict]:
    """One record per (formula, preset, s): exact and approximate counts and the relative error."""
    records = []
    for preset in presets:
        for s in seq_lens:
            a = analyze(VARIANT, preset=preset, dims=dims_at(preset, s))
            for f in FORMULAS:
                exact = evaluate(f.exact_expr(a.expressions), a.dims)
                approx = evaluate(f.approx(a.expressions), a.dims, f.key, integer=False)
                records.append({"formula": f.key, "preset": preset, "seq_len": s, "exact": exact,
                                "approx": approx, "error": relative_error(approx, exact),
                                "non_embedding_params": a.values["params.total"] - a.values["params.embedding"]})
    return records


def pick(records, **where) -> list[dict]:
    return [r for r in records if all(r[k] == v for k, v in where.items())]


def error_grid(formula: Formula, records, presets, seq_lens) -> Table:
    """Relative error, presets × sequence lengths (one column when s does not enter)."""
    lengths = seq_lens if formula.depends_on_seq_len else seq_lens[:1]
    headers = ["preset"] + ([f"s = {s}" for s in lengths] if formula.depends_on_seq_len
                            else ["relative error"])
    rows = [[p] + [percent(pick(records, formula=formula.key, preset=p, seq_len=s)[0]["error"])
                   for s in lengths] for p in presets]
    return Table(f"{formula.label}: (approx − exact)/exact", headers, rows)


def values_table(formula: Formula, records, seq_lens) -> Table:
    """Exact count, approximation and relative error per preset (and s, where s enters)."""
    by_s = formula.depends_on_seq_len
    rows = [[r["preset"]] + ([str(r["seq_len"])] if by_s else [])
            + [format_value(r["exact"]), format_value(r["approx"]), percent(r["error"])]
            for r in pick(records, formula=formula.key) if by_s or r["seq_len"] == seq_lens[0]]
    return Table(f"{formula.label}: blockalg's exact count and the approximation · {formula.source}",
                 ["preset"] + (["s"] if by_s else [])
                 + ["exact (blockalg)", "approximation", "relative error"], rows)


def error_vs_seq_len_figure(records, presets, seq_lens):
    """One panel per FLOP formula: relative error against s, one line per preset."""
    from blockalg.output.plots import plain_ticks, pyplot, series_style

    plt = pyplot()
    flop_formulas = [f for f in FORMULAS if f.depends_on_seq_len]
    cols = 4
    rows = -(-len(flop_formulas) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.4 * rows), constrained_layout=True,
                             squeeze=False)
    for ax, f in zip(axes.flat, flop_formulas):
        for i, p in enumerate(presets):  # growing hollow markers: lines that coincide stay visible
            ax.plot(seq_lens, [100 * float(r["error"]) for r in pick(records, formula=f.key, preset=p)],
                    label=p, **series_style(i))
        ax.axhline(0, color="grey", linewidth=0.8)
        if all(r["error"] == 0 for r in pick(records, formula=f.key)):
            ax.text(0.5, 0.75, "exact at every point", transform=ax.transAxes, ha="center")
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(plain_ticks())
        ax.set_title(f.label, fontsize=10)
        ax.set_xlabel("sequence length s (tokens)")
        ax.set_ylabel("(approx − exact)/exact (%)")
    for ax in list(axes.flat)[len(flop_formulas):]:
        ax.axis("off")
    fig.legend(*axes.flat[0].get_legend_handles_labels(), title="preset", loc="outside right upper")
    fig.suptitle(f"Published FLOP formulas against blockalg's exact counts · {VARIANT}")
    return fig


def error_vs_size_figure(records, presets, s):
    """Relative error against non-embedding parameters at one s, one line per FLOP formula."""
    from blockalg.output.plots import pyplot, series_style

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
    for i, f in enumerate(f for f in FORMULAS if f.depends_on_seq_len):
        chosen = [pick(records, formula=f.key, preset=p, seq_len=s)[0] for p in presets]
        ax.plot([r["non_embedding_params"] for r in chosen], [100 * float(r["error"]) for r in chosen],
                label=f.label, **series_style(i))
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding parameters (log scale)")
    ax.set_ylabel("(approx − exact)/exact (%)")
    ax.set_title(f"Relative error against model size · {VARIANT}, s = {s} "
                 f"({presets[0]} … {presets[-1]})", fontsize=10)
    ax.legend(fontsize=7)
    return fig


def reading(err, records, presets, seq_lens) -> list[str]:
    """The "Reading" bullets; every number comes from ``err(formula, preset, s)`` or ``records``."""
    small, large, longest = presets[0], presets[-1], seq_lens[-1]
    s_small = PRESETS[small]["n_ctx"]
    ps, pl = PRESETS[small], PRESETS[large]

    def unembedding(p):  # Narayanan's V/(12lh): the unembedding against the block weights
        return float(Fraction(p["vocab"], 12 * p["n_layers"] * p["d_model"]))

    # the formulas whose only error is the bias and norm parameters
    bias_and_norm = max(abs(r["error"]) for r in records if r["formula"] in ("kaplan_params", "palm"))
    return [
        f"* **Kaplan's N** leaves out the biases and the norm gains and biases (13d per block and "
        f"the final norm's 2d), about 1/d of the count: {err('kaplan_params', small)} at {small}, "
        f"{err('kaplan_params', large)} at {large}.",
        f"* **Kaplan's C_forward** leaves out the unembedding (Table 1 lists it as 'De-embed', "
        f"2dV per token, but not in the non-embedding total) and half of the dense attention "
        f"matmuls: its 2·L·s·d_attn per token ('Attention: Mask') is one of the two s×s products "
        f"(QKᵀ and the weighted sum of V). At {small}, s = {s_small}: {err('kaplan_forward', small)}"
        f"; at {large}: {err('kaplan_forward', large)}. The missing half of the s² term grows with"
        f" s: {err('kaplan_forward', small, longest)} at {small} and "
        f"{err('kaplan_forward', large, longest)} at {large} for s = {longest}. Against the causal"
        f" count (`flops.forward_matmul_causal`, only the s(s+1)/2 unmasked scores) the attention"
        f" term is right to within the +1 and only the unembedding is missing: "
        f"{err('kaplan_forward_causal', small)} at {small}, "
        f"{err('kaplan_forward_causal', small, longest)} at {small}, s = {longest}.",
        f"* **Kaplan's 6N** leaves out the whole attention-score term (12Ls²d per sequence, forward "
        f"and backward) and the unembedding (6sdV): {err('kaplan_6n', small)} at {small}, "
        f"{err('kaplan_6n', large)} at {large}; {err('kaplan_6n', small, longest)} and "
        f"{err('kaplan_6n', large, longest)} at s = {longest}.",
        f"* **PaLM's 6N + 12LHQT** has the dense attention term exactly (12LHQT = 3 × 4Lsd). Which "
        f"N: Appendix B calls N the number of parameters; PaLM ties its input and output embeddings "
        f"and has no position table, so its N includes the token table, the unembedding's weight "
        f"(our reading of the paper). nanoGPT's `estimate_mfu`, which cites Appendix B, uses all "
        f"parameters but the position table. With that N the formula only counts the bias and norm "
        f"parameters as if they were matmul weights, 6s(13Ld + 2d) too many: "
        f"{err('palm', small)} at {small}, {err('palm', large)} at {large}, less at longer s. "
        f"With Kaplan's non-embedding N the unembedding's 6sdV is lost: "
        f"{err('palm_nonembedding', small)} at {small}, {err('palm_nonembedding', large)} at "
        f"{large}, shrinking as s grows.",
        f"* **Narayanan's 72·Bslh²(1 + s/6h + V/12lh)** is blockalg's forward + backward matmul "
        f"count exactly when d_ff = 4d: the three terms are the weights (24sd² per layer), the "
        f"dense attention (4s²d) and the unembedding (2sdV), each × 3. The 96 version adds "
        f"activation recomputation, a second forward of every block, so it counts hardware FLOPs,"
        f" not model FLOPs: {err('megatron_96', small)} at {small}, {err('megatron_96', large)} at "
        f"{large}, tending to +1/3 as the blocks outweigh the unembedding (large L·d against V, "
        f"or long s).",
        f"* **Chinchilla's forward** has every matmul of blockalg's count; it adds the embedding "
        f"lookup as a matmul (2sdV; blockalg counts a gather as 0) and leaves out what blockalg "
        f"counts outside matmuls: layer norms, GELU, biases, residual adds and the position add "
        f"(57Lsd + 8sd), and half the per-score work of the softmax (3 FLOPs per score against "
        f"blockalg's 5, plus 1 for the scaling). The embedding term dominates at small models: "
        f"{err('chinchilla', small)} at {small}, {err('chinchilla', large)} at {large}. As s grows "
        f"the s² terms shrink its share and the uncounted 3hs² per layer pulls the other way: "
        f"{err('chinchilla', small, longest)} at {small}, s = {longest}. Its backward "
        f"(2 × forward) matches blockalg's matmul backward; training = 3 × forward.",
        "",
        f"In short: the errors that matter are the unembedding, relative to the block weights "
        f"V/(12Ld) (Narayanan's third term: {unembedding(ps):.3g} at {small}, "
        f"{unembedding(pl):.3g} at {large}), "
        f"so large for small models, and the s² attention term, relative to the weights s/(6d) "
        f"({s_small / (6 * ps['d_model']):.3g} at {small}, s = {s_small}; "
        f"{longest / (6 * ps['d_model']):.3g} at s = {longest}; "
        f"{pl['n_ctx'] / (6 * pl['d_model']):.3g} at {large}, s = {pl['n_ctx']}), so large for "
        f"long sequences and narrow models. Bias and norm terms are O(1/d): at most "
        f"{percent(bias_and_norm).lstrip('+')} in absolute value here (Kaplan's N and PaLM).",
    ]


def formula_section(folder: ReportFolder, f: Formula, records, presets, seq_lens) -> list[str]:
    """One formula: source, LaTeX, what it is compared with, the error grid, the values table."""
    md = [f"## {f.label}", "", f"Source: {f.source}.", "",
          f"Formula: {latex_math(f.expr)}" + (" per token" if f.per_token else "")
          + (f"; {f.n_note}" if f.n_note else "") + ".", "",
          f"Compared with blockalg's `{f.exact}`" + (" × b" if f.per_batch else "") + ".", ""]
    if f.key == "chinchilla":
        md += [folder.add_table("tables/chinchilla_components", Table(
            "Chinchilla Appendix F, forward FLOPs by component", ["component", "FLOPs"],
            [[k, latex_math(v)] for k, v in CHINCHILLA_PARTS.items()], align="ll")), ""]
    folder.add_table(f"tables/{f.key}_values", values_table(f, records, seq_lens))
    return md + [folder.add_table(f"tables/{f.key}", error_grid(f, records, presets, seq_lens)), "",
                 f"Exact and approximate values: [tables/{f.key}_values.md](tables/{f.key}_values.md).",
                 ""]


def json_data(records, presets, seq_lens, dropped) -> dict:
    """data.json: exact integers, approximations as exact numbers, errors to 4 significant digits."""
    return {"variant": VARIANT, "presets": list(presets), "seq_lens": list(seq_lens),
            "formulas": [{"key": f.key, "label": f.label, "source": f.source, "formula": str(f.expr),
                          "per_token": f.per_token, "exact": f.exact,
                          "exact_minus_approx": str(dropped[f.key]),
                          "rows": [{"preset": r["preset"], "seq_len": r["seq_len"], "exact": r["exact"],
                                    "approx": str(r["approx"]),
                                    "relative_error_percent": float(f"{float(100 * r['error']):.4g}")}
                                   for r in pick(records, formula=f.key)
                                   if f.depends_on_seq_len or r["seq_len"] == seq_lens[0]]}
                         for f in FORMULAS]}


#: Why the registry's convention and torch's decomposition differ, per op kind and phase.
ELEMENTWISE_WHY = {
    ("layernorm", "forward"): "7 per element (mean, centre, square, sum, normalise, gain, bias); "
                              "torch's var_mean is one op: 5 per element, + 1 per row",
    ("layernorm", "backward"): "14 per element as torch's native_layer_norm_backward computes "
                               "them; torch adds per-row scalars, and its sums over n count n − 1",
    ("rmsnorm", "forward"): "4 per element both (square, mean, normalise, gain); torch adds eps "
                            "and rsqrt per row",
    ("rmsnorm", "backward"): "10 per element both; per-row terms differ",
    ("attention", "forward"): "1 (scale) + 5 (softmax) per score; torch scales q and k instead "
                              "(2 per element of q, k), adds the causal mask (1 per score), "
                              "softmax's two reductions count 1 less per row; rotary: torch "
                              "also computes the angles, twice",
    ("attention", "backward"): "1 (scale) + 4 (softmax) per score; torch scales the q and k "
                               "gradients instead",
    ("ffn", "forward"): "GELU 8 per element (torch's tanh form: 9), SiLU 4 (torch: sigmoid and "
                        "a product, 2); gate, biases equal",
    ("ffn", "backward"): "equal per element (GELU 18, SiLU 6, gate 2, bias sums 1); a bias sum "
                         "over n tokens counts n − 1 in torch",
    ("ffn_up", "forward"): "as ffn (GELU 8 against 9)",
    ("ffn_up", "backward"): "as ffn",
    ("ffn_down", "backward"): "the bias sum: n − 1 per column in torch",
    ("scale", "backward"): "a learned weight's gradient: torch's sum counts n − 1",
    ("dyt", "backward"): "10 per element both (tanh's backward g·(1 − y²), the products for γ "
                         "and α and their sums, β's sum); torch's sums over n count n − 1",
    ("moe", "forward"): "router softmax 5 per element, renormalise, SiLU 4 (torch: 2), weight "
                        "and sum of the top-k outputs",
    ("moe", "backward"): "the meta-device path gathers each token's expert weights (static "
                         "shapes); their backward scatter-adds top_k·s·3·d·d_ff weight "
                         "gradients, work a grouped implementation does inside its matmuls",
}


def elementwise_rows(rows, counts=None) -> list[list[str]]:
    """kind, phase, registry, decomposition, ratio and why, per compared kind (totals last)."""
    table = [[r.kind, r.phase, format_value(r.registry), format_value(r.decomposition),
              _ratio(r.decomposition, r.registry),
              "exact" if r.exact else ELEMENTWISE_WHY.get((r.kind, r.phase), "convention")]
             for r in rows]
    for phase in ("forward", "backward"):
        registry = sum(r.registry for r in rows if r.phase == phase)
        found = sum(r.decomposition for r in rows if r.phase == phase)
        table.append(["all", phase, format_value(registry), format_value(found),
                      _ratio(found, registry), f"flops.{phase}_other"])
    if counts is not None:
        loss = counts.by_kind().get("loss", {})
        table += [["loss", phase, "0", format_value(loss.get(phase, 0)), "",
                   "outside blockalg's counts (the unembedding's logits are the last)"]
                  for phase in ("forward", "backward")]
    return table


def _ratio(found, registry) -> str:
    return f"{found / registry:.4f}" if registry else "n/a"


def elementwise_section(folder: ReportFolder, quick: bool) -> tuple[list[str], dict]:
    """The registry's non-matmul FLOPs per op kind beside torch's decomposition of the built model:
    pre-ln at gpt2-small, and every catalog variant at tiny."""
    preset = "tiny" if quick else "gpt2-small"
    dims = resolve_dims(preset)
    counts = count_elementwise(get(VARIANT), dims)
    rows = elementwise_compare(get(VARIANT), dims, counts)
    headers = ["op kind", "phase", "blockalg", "torch decomposition", "decomposition / blockalg",
               "why they differ"]
    variants = [v.name for v in catalog()][:3 if quick else None]
    tiny = resolve_dims("tiny")
    catalog_rows = {name: elementwise_compare(get(name), tiny) for name in variants}
    summary = {}
    for name, compared in catalog_rows.items():
        for r in compared:
            summary.setdefault((r.kind, r.phase), []).append((r.ratio, name, r.exact))
    summary_rows = [[kind, phase, "exact" if all(e for *_, e in found) else "convention",
                     _range([ratio for ratio, *_ in found]), str(len(found)),
                     ELEMENTWISE_WHY.get((kind, phase), "")]
                    for (kind, phase), found in sorted(summary.items(),
                                                       key=lambda item: (item[0][0], item[0][1] != "forward"))]
    md = ["## Non-matmul FLOPs against torch's decomposition", "",
          "blockalg's \"other\" FLOPs (norms, softmax, activations, biases, adds) and the "
          "backward's non-matmul work come from per-element costs in the op registry. Here they "
          "stand beside an independent count: the built model run on the meta device through "
          "torch's core ATen decompositions (plus torch's own decompositions of layer_norm, "
          "softmax, gelu, silu and addmm), each pointwise op counted by its output elements, each "
          "reduction by N − M, each scatter-add by its values, booked to the graph node whose "
          "module ran it (`blockalg check` does the same per variant). Where the registry claims "
          "exactness (adds, edge scales, embeddings, gradient sums at forks and tied weights) the "
          "two are equal; elsewhere the registry keeps its convention (FLOPs as the papers write "
          "the arithmetic, per-row scalars dropped) and the ratio is reported. One sequence, "
          "batch 1; the loss is outside both.", "",
          f"### {VARIANT} at {preset}", "", _headline(rows, preset), "",
          folder.add_table("tables/elementwise", Table(
              f"Non-matmul FLOPs of {VARIANT} at {preset} per op kind: blockalg's registry and "
              f"torch's decomposition", headers, elementwise_rows(rows, counts), align="llrrrl")), "",
          f"### Every catalog variant at tiny ({len(variants)} variants)", "",
          folder.add_table("tables/elementwise_summary", Table(
              "decomposition / blockalg per op kind at tiny, over the catalog (min–max)",
              ["op kind", "phase", "claim", "ratio at tiny", "variants", "why they differ"],
              summary_rows, align="lllrrl")), "",
          "Per variant: [tables/elementwise_catalog.md](tables/elementwise_catalog.md).", ""]
    folder.add_table("tables/elementwise_catalog", Table(
        "Non-matmul FLOPs per variant and op kind at tiny: blockalg and torch's decomposition",
        ["variant", *headers],
        [[name, *row] for name, compared in catalog_rows.items()
         for row in elementwise_rows(compared)], align="lllrrrl"))
    data = {"preset": preset, "variant": VARIANT,
            "kinds": [{"kind": r.kind, "phase": r.phase, "registry": r.registry,
                       "decomposition": r.decomposition, "exact": r.exact} for r in rows],
            "loss": counts.by_kind().get("loss", {}),
            "catalog_at_tiny": {name: [{"kind": r.kind, "phase": r.phase, "registry": r.registry,
                                        "decomposition": r.decomposition, "exact": r.exact}
                                       for r in compared] for name, compared in catalog_rows.items()}}
    return md, data


def _headline(rows, preset) -> str:
    """The forward totals in one sentence: what the Chinchilla comparison's "other" terms rest on."""
    registry = sum(r.registry for r in rows if r.phase == "forward")
    found = sum(r.decomposition for r in rows if r.phase == "forward")
    return (f"`flops.forward_other` = {format_value(registry)} at {preset}; torch's decomposition "
            f"performs {format_value(found)} elementwise operations ({percent(sp.Rational(found - registry, registry))} "
            f"against blockalg): the per-kind conventions nearly cancel in the total, so the "
            f"Chinchilla comparison below does not hinge on them.")


def _range(ratios) -> str:
    known = [r for r in ratios if r is not None]
    if not known:
        return "n/a"
    low, high = min(known), max(known)
    return f"{low:.4f}" if f"{low:.4f}" == f"{high:.4f}" else f"{low:.4f}–{high:.4f}"


def build(quick: bool = False) -> ReportFolder:
    """Published FLOP/parameter formulas against blockalg's exact pre-LN counts."""
    # NB: the formulas target published model shapes, not the test presets
    presets, seq_lens = (QUICK_PRESETS, QUICK_SEQ_LENS) if quick else (PUBLISHED_PRESETS, SEQ_LENS)
    records = compare_all(presets, seq_lens)
    reference = analyze(VARIANT, preset=presets[0])
    dropped = {f.key: dropped_terms(f, reference.expressions, reference.dims) for f in FORMULAS}
    folder = ReportFolder()

    def err(key, preset, s=None):
        s = s or PRESETS[preset]["n_ctx"]
        return percent(pick(records, formula=key, preset=preset, seq_len=s)[0]["error"])

    md = ["# Published FLOP formulas against blockalg's exact counts", "",
          f"Variant `{VARIANT}` (GPT-2 style: biases, LayerNorm, GELU, learned positions, tied "
          f"unembedding) at presets {', '.join(presets)} and sequence lengths "
          f"{', '.join(map(str, seq_lens))}. blockalg's counts are exact (see the README's "
          "conventions): FLOPs for one sequence of s tokens at batch 1 (b = 1), unembedding "
          "included, attention at the dense s×s cost, a bias add outside the matmul count. "
          "Per-token formulas are multiplied by s. Where s exceeds the preset's context, n_ctx is "
          "raised to s (that only enlarges the position table, which no formula here uses); those "
          "rows describe the preset's shape at a longer context, not a released model.", "",
          "Relative error = (approximation − exact)/exact, 4 significant digits; the values tables "
          "give exact integers. Regenerate with `python analyses/flop_formulas.py` (`--check` "
          "compares).", "",
          "Symbols: d = d_model (Narayanan's h), L = n_layers (Narayanan's l), h = n_heads (PaLM's "
          "H), d_h = d_head (PaLM's Q, Chinchilla's kv_size), d_attn = h·d_h, s = seq_len (Kaplan's "
          "n_ctx, PaLM's T), V = vocab, b = batch (Narayanan's B); d_ff = 4d at every preset.", ""]
    summary = [[f.label, f.exact + (" × b" if f.per_batch else "")] + [err(f.key, p) for p in presets]
               for f in FORMULAS]
    md += ["## Summary", "",
           folder.add_table("tables/summary", Table(
               "Relative error at each preset's own context length (s = n_ctx: 1024 for GPT-2, "
               "2048 for GPT-3)", ["formula", "blockalg quantity"] + list(presets), summary,
               align="ll" + "r" * len(presets))), "",
           f"![relative error vs sequence length]({folder.add_figure('figures/error_vs_seq_len', error_vs_seq_len_figure(records, presets, seq_lens))})",
           "",
           f"![relative error vs model size]({folder.add_figure('figures/error_vs_model_size', error_vs_size_figure(records, presets, SIZE_FIGURE_SEQ_LEN))})",
           ""]
    md += ["## Reading", "",
           folder.add_table("tables/dropped_terms", Table(
               "exact − approximation, per sequence (per iteration for Narayanan), d_ff = 4d and "
               "d_h = d/h applied: positive terms are missed, negative ones counted in excess",
               ["formula", "as published", "exact − approximation"],
               [[f.label, latex_math(f.expr), latex_math(dropped[f.key])] for f in FORMULAS],
               align="lll")), "",
           *reading(err, records, presets, seq_lens), ""]
    elementwise_md, elementwise_data = elementwise_section(folder, quick)
    md += elementwise_md
    for f in FORMULAS:
        md += formula_section(folder, f, records, presets, seq_lens)
    folder.add_json("data.json", {**json_data(records, presets, seq_lens, dropped),
                                  "elementwise": elementwise_data})
    folder.add_text("README.md", "\n".join(md))
    return folder


if __name__ == "__main__":
    sys.exit(study_main(build, "flop_formulas"))
