"""Forward + backward time of the model built from the pre-ln graph against a hand-written
nanoGPT-style GPT of the same shape, init and weights, same batch, in one run.

    python analyses/benchmark.py                        # CPU, a small GPT-2-shaped model
    python analyses/benchmark.py --device cuda --dtype bfloat16 --preset gpt2-small --batch 8
    python analyses/benchmark.py --compile              # both models under torch.compile

Prints the median time per step of each and the ratio built / reference (goal: ≤ 1.05). The two
runs are interleaved round by round so drift in the machine's speed hits both alike. Before timing,
the script checks that both models give the same loss on the same batch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nanogpt_reference import copy_weights, reference_for  # noqa: E402

from blockalg import build_model  # noqa: E402
from blockalg.graphs.presets import parse_assignments, resolve_dims  # noqa: E402

CPU_DEFAULTS = ["d_model=256", "n_heads=8", "d_ff=1024", "n_layers=4", "n_ctx=256", "vocab=8192"]


def step(model, idx, targets):
    model.zero_grad(set_to_none=True)
    _, loss = model(idx, targets)
    loss.backward()
    return loss


def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def time_steps(model, idx, targets, device, steps):
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step(model, idx, targets)
    synchronize(device)
    return (time.perf_counter() - start) / steps


def benchmark(dims, device="cpu", dtype="float32", batch=8, compile=False, rounds=7, steps=3,
              warmup=2, seed=0) -> dict:
    """Median seconds per forward+backward step of both models, and their ratio."""
    torch_dtype = getattr(torch, dtype)
    built = build_model("pre-ln", dims, device=device, seed=seed)
    reference = reference_for(dims, device=device)
    copy_weights(built, reference)
    built, reference = built.to(torch_dtype), reference.to(torch_dtype)
    generator = torch.Generator().manual_seed(seed)
    idx, targets = (torch.randint(0, dims["vocab"], (batch, dims["seq_len"]), generator=generator)
                    .to(device) for _ in range(2))
    same_loss = torch.allclose(step(built, idx, targets), step(reference, idx, targets),
                               rtol=1e-2 if dtype != "float32" else 1e-5)
    models = {"built": built, "reference": reference}
    if compile:
        models = {name: torch.compile(m) for name, m in models.items()}
    for m in models.values():
        for _ in range(warmup):
            step(m, idx, targets)
    times = {name: [] for name in models}
    for _ in range(rounds):
        for name, m in models.items():
            times[name].append(time_steps(m, idx, targets, device, steps))
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {"device": device, "dtype": dtype, "compile": compile, "batch": batch, "dims": dims,
            "same_loss": bool(same_loss), "built_s": medians["built"],
            "reference_s": medians["reference"], "ratio": medians["built"] / medians["reference"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", dest="assignments", action="append", default=None,
                        help="dimension override NAME=VALUE (default on tiny: a 4-layer, 256-wide model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    assignments = args.assignments if args.assignments is not None else (
        CPU_DEFAULTS if args.preset == "tiny" else [])
    dims = resolve_dims(args.preset, parse_assignments(assignments))
    result = benchmark(dims, args.device, args.dtype, args.batch, args.compile, args.rounds, args.steps)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"device {result['device']} · {result['dtype']} · compile {result['compile']} · "
              f"batch {result['batch']} × seq_len {dims['seq_len']} · d_model {dims['d_model']} · "
              f"{dims['n_layers']} layers · same loss: {result['same_loss']}")
        print(f"built from the pre-ln graph: {result['built_s'] * 1e3:9.2f} ms/step")
        print(f"nanoGPT-style reference:     {result['reference_s'] * 1e3:9.2f} ms/step")
        print(f"ratio built / reference:     {result['ratio']:9.3f}  (goal ≤ 1.05)")
    return 0 if result["same_loss"] else 1


if __name__ == "__main__":
    sys.exit(main())
