"""The variant catalog: every variant checks out against its built model, and its path statistics
match what the literature fixes."""

import pytest
import sympy as sp

from blockalg import analyze
from blockalg.analysis.paths import a, f, n, path_stats
from blockalg.graphs.symbols import n_layers as L
from blockalg.graphs.variants import catalog, get
from blockalg.model.check import check

NAMES = [v.name for v in catalog()]


def test_the_catalog_is_broad():
    assert len(NAMES) >= 14 and len(set(NAMES)) == len(NAMES)
    assert all(v.reference and v.equations and v.build.__doc__ for v in catalog())


@pytest.mark.parametrize("variant", NAMES)
@pytest.mark.parametrize("preset,device", [("gpt2-small", "meta"), ("distinct", "meta"), ("tiny", "cpu")])
def test_every_variant_passes_every_check(variant, preset, device, small_dims):
    # "distinct": every dimension differs (conftest), so a formula that swaps two of them fails,
    # which GPT-2's proportional shapes (d_ff = 4·d_model, ...) can hide; depth is tested at
    # gpt3-175b in test_check.py. The elementwise count (a make_fx trace, ~0.1 s a layer) runs
    # at tiny: tests/test_elementwise.py.
    where = {"dims": small_dims} if preset == "distinct" else {"preset": preset}
    failed = [c for c in check(variant, **where, device=device, elementwise=False) if not c.ok]
    assert not failed, failed


@pytest.mark.parametrize("variant,T", [
    ("parallel", 1 + n * a + n * f),  # GPT-J: one shared LN feeds both branches
    ("parallel-2ln", 1 + n * a + n * f),
    ("sandwich-ln", (1 + n**2 * a) * (1 + n**2 * f)),
    ("peri-ln", (1 + n**2 * a) * (1 + n**2 * f)),
    ("output-ln", (1 + n * a) * (1 + n * f)),
    ("normformer", (1 + n**2 * a) * (1 + n**2 * f)),  # the d_ff-wide norm sits inside the FFN branch
    ("deepnorm", n**2 * (1 + a) * (1 + f)),
    ("admin", n**2 * (1 + a) * (1 + f)),
    ("bloom-residual", n**2 * (1 + a) * (1 + f)),  # the residual starts after the norm
    ("rezero", (1 + a) * (1 + f)),
    ("llama", (1 + n * a) * (1 + n * f)),
    ("b2t", n * (1 + n * (1 + a) * (1 + f))),  # the bottom-to-top skip crosses only the last LN
])
def test_block_generating_functions(variant, T):
    assert sp.expand(path_stats(get(variant)).block - T) == 0


def test_parallel_has_3_to_the_L_paths_and_a_one_norm_shortest_path():
    stats = path_stats(get("parallel"))
    assert stats.expressions["count"] == 3**L
    assert stats.at(24)["shortest"] == {"norms": 1, "sublayers": 0}


@pytest.mark.parametrize("variant", ["post-ln", "deepnorm", "admin"])
def test_post_ln_like_wirings_cross_2L_norms_on_every_path(variant):
    stats = path_stats(get(variant))
    assert stats.expressions["shortest.norms"] == stats.expressions["longest.norms"] == 2 * L


def test_rezero_paths_cross_no_norm():
    stats = path_stats(get("rezero"))
    assert stats.expressions["longest.norms"] == 0 and stats.expressions["count"] == 4**L


def test_deepnorm_skip_scale_enters_the_scaled_generating_function():
    from blockalg.analysis.paths import block_polynomial

    alpha = (2 * L) ** sp.Rational(1, 4)
    expected = n**2 * (alpha + a) * (alpha + f)
    assert sp.simplify(block_polynomial(get("deepnorm"), scaled=True) - expected) == 0


def test_llama_params_by_hand():
    # llama at tiny (d=64, h=4, d_ff=256, L=2, V=512), untied, no position table, no biases:
    # per block 2·64 (norms) + 4·64² (attention) + 3·64·256 (SwiGLU); + 2·512·64 + 64 (final norm)
    per_block = 2 * 64 + 4 * 64**2 + 3 * 64 * 256
    assert analyze("llama", preset="tiny").values["params.total"] == 2 * per_block + 2 * 512 * 64 + 64


def test_normformer_extra_parameters():
    # per block vs pre-ln: one more LN (2d), the d_ff-wide LN (2·d_ff) and one scale per head
    extra = analyze("normformer", preset="gpt2-small").values["params.per_block"] \
        - analyze("pre-ln", preset="gpt2-small").values["params.per_block"]
    assert extra == 2 * 768 + 2 * 3072 + 12


def test_a_shape_mismatch_names_the_edge():
    from blockalg import BlockalgError
    from blockalg.graphs.graph import BlockBuilder

    b = BlockBuilder("broken")
    x = b.input()
    b.output(b.node("add", "add", x, b.node("up", "ffn_up", x)))
    with pytest.raises(BlockalgError, match="edge up → add: shape mismatch"):
        b.graph()


def test_mix_ln_is_a_stack_with_closed_form_segments():
    from blockalg.graphs.graph import segments

    stats = path_stats(get("mix-ln"))
    q = sp.floor(L / 4)
    # ⌊L/4⌋ post-LN blocks (2 norms on every path) then pre-LN blocks, then the final LN
    assert sp.simplify(stats.expressions["shortest.norms"] - (2 * q + 1)) == 0
    assert sp.simplify(stats.expressions["longest.norms"] - (2 * q + 2 * (L - q) + 1)) == 0
    assert stats.at(12)["shortest"] == {"norms": 7, "sublayers": 0} and stats.at(12)["count"] == 4**12
    assert [r["norms"] for r in stats.shortest_to_layer(8)] == [5, 3, 1, 1, 1, 1, 1, 1]
    assert sum(c.subs(L, 12) for _, c in segments(get("mix-ln"))) == 12


def test_a_stack_round_trips_through_json_and_validates(tmp_path):
    from blockalg import BlockalgError, load_block, save_block
    from blockalg.graphs.graph import stack

    save_block(get("mix-ln"), tmp_path / "mix.json")
    loaded = load_block(tmp_path / "mix.json")
    assert analyze(loaded, preset="gpt2-medium").values == analyze("mix-ln", preset="gpt2-medium").values
    with pytest.raises(BlockalgError, match="segments cover"):
        stack("bad", [(get("pre-ln"), "L - 1")])


def test_resi_dual_carries_two_streams_in_closed_form(tmp_path):
    from blockalg import load_block, save_block

    stats = path_stats(get("resi-dual"))
    e = stats.expressions
    # per block: a→a n²(1+a)(1+f), a→d a + n(1+a)f, d→d 1; head: x_a + LN(x_d)
    assert sp.simplify(e["count"] - (2 ** (2 * L + 1) - 1)) == 0
    assert e["shortest.norms"] == 1 and e["longest.norms"] == 2 * L  # the dual stream's shortcut
    assert sum(stats.distribution(3).values()) == 2 * 4**3 - 1
    save_block(get("resi-dual"), tmp_path / "r.json")
    assert path_stats(load_block(tmp_path / "r.json")).at(12) == stats.at(12)


def test_the_readme_variant_table_is_the_catalog():
    """README's table lists every catalog variant, in order, with its equations and reference."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme[readme.index("| name | equations | reference |"):].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines()[2:]]
    assert rows == [f"| `{v.name}` | {'; '.join(v.equations)} | {v.reference} |" for v in catalog()]
