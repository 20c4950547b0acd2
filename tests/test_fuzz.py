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

from blockalg import analyze
from blockalg.analysis.analyze import exact_values
from blockalg.errors import BlockalgError
from blockalg.graphs.graph import validate_block
from blockalg.graphs.serialize import block_from_data
from blockalg.graphs.variants import catalog

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


@given(st.data())
def test_values_of_mutated_graphs_equal_those_of_their_canonical_expressions(data):
    # analyze() reads values off unevaluated sympy trees; a graph the mutations left loadable
    # must give the numbers of its canonical expressions (the table and the JSON agree)
    graph = fuzz.catalog_graph(data.draw(st.sampled_from([v.name for v in catalog()])))
    for _ in range(data.draw(st.integers(0, 2))):
        fuzz.mutate_graph(data, graph)
    try:
        a = analyze(validate_block(block_from_data(graph)), preset="tiny")
    except BlockalgError:
        return  # most mutations break the graph: the other tests hold those to their contract
    a.add_memory()
    assert a.values == exact_values(a.expressions, a.dims)
