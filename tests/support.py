"""What several test files share: the CLI runner, a JSON file writer, and the golden numbers,
each defined once with where it comes from."""

import json

from click.testing import CliRunner

from blockalg.cli import main

#: Parameters at gpt2-small. pre-ln is GPT-2 small as Hugging Face's GPT2LMHeadModel counts it
#: (tests/test_reference.py measures it); post-ln drops the final LayerNorm (2·768 = 1,536 fewer);
#: hybrid-ln adds a third LayerNorm per block (12 · 1,536 more than post-ln).
GPT2_SMALL_PARAMS = {"pre-ln": 124_439_808, "post-ln": 124_438_272, "hybrid-ln": 124_456_704}
#: Forward matmul FLOPs of GPT-2 small on one 1,024-token sequence, unembedding included, as
#: FlopCounterMode counts HF's GPT2LMHeadModel on the meta device (tests/test_reference.py):
#: L·(24·s·d² + 4·s²·d) + 2·s·d·V.
GPT2_SMALL_FORWARD_MATMUL = 291_648_307_200
#: Parameters of one GPT-2 small block: 12·d² + 13·d at d = 768.
GPT2_SMALL_PER_BLOCK = 7_087_872


def run(*args):
    """``blockalg ARGS`` in-process; returns click's Result (exit_code, output)."""
    return CliRunner().invoke(main, [str(a) for a in args])


def write_json(tmp_path, data, name="block.json"):
    """``data`` as JSON in ``tmp_path/name``; returns the path."""
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path
