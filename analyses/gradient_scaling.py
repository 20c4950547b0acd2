"""Does the last layer's gradient scale with depth as Xiong et al. (2020), Theorem 1, says?

    python analyses/gradient_scaling.py                # writes reports/gradient_scaling/ (~3 min)
    python analyses/gradient_scaling.py --quick --out /tmp/g    # seconds
    python analyses/gradient_scaling.py --check        # exit 1 if the committed text drifted

Theorem 1 of Xiong et al. (2020), 'On Layer Normalization in the Transformer Architecture',
bounds the gradient of the last layer's FFN output weights W^{2,L} at initialisation by
O(d·√(ln d)) for post-LN and O(d·√(ln d / L)) for pre-LN: in pre-LN the stream entering the final
LayerNorm has grown to a scale of √L, and the norm divides the gradient by it; in post-LN every
block ends in a LayerNorm, so nothing grows with L. On a log-log plot of ‖∂loss/∂W^{2,L}‖ against L,
the slopes are −½ (pre-LN) and 0 (post-LN).

The setting (Init scheme ``xiong``, :class:`blockalg.model.modules.Init`): Xavier-uniform weight
matrices (q, k and v each its own d×d matrix), zero biases, LayerNorm gains 1 and biases 0, no
1/√(2L) scaling of any projection, token and position tables N(0, ½) so that the stream entering
the first block has unit variance. The models are blockalg's pre-ln, post-ln and hybrid-ln graphs
(GELU FFN, causal attention, learned positions, tied unembedding), width d = 128 (4 heads of
32, d_ff = 512), vocabulary 1024, a batch of 8 sequences of 64 random tokens with random targets,
mean cross-entropy, float32 on the CPU, one thread per process; depths L = 3, 6, 12, 24, 48,
five seeds.

Measured at the last layer: the batch's gradient norm (what ``blockalg gradients --init xiong``
reports) and, since the FFN is position-wise, each token's own gradient, an outer product
N·δ_t·h_tᵀ of norm N·‖δ_t‖·‖h_t‖, and the coherence (batch norm / mean token norm) that links
them. Per seed, the least-squares slope of the log of each against log L; the report gives the
mean and standard deviation over seeds, and says where the theorem holds and where not.
"""

from __future__ import annotations

import math
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from blockalg.graphs.presets import resolve_dims
from blockalg.output.render import Table
from blockalg.output.report import ReportFolder, study_main

VARIANTS = ("pre-ln", "post-ln", "hybrid-ln")
THEORY = {"pre-ln": -0.5, "post-ln": 0.0, "hybrid-ln": 0.0}  # hybrid-ln ends its block in a LN
#: A fitted slope within this of the theorem's agrees with it: less than half the gap between
#: −½ and 0, so a pre-LN slope cannot pass for post-LN's and the other way round.
TOLERANCE = 0.2
#: The measures fitted against depth: key in a result, label.
MEASURES = {"batch": "‖∂loss/∂W^{2,L}‖ of the batch", "token": "per token, ‖∂ℓ_t/∂W^{2,L}‖",
            "coherence": "coherence", "final_std": "stream std at the last LN"}
FULL = dict(width=dict(d_model=128, n_heads=4, d_ff=512, vocab=1024), seq_len=64, batch=8,
            depths=(3, 6, 12, 24, 48), seeds=(0, 1, 2, 3, 4), curve_depth=12, workers=2)
QUICK = dict(width=dict(d_model=32, n_heads=2, d_ff=128, vocab=64), seq_len=16, batch=4,
             depths=(2, 4, 8, 16, 32), seeds=(0, 1), curve_depth=8, workers=1)


def dims_for(size: dict, depth: int) -> dict:
    """The model's dimensions at one depth."""
    return resolve_dims({**size["width"], "n_layers": depth, "n_ctx": size["seq_len"]})


