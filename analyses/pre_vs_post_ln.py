"""The headline comparison: pre-LN, post-LN and hybrid-LN at the GPT-2 and GPT-3 presets.

    python analyses/pre_vs_post_ln.py            # writes reports/pre_vs_post_ln/
    python analyses/pre_vs_post_ln.py --check    # exit 1 if the committed report drifted
    python analyses/pre_vs_post_ln.py --quick --out /tmp/q

Exact numbers and closed forms from the block graphs, path statistics, and gradient norms at
initialisation measured on the built models, with a short reading of what they mean.
"""

from __future__ import annotations

import sys

from blockalg import analyze
from blockalg.analysis.analyze import quantity_keys
from blockalg.graphs.presets import resolve_dims
from blockalg.graphs.variants import get
from blockalg.model.gradients import gradient_norms
from blockalg.output.plots import gradient_norms as gradient_figure
from blockalg.output.plots import path_distribution
from blockalg.output.render import Table, format_value
from blockalg.output.report import ReportFolder, study_main
from blockalg.output.tables import closed_form_table

VARIANTS = ("pre-ln", "post-ln", "hybrid-ln")
PRESETS = ("gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl", "gpt3-175b")
COLUMNS = ("params.total", "params.norm", "flops.forward_matmul", "flops.forward_other",
           "paths.shortest.norms", "paths.longest.norms", "paths.mean_norms")


def numbers_table(presets) -> Table:
    """One row per preset and variant: the quantities where the wirings differ, and FLOPs."""
    rows = []
    for preset in presets:
        dims = resolve_dims(preset)
        for variant in VARIANTS:
            a = analyze(variant, preset=preset, dims=dims)
            rows.append([preset, variant, *(format_value(a.values[key]) for key in COLUMNS)])
    return Table("pre-LN vs post-LN vs hybrid-LN at the GPT presets", ["preset", "variant", *COLUMNS],
                 rows, align="ll" + "r" * len(COLUMNS))


def gradient_table(results) -> Table:
    """‖∇W‖ of the FFN's W2 per layer, mean over seeds, 3 significant digits."""
    layers = len(results[0].residual[0])
    rows = [[str(l + 1), *(f"{r.mean(r.weights[r.headline])[l]:.3g}" for r in results)]
            for l in range(layers)]
    rows.append(["last/first", *(f"{r.trend(r.weights[r.headline]):.3g}" for r in results)])
    rows.append(["residual ‖∂loss/∂x‖, last/layer 2",
                 *(f"{r.mean(r.residual)[-1] / r.mean(r.residual)[1]:.3g}" for r in results)])
    return Table(f"‖∇W‖ of {results[0].headline} at init, per layer (mean over {len(results[0].seeds)} seeds)",
                 ["layer", *(r.name for r in results)], rows,
                 notes=["The residual stream's gradient is compared from layer 2 on: layer 1's input "
                        "is the raw embedding (RMS ≈ 0.03), whose small scale the first norm "
                        "divides by, so its gradient is larger by that factor, not because later "
                        "gradients vanish (see the figure's right panel)."])


def _digits(x: float) -> float:
    """4 significant digits: measured floats stay reproducible across CPUs in the drift check."""
    return float(f"{x:.4g}")


