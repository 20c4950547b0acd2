"""The fuzzer in the suite: hypothesis generates and mutates graph files, Hugging Face configs and
``--set`` values from the real catalog and real configs (analyses/fuzz.py), runs each through the
command line in-process with a CPU-time budget, and every case must end in an answer or in one
line with exit 2. The ``ci`` profile (tests/conftest.py, the default) runs a few hundred cases
with a fixed seed; ``pytest -m fuzz --hypothesis-profile long`` runs thousands, and
``python analyses/fuzz.py`` runs the long tally (10,000 graph files, 3,000 configs)."""

import fuzz
import pytest
from hypothesis import given
from hypothesis import strategies as st

BUDGET = 10.0  # CPU seconds per case: more is a hang

pytestmark = pytest.mark.fuzz


def keeps_the_contract(case):
    args, content = case
    outcome = fuzz.run_case(args, content, BUDGET)
    assert outcome.kind in ("ok", "clean error"), (outcome.kind, outcome.args, outcome.detail,
                                                   content[:3000])


@given(st.data())
def test_mutated_graph_files_keep_the_contract(data):
    keeps_the_contract(fuzz.graph_case(data))


@given(st.data())
def test_mutated_hf_configs_keep_the_contract(data):
    keeps_the_contract(fuzz.config_case(data))


@given(st.data())
def test_set_values_keep_the_contract(data):
    keeps_the_contract(fuzz.set_case(data))
