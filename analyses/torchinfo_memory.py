"""What torchinfo reports for the pre-LN models blockalg builds, written to
analyses/data/torchinfo_memory.json, which analyses/memory_formulas.py reads (so the study
builds without torchinfo and reproduces byte for byte).

    pip install torchinfo && python analyses/torchinfo_memory.py

torchinfo.summary runs one forward on the meta device (batch 1, seq_len = n_ctx, fp32) and
reports "Params size" and "Forward/backward pass size" (the outputs of every module, counted
twice for backward). torchinfo 1.8.0 gives the same numbers on the meta device as on CPU tensors
(checked at gpt2-small).
"""

import json
import sys
import warnings
from pathlib import Path

import torch

from blockalg.graphs.presets import resolve_dims
from blockalg.model.build import build_model

PRESETS = ("gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl", "gpt3-175b")
OUT = Path(__file__).resolve().parent / "data" / "torchinfo_memory.json"


def measure(preset: str) -> dict:
    import torchinfo

    dims = resolve_dims(preset)
    model = build_model("pre-ln", dims, device="meta")
    idx = torch.zeros(1, dims["seq_len"], dtype=torch.long, device="meta")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = torchinfo.summary(model, input_data=[idx], verbose=0, depth=10, device="meta")
    return {"total_params": s.total_params, "params_bytes": s.total_param_bytes,
            "forward_backward_bytes": s.total_output_bytes, "input_bytes": s.total_input}


def main() -> int:
    import torchinfo

    data = {"torchinfo": torchinfo.__version__, "torch": torch.__version__.split("+")[0],
            "variant": "pre-ln", "dtype": "fp32", "batch": 1, "seq_len": "n_ctx",
            "presets": {p: measure(p) for p in PRESETS}}
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