def measure(job) -> dict:
    """One model at init (variant, dims, batch, seed): per layer, the gradient norm of the FFN's
    output weights W² (the batch's, as `blockalg gradients` reports it); at the last layer, the
    same per token; the loss; the std of the stream entering the last LayerNorm."""
    from blockalg.model.build import build_model
    from blockalg.model.gradients import layer_weight_norms, random_batch

    variant, dims, batch, seed = job
    model = build_model(variant, dims, seed=seed, init="xiong")
    seen = {}

    def keep_output_grad(module, args, output):
        seen["h"] = args[0].detach()
        output.register_hook(lambda grad: seen.__setitem__("delta", grad))

    hooks = [last_norm(model).register_forward_pre_hook(
                 lambda m, args: seen.__setitem__("final", args[0].detach())),
             model.blocks[-1].ffn.proj.register_forward_hook(keep_output_grad)]
    _, loss = model(*random_batch(dims, batch, seed))
    loss.backward()
    for hook in hooks:
        hook.remove()
    tokens = per_token_norms(seen["h"], seen["delta"])
    w2 = layer_weight_norms(model)["ffn.proj"]
    return {"w2": w2, "token_w2": statistics.fmean(tokens), "coherence": w2[-1] / sum(tokens) * len(tokens),
            "loss": float(loss.detach()), "final_std": float(seen["final"].std())}


def per_token_norms(h, delta) -> list[float]:
    """‖∂ℓ_t/∂W²‖ for each token t of the batch: the FFN is position-wise, so the batch gradient
    of W² is Σ_t δ_t h_tᵀ / N, one outer product per token, and token t's own loss ℓ_t (the mean
    loss is their mean) has the gradient N·δ_t h_tᵀ, of norm N·‖δ_t‖·‖h_t‖."""
    h, delta = h.reshape(-1, h.shape[-1]), delta.reshape(-1, delta.shape[-1])
    return (len(h) * h.norm(dim=1) * delta.norm(dim=1)).tolist()


def last_norm(model):
    """The LayerNorm the output passes last: the final norm, or the last block's closing norm."""
    if model.ln_f is not None:
        return model.ln_f
    block = model.blocks[-1]
    closing = dict(block.plan)[block.outputs[0]][0][0]
    return block.get_submodule(closing)


def _one_thread():
    import torch

    torch.set_num_threads(1)


def run_all(size: dict) -> dict:
    """Every (variant, depth, seed) of ``size`` (:data:`FULL`, :data:`QUICK`, or one like them),
    in ``size["workers"]`` processes of one thread each: ``{variant: {depth: [result per seed]}}``."""
    jobs = [(variant, depth, seed) for variant in size.get("variants", VARIANTS)
            for depth in size["depths"] for seed in size["seeds"]]
    args = [(variant, dims_for(size, depth), size["batch"], seed) for variant, depth, seed in jobs]
    if size["workers"] > 1:
        with ProcessPoolExecutor(size["workers"], mp_context=get_context("spawn"),
                                 initializer=_one_thread) as pool:
            results = list(pool.map(measure, args))
    else:
        from blockalg.model.distributed import threads

        with threads(1):
            results = [measure(a) for a in args]
    data = {}
    for (variant, depth, _), result in zip(jobs, results):
        data.setdefault(variant, {}).setdefault(depth, []).append(result)
    return data


def slope(depths, values) -> float:
    """Least-squares slope of log(values) on log(depths)."""
    x = [math.log(d) for d in depths]
    y = [math.log(v) for v in values]
    mx, my = statistics.fmean(x), statistics.fmean(y)
    return sum((a - mx) * (b - my) for a, b in zip(x, y)) / sum((a - mx) ** 2 for a in x)


def fitted(by_depth: dict, measure: str, depths) -> tuple[float, float, list[float]]:
    """Per-seed slopes of ``measure`` against depth: (mean, standard deviation over seeds, slopes)."""
    seeds = range(len(by_depth[str(depths[0])]))
    per_seed = [slope(depths, [by_depth[str(d)][i][measure] for d in depths]) for i in seeds]
    spread = statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0
    return statistics.fmean(per_seed), spread, per_seed


