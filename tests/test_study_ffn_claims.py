"""The FFN-claims study (analyses/ffn_claims.py): its exact shares, its measurements on the built
model, and that the committed report is what a fresh build writes."""

import json
from fractions import Fraction

import ffn_claims  # noqa: E402
import pytest
import sympy as sp
from support import GPT2_SMALL_PARAMS

from blockalg.graphs.symbols import d_model
from blockalg.graphs.variants import get
from blockalg.output.report import reports_dir

REPORTS = reports_dir()


# one xdist worker runs this file's tests, so its module fixture is built once
pytestmark = pytest.mark.xdist_group("test_study_ffn_claims")


@pytest.fixture(scope="module")
def measurements():
    return ffn_claims.measure()


def test_quick_build_reports_the_exact_shares_and_the_measurements():
    folder = ffn_claims.build(quick=True)
    data = json.loads(folder.files["data.json"])
    d = d_model
    # pre-ln block: attention 4d² + 4d, FFN 2·d·4d + 4d + d = 8d² + 5d, two LayerNorms 4d
    assert sp.sympify(data["block_share"]["pre-ln"]["share"], locals={"d_model": d}) \
        == sp.cancel((8 * d**2 + 5 * d) / (12 * d**2 + 13 * d))
    small = next(r for r in data["model_share"] if r["preset"] == "gpt2-small")
    assert small["ffn"] == 12 * (8 * 768**2 + 5 * 768) == 56_669_184
    assert Fraction(small["ffn_share"]) == Fraction(56_669_184, GPT2_SMALL_PARAMS["pre-ln"]) < Fraction(1, 2)
    # 2·FFN > total ⇔ L·(4d − 3) > V + n_ctx + 2 = 51,283, and 51,283 / 3,069 = 16.7
    assert small["majority_from_layers"] == 17
    assert data["jacobian"]["FFN (blocks.0.ffn)"]["earlier (j < i)"] == "0.0 (exact)"
    assert data["jacobian"]["attention (blocks.0.attn)"]["later (j > i)"] == "0.0 (exact)"
    assert "README.md" in folder.files and "tables/claims.md" in folder.files


def test_block_share_closed_form_and_limit():
    d = d_model
    share = ffn_claims.block_share(get("pre-ln"))
    assert sp.simplify(share["share"] - (8 * d**2 + 5 * d) / (12 * d**2 + 13 * d)) == 0
    assert share["limit"] == sp.Rational(2, 3)
    assert ffn_claims.block_share(get("hybrid-ln"))["share"] == (8 * d + 5) / (12 * d + 15)


def test_ffn_does_not_mix_positions_and_attention_is_causal(measurements):
    ffn = measurements["summaries"]["FFN (blocks.0.ffn)"]
    attn = measurements["summaries"]["attention (blocks.0.attn)"]
    assert ffn["earlier (j < i)"] == 0.0 and ffn["later (j > i)"] == 0.0 and ffn["same (j = i)"] > 0
    assert attn["earlier (j < i)"] > 0 and attn["later (j > i)"] == 0.0
    assert measurements["equivariance"] < 1e-12  # the same function at every position


def test_without_the_activation_the_ffn_collapses_to_one_affine_map(measurements):
    result = measurements["nonlinearity"]
    residuals = result["residuals"]
    assert residuals["FFN, activation removed"] < 1e-10
    assert residuals["two FFNs stacked, activation removed"] < 1e-10
    assert result["stacked_vs_one_map"] < 1e-10
    assert residuals["FFN, GELU (as built)"] > 1e-3
    assert residuals["pre-ln block, FFN activation removed"] > 1e-3  # LayerNorm and softmax remain
    assert result["one_map_params"] == 64 * 64 + 64


def test_the_committed_report_is_what_a_fresh_build_writes():
    assert ffn_claims.build().differences(REPORTS / "ffn_claims") == []
