"""The GPU check: every empirical check on real CUDA tensors, and the benchmark in bf16.

    python analyses/gpu_check.py              # on a CUDA machine: gpt2-small, ~2-4 minutes on an H100
    python analyses/gpu_check.py --device cpu --quick   # a dry run of the script itself, here

1. ``blockalg check`` for pre-ln, post-ln and hybrid-ln at gpt2-small on the device (float32). On
   CUDA, attention runs a fused kernel whose backward FlopCounterMode counts at 2.5× forward; the
   prediction follows the backend that ran (named in the check's note).
2. The benchmark of analyses/benchmark.py (built pre-ln model against the nanoGPT-style reference)
   in bf16, without and with torch.compile.

Prints one summary table; exits 1 if a check fails or the two models disagree.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import benchmark  # noqa: E402

from blockalg.graphs.presets import resolve_dims  # noqa: E402
from blockalg.model.check import check  # noqa: E402
from blockalg.output.render import Table  # noqa: E402

VARIANTS = ("pre-ln", "post-ln", "hybrid-ln")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny preset, short timings (dry run)")
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here", file=sys.stderr)
        return 2
    preset = "tiny" if args.quick else "gpt2-small"
    dims = resolve_dims(preset)
    rows, failed = [], 0
    for variant in VARIANTS:
        for c in check(variant, dims, device=args.device):
            failed += not c.ok
            rows.append([f"check {variant}", c.name, f"{c.predicted:,}", f"{c.measured:,}",
                         "ok" if c.ok else "FAIL", c.detail])
    bench_dims = resolve_dims(preset) if args.quick else resolve_dims("gpt2-small")
    dtype = "bfloat16" if args.device == "cuda" else "float32"
    for compiled in (False, True):
        r = benchmark(bench_dims, args.device, dtype, batch=2 if args.quick else 8, compile=compiled,
                      rounds=1 if args.quick else 5, steps=1 if args.quick else 10, warmup=1 if args.quick else 3)
        failed += not r["same_loss"]
        rows.append([f"benchmark {dtype}", f"compile={compiled}", f"{r['reference_s'] * 1e3:.2f} ms",
                     f"{r['built_s'] * 1e3:.2f} ms", f"ratio {r['ratio']:.3f}",
                     f"same loss: {r['same_loss']}"])
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else args.device
    print(Table(f"blockalg gpu_check · {device_name} · torch {torch.__version__} · preset {preset}",
                ["what", "item", "predicted / reference", "measured / built", "result", "note"],
                rows, align="llrrll").to_text())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
