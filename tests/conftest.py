import sys
from pathlib import Path

import pytest

from blockalg.graphs.presets import resolve_dims

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "analyses"))  # the studies import as modules (import ffn_claims)


@pytest.fixture
def small_dims():
    """A shape where every dimension differs, so a formula that swaps two of them fails."""
    return resolve_dims("tiny", {"d_model": 48, "n_heads": 6, "d_ff": 80, "n_ctx": 16, "seq_len": 12,
                                 "vocab": 37, "n_layers": 3})
