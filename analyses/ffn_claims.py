"""Checks what a chat answer explaining GPT's FFN claims against blockalg's exact counts and
against measurements on the torch model built from the graphs.

    python analyses/ffn_claims.py            # writes reports/ffn_claims/
    python analyses/ffn_claims.py --check    # exit 1 if the committed report drifted
    python analyses/ffn_claims.py --quick --out /tmp/q

The explanation is a Chinese-language chat answer to "what is the FFN layer of a GPT model for,
and how is it connected to self-attention?", of the kind many tutorials give. Its claims, in
short (:data:`CLAIMS` holds them with the original wording, which the report quotes):

1. the FFN holds "the vast majority" of the parameters, since d_ff = 4·d_model;
2. the FFN processes each position independently, while attention mixes positions;
3. the FFN's activation is the block's essential nonlinearity: without it stacked blocks learn
   only linear combinations of the input, and attention (dot products, weighted sums and a
   softmax) is only mildly nonlinear;
4. the block is wired z = Attn(LN(x)); a = LN(x + z); out = LN(a + FFN(a)), said to be the
   original Transformer's design, kept by GPT;
5. the residual connections let the gradient flow straight back to shallow layers.

Counts are exact (sympy, Fractions); measurements run in float64 on CPU on the `tiny` model.
"""

from __future__ import annotations

import copy
import sys
from contextlib import contextmanager
from fractions import Fraction

import sympy as sp
import torch

from blockalg import analyze, build_model
from blockalg.analysis.params import param_counts
from blockalg.graphs.expr import evaluate
from blockalg.graphs.presets import PRESETS, resolve_dims
from blockalg.graphs.symbols import (
    DIMENSIONS,
    d_ff,
    d_model,
    default_relations,
    n_layers,
)
from blockalg.graphs.variants import get
from blockalg.output.plots import draw_curves, plain_ticks, pyplot
from blockalg.output.render import Table, format_int, graph_to_mermaid
from blockalg.output.report import ReportFolder, latex_math, study_main
from blockalg.output.tables import comparison_table

#: The explanation's checkable claims: a short paraphrase and the original wording.
CLAIMS = [
    ("The FFN holds the vast majority of the parameters (d_ff = 4·d_model).",
     "这意味着FFN层包含了模型绝大部分的参数"),
    ("The FFN processes each position's vector independently; it does not mix positions as "
     "attention does.", "FFN层对序列中的每个位置（token）的表示向量是独立进行操作的。它不会像注意力那样混合不同位置的信息"),
    ("Attention is built from linear operations (dot products, weighted sums) and a softmax, so "
     "its nonlinearity is limited; without the FFN's nonlinearity stacked layers learn only linear "
     "combinations of the input.", "本质上是由线性操作（点积、加权求和）和Softmax构成的，非线性程度相对有限"
     "……没有这种非线性……模型只能学习到输入数据的线性组合"),
    ("The block is z = SelfAttention(LayerNorm(x)); x_norm1 = LayerNorm(x + z); "
     "y = LayerNorm(x_norm1 + FFN(x_norm1)); the original Transformer put a LayerNorm before "
     "attention and GPT kept that design.", "原始Transformer在Attention前做LayerNorm，GPT也沿用此设计"),
    ("Residual connections let the gradient flow straight back to the shallow layers.",
     "梯度畅通：残差连接让梯度直接回传至浅层"),
]
VARIANTS = ("pre-ln", "post-ln", "hybrid-ln")
#: The rows of the wiring comparison: where the three wirings differ.
WIRING_KEYS = ("params.total", "params.norm", "paths.count", "paths.shortest.norms",
               "paths.shortest.sublayers", "paths.longest.norms", "paths.mean_norms")
SEED = 0
SEQ = 6  # positions in the Jacobian measurement: small enough for a dense Jacobian
ALPHA, BETA = 0.6, -1.7  # superposition test; α + β ≠ 1 so an affine offset would show
ROUNDING = 1e-12  # float64 residuals below this are reported as rounding, not as digits


