"""The checks of torch and the GPUs: the installed torch build against the GPUs NVML sees and
the driver's CUDA version, and the GPUs themselves."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cockpit.doctor.verdicts import FAIL, PASS, WARN, Check
from cockpit.store.samples import GpuSnapshot


@dataclass(frozen=True)
class TorchBuild:
    """The installed torch: its version, the CUDA it was built for (None: a CPU build), and
    whether it can use a GPU here (``error`` says why not, when asking failed)."""

    version: str
    cuda: str | None
    cuda_available: bool = False
    device_count: int = 0
    error: str = ""


@dataclass(frozen=True)
class DriverInfo:
    """The NVIDIA driver as NVML reports it: its version and the newest CUDA it supports."""

    version: str | None
    cuda: tuple[int, int] | None

    @property
    def cuda_text(self) -> str | None:
        return None if self.cuda is None else f"{self.cuda[0]}.{self.cuda[1]}"


def _version_pair(text: str | None) -> tuple[int, int] | None:
    """ "12.4" as (12, 4); None for anything else."""
    if not text:
        return None
    parts = text.split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return None


def read_torch_build() -> TorchBuild | None:
    """The installed torch, or None when there is none. Asks CUDA whether a GPU is usable,
    which on a GPU box starts the driver (a second or so)."""
    try:
        import torch
    except ImportError:
        return None
    cuda = torch.version.cuda
    if cuda is None:
        return TorchBuild(torch.__version__, None)
    try:
        available = torch.cuda.is_available()
        count = torch.cuda.device_count() if available else 0
    except Exception as exc:  # a broken driver raises from here: report it, do not crash
        return TorchBuild(torch.__version__, cuda, error=str(exc) or type(exc).__name__)
    return TorchBuild(torch.__version__, cuda, available, count)


def read_driver() -> DriverInfo | None:
    """The driver's version and CUDA version through NVML; None without a driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None

    def value(function: Callable[[], Any]) -> Any:
        try:
            return function()
        except Exception:  # one value NVML cannot give is unknown, as in the monitor
            return None

    try:
        raw = value(pynvml.nvmlSystemGetDriverVersion)
        number = value(pynvml.nvmlSystemGetCudaDriverVersion)  # 12040 is CUDA 12.4
    finally:
        value(pynvml.nvmlShutdown)
    version = raw.decode() if isinstance(raw, bytes) else None if raw is None else str(raw)
    cuda = None if number is None else (int(number) // 1000, (int(number) % 1000) // 10)
    return DriverInfo(version, cuda)


TORCH_INDEX = "https://download.pytorch.org/whl"


def _cuda_torch_fix(driver: DriverInfo | None) -> str:
    """How to install a CUDA build of torch that this driver can run."""
    newest = driver.cuda_text if driver is not None else None
    limit = f" for CUDA {newest} or older (the driver's)" if newest else ""
    example = f"cu{newest.replace('.', '')}" if newest else "cu124"
    return (
        f"install a CUDA build of torch{limit}: pip install --force-reinstall torch "
        f"--index-url {TORCH_INDEX}/{example} (the builds there are listed on "
        "pytorch.org/get-started/locally)"
    )


def check_torch(
    build: TorchBuild | None, snapshot: GpuSnapshot, driver: DriverInfo | None
) -> Check:
    """The torch build against the GPUs NVML sees and the driver's CUDA version."""
    if build is None:
        return Check(
            "torch",
            FAIL,
            "torch is not installed: nothing can train",
            "pip install torch (a CUDA build on a GPU box, the CPU build elsewhere: "
            f"--index-url {TORCH_INDEX}/cpu)",
        )
    gpus = snapshot.gpus if snapshot.available else ()
    details: dict[str, Any] = {
        "version": build.version,
        "cuda": build.cuda,
        "cuda_available": build.cuda_available,
        "device_count": build.device_count,
        "driver_cuda": driver.cuda_text if driver is not None else None,
    }
    if build.cuda is None:
        if gpus:
            count = f"{len(gpus)} NVIDIA GPU{'s' if len(gpus) != 1 else ''}"
            return Check(
                "torch",
                FAIL,
                f"torch {build.version} is a CPU build, but NVML sees {count}: trainings "
                "would run on the CPU",
                _cuda_torch_fix(driver),
                details,
            )
        return Check(
            "torch",
            PASS,
            f"torch {build.version}, a CPU build: the right one without an NVIDIA GPU",
            details=details,
        )
    name = f"torch {build.version}, built for CUDA {build.cuda}"
    if not gpus:
        return Check(
            "torch", PASS, f"{name}; no NVIDIA GPU here, so it trains on the CPU", details=details
        )
    wanted = _version_pair(build.cuda)
    supported = driver.cuda if driver is not None else None
    supported_text = driver.cuda_text if driver is not None else None
    driver_name = f"driver {driver.version}" if driver and driver.version else "the driver"
    if wanted is not None and supported is not None and wanted > supported:
        update = f"update the NVIDIA driver to one for CUDA {build.cuda}, or " + _cuda_torch_fix(
            driver
        )
        if wanted[0] > supported[0]:
            return Check(
                "torch",
                FAIL,
                f"{name}, but {driver_name} supports CUDA {supported_text} at most: "
                "CUDA will not start",
                update,
                details,
            )
        return Check(
            "torch",
            WARN,
            f"{name}, newer than {driver_name}'s CUDA {supported_text}: it runs through "
            "CUDA's minor-version compatibility, but kernels compiled at run time may fail",
            update,
            details,
        )
    if not build.cuda_available:
        why = f": {build.error}" if build.error else ""
        return Check(
            "torch",
            FAIL,
            f"{name}, but it cannot use the GPU NVML sees{why}",
            "check that `nvidia-smi` works and that CUDA_VISIBLE_DEVICES (if set) names the "
            "GPUs; after a driver upgrade, reboot",
            details,
        )
    matched = f"; {driver_name} supports CUDA {supported_text}" if supported_text else ""
    return Check(
        "torch",
        PASS,
        f"{name}{matched}; torch sees {build.device_count} GPU"
        f"{'s' if build.device_count != 1 else ''}",
        details=details,
    )


def check_gpus(snapshot: GpuSnapshot, driver: DriverInfo | None) -> Check:
    """The GPUs as NVML reads them: names, memory, the driver."""
    if snapshot.state == "no_gpu":
        # The monitor says "no NVIDIA GPU (NVIDIA driver not found)": keep the why.
        why = snapshot.message.removeprefix("no NVIDIA GPU").strip(" ()")
        return Check(
            "gpus",
            WARN,
            "no NVIDIA GPU: trainings run on the CPU" + (f" ({why})" if why else ""),
            "nothing to do on a machine without a GPU; on a GPU box, install the NVIDIA driver "
            "until `nvidia-smi` lists the GPUs",
            {"state": snapshot.state},
        )
    if not snapshot.available:
        return Check(
            "gpus",
            FAIL,
            snapshot.message or "NVML failed",
            "check that `nvidia-smi` lists the GPUs (after a driver upgrade, reboot; without "
            "permission on /dev/nvidia*, add the user to the group that owns them)",
            {"state": snapshot.state},
        )
    names: dict[str, list[float | None]] = {}
    for gpu in snapshot.gpus:
        names.setdefault(gpu.name, []).append(gpu.memory_total_mb)
    parts = []
    for name, memories in names.items():
        known = [memory for memory in memories if memory is not None]
        memory = f", {max(known) / 1024:.0f} GiB" if known else ""
        parts.append(f"{len(memories)} x {name}{memory}")
    driver_text = ""
    if driver is not None and driver.version:
        driver_text = f"; driver {driver.version}"
        if driver.cuda_text:
            driver_text += f" (CUDA {driver.cuda_text})"
    summary = "; ".join(parts) + driver_text
    if snapshot.message:
        summary += f" ({snapshot.message})"
    return Check(
        "gpus",
        PASS,
        summary,
        details={
            "state": snapshot.state,
            "driver_version": driver.version if driver else None,
            "driver_cuda": driver.cuda_text if driver else None,
            "gpus": [
                {"index": gpu.index, "name": gpu.name, "memory_total_mb": gpu.memory_total_mb}
                for gpu in snapshot.gpus
            ],
        },
    )
