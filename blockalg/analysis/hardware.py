"""Named accelerators and roofline bounds.

Each entry gives the dense peak FLOP/s for bf16/fp16 (tensor cores) and for fp32 (no TF32: what
a plain fp32 matmul in PyTorch gets), the memory bandwidth and the memory capacity, from the
vendor's datasheet (source in the comment). Datasheets quote bf16 "with sparsity" for Hopper,
Ada and CDNA3; the dense figure is half of it. Capacities are the datasheet's GB read as GiB
(an A100 40GB shows 40,960 MiB in nvidia-smi); bandwidths are decimal (GB/s = 10^9 bytes/s).

Bounds (lower bounds on time, upper bounds on throughput): a step that does F FLOPs and moves
B bytes takes at least max(F / peak, B / bandwidth).

>>> h = get_hardware("a100-80gb")
>>> h.peak("bf16"), h.bandwidth
(312000000000000, 2039000000000)
>>> float(time_bound(624 * 10**12, 0, h, "bf16"))
2.0
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import sympy as sp

from ..errors import BlockalgError

GiB, TERA, GIGA = 2**30, 10**12, 10**9


@dataclass(frozen=True)
class Hardware:
    """One accelerator: dense peak FLOP/s per dtype class, bytes/s, bytes."""

    name: str
    peak_bf16: int | sp.Rational  # also fp16
    peak_fp32: int | sp.Rational
    bandwidth: int | sp.Rational
    capacity: int | sp.Rational
    source: str = ""

    def peak(self, dtype: str):
        """Dense peak FLOP/s for a model in ``dtype`` (bf16 and fp16 share the tensor cores)."""
        return self.peak_fp32 if dtype == "fp32" else self.peak_bf16

    def to_dict(self) -> dict:
        return {"name": self.name, "peak_flops_bf16": _plain(self.peak_bf16),
                "peak_flops_fp32": _plain(self.peak_fp32), "memory_bandwidth": _plain(self.bandwidth),
                "memory_capacity": _plain(self.capacity), "source": self.source}


def _plain(value):
    value = sp.Rational(value)
    return int(value) if value.is_Integer else float(value)


def _rational(text: str) -> sp.Rational:
    return sp.Rational(text)


#: The built-in table.
HARDWARE: dict[str, Hardware] = {h.name: h for h in (
    # NVIDIA A100 Tensor Core GPU datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf):
    # BF16 Tensor Core 312 TFLOPS (624 with sparsity), FP32 19.5 TFLOPS, A100 40GB SXM 1,555 GB/s.
    Hardware("a100-40gb", 312 * TERA, _rational("19.5") * TERA, 1555 * GIGA, 40 * GiB,
             "NVIDIA A100 datasheet (SXM 40GB)"),
    # same datasheet, A100 80GB SXM: HBM2e, 2,039 GB/s.
    Hardware("a100-80gb", 312 * TERA, _rational("19.5") * TERA, 2039 * GIGA, 80 * GiB,
             "NVIDIA A100 datasheet (SXM 80GB)"),
    # NVIDIA H100 Tensor Core GPU datasheet: H100 SXM BF16 Tensor Core 1,979 TFLOPS with
    # sparsity, FP32 67 TFLOPS, 80GB, 3.35 TB/s.
    Hardware("h100-sxm", _rational("989.5") * TERA, 67 * TERA, 3350 * GIGA, 80 * GiB,
             "NVIDIA H100 datasheet (SXM)"),
    # same datasheet, H100 PCIe: 1,513 TFLOPS BF16 with sparsity, FP32 51 TFLOPS, 80GB, 2 TB/s.
    Hardware("h100-pcie", _rational("756.5") * TERA, 51 * TERA, 2000 * GIGA, 80 * GiB,
             "NVIDIA H100 datasheet (PCIe)"),
    # NVIDIA H200 Tensor Core GPU datasheet: H200 SXM BF16 1,979 TFLOPS with sparsity, FP32 67
    # TFLOPS, 141GB HBM3e, 4.8 TB/s.
    Hardware("h200", _rational("989.5") * TERA, 67 * TERA, 4800 * GIGA, 141 * GiB,
             "NVIDIA H200 datasheet (SXM)"),
    # NVIDIA L4 Tensor Core GPU datasheet: BF16 242 TFLOPS with sparsity, FP32 30.3 TFLOPS,
    # 24GB GDDR6, 300 GB/s.
    Hardware("l4", 121 * TERA, _rational("30.3") * TERA, 300 * GIGA, 24 * GiB,
             "NVIDIA L4 datasheet"),
    # NVIDIA A10 Tensor Core GPU datasheet: BF16 125 TFLOPS (250 with sparsity), FP32 31.2
    # TFLOPS, 24GB GDDR6, 600 GB/s.
    Hardware("a10", 125 * TERA, _rational("31.2") * TERA, 600 * GIGA, 24 * GiB,
             "NVIDIA A10 datasheet"),
    # AMD Instinct MI300X data sheet: peak BF16 1307.4 TFLOPS dense (2614.9 with sparsity), FP32
    # 163.4 TFLOPS, 192GB HBM3, 5.3 TB/s.
    Hardware("mi300x", _rational("1307.4") * TERA, _rational("163.4") * TERA, 5300 * GIGA,
             192 * GiB, "AMD Instinct MI300X data sheet"),
)}

SPEC_FIELDS = {"name": str, "peak_flops_bf16": "number", "peak_flops_fp32": "number",
               "memory_bandwidth": "number", "memory_capacity": "number"}


def hardware_names() -> list[str]:
    return list(HARDWARE)


def get_hardware(name: str, extra: dict[str, Hardware] | None = None) -> Hardware:
    """The hardware called ``name`` (case-insensitive), from ``extra`` (a spec file's) or the table."""
    table = {**HARDWARE, **(extra or {})}
    key = name.lower()
    if key not in table:
        raise BlockalgError(f"unknown hardware '{name}' (known: {', '.join(table)})")
    return table[key]


def load_hardware_spec(path) -> dict[str, Hardware]:
    """Hardware from a JSON file: one object, or a list of objects, each with ``name``,
    ``peak_flops_bf16``, ``peak_flops_fp32`` (dense FLOP/s), ``memory_bandwidth`` (bytes/s) and
    ``memory_capacity`` (bytes); ``source`` is optional."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise BlockalgError(f"{path}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise BlockalgError(f"{path}: not valid JSON ({e})") from None
    entries = data if isinstance(data, list) else [data]
    if not entries:
        raise BlockalgError(f"{path}: no hardware in the file")
    result = {}
    for i, entry in enumerate(entries):
        hw = _spec_entry(entry, f"{path}: entry {i}" if isinstance(data, list) else str(path))
        result[hw.name.lower()] = hw
    return result


def _spec_entry(entry, where: str) -> Hardware:
    if not isinstance(entry, dict):
        raise BlockalgError(f"{where}: a hardware spec is an object with {', '.join(SPEC_FIELDS)}")
    unknown = set(entry) - set(SPEC_FIELDS) - {"source"}
    if unknown:
        raise BlockalgError(f"{where}: unknown field '{sorted(unknown)[0]}' "
                            f"(known: {', '.join(SPEC_FIELDS)}, source)")
    values = {}
    for field, kind in SPEC_FIELDS.items():
        if field not in entry:
            raise BlockalgError(f"{where}: missing '{field}'")
        value = entry[field]
        if kind is str:
            if not isinstance(value, str) or not value.strip():
                raise BlockalgError(f"{where}: 'name' must be a non-empty string")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
                or value != value or value == float("inf"):
            raise BlockalgError(f"{where}: '{field}' must be a positive number, not {value!r}")
        values[field] = value if kind is str else sp.Rational(str(value))
    source = entry.get("source", "")
    if not isinstance(source, str):
        raise BlockalgError(f"{where}: 'source' must be a string")
    return Hardware(values["name"].strip(), values["peak_flops_bf16"], values["peak_flops_fp32"],
                    values["memory_bandwidth"], values["memory_capacity"], source)


def time_bound(flops, nbytes, hw: Hardware, dtype: str) -> sp.Rational:
    """Seconds at least: max(FLOPs / peak, bytes / bandwidth), exact."""
    return sp.Max(sp.Rational(flops) / sp.Rational(hw.peak(dtype)),
                  sp.Rational(nbytes) / sp.Rational(hw.bandwidth))


def bound_kind(flops, nbytes, hw: Hardware, dtype: str) -> str:
    """``"compute"`` or ``"memory"``: which side of the roofline bounds the time."""
    return "compute" if sp.Rational(flops) / sp.Rational(hw.peak(dtype)) >= \
        sp.Rational(nbytes) / sp.Rational(hw.bandwidth) else "memory"


def ridge_point(hw: Hardware, dtype: str) -> sp.Rational:
    """The arithmetic intensity (FLOPs per byte) where the roofline turns: peak / bandwidth."""
    return sp.Rational(hw.peak(dtype)) / sp.Rational(hw.bandwidth)


def training_roofline(memory: dict, hw: Hardware, dtype: str) -> dict:
    """Whether a training step fits (``peak_training`` ≤ capacity) and its lower bound in time:
    ``step_flops`` at the peak, or every state and saved activation read once at the bandwidth."""
    moved = sum(memory[k] for k in ("weights", "gradients", "optimizer", "activations"))
    seconds = time_bound(memory["step_flops"], moved, hw, dtype)
    return {"hardware": hw.name, "fits": bool(memory["peak_training"] <= hw.capacity),
            "capacity": _plain(hw.capacity), "step_time_s": float(seconds),
            "bound": bound_kind(memory["step_flops"], moved, hw, dtype)}


def inference_roofline(inference: dict, batch: int, hw: Hardware, dtype: str) -> dict:
    """Whether the weights and the cache fit, the prefill's least time (its FLOPs, or the
    weights read and the cache written) and the decode step's (its FLOPs or bytes), hence an
    upper bound on tokens per second (``batch`` tokens per step)."""
    prefill = time_bound(inference["prefill_flops"], inference["weights"] + inference["kv_cache"], hw, dtype)
    decode = time_bound(inference["decode_flops_per_token"], inference["decode_bytes_per_token"], hw, dtype)
    return {"hardware": hw.name,
            "fits": bool(inference["weights"] + inference["kv_cache"] <= hw.capacity),
            "capacity": _plain(hw.capacity), "prefill_time_s": float(prefill),
            "decode_time_s": float(decode), "decode_tokens_per_s": float(batch / decode),
            "decode_bound": bound_kind(inference["decode_flops_per_token"],
                                       inference["decode_bytes_per_token"], hw, dtype),
            "ridge_point": float(ridge_point(hw, dtype))}