def digits(x: float) -> str:
    """4 significant digits: reproducible across CPUs in the drift check."""
    return f"{x:.4g}"


def measured(x: float) -> str:
    """A measured size: exact zeros stay exact; float64 rounding noise, whose last digits depend on
    the BLAS and thread count, is written as a bound so the committed report does not drift."""
    return "0.0 (exact)" if x == 0 else f"< {ROUNDING:g} (rounding)" if x < ROUNDING else digits(x)


def percent(share: Fraction) -> str:
    return f"{float(100 * share):.4g}%"


def plain(expr) -> str:
    """An expression in d_model as plain text with d for d_model: ``(8*d + 5)/(12*d + 13)``."""
    return sp.sstr(sp.sympify(expr).subs(d_model, sp.Symbol("d")))


# ---------------------------------------------------------------------------------------------
# 1. The FFN's share of the parameters.


def block_share(graph) -> dict[str, sp.Expr]:
    """The FFN's and attention's parameters in one block, the block's, and the FFN's share.

    ``general`` is the share in every dimension; the others apply d_ff = 4d, d_head = d/h,
    n_kv_heads = h (true at every preset). ``ratio_limit`` is the share for d → ∞ with d_ff = r·d:
    it shows where 2/3 comes from (r = 4).
    """
    counts = param_counts(graph)
    ffn, attention, block = counts["ffn"] / n_layers, counts["attention"] / n_layers, counts["per_block"]
    relations = default_relations()
    share = sp.cancel((ffn / block).subs(relations))
    r = sp.Symbol("r", positive=True)
    ratio = (ffn / block).subs({**relations, d_ff: r * d_model})
    return {"ffn": sp.expand(ffn.subs(relations)), "attention": sp.expand(attention.subs(relations)),
            "block": sp.expand(block.subs(relations)), "share": share,
            "limit": sp.limit(share, d_model, sp.oo),
            "ratio_limit": sp.factor(sp.limit(ratio, d_model, sp.oo)), "general": sp.cancel(ffn / block)}


def block_share_table(shares: dict[str, dict]) -> Table:
    rows = [[name, latex_math(s["ffn"]), latex_math(s["block"]), latex_math(s["share"]),
             str(s["limit"]), percent(Fraction(str(s["share"].subs(d_model, 768))))]
            for name, s in shares.items()]
    return Table("FFN share of one block's parameters (d_ff = 4d, biases, LayerNorm gain + bias)",
                 ["variant", "FFN", "block", "FFN / block", "d → ∞", "at d = 768"], rows)


def linear_in_layers(expr, dims) -> tuple[int, int]:
    """``expr`` at ``dims`` except n_layers, as (slope, intercept) in L: every count is linear in L."""
    line = sp.expand(expr.subs({DIMENSIONS[k]: v for k, v in dims.items() if k != "n_layers"}))
    return int(line.coeff(n_layers, 1)), int(line.coeff(n_layers, 0))


def model_shares(graph, presets) -> list[dict]:
    """Per preset: exact counts, the FFN's share of the model and of the blocks' parameters, and the
    fewest layers at that width and vocabulary for which the FFN holds more than half the model."""
    counts = param_counts(graph)
    rows = []
    for preset in presets:
        dims = resolve_dims(preset)
        ffn, total, emb = (evaluate(counts[k], dims) for k in ("ffn", "total", "embedding"))
        (a, _), (b, c) = linear_in_layers(counts["ffn"], dims), linear_in_layers(counts["total"], dims)
        # ffn/total > 1/2  ⇔  a·L > (b·L + c)/2  ⇔  L·(2a − b) > c
        majority_from = c // (2 * a - b) + 1 if 2 * a > b else None
        rows.append({"preset": preset, "n_layers": dims["n_layers"], "d_model": dims["d_model"],
                     "vocab": dims["vocab"], "total": total, "ffn": ffn, "embedding": emb, "ffn_share": Fraction(ffn, total),
                     "ffn_share_without_embedding": Fraction(ffn, total - emb),
                     "embedding_share": Fraction(emb, total), "majority_from_layers": majority_from,
                     "line": ((a, 0), (b, c))})
    return rows


