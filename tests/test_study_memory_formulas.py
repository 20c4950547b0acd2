"""The memory_formulas study: published memory formulas against blockalg's exact figures."""

import json

import memory_formulas  # analyses/ is on the path (conftest)
import pytest

from blockalg.output.report import reports_dir


# one xdist worker runs this file's tests, so its module fixture is built once
pytestmark = pytest.mark.xdist_group("test_study_memory_formulas")


@pytest.fixture(scope="module")
def folder():
    return memory_formulas.build()


def test_numbers_worked_by_hand(folder):
    rows = {(r["formula"], r["at"]): r for r in json.loads(folder.files["data.json"])["rows"]}
    # Korthikanti: s·b·h·(34 + 5·a·s/h) = 1024·768·(34 + 5·12·1024/768) = 1024·768·114
    assert int(rows["korthikanti_none", "gpt2-small"]["approx"]) == 89_653_248
    # full recomputation keeps the block input, 2·s·b·h bytes in bf16: exact
    assert rows["korthikanti_full", "gpt2-small"]["exact"] == 2 * 1024 * 768
    assert rows["korthikanti_full", "gpt3-175b"]["relative_error_percent"] == 0
    # mixed-precision Adam: 16 bytes per parameter plus torch's 4-byte step per tensor (148)
    assert rows["16_bytes_bf16", "gpt2-small"]["exact"] == 16 * 124_439_808 + 4 * 148
    # the usual KV formula is exact without GQA and 8× too large with 8 of 64 kv heads
    assert rows["kv_usual", "gpt2-small"]["exact"] == 2 * 12 * 768 * 1024 * 2
    assert rows["kv_usual", "LLaMA-2-7B (h_kv = 32)"]["exact"] == 2_147_483_648
    assert rows["kv_usual", "LLaMA-2-70B (h_kv = 8)"]["relative_error_percent"] == 700
    # torchinfo counts the tied table twice: (124,439,808 + 38,597,376)·4 bytes
    assert int(rows["torchinfo_params", "gpt2-small"]["approx"]) == 4 * (124_439_808 + 38_597_376)
    assert "## Reading" in folder.files["README.md"].decode()


def test_full_build_reproduces_the_committed_report(folder):
    assert folder.differences(reports_dir() / "memory_formulas") == []
