"""Machine facts and small measurement helpers shared by the benchmark scripts.

Every benchmark states the machine it ran on (CPU model, cores, the ISA flags that decide which
onnxruntime kernels run and the capabilities OpenVINO reports, library versions), because absolute
timings only mean something next to them. Speed claims are made as ratios against a baseline timed in the same run.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
from importlib import metadata
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

# /proc/cpuinfo flags that select onnxruntime's MLAS kernels (float GEMM / conv: AVX2+FMA or AVX-512;
# int8 GEMM of quantized models: VNNI, as AVX512-VNNI or the VEX-coded AVX-VNNI of client cores).
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8")

# Of those, the ones onnxruntime's CPU provider can use: it has no bf16 kernels on x86 (AMX serves its
# int8 GEMM only), so avx512_bf16 goes to OpenVINO alone.
ORT_ISA_FLAGS = tuple(f for f in ISA_FLAGS if f != "avx512_bf16")

PERCENTILES = (50, 90, 99)


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_facts() -> dict:
    """CPU, cores, ISA flags, memory, OS and library versions, as a JSON-ready dict."""
    model, flags = _cpuinfo()
    facts: dict = {
        "cpu_model": model,
        "arch": platform.machine(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "physical_cores": None,
        "isa": {f: f in flags for f in ISA_FLAGS},
        "memory_mib": None,
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "os": platform.platform(),
        "python": sys.version.split()[0],
    }
    try:
        import psutil

        facts["physical_cores"] = psutil.cpu_count(logical=False)
        facts["memory_mib"] = round(psutil.virtual_memory().total / 2**20)
    except ImportError:
        pass
    try:
        import onnxruntime as ort

        facts["onnxruntime"] = ort.__version__
        facts["onnxruntime_providers"] = list(ort.get_available_providers())
    except ImportError:
        facts["onnxruntime"], facts["onnxruntime_providers"] = None, []
    facts["onnxruntime_isa"] = [f for f in ORT_ISA_FLAGS if f in flags]
    facts.update(openvino_facts())
    facts["numpy"] = np.__version__
    facts["opencv"] = _version("opencv-python-headless") or _version("opencv-python")
    facts["pycocotools"] = _version("pycocotools")
    return facts


def openvino_facts() -> dict:
    """OpenVINO's version, devices and what its CPU plugin says it can use (None / [] when not installed):
    ``OPTIMIZATION_CAPABILITIES`` (FP32, BF16, FP16, INT8, ...) and its default inference precision."""
    facts: dict = {"openvino": None, "openvino_devices": [], "openvino_cpu_capabilities": [],
                   "openvino_cpu_precision": None}
    try:
        import openvino as ov
    except ImportError:
        return facts
    facts["openvino"] = ov.__version__.split("-")[0]
    try:
        core = ov.Core()
        facts["openvino_devices"] = list(core.available_devices)
        if "CPU" in facts["openvino_devices"]:
            facts["openvino_cpu_capabilities"] = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
            facts["openvino_cpu_precision"] = core.get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    except Exception:  # noqa: BLE001 - a broken plugin must not stop a benchmark
        pass
    return facts


def format_machine(facts: dict) -> str:
    """Three human lines about the machine: CPU, software, and what each inference engine can use."""
    isa = facts.get("isa", {})
    shown = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in isa]
    flags = " ".join(f"{f}={'yes' if isa[f] else 'no'}" for f in shown)
    line1 = (f"machine: {facts.get('cpu_model')} | {facts.get('usable_cores')} usable / {facts.get('logical_cores')} "
             f"logical cores | load {facts.get('load_avg_1m')} | {flags}")
    line2 = (f"software: python {facts.get('python')}, onnxruntime {facts.get('onnxruntime')} "
             f"{facts.get('onnxruntime_providers')}, numpy {facts.get('numpy')}, "
             f"opencv {facts.get('opencv')}")
    ort_isa = " ".join(facts.get("onnxruntime_isa") or []) or "-"
    line3 = f"engines: onnxruntime {facts.get('onnxruntime')} uses {ort_isa}"
    if facts.get("openvino"):
        line3 += (f" | openvino {facts['openvino']} on {','.join(facts.get('openvino_devices') or []) or '-'}, CPU "
                  f"capabilities {' '.join(facts.get('openvino_cpu_capabilities') or []) or '-'}, default precision "
                  f"{facts.get('openvino_cpu_precision')}")
    else:
        line3 += " | openvino not installed"
    return line1 + "\n" + line2 + "\n" + line3


# ------------------------------------------------------------------------------------------------ memory
def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark (Linux >= 4.0: write 5 to clear_refs). False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB since start or the last successful reset."""
    hwm = _status_kib("VmHWM")
    if hwm is None:
        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return hwm / 1024


def current_rss_mib() -> float:
    rss = _status_kib("VmRSS")
    return (rss or 0) / 1024


# ------------------------------------------------------------------------------------------------ statistics
def summarize(samples_ms: Sequence[float] | Iterable[float]) -> dict:
    """{count, mean, p50, p90, p99, min, max} of a list of ms values (NaN-free; empty -> zeros)."""
    a = np.asarray(list(samples_ms), dtype=np.float64)
    if a.size == 0:
        return {"count": 0, "mean": 0.0, "min": 0.0, "max": 0.0, **{f"p{p}": 0.0 for p in PERCENTILES}}
    out = {"count": int(a.size), "mean": float(a.mean()), "min": float(a.min()), "max": float(a.max())}
    for p, v in zip(PERCENTILES, np.percentile(a, PERCENTILES)):
        out[f"p{p}"] = float(v)
    return out


def ratio(theirs: float, ours: float) -> float | None:
    """theirs / ours, or None when ours is zero."""
    return float(theirs) / float(ours) if ours > 0 else None


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Plain fixed-width table (first column left-aligned, the rest right-aligned)."""
    cells = [[str(h) for h in header]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for k, row in enumerate(cells):
        parts = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in range(1, len(row))]
        lines.append("  ".join(parts).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        if abs(v) >= 0.1:
            return f"{v:.2f}"
        return f"{v:.3f}"
    return str(v)


def runtime_facts() -> dict:
    """How this tree's runtime is built: its version and its decode kernels ("cython": ``runtime.kernels._decode``,
    whose vector loops run the AVX-512, AVX2 or baseline clone the CPU supports; None: not built)."""
    facts: dict = {"version": None, "decode_backend": None}
    try:
        import runtime

        facts["version"] = getattr(runtime, "__version__", None)
    except ImportError:
        return facts
    try:
        from runtime.kernels import _decode  # noqa: F401

        facts["decode_backend"] = "cython"
    except ImportError:
        pass
    return facts


def int_list(text: str) -> list[int]:
    """argparse type: comma-separated positive integers, e.g. "1,4,8"."""
    import argparse

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values