def model_share_table(rows) -> Table:
    table_rows = [[r["preset"], str(r["n_layers"]), format_int(r["total"]), format_int(r["ffn"]),
                   format_int(r["embedding"]), percent(r["ffn_share"]), percent(r["embedding_share"]),
                   percent(r["ffn_share_without_embedding"]), "yes" if r["ffn_share"] > Fraction(1, 2) else "no",
                   str(r["majority_from_layers"])] for r in rows]
    return Table("pre-ln: the FFN's share of the whole model (tied embeddings, learned positions)",
                 ["preset", "L", "params.total", "params.ffn", "params.embedding", "FFN share",
                  "embedding share", "FFN share w/o embedding", "FFN > 50%", "FFN > 50% from L ="],
                 table_rows, align="lr" + "r" * 8)


def share_figure(rows, limit):
    """FFN share of the model against the number of layers, at each preset's width and vocabulary."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
    layers = list(range(1, 129))
    curves = {}
    for r in rows:
        (a, _), (b, c) = r["line"]
        curves[r["preset"]] = (layers, [100 * Fraction(a * L, b * L + c) for L in layers])
    styles = draw_curves(ax, {k: (xs, [float(y) for y in ys]) for k, (xs, ys) in curves.items()},
                         markevery=[2**k - 1 for k in range(8)])  # markers at L = 1, 2, 4, ...
    for r in rows:  # each preset's own L: a large black-edged dot on its curve
        ax.plot([r["n_layers"]], [100 * float(r["ffn_share"])], "o", ms=9, color=styles[r["preset"]]["color"],
                markeredgecolor="black", zorder=5)
    ax.axhline(50, color="grey", linestyle=":", label="50% (most)")
    ax.axhline(100 * float(limit), color="black", linestyle="--", label="2/3 (block, d → ∞)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("number of layers L (large dot: the preset's own L)")
    ax.xaxis.set_major_formatter(plain_ticks())
    ax.set_ylabel("FFN share of all parameters (%)")
    ax.set_title("pre-ln: FFN share of the model, at each preset's width and vocabulary")
    ax.legend(fontsize=7, ncol=2)
    return fig


# ---------------------------------------------------------------------------------------------
# 2. Position-wise: the Jacobian between positions.


def tiny_model():
    """The tiny pre-ln model in float64, GPT-2 init, and a fixed random input (1, SEQ, d)."""
    dims = resolve_dims("tiny")
    model = build_model("pre-ln", dims, seed=SEED).double()
    g = torch.Generator().manual_seed(SEED)
    x, y = (torch.randn(1, SEQ, dims["d_model"], generator=g, dtype=torch.float64) for _ in range(2))
    return model, x, y, g


def position_jacobian(module, x) -> torch.Tensor:
    """max |∂out_i/∂in_j| over the feature dimensions, as an s×s matrix (row i: output position)."""
    jac = torch.autograd.functional.jacobian(module, x, vectorize=True)[0, :, :, 0, :, :]  # (i, d_out, j, d_in)
    return jac.abs().amax(dim=(1, 3))


def jacobian_summary(blocks: torch.Tensor) -> dict[str, float]:
    eye = torch.eye(blocks.shape[0], dtype=torch.bool)
    below, above = torch.tril(~eye), torch.triu(~eye)
    return {"earlier (j < i)": blocks[below].max().item(), "same (j = i)": blocks[eye].max().item(),
            "later (j > i)": blocks[above].max().item()}


def jacobian_figure(maps: dict[str, torch.Tensor]):
    plt = pyplot()
    from matplotlib.colors import LogNorm
    fig, axes = plt.subplots(1, len(maps), figsize=(3.4 * len(maps), 3.3), constrained_layout=True)
    for ax, (name, blocks) in zip(axes, maps.items()):
        image = ax.imshow(torch.where(blocks == 0, float("nan"), blocks).numpy(), cmap="viridis",
                          norm=LogNorm())
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("input position j")
        ax.set_ylabel("output position i")
        ax.grid(False)
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle("max |∂out_i/∂in_j| over the features (log colour scale; blank = exactly 0)")
    return fig


# ---------------------------------------------------------------------------------------------
# 3. The nonlinearity: superposition residuals and the collapse of linear FFNs.


def superposition_residual(f, x, y) -> float:
    """‖f(αx + βy) − αf(x) − βf(y) − (1 − α − β)f(0)‖ / ‖f(αx + βy)‖: exactly 0 (up to rounding)
    for any affine map f(x) = Ax + c, which a bias-carrying FFN without activation is."""
    with torch.no_grad():
        out = f(ALPHA * x + BETA * y)
        r = out - ALPHA * f(x) - BETA * f(y) - (1 - ALPHA - BETA) * f(torch.zeros_like(x))
        return (r.norm() / out.norm()).item()


def linearised(ffn, generator):
    """A copy of ``ffn`` with the activation removed and non-zero biases (GPT-2 init sets them to 0,
    which would hide the affine offset; trained biases are not 0)."""
    lin = copy.deepcopy(ffn)
    lin.act = torch.nn.Identity()
    with torch.no_grad():
        for layer in (lin.fc, lin.proj):
            layer.bias.copy_(0.02 * torch.randn(layer.bias.shape, generator=generator, dtype=torch.float64))
    return lin


def affine_map(ffn) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, c) with ffn(x) = x·Aᵀ + c for an FFN without activation: A = W₂W₁, c = W₂b₁ + b₂."""
    w1, b1, w2, b2 = ffn.fc.weight, ffn.fc.bias, ffn.proj.weight, ffn.proj.bias
    return w2 @ w1, w2 @ b1 + b2


