"""What the hardware can do: cores, device names, peak memory and peak FLOP/s for MFU.

On CUDA the peak is the card's dense bf16 tensor-core figure from its data sheet. On the CPU
there is no such figure to trust, so the peak is measured on the spot with a float32 matmul
and cached per processor, thread count and torch version.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from trainer.atomic import write_json_atomic

# Dense bf16 tensor-core TFLOP/s (no sparsity), matched against torch's device name; the
# more specific names come first.
_CUDA_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.5),
    ("H200", 989.5),
    ("GH200", 989.5),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.1),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("RTX 4090", 165.2),
    ("RTX 3090", 71.0),
    ("RTX A6000", 154.8),
)


# glibc's mallopt parameters, and the values that keep freed memory for reuse.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's largest: blocks up to it come from the heap
_TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for the next allocation instead of handing it back.

    A training step frees and allocates the same activation-sized blocks over and over; by
    default glibc returns them to the kernel, and every step faults them in again (on two CPU
    cores, about 1,700 page faults and 5 ms of system time per step of the default script).
    Returns whether the setting took (False off Linux or without glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # musl and others: no mallopt
    return bool(
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
        and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
    )


def available_cores() -> int:
    """The cores this process may run on (respects taskset and container limits)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model_name()


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_device_memory_mb() -> float:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    return 0.0


def reset_peak_device_memory() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def cuda_peak_flops(name: str) -> float | None:
    """The data-sheet dense bf16 peak for a CUDA device name, or None for an unknown card."""
    for fragment, tflops in _CUDA_BF16_TFLOPS:
        if fragment in name:
            return tflops * 1e12
    return None


def measure_cpu_peak_flops(threads: int | None = None, seconds: float = 0.5) -> float:
    """float32 matmul throughput of this CPU, measured now: the ceiling for CPU MFU."""
    if threads:
        torch.set_num_threads(threads)
    size = 1024
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    for _ in range(3):  # warm up the kernels and the caches
        a @ b
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    elapsed = time.perf_counter() - start
    return 2.0 * size**3 * count / elapsed


def cpu_peak_flops(cache_dir: Path, at_least: float = 0.0) -> float:
    """The measured CPU peak, cached so that only the first run on a machine pays for it.

    A run that achieved more than the cached peak (``at_least``) shows that the peak was
    measured while the machine was busy: it is measured again, and the higher figure kept."""
    threads = torch.get_num_threads()
    key = f"{cpu_model_name()}|{threads}|{torch.__version__}"
    path = cache_dir / "cpu_peak_flops.json"
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    known = cached.get(key)
    if isinstance(known, (int, float)) and known >= at_least:
        return float(known)
    peak = max(measure_cpu_peak_flops(threads), at_least, float(known or 0.0))
    cached[key] = peak
    try:
        write_json_atomic(path, cached)
    except OSError as exc:  # a read-only cache only costs the next run another measurement
        print(f"warning: the measured peak was not kept in {path}: {exc}", file=sys.stderr)
    return peak


def peak_flops(device: torch.device, cache_dir: Path, achieved: float = 0.0) -> float | None:
    """The peak MFU is measured against; ``achieved`` is what the run reached (FLOP/s)."""
    if device.type == "cuda":
        return cuda_peak_flops(device_name(device))
    return cpu_peak_flops(cache_dir, at_least=achieved)
