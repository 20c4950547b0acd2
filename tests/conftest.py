import os
import sys
from pathlib import Path

# One intra-op thread, in this process and the ones it starts (torchrun, notebook kernels), before
# torch is imported: the tests' models are tiny, and spinning threads of one process slow every
# other on a 2-core or shared machine (a tiny CPU check ran 10× slower under load with two).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

from blockalg.graphs.presets import resolve_dims

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "analyses"))  # the studies import as modules (import ffn_claims)


@pytest.fixture
def small_dims():
    """A shape where every dimension differs, so a formula that swaps two of them fails."""
    return resolve_dims("tiny", {"d_model": 48, "n_heads": 6, "d_ff": 80, "n_ctx": 16, "seq_len": 12,
                                 "vocab": 37, "n_layers": 3})


# Hypothesis profiles for the fuzzer (tests/test_fuzz.py): `ci`, the default, runs a few hundred
# cases with a fixed seed in seconds; `long` (pytest -m fuzz --hypothesis-profile long) thousands.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=80, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", max_examples=5000, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    config.addinivalue_line("markers", "fuzz: hypothesis fuzzing of every input boundary "
                                       "(tests/test_fuzz.py, analyses/fuzz.py)")