def nonlinearity(model, x, y, generator) -> dict:
    """Superposition residuals of each part of the tiny model, and the stacked linear FFNs against
    the one d×d affine map they equal."""
    block = model.blocks[0]
    lin1, lin2 = linearised(block.ffn, generator), linearised(model.blocks[1].ffn, generator)
    (a1, c1), (a2, c2) = affine_map(lin1), affine_map(lin2)
    a, c = a2 @ a1, a2 @ c1 + c2  # f₂(f₁(x)) = x·(A₂A₁)ᵀ + (A₂c₁ + c₂)
    with torch.no_grad():
        stacked = lin2(lin1(x))
        collapse = ((stacked - (x @ a.T + c)).norm() / stacked.norm()).item()
    linear_block = copy.deepcopy(block)
    linear_block.ffn = lin1
    d = lin1.fc.in_features
    return {
        "residuals": {
            "FFN, GELU (as built)": superposition_residual(block.ffn, x, y),
            "FFN, activation removed": superposition_residual(lin1, x, y),
            "two FFNs stacked, activation removed": superposition_residual(lambda t: lin2(lin1(t)), x, y),
            "attention sublayer": superposition_residual(block.attn, x, y),
            "LayerNorm": superposition_residual(block.ln_1, x, y),
            "pre-ln block, FFN activation removed": superposition_residual(linear_block, x, y)},
        "stacked_vs_one_map": collapse,
        "stacked_params": 2 * sum(p.numel() for p in block.ffn.parameters()),
        "one_map_params": d * d + d,
    }


def nonlinearity_table(result) -> Table:
    rows = [[name, measured(value)] for name, value in result["residuals"].items()]
    rows.append(["two stacked linear FFNs vs the one map x·(A₂A₁)ᵀ + c (relative difference)",
                 measured(result["stacked_vs_one_map"])])
    return Table(f"Superposition residual ‖f(αx+βy) − αf(x) − βf(y) − (1−α−β)f(0)‖ / ‖f(αx+βy)‖, "
                 f"α = {ALPHA}, β = {BETA}, tiny, float64", ["map", "relative residual"], rows)


