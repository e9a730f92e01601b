"""What the machine is and what it could do at best: CPU/GPU description, peak FLOP/s, memory.

Achieved TFLOP/s means little without the ceiling next to it. No library reports a CPU's peak, so
`cpu_peak_tflops` estimates it from /proc/cpuinfo (cores x clock x FLOPs per cycle for the widest
vector/matrix unit the flags show); it is labelled an estimate wherever it is shown. GPU peaks are
the vendors' published dense figures for the few cards we know.
"""

from __future__ import annotations

import os
import platform
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CpuInfo", "cpu_info", "cpu_peak_tflops", "gpu_peak_tflops", "rss_mb", "peak_rss_mb", "total_ram_gb"]

# Published dense (no sparsity) peaks in TFLOP/s, by substring of the CUDA device name.
_GPU_PEAKS: dict[str, dict[str, float]] = {
    "H200": {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0},
    "H100": {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0},  # SXM; PCIe is ~756 bf16
    "A100": {"bfloat16": 312.0, "float16": 312.0, "float32": 19.5},
    "L40S": {"bfloat16": 362.0, "float16": 362.0, "float32": 91.6},
    "L4": {"bfloat16": 121.0, "float16": 121.0, "float32": 30.3},
}


@dataclass(frozen=True)
class CpuInfo:
    model: str
    vendor: str
    cores: int  # logical CPUs this process may use
    mhz: float | None
    flags: frozenset[str]


def _cpuinfo_text() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return ""


def cpu_info() -> CpuInfo:
    """Model name, vendor, usable cores, current clock and flags (Linux /proc; best effort elsewhere)."""
    fields: dict[str, str] = {}
    for line in _cpuinfo_text().splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        mhz: float | None = float(fields["cpu MHz"])
    except (KeyError, ValueError):
        mhz = None
    return CpuInfo(model=fields.get("model name") or platform.processor() or "unknown",
                   vendor=fields.get("vendor_id", "unknown"), cores=cores, mhz=mhz,
                   flags=frozenset(fields.get("flags", "").split()))


def cpu_peak_tflops(dtype: str, info: CpuInfo | None = None, threads: int | None = None) -> dict[str, Any] | None:
    """Estimated peak of the CPU for ``dtype`` ("float32" or "bfloat16"): threads x clock x FLOPs/cycle.

    FLOPs per cycle and core, assuming two FMA pipes: AVX-512 on Intel 2 x 16 x 2 = 64 (fp32); AMD Zen 4
    runs AVX-512 on 256-bit units, so 32; AVX2 32. bf16 doubles that with AVX512-BF16 dot products, and
    AMX-BF16 gives 1024. Returns None when the clock is unknown.
    """
    info = info or cpu_info()
    if info.mhz is None:
        return None
    flags = info.flags
    if "avx512f" in flags:
        fp32 = 32 if info.vendor == "AuthenticAMD" else 64
        unit = "AVX-512" + (" (256-bit datapath)" if fp32 == 32 else "")
    elif "avx2" in flags and "fma" in flags:
        fp32, unit = 32, "AVX2/FMA"
    elif "asimd" in flags:
        fp32, unit = 16, "NEON"
    else:
        fp32, unit = 8, "SSE"
    per_cycle, note = fp32, unit
    if dtype == "bfloat16":
        if "amx_bf16" in flags:
            per_cycle, note = 1024, "AMX-BF16"
        elif "avx512_bf16" in flags:
            per_cycle, note = 2 * fp32, f"{unit} + AVX512-BF16"
        else:
            note = f"{unit}, no native bf16"
    n = threads or info.cores
    tflops = n * info.mhz * 1e6 * per_cycle / 1e12
    return {"tflops": tflops, "estimate": True,
            "basis": f"{n} cores x {info.mhz / 1000:.2f} GHz x {per_cycle} FLOP/cycle ({note})"}


def gpu_peak_tflops(device_name: str, dtype: str) -> dict[str, Any] | None:
    """Published dense peak for known NVIDIA cards (None for others)."""
    for key, peaks in _GPU_PEAKS.items():
        if key in device_name and dtype in peaks:
            return {"tflops": peaks[dtype], "estimate": False, "basis": f"{key} published dense {dtype} peak"}
    return None


def rss_mb() -> float | None:
    """Current resident set size (/proc/self/statm), None where there is no /proc."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if platform.system() == "Darwin" else peak / 1024


def total_ram_gb() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None
