"""Every memory check of every catalog variant under every setting the tests sample from:
attention eager/flash × recompute none/selective/full, on meta (fp32 and bf16) and on CPU
tensors (fp32), at the tiny preset with GQA. Minutes, so it is not a unit test; exit 1 on any
mismatch.

    python analyses/memory_check.py [--variants pre-ln,llama] [--quick]
"""

import argparse
import sys
import warnings

from blockalg.analysis.memory import Setting
from blockalg.graphs.variants import catalog
from blockalg.model.memory import check_memory
from blockalg.output.render import Table

SHAPES = {"batch 2": dict(seq_len=8, batch=2, n_kv_heads=2), "batch 1": dict(seq_len=5, batch=1)}
DEVICES = (("meta", "fp32"), ("cpu", "fp32"), ("meta", "bf16"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(v.name for v in catalog()))
    parser.add_argument("--quick", action="store_true", help="meta fp32 at batch 2 only")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    devices, shapes = (DEVICES[:1], list(SHAPES)[:1]) if args.quick else (DEVICES, list(SHAPES))
    rows, failed = [], 0
    for variant in args.variants.split(","):
        for device, dtype in devices:
            for shape in shapes:
                for attention in ("eager", "flash"):
                    for recompute in ("none", "selective", "full"):
                        setting = Setting(dtype=dtype, attention=attention, recompute=recompute)
                        checks = check_memory(variant, setting, preset="tiny", device=device,
                                              **SHAPES[shape])
                        bad = [c.name for c in checks if not c.ok]
                        failed += bool(bad)
                        rows.append([variant, device, dtype, shape, attention, recompute,
                                     ", ".join(bad) or "ok"])
    print(Table("memory checks at tiny", ["variant", "device", "dtype", "shape", "attention",
                                          "recompute", "result"], rows, align="lllllll").to_text())
    print(f"{len(rows) - failed} of {len(rows)} settings pass every memory check", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