@contextmanager
def one_thread():
    """Run torch on one thread: these tensors are tiny, and on a busy 2-core machine OpenMP's
    barriers made the batched Jacobian backward take 12 s instead of 0.1 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def measure() -> dict:
    """Every measurement of sections 2 and 3 on the tiny pre-ln model (float64, one thread)."""
    with one_thread():
        model, x, y, generator = tiny_model()
        block = model.blocks[0]
        maps = {"FFN (blocks.0.ffn)": block.ffn, "attention (blocks.0.attn)": block.attn,
                "pre-ln block (blocks.0)": block}
        jacobians = {name: position_jacobian(m, x) for name, m in maps.items()}
        perm = torch.randperm(SEQ, generator=generator)
        with torch.no_grad():
            equivariance = (block.ffn(x[:, perm]) - block.ffn(x)[:, perm]).abs().max().item()
        return {"jacobians": jacobians,
                "summaries": {name: jacobian_summary(j) for name, j in jacobians.items()},
                "equivariance": equivariance, "nonlinearity": nonlinearity(model, x, y, generator)}


# ---------------------------------------------------------------------------------------------
# 4. The wiring.


def wiring_section(folder: ReportFolder) -> tuple[list[str], list]:
    analyses = [analyze(v, preset="gpt2-small") for v in VARIANTS]
    md = ["## 4. The wiring: what the explanation draws, what the papers did", "",
          "The explanation's step list is z = Attn(LN(x)); a = LN(x + z); out = LN(a + FFN(a)), "
          "blockalg's `hybrid-ln` (its one-line \"关键公式\" has unbalanced parentheses; the step "
          "list and the drawing agree on this wiring). It says the original Transformer put a "
          "LayerNorm before attention and that GPT kept that design. The papers:", "",
          "* **Vaswani et al. 2017** (sec. 3.1): \"the output of each sub-layer is "
          "LayerNorm(x + Sublayer(x))\": post-LN (`post-ln`), no norm before attention. GPT-1 "
          "(Radford et al. 2018) kept that decoder block.",
          "* **GPT-2** (Radford et al. 2019, sec. 2.3): \"Layer normalization was moved to the input "
          "of each sub-block ... and an additional layer normalization was added after the final "
          "self-attention block\": pre-LN (`pre-ln`), no norm after the residual adds. **GPT-3** "
          "(Brown et al. 2020, sec. 2.1) uses GPT-2's model \"including the modified initialization, "
          "pre-normalization\".",
          "* Pre-LN came with later tensor2tensor versions (Vaswani et al. 2018), Wang et al. 2019, "
          "GPT-2, and was analysed by Xiong et al. 2020. None of these uses the drawn "
          "wiring, which puts a norm both before attention and after every add.", "",
          folder.add_table("tables/wiring", comparison_table(analyses, list(WIRING_KEYS))), ""]
    for a in analyses:
        md += [f"**{a.name}**: {'; '.join(a.graph.graph['equations'])}", "",
               "```mermaid", graph_to_mermaid(a.graph), "```", ""]
    return md, analyses


# ---------------------------------------------------------------------------------------------
# The report.


def build(quick: bool = False) -> ReportFolder:
    """The FFN-claims report (quick: three presets, no figures)."""
    presets = ("tiny", "gpt2-small", "gpt3-175b") if quick else tuple(PRESETS)
    folder = ReportFolder()
    shares = {v: block_share(get(v)) for v in VARIANTS}
    pre = shares["pre-ln"]
    rows = model_shares(get("pre-ln"), presets)
    md = ["# What the FFN does: checking an explanation's claims", "",
          "Produced by `python analyses/ffn_claims.py`. The explanation is a Chinese-language chat "
          "answer to \"what is the FFN layer of a GPT model for, and how does it connect to "
          "self-attention?\", of the kind many tutorials give. Its checkable claims, paraphrased "
          "(the original wording in the notes):", "",
          *(f"{i}. {claim}[^{i}]" for i, (claim, _) in enumerate(CLAIMS, 1)), "",
          "Counts are exact, from the block graphs; measurements run on the `tiny` pre-ln model "
          f"built from the same graph (d_model 64, d_ff 256, 2 layers), GPT-2 init, seed {SEED}, "
          "float64 on CPU.", "",
          *(f"[^{i}]: \"{original}\"" for i, (_, original) in enumerate(CLAIMS, 1)), "",
          "## 1. \"The FFN holds most (绝大部分) of the parameters\"", "",
          f"Per block, FFN / block = {latex_math(pre['ffn'] / pre['block'])} = "
          f"{latex_math(pre['share'])} for pre-ln, tending to {pre['limit']} as d grows. "
          f"The 2/3 comes from d_ff = 4d: with d_ff = r·d the limit is {latex_math(pre['ratio_limit'])}. "
          f"Attention is {latex_math(pre['attention'])} per block, so the FFN is about twice "
          f"attention. Without the relations: {latex_math(pre['general'])}.", "",
          folder.add_table("tables/block_share", block_share_table(shares)), "",
          "The whole model adds the token and position tables (tied unembedding: no parameters of "
          "its own) and the final norm, which are not in any block:", "",
          folder.add_table("tables/model_share", model_share_table(rows)), ""]
    if not quick:
        md += [f"![FFN share]({folder.add_figure('figures/ffn_share', share_figure(rows, pre['limit']))})", ""]

    measurements = measure()
    jacobians, summaries, equivariance = (measurements[k] for k in ("jacobians", "summaries", "equivariance"))
    md += ["## 2. \"The FFN processes each position independently\"", "",
           f"Jacobian of each module's output at position i with respect to its input at position j "
           f"(torch.autograd.functional.jacobian, {SEQ} positions), largest entry over the 64×64 "
           "feature block:", "",
           folder.add_table("tables/jacobian", Table(
               "max |∂out_i/∂in_j| by position pair (tiny pre-ln, float64)",
               ["module", *next(iter(summaries.values()))],
               [[name, *(measured(v) for v in s.values())] for name, s in summaries.items()])), "",
           f"Permuting the positions of the input permutes the FFN's output: max |FFN(x[π]) − "
           f"FFN(x)[π]| = {measured(equivariance)}. The FFN has no parameter that depends on the "
           "position: the same function is applied at every position.", ""]
    if not quick:
        md += [f"![Jacobians]({folder.add_figure('figures/jacobian', jacobian_figure(jacobians))})", ""]

    result = measurements["nonlinearity"]
    md += ["## 3. \"Without the nonlinearity the model only learns linear combinations\"", "",
           "Each map is tested for superposition with the affine correction (biases are set to "
           "seeded N(0, 0.02²) values in the linearised FFNs, since GPT-2 init zeroes them). For "
           "an affine map the residual is 0 up to float64 rounding.", "",
           folder.add_table("tables/nonlinearity", nonlinearity_table(result)), "",
           f"Two stacked FFNs without activation ({format_int(result['stacked_params'])} parameters) "
           f"compute one affine map x ↦ x·(A₂A₁)ᵀ + c (A = W_proj·W_fc of each) with "
           f"{format_int(result['one_map_params'])} numbers (d² + d): the d_ff = 4d width buys "
           "nothing without the activation.", ""]

    wiring, analyses = wiring_section(folder)
    md += wiring
    by_name = {a.name: a for a in analyses}
    small, gpt3 = ({r["preset"]: r for r in rows}[p] for p in ("gpt2-small", "gpt3-175b"))
    claims = claims_table(pre, small, gpt3, summaries, result, by_name)
    md += ["## 5. Every checkable claim", "", folder.add_table("tables/claims", claims), ""]
    md += reading(pre, rows, small, gpt3, summaries, result, by_name)

    folder.add_json("data.json", {
        "block_share": {v: {k: str(e) for k, e in s.items()} for v, s in shares.items()},
        "model_share": [{k: (str(v) if isinstance(v, Fraction) else v) for k, v in r.items() if k != "line"}
                        | {"ffn_share_percent": percent(r["ffn_share"])} for r in rows],
        "jacobian": {name: {k: measured(v) for k, v in s.items()} for name, s in summaries.items()},
        "ffn_permutation_equivariance": measured(equivariance),
        "superposition": {"alpha": ALPHA, "beta": BETA,
                          "relative_residuals": {k: measured(v) for k, v in result["residuals"].items()},
                          "stacked_vs_one_map": measured(result["stacked_vs_one_map"]),
                          "stacked_params": result["stacked_params"],
                          "one_map_params": result["one_map_params"]},
        "wiring_gpt2_small": {a.name: {k: str(a.values[k]) if k == "paths.mean_norms" else a.values[k]
                                       for k in WIRING_KEYS} for a in analyses}})
    folder.add_text("README.md", "\n".join(md))
    return folder


def claims_table(pre, small, gpt3, jac, result, by_name) -> Table:
    """One row per claim of the explanation that a number can check."""
    ffn_name, attn_name = list(jac)[:2]
    res = result["residuals"]
    pre_ln, hybrid = by_name["pre-ln"].values, by_name["hybrid-ln"].values
    ratios = sorted({Fraction(p["d_ff"], p["d_model"]) for p in PRESETS.values()})
    rows = [
        ["FFN = two linear layers + activation (ReLU or GELU)",
         "blockalg's FFN: fc d→d_ff, GELU (tanh form, as GPT-2), proj d_ff→d", "holds"],
        ["d_ff is usually 4·d_model", f"d_ff/d_model at all {len(PRESETS)} presets: "
         f"{', '.join(str(r) for r in ratios)}", "holds"],
        ["GPT-3 has 96 layers", f"gpt3-175b: L = {gpt3['n_layers']}, "
         f"{format_int(gpt3['total'])} parameters", "holds"],
        ["the FFN holds most ('the vast majority') of the parameters",
         f"per block {plain(pre['share'])} → {pre['limit']}; whole model: {percent(small['ffn_share'])} at "
         f"gpt2-small, {percent(gpt3['ffn_share'])} at gpt3-175b", "partly"],
        ["the FFN does not mix positions", f"{ffn_name}: j ≠ i entries "
         f"{measured(max(jac[ffn_name]['earlier (j < i)'], jac[ffn_name]['later (j > i)']))}", "holds"],
        ["attention mixes positions", f"{attn_name}: j < i up to {measured(jac[attn_name]['earlier (j < i)'])}, "
         f"j > i {measured(jac[attn_name]['later (j > i)'])} (causal)", "holds (earlier positions only)"],
        ["without the activation, layers compose to a linear map",
         f"linear FFN {measured(res['FFN, activation removed'])}; two stacked "
         f"{measured(res['two FFNs stacked, activation removed'])}; the block with LN and attention "
         f"{measured(res['pre-ln block, FFN activation removed'])}", "partly (the FFN stack only)"],
        ["attention's nonlinearity is limited", f"at init: attention {measured(res['attention sublayer'])} "
         f"vs FFN {measured(res['FFN, GELU (as built)'])}", "at init only"],
        ["the original Transformer normalised before attention; GPT kept it",
         "Vaswani 2017: LayerNorm(x + Sublayer(x)), no norm before attention; GPT-2/3: a norm "
         "before each sublayer, none after the adds, a final norm", "does not hold"],
        ["residual connections let gradients reach shallow layers directly",
         f"norms on the shortest path at gpt2-small: pre-ln {pre_ln['paths.shortest.norms']}, "
         f"drawn wiring {hybrid['paths.shortest.norms']}", "not in the drawn wiring"],
    ]
    return Table("The explanation's checkable claims", ["claim", "measured / exact", "verdict"], rows,
                 align="lll")


def reading(pre, rows, small, gpt3, jac, result, by_name) -> list[str]:
    res = result["residuals"]
    majority = [r["preset"] for r in rows if r["ffn_share"] > Fraction(1, 2)]
    minority = [r["preset"] for r in rows if r["ffn_share"] <= Fraction(1, 2)]
    pre_ln, post_ln, hybrid = (by_name[v].values for v in VARIANTS)
    return [
        "## Reading", "",
        f"* **Parameters: true of the blocks, not of every model, and never \"the vast majority\".** "
        f"In a block the FFN holds {plain(pre['share'])} of the parameters, "
        f"{percent(Fraction(str(pre['share'].subs(d_model, 768))))} at d = 768, at most {pre['limit']} "
        f"(d_ff = 4d). The whole model adds the embedding table: at gpt2-small the FFN holds "
        f"{percent(small['ffn_share'])} ({format_int(small['ffn'])} of {format_int(small['total'])}) "
        f"and the embeddings {percent(small['embedding_share'])}, so the FFN is the largest part but not "
        f"most; it needs L ≥ {small['majority_from_layers']} layers at that width and vocabulary. More "
        f"than half here: {', '.join(majority) or 'none'}; not: {', '.join(minority) or 'none'}. At "
        f"gpt3-175b: {percent(gpt3['ffn_share'])}. \"绝大部分\" (the vast majority) overstates even "
        f"the block's 2/3.",
        f"* **Position-wise: holds exactly.** The FFN's Jacobian between different positions is "
        f"exactly 0.0; attention's is non-zero for earlier positions (up to "
        f"{measured(jac[list(jac)[1]]['earlier (j < i)'])}) and exactly 0.0 for later ones (the causal "
        f"mask). So the FFN works on each position alone, with the same weights at every position; "
        f"\"learns position-specific features\" can only mean features of the token at that position.",
        f"* **Nonlinearity: true of the FFN, overstated for the model.** Without its activation the "
        f"FFN is affine (residual {measured(res['FFN, activation removed'])}), two stacked ones are one "
        f"d×d affine map, so the 4d hidden width is wasted. With GELU the residual is "
        f"{measured(res['FFN, GELU (as built)'])}. But the block is not linear without the activation: "
        f"LayerNorm ({measured(res['LayerNorm'])}) and softmax attention "
        f"({measured(res['attention sublayer'])}) are nonlinear, and the whole pre-ln block with a "
        f"linear FFN has residual {measured(res['pre-ln block, FFN activation removed'])} (small "
        f"relative to the skip path, not 0). \"Only linear combinations\" is wrong for the model; the "
        f"FFN's activation is its one elementwise nonlinearity. Attention is not \"linear operations "
        f"and a softmax\" either: q·kᵀ is quadratic in the input. It is close to linear at GPT-2 init "
        f"({measured(res['attention sublayer'])} against the FFN's "
        f"{measured(res['FFN, GELU (as built)'])}), where the scores are small and the softmax near "
        f"uniform; trained attention was not measured, so \"limited nonlinearity\" is supported at "
        f"initialisation only.",
        f"* **Wiring: does not hold.** The drawn block (`hybrid-ln`) is neither the original "
        f"Transformer (post-LN) nor GPT-2/3 (pre-LN). It has three norms per block "
        f"({format_int(hybrid['params.norm'])} norm parameters at gpt2-small against "
        f"{format_int(pre_ln['params.norm'])} for pre-ln and {format_int(post_ln['params.norm'])} for "
        f"post-ln) and, like post-LN, puts at least {hybrid['paths.shortest.norms']} norms on every "
        f"gradient path, where pre-ln has a path through {pre_ln['paths.shortest.norms']}. The "
        f"explanation's \"梯度畅通\" (residuals let the gradient flow straight back) describes pre-LN, "
        f"not the wiring it draws.",
        "* **Not checked:** that the FFN \"stores knowledge\" or handles \"content\" while attention "
        "handles \"relations\" (an interpretation, cf. Geva et al. 2021, not a count).",
    ]


if __name__ == "__main__":
    sys.exit(study_main(build, "ffn_claims"))