def agrees(theory: float, measured: float, tolerance: float = TOLERANCE) -> bool:
    """Whether a fitted slope agrees with the theorem's (see :data:`TOLERANCE`)."""
    return abs(measured - theory) <= tolerance


def sig(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else float(f"{x:.{digits}g}")


def fits(runs: dict, depths) -> dict:
    """Per variant and measure: slope over every depth and over the deeper half, mean ± std over
    seeds, and whether it agrees with the theorem (rounded as the report prints them)."""
    deep = [d for d in depths if d >= depths[len(depths) // 2]]
    out = {}
    for variant, by_depth in runs.items():
        out[variant] = {"theory": THEORY[variant], "deep_depths": deep}
        for measure in MEASURES:
            mean, spread, per_seed = fitted(by_depth, measure, depths)
            deep_mean, deep_spread, _ = fitted(by_depth, measure, deep)
            out[variant][measure] = {"slope": sig(mean), "std": sig(spread),
                                     "per_seed": [sig(x) for x in per_seed],
                                     "deep_slope": sig(deep_mean), "deep_std": sig(deep_spread),
                                     "agrees": agrees(THEORY[variant], mean)}
    return out


def build(quick: bool = False) -> ReportFolder:
    """The gradient-scaling study (quick: width 32, depths 2–32, two seeds, one process)."""
    size = QUICK if quick else FULL
    return render(record(run_all(size), size))


def record(data: dict, size: dict) -> dict:
    """What data.json holds: the setting, every measurement (4 significant digits), the fits."""
    runs = {variant: {str(depth): [{"w2": [sig(x) for x in r["w2"]], "batch": sig(r["w2"][-1]),
                                    "token": sig(r["token_w2"]), "coherence": sig(r["coherence"]),
                                    "final_std": sig(r["final_std"]), "loss": sig(r["loss"])}
                                   for r in results]
                      for depth, results in by_depth.items()}
            for variant, by_depth in data.items()}
    setting = {k: (list(v) if isinstance(v, tuple) else v) for k, v in size.items() if k != "workers"}
    return {**setting, "init": "xiong", "tolerance": TOLERANCE,
            "fits": fits(runs, list(size["depths"])), "runs": runs}


def render(record: dict, figures: bool = True) -> ReportFolder:
    """The report from :func:`record`'s dictionary alone (so its text can be checked against a
    committed data.json without measuring again; ``figures=False`` leaves the figures out)."""
    folder = ReportFolder()

    def figure(stem, draw):
        return folder.add_figure(stem, draw(record)) if figures else f"{stem}.png"

    md = ["# Gradient scale with depth at initialisation: Xiong et al. (2020), Theorem 1", "",
          "Produced by `python analyses/gradient_scaling.py`. Theorem 1 bounds the gradient of the "
          "last layer's FFN output weights W^{2,L} at initialisation by O(d·√(ln d)) for post-LN "
          "and O(d·√(ln d / L)) for pre-LN, so against depth L, on log-log axes, the slopes are "
          "**−½ (pre-LN)** and **0 (post-LN)**. The reason: in pre-LN the stream entering the "
          "final LayerNorm grows like √L, and the norm divides the gradient by it; in post-LN "
          "every block ends in a norm. Hybrid-LN ends its blocks in a norm too: 0.", "",
          "## Setting", "", *setting_lines(record), "",
          "## Fitted slopes", "",
          folder.add_table("tables/slopes", slopes_table(record)), "",
          f"![last-layer gradient against depth]({figure('figures/slopes', slopes_figure)})",
          "", "## What holds and what does not", "", *reading(record), "",
          f"## Per layer at L = {record['curve_depth']}, next to the paper's Fig. 3", "",
          *curve_lines(record), "",
          folder.add_table("tables/per_layer", per_layer_table(record)), "",
          f"![per-layer gradient]({figure('figures/per_layer', per_layer_figure)})",
          "", "## Every depth", "",
          folder.add_table("tables/by_depth", depth_table(record)), "",
          "## Reproduce", "", *reproduce_lines(record)]
    folder.add_json("data.json", record)
    folder.add_text("README.md", "\n".join(md))
    return folder


def setting_lines(record) -> list[str]:
    w = record["width"]
    return [
        "* Models: blockalg's `pre-ln`, `post-ln` and `hybrid-ln` graphs as `blockalg.build_model` "
        "builds them (GELU FFN, causal attention, learned positions, tied unembedding).",
        f"* Width d = {w['d_model']} ({w['n_heads']} heads of {w['d_model'] // w['n_heads']}), "
        f"d_ff = {w['d_ff']}, vocabulary {w['vocab']}; depths L = "
        f"{', '.join(map(str, record['depths']))}; seeds {record['seeds']}; a batch of "
        f"{record['batch']} sequences of {record['seq_len']} random tokens with random targets, "
        "mean cross-entropy; one forward and backward per seed, float32 on the CPU, one thread "
        "per process.",
        "* Init `xiong` (`blockalg gradients --init xiong`): every weight matrix Xavier-uniform "
        "(variance 2/(fan_in + fan_out); q, k and v each its own d×d matrix); biases 0; "
        "LayerNorm gains 1, biases 0; **no** 1/√(2L) scaling of the residual projections "
        "(GPT-2's) or any other depth scaling; token and position tables N(0, ½) each, so the "
        "stream entering the first block has **unit variance**; the tied unembedding is the "
        "token table.",
        "* Measured at the last layer: the gradient of the batch's mean loss with respect to the "
        "last block's `ffn.proj` weight (W^{2,L}), Frobenius norm, what `blockalg gradients` "
        "reports; and **per token**: the FFN is position-wise, so that gradient is the mean over "
        "the batch's N tokens of one outer product each, N·δ_t·h_tᵀ (δ_t: the gradient at the "
        "FFN's output at token t, h_t: its hidden activation), which is the gradient of token "
        "t's own loss; its norm N·‖δ_t‖·‖h_t‖, averaged over tokens. Their ratio, batch norm / "
        "mean per-token norm, is the **coherence** of the tokens' gradients: 1 when they are "
        "parallel, about 1/√N when they point in independent directions. Also the standard "
        "deviation of the stream entering the last LayerNorm (pre-LN: the final norm; post-LN "
        "and hybrid-LN: the last block's closing norm).",
        "* Slopes: least squares of log(measure) on log L, fitted per seed, mean ± standard "
        "deviation over seeds; the last columns fit only the deeper half of the depths.",
        f"* Agreement: |slope − theorem| ≤ {record['tolerance']}, less than half the gap between "
        "−½ and 0, so a pre-LN slope cannot pass for post-LN's, or the other way round."]


def fmt_slope(fit, key="slope", spread="std") -> str:
    return f"{round(fit[key], 3) or 0.0:+.3f} ± {fit[spread]:.3f}"  # (no "−0.000")


def _verdict(fit) -> str:
    return "agrees" if fit["agrees"] else "does not agree"


def slopes_table(record) -> Table:
    deep = record["fits"]["pre-ln"]["deep_depths"]
    rows = [[variant, f"{fit['theory']:+.1f}", fmt_slope(fit["token"]), _verdict(fit["token"]),
             fmt_slope(fit["batch"]), _verdict(fit["batch"]), fmt_slope(fit["coherence"]),
             fmt_slope(fit["final_std"]), fmt_slope(fit["token"], "deep_slope", "deep_std"),
             fmt_slope(fit["batch"], "deep_slope", "deep_std")]
            for variant, fit in record["fits"].items()]
    return Table("Slope against log L of the last layer's W² gradient and its parts (mean ± std "
                 "over seeds)",
                 ["variant", "theorem", "per token", "", "batch", "", "coherence",
                  "stream std at the last LN", f"per token, L ≥ {deep[0]}", f"batch, L ≥ {deep[0]}"],
                 rows, align="lrrlrlrrrr")


def depth_table(record) -> Table:
    rows = []
    for variant, by_depth in record["runs"].items():
        for depth, results in by_depth.items():
            cells = [f"{statistics.fmean(r[m] for r in results):.4g}" for m in MEASURES]
            rows.append([variant, depth, *cells,
                         f"{statistics.fmean(r['loss'] for r in results):.4g}"])
    return Table("Per depth, mean over seeds: the last layer's W² gradient norm of the batch, per "
                 "token, their ratio (coherence), the stream's std at the last LayerNorm, the loss",
                 ["variant", "L", "batch", "per token", "coherence", "stream std", "loss"], rows,
                 align="lrrrrrr")


def _spread(values) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def curve(record, variant) -> tuple[list[float], list[float]]:
    """Per-layer ‖∂loss/∂W²‖ of the batch at the curve depth: mean and std over seeds."""
    results = record["runs"][variant][str(record["curve_depth"])]
    layers = list(zip(*(r["w2"] for r in results)))
    return [statistics.fmean(x) for x in layers], [_spread(x) for x in layers]


def per_layer_table(record) -> Table:
    columns = {variant: curve(record, variant)[0] for variant in record["runs"]}
    rows = [[str(layer + 1), *(f"{mean[layer]:.4g}" for mean in columns.values())]
            for layer in range(record["curve_depth"])]
    rows.append(["last/first", *(f"{mean[-1] / mean[0]:.3g}" for mean in columns.values())])
    return Table(f"‖∂loss/∂W²‖ per layer at L = {record['curve_depth']} (mean over seeds)",
                 ["layer", *columns], rows)


def trend(record, variant) -> float:
    mean = curve(record, variant)[0]
    return mean[-1] / mean[0]


def curve_lines(record) -> list[str]:
    ratios = "; ".join(f"{variant} {trend(record, variant):.3g}" for variant in record["runs"])
    pre, post = trend(record, "pre-ln"), trend(record, "post-ln")
    return [f"The paper's Fig. 3 shows, at initialisation, post-LN's W² gradient growing toward "
            f"the output layers and pre-LN's staying about level across layers. Here, last layer "
            f"over first (mean over seeds): {ratios}. Post-LN "
            f"{'rises' if post > 1.1 else 'does not rise'} toward the output; pre-LN "
            f"{'stays within 10% of level' if abs(pre - 1) <= 0.1 else ('falls' if pre < 1 else 'rises')}"
            f"{'' if abs(pre - 1) <= 0.1 else f' (by {abs(pre - 1):.0%})'}."]


def reading(record) -> list[str]:
    """What holds and what does not, with the numbers (every figure read from ``record``)."""
    f = record["fits"]
    depths = record["depths"]
    runs = record["runs"]

    def mean(variant, depth, measure):
        return statistics.fmean(r[measure] for r in runs[variant][str(depth)])

    token = "; ".join(f"{v} {fmt_slope(fit['token'])} ({_verdict(fit['token'])} with "
                      f"{fit['theory']:+.1f})" for v, fit in f.items())
    batch = "; ".join(f"{v} {fmt_slope(fit['batch'])} ({_verdict(fit['batch'])})" for v, fit in f.items())
    first, last = depths[0], depths[-1]
    return [
        f"* **Per token, the theorem holds.** Slopes of each token's own W^{{2,L}} gradient: "
        f"{token}.",
        f"* **Its mechanism is measured too.** The standard deviation of the stream entering "
        f"pre-LN's final norm has slope {fmt_slope(f['pre-ln']['final_std'])} against L (√L: "
        f"+0.5), and pre-LN's per-token slope is close to minus it (the two differ by "
        f"{abs(f['pre-ln']['token']['slope'] + f['pre-ln']['final_std']['slope']):.3f}): the "
        f"final norm divides each token's gradient by the stream's scale, which grows a little "
        f"faster than √L here. The stream entering post-LN's closing norm has slope "
        f"{fmt_slope(f['post-ln']['final_std'])}.",
        f"* **For the batch's gradient it does not hold for post-LN.** Slopes: {batch}. The batch "
        f"gradient is the per-token gradient times the coherence, so its slope is theirs summed, "
        f"and the coherence grows with depth: from {mean('post-ln', first, 'coherence'):.3f} at "
        f"L = {first} to {mean('post-ln', last, 'coherence'):.3f} at L = {last} in post-LN "
        f"(slope {fmt_slope(f['post-ln']['coherence'])}), from "
        f"{mean('pre-ln', first, 'coherence'):.3f} to {mean('pre-ln', last, 'coherence'):.3f} in "
        f"pre-LN ({fmt_slope(f['pre-ln']['coherence'])}). At this init, with no down-scaling "
        f"of the residual branches, a deep stack maps different tokens to ever more similar "
        f"states, so the tokens' outer products stop cancelling. The theorem's bound covers the "
        f"batch as an upper bound (its norm is at most the tokens' mean), but the scaling it "
        f"suggests is not what the batch does: post-LN's batch gradient at L = {last} is "
        f"{mean('post-ln', last, 'batch') / mean('post-ln', first, 'batch'):.3g}× its value at "
        f"L = {first}, pre-LN's {mean('pre-ln', last, 'batch') / mean('pre-ln', first, 'batch'):.3g}×.",
        f"* **Hybrid-LN behaves like post-LN**: per token {fmt_slope(f['hybrid-ln']['token'])}, "
        f"batch {fmt_slope(f['hybrid-ln']['batch'])}."]


def reproduce_lines(record) -> list[str]:
    w = record["width"]
    return [f"`python analyses/gradient_scaling.py` (two processes of one thread; a few minutes "
            f"on this 2-core machine). One depth of the same setting, the batch's per-layer "
            f"gradients: `blockalg gradients pre-ln post-ln hybrid-ln --init xiong --seeds "
            f"{len(record['seeds'])} --batch {record['batch']} --set n_layers={record['curve_depth']} "
            f"--set n_ctx={record['seq_len']} --set d_model={w['d_model']} --set "
            f"n_heads={w['n_heads']} --set d_ff={w['d_ff']} --set vocab={w['vocab']}` (the same "
            f"seeds give the same numbers)."]


def slopes_figure(record):
    """Per-token and batch gradient of the last layer's W² against depth, log-log; dotted: the
    theorem's slope through each variant's first point."""
    from blockalg.output.plots import plain_ticks, pyplot, series_style

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 4), constrained_layout=True)
    depths = record["depths"]
    for ax, measure in zip(axes, ("token", "batch")):
        for i, variant in enumerate(record["runs"]):
            by_depth = record["runs"][variant]
            means = [statistics.fmean(r[measure] for r in by_depth[str(d)]) for d in depths]
            style = series_style(i)  # growing hollow markers: post-LN and hybrid-LN coincide
            ax.plot(depths, means, **style,
                    label=f"{variant} ({record['fits'][variant][measure]['slope']:+.2f})")
            ax.plot(depths, [means[0] * (d / depths[0]) ** THEORY[variant] for d in depths],
                    color=style["color"], linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(plain_ticks())
        ax.set_yscale("log")
        ax.set_xlabel("depth L")
        ax.set_ylabel(MEASURES[measure])
        ax.set_title(f"{MEASURES[measure]}; dotted: the theorem's slope", fontsize=10)
        ax.legend(fontsize=8, title="variant (fitted slope)")
    return fig


def per_layer_figure(record):
    """The batch's per-layer W² gradient at the curve depth (the quantity of the paper's Fig. 3)."""
    from blockalg.output.plots import pyplot, series_style

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for i, variant in enumerate(record["runs"]):
        mean, spread = curve(record, variant)
        ax.errorbar(range(1, len(mean) + 1), mean, yerr=spread, label=variant, capsize=2,
                    **series_style(i))
    ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_ylabel("‖∂loss/∂W²‖ (batch)")
    ax.set_title(f"L = {record['curve_depth']}, init xiong (paper's Fig. 3: post-LN rises toward "
                 f"the output, pre-LN level)", fontsize=9)
    ax.legend(fontsize=8)
    return fig


if __name__ == "__main__":
    sys.exit(study_main(build, "gradient_scaling"))