def build(quick: bool = False) -> ReportFolder:
    """The pre-LN vs post-LN report (quick: two presets, one seed, a 4-layer gradient study)."""
    presets = PRESETS[:1] + PRESETS[-1:] if quick else PRESETS
    folder = ReportFolder()
    md = ["# pre-LN vs post-LN vs hybrid-LN", "",
          "Produced by `python analyses/pre_vs_post_ln.py` from the block graphs of blockalg. "
          "Parameters are whole-model counts; FLOPs are for one sequence of n_ctx tokens at "
          "batch 1 (unembedding included, attention at the dense s×s cost).", "",
          "| variant | block | final norm |", "| --- | --- | --- |",
          "| pre-ln | y = x + Attn(LN(x)); out = y + FFN(LN(y)) | yes |",
          "| post-ln | y = LN(x + Attn(x)); out = LN(y + FFN(y)) | no |",
          "| hybrid-ln | z = Attn(LN(x)); a = LN(x + z); out = LN(a + FFN(a)) | no |", "",
          "## Exact numbers", "", folder.add_table("tables/numbers", numbers_table(presets)), ""]
    analyses = [analyze(v, preset="gpt2-small") for v in VARIANTS]
    md += ["## Closed forms", "",
           "With d_ff = 4d and d_head = d/h (true at every GPT preset); L is the number of layers.",
           "", folder.add_table("tables/closed_forms", closed_form_table(analyses, quantity_keys(), "latex")), ""]
    stats = {a.name: a.paths for a in analyses}
    md += ["## Gradient paths (L = 12)", "",
           f"![paths]({folder.add_figure('figures/paths', path_distribution(stats, 12))})", ""]
    seeds, dims = ((0,), resolve_dims("tiny-deep", {"n_layers": 4})) if quick else \
        ((0, 1, 2), resolve_dims("tiny-deep"))
    results = [gradient_norms(get(v), dims, seeds=seeds) for v in VARIANTS]
    md += ["## Gradient norms at initialisation (measured)", "",
           f"d_model {dims['d_model']}, {dims['n_layers']} layers, GPT-2 init (std 0.02, residual "
           f"projections × 1/√(2L)), batch of 8 random sequences of {dims['seq_len']} tokens, "
           f"seeds {list(seeds)}, CPU float32.", "",
           folder.add_table("tables/gradients", gradient_table(results)), "",
           f"![gradient norms]({folder.add_figure('figures/gradients', gradient_figure(results))})", ""]
    folder.add_json("data.json", {
        "presets": {p: {v: analyze(v, preset=p).to_dict() for v in VARIANTS} for p in presets},
        "gradients": {r.name: {"ffn.proj_mean": [_digits(x) for x in r.mean(r.weights[r.headline])],
                               "residual_mean": [_digits(x) for x in r.mean(r.residual)]}
                      for r in results}})
    md += READING
    folder.add_text("README.md", "\n".join(md))
    return folder


READING = [
    "## Reading", "",
    "* **Parameters and FLOPs barely differ.** The three wirings hold the same attention and FFN "
    "sublayers; they differ only in the number of LayerNorms (2 per block + a final one for "
    "pre-LN, 2 per block for post-LN, 3 per block for hybrid-LN), i.e. by 2d parameters per "
    "norm: 1,536 parameters at GPT-2 small, 0.001% of the model. Matmul FLOPs are identical; the "
    "norms add 7 FLOPs per element of the stream to the non-matmul work.",
    "* **The gradient paths differ completely.** In pre-LN the shortest path from the output back "
    "to any layer crosses one norm (the final one) and no sublayer: an identity highway. In "
    "post-LN every one of the 4^L paths crosses exactly 2L norms (24 at GPT-2 small, 192 at "
    "GPT-3), so the gradient reaching layer l is rescaled by 2(L − l + 1) norms. Hybrid-LN (the "
    "tutorial wiring) keeps post-LN's property: at least 2L norms on every path, up to 3L.",
    "* **What the init measurement shows.** At GPT-2 initialisation, pre-LN's weight gradients "
    "are far larger than post-LN's and fall toward the output layers: its final norm divides by "
    "the small standard deviation of a stream that starts at the embedding scale (0.02). Post-LN's "
    "are flat across layers at this init: Xiong et al. (2020) predict and measure a growth toward "
    "the output for post-LN, which needs sublayer outputs comparable to the stream "
    "(Xavier-scale weights without the 1/√(2L) residual scaling; `blockalg gradients post-ln "
    "--init-std 0.0884 --no-residual-scaling` shows a weak, noisy growth here). We report the "
    "shape as measured.",
    "* **Hybrid-LN behaves like post-LN** in every number above, so the explanation that draws it "
    "(see `reports/ffn_claims`) describes a post-LN-like model, not GPT-2/3's pre-LN.",
]


if __name__ == "__main__":
    sys.exit(study_main(build, "pre_vs_post_ln"))
