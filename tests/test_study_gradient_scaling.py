"""The gradient-scaling study: Xiong et al. (2020), Theorem 1, measured on the built models."""

import json
import sys
from pathlib import Path

import pytest
import torch

from blockalg.model.build import build_model
from blockalg.model.gradients import gradient_norms
from blockalg.model.distributed import threads
from blockalg.output.report import reports_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analyses"))
import gradient_scaling as study  # noqa: E402

COMMITTED = reports_dir() / "gradient_scaling"
#: Small enough for a test (about a second), deep enough for a slope: L = 2 to 16, one seed.
SMALL = {**study.QUICK, "depths": (2, 4, 8, 16), "seeds": (0,)}


# one xdist worker runs this file's tests, so its module fixture is built once
pytestmark = pytest.mark.xdist_group("test_study_gradient_scaling")


@pytest.fixture(scope="module")
def small():
    return study.record(study.run_all(SMALL), SMALL)


def test_per_token_slopes_follow_theorem_1_and_a_swapped_wiring_fails(small):
    slopes = {variant: study.fitted(by_depth, "token", list(SMALL["depths"]))[0]
              for variant, by_depth in small["runs"].items()}
    pre, post = slopes["pre-ln"], slopes["post-ln"]
    assert study.agrees(study.THEORY["pre-ln"], pre)  # −½ ± 0.2
    assert study.agrees(study.THEORY["post-ln"], post)  # 0 ± 0.2
    # pre-LN and post-LN swapped: each measured slope held against the other wiring's theorem
    assert not study.agrees(study.THEORY["post-ln"], pre)
    assert not study.agrees(study.THEORY["pre-ln"], post)


def test_the_report_renders_what_holds_and_what_does_not(small):
    readme = study.render(small, figures=False).files["README.md"].decode()
    assert "## What holds and what does not" in readme and "per token" in readme
    assert small["fits"]["post-ln"]["token"]["agrees"] and small["fits"]["pre-ln"]["token"]["agrees"]


def test_xiong_init_is_xavier_with_unit_variance_embeddings():
    d, ff = 128, 512
    model = build_model("post-ln", preset="tiny-deep", init="xiong", seed=0)
    q, k, v = model.blocks[0].attn.qkv.weight.split(d)
    # Xavier-uniform: variance 2/(fan_in + fan_out), q, k, v each d×d
    assert all(abs(w.var().item() * d - 1) < 0.05 for w in (q, k, v))
    assert abs(model.blocks[3].ffn.fc.weight.var().item() * (d + ff) / 2 - 1) < 0.05
    assert abs(model.blocks[3].ffn.proj.weight.var().item() * (d + ff) / 2 - 1) < 0.05  # no 1/√(2L)
    tokens = torch.randint(0, 1024, (16, 128))
    stream = model.wte(tokens) + model.wpe(torch.arange(128))
    assert abs(stream.var().item() - 1) < 0.05 and model.lm_head.weight is model.wte.weight


def test_the_study_measures_what_blockalg_gradients_reports():
    dims = study.dims_for(study.QUICK, 4)
    with threads(1):
        measured = study.measure(("post-ln", dims, study.QUICK["batch"], 1))
        reported = gradient_norms("post-ln", dims, seeds=(1,), batch=study.QUICK["batch"], init="xiong")
    assert measured["w2"] == pytest.approx(reported.weights["ffn.proj"][0], rel=1e-5)
    # the batch's gradient is the mean of the tokens' outer products: at most their mean norm
    assert 0 < measured["coherence"] <= 1


def test_committed_report_text_is_what_its_data_renders():
    record = json.loads((COMMITTED / "data.json").read_text())
    assert study.render(record, figures=False).differences(COMMITTED) == []


def test_committed_measurements_reproduce():
    """One committed point measured again (the full study takes minutes): pre-LN, L = 3, seed 0."""
    record = json.loads((COMMITTED / "data.json").read_text())
    size = {key: record[key] for key in ("width", "seq_len", "batch")}
    with threads(1):  # as the study runs (the last bits depend on the thread count)
        again = study.measure(("pre-ln", study.dims_for(size, 3), record["batch"], 0))
    committed = record["runs"]["pre-ln"]["3"][0]
    assert [study.sig(x) for x in again["w2"]] == committed["w2"]
    assert study.sig(again["token_w2"]) == committed["token"]
