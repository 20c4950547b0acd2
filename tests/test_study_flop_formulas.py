"""The flop_formulas study: published approximations against blockalg's exact counts."""

import json
from fractions import Fraction

import flop_formulas  # noqa: E402
import pytest
import sympy as sp
from support import GPT2_SMALL_FORWARD_MATMUL

from blockalg.graphs.symbols import DIMENSIONS
from blockalg.graphs.symbols import d_model as d
from blockalg.graphs.symbols import n_layers as L
from blockalg.graphs.symbols import seq_len as s
from blockalg.graphs.symbols import vocab as V
from blockalg.output.report import reports_dir

REPORTS = reports_dir()


# one xdist worker runs this file's tests, so its module fixture is built once
pytestmark = pytest.mark.xdist_group("test_study_flop_formulas")


@pytest.fixture(scope="module")
def quick():
    folder = flop_formulas.build(quick=True)
    data = json.loads(folder.files["data.json"])
    rows = {(f["key"], r["preset"], r["seq_len"]): r for f in data["formulas"] for r in f["rows"]}
    return folder, data, rows


def test_kaplan_forward_at_gpt2_small_recomputed_by_hand(quick):
    _, _, rows = quick
    row = rows["kaplan_forward", "gpt2-small", 1024]
    # blockalg's exact forward matmul: L·(24·s·d² + 4·s²·d) + 2·s·d·V with L=12, d=768, s=1024,
    # V=50257 = 12·(14,495,514,624 + 3,221,225,472) + 79,047,426,048 = 291,648,307,200
    assert row["exact"] == GPT2_SMALL_FORWARD_MATMUL
    # Kaplan Table 1: N = 2·d·L·(2·d_attn + d_ff) = 2·768·12·(1536 + 3072) = 84,934,656;
    # C_forward = 2N + 2·L·n_ctx·d_attn = 169,869,312 + 2·12·1024·768 = 188,743,680 per token,
    # × 1024 tokens = 193,273,528,320; error = −98,374,778,880 / 291,648,307,200 = −12509/37085
    assert int(row["approx"]) == 193_273_528_320
    assert Fraction(int(row["approx"]) - row["exact"], row["exact"]) == Fraction(-12509, 37085)
    assert row["relative_error_percent"] == -33.73


def test_identities_and_signs(quick):
    folder, data, rows = quick
    for preset in ("gpt2-small", "gpt3-175b"):
        for length in (1024, 2048):
            error = {key: rows[key, preset, length]["relative_error_percent"]
                     for key in ("megatron_72", "kaplan_forward", "kaplan_6n", "chinchilla", "palm")}
            # Narayanan's 72 (no recomputation) is the forward + backward matmul count exactly
            assert error["megatron_72"] == 0
            assert int(rows["megatron_72", preset, length]["approx"]) == rows["megatron_72", preset, length]["exact"]
            # formulas without the unembedding undercount; Chinchilla's embedding matmul overcounts
            assert error["kaplan_forward"] < 0 and error["kaplan_6n"] < 0 and error["chinchilla"] > 0
            # PaLM with the tied token table in N only overcounts the bias and norm parameters
            assert 0 < error["palm"] < 0.1
    # errors shrink with model size
    assert abs(rows["kaplan_forward", "gpt3-175b", 2048]["relative_error_percent"]) < 2
    dropped = {f["key"]: sp.sympify(f["exact_minus_approx"], locals=DIMENSIONS) for f in data["formulas"]}
    assert dropped["megatron_72"] == 0
    assert sp.expand(dropped["kaplan_forward"] - (2 * L * s**2 * d + 2 * s * d * V)) == 0
    markdown = folder.files["README.md"].decode()
    assert "## Reading" in markdown and "![relative error vs sequence length](figures/error_vs_seq_len.png)" in markdown
    assert "figures/error_vs_seq_len.png" in folder.files


def test_full_build_reproduces_the_committed_report():
    assert flop_formulas.build().differences(REPORTS / "flop_formulas") == []


def test_the_elementwise_section_sets_the_registry_beside_torchs_decomposition(quick):
    folder, data, _ = quick
    kinds = {(k["kind"], k["phase"]): k for k in data["elementwise"]["kinds"]}
    # residual adds: 2 per layer, s·d each, at tiny (s = d = 64, L = 2), by both counts
    assert kinds["add", "forward"]["registry"] == kinds["add", "forward"]["decomposition"] == 2 * 2 * 64 * 64
    assert kinds["layernorm", "forward"]["registry"] == 7 * 5 * 64 * 64  # 5 norms, 7 FLOPs an element
    assert data["elementwise"]["loss"]["forward"] > 0
    assert "## Non-matmul FLOPs against torch's decomposition" in folder.files["README.md"].decode()
