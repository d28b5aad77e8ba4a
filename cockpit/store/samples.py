"""What a GPU and a training's processes read at one moment: the records the engine's
monitor writes into the journal once a second and the screens draw their gauges from.

A reading never crashes its reader: one metric that could not be read is `None` ("N/A"), and
a machine without an NVIDIA GPU is the normal state `no_gpu`, not an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

GPU_OK = "ok"
GPU_NO_GPU = "no_gpu"
GPU_ERROR = "error"
GPU_STATES = (GPU_OK, GPU_NO_GPU, GPU_ERROR)


def optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class GpuReading:
    """One GPU at one moment. Every metric is None when it could not be read this time."""

    index: int  # NVML's index of the device (not CUDA's, which CUDA_VISIBLE_DEVICES remaps)
    name: str
    uuid: str | None
    utilization_percent: float | None = None
    memory_used_mb: float | None = None  # MiB
    memory_total_mb: float | None = None  # MiB
    temperature_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    # GPU memory held by the monitored process tree on this GPU; None when no tree was
    # given or NVML could not list the processes.
    process_memory_mb: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly values (None stays None, i.e. null)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GpuReading:
        """The inverse of `to_dict()`: rebuilds a reading stored in the journal."""
        return cls(
            index=int(data["index"]),
            name=str(data["name"]),
            uuid=None if data.get("uuid") is None else str(data["uuid"]),
            utilization_percent=optional_float(data.get("utilization_percent")),
            memory_used_mb=optional_float(data.get("memory_used_mb")),
            memory_total_mb=optional_float(data.get("memory_total_mb")),
            temperature_c=optional_float(data.get("temperature_c")),
            power_w=optional_float(data.get("power_w")),
            power_limit_w=optional_float(data.get("power_limit_w")),
            process_memory_mb=optional_float(data.get("process_memory_mb")),
        )


@dataclass(frozen=True)
class GpuSnapshot:
    """All monitored GPUs at one moment, or why there are none.

    `state` is `ok` (readings in `gpus`), `no_gpu` (no driver or no device: a normal state,
    `message` says which) or `error` (NVML failed unexpectedly, `message` says how).
    """

    state: str
    message: str = ""
    gpus: tuple[GpuReading, ...] = ()

    def __post_init__(self) -> None:
        if self.state not in GPU_STATES:
            raise ValueError(
                f"GPU state must be one of {', '.join(GPU_STATES)}, not {self.state!r}"
            )

    @classmethod
    def ok(cls, gpus: Iterable[GpuReading], message: str = "") -> GpuSnapshot:
        """Readings of one or more GPUs."""
        return cls(GPU_OK, message, tuple(gpus))

    @classmethod
    def no_gpu(cls, message: str = "no NVIDIA GPU") -> GpuSnapshot:
        """No driver or no device: nothing to show, nothing wrong."""
        return cls(GPU_NO_GPU, message)

    @classmethod
    def error(cls, message: str) -> GpuSnapshot:
        """NVML failed in a way it should not have."""
        return cls(GPU_ERROR, message)

    @property
    def available(self) -> bool:
        """Whether there are readings to show."""
        return self.state == GPU_OK

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly values."""
        return {
            "state": self.state,
            "message": self.message,
            "gpus": [gpu.to_dict() for gpu in self.gpus],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GpuSnapshot:
        """The inverse of `to_dict()`."""
        return cls(
            state=str(data["state"]),
            message=str(data.get("message", "")),
            gpus=tuple(GpuReading.from_dict(gpu) for gpu in data.get("gpus", ())),
        )


@dataclass(frozen=True)
class ProcessReading:
    """What a process tree (root and all its descendants) costs the host right now.

    `pids` is how many processes were read. `cpu_percent` is the sum over the tree in
    percent of one CPU (a tree busy on 4 cores reads about 400), over the time since the
    previous reading; None on the first reading, which has no interval yet. `rss_mb` is the
    sum of resident memory in MiB (pages shared between processes count once per process).
    Both are None when no process of the tree was alive.
    """

    pids: int
    cpu_percent: float | None
    rss_mb: float | None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly values."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProcessReading:
        """The inverse of `to_dict()`."""
        return cls(
            pids=int(data["pids"]),
            cpu_percent=optional_float(data.get("cpu_percent")),
            rss_mb=optional_float(data.get("rss_mb")),
        )


@dataclass(frozen=True)
class MonitorSample:
    """One tick of the monitor: when, the GPUs, and the training's process tree (None when
    no training is being followed)."""

    at: float  # Unix time, seconds
    gpu: GpuSnapshot
    process: ProcessReading | None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly values, as the journal stores them."""
        return {
            "at": self.at,
            "gpu": self.gpu.to_dict(),
            "process": None if self.process is None else self.process.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MonitorSample:
        """The inverse of `to_dict()`: a sample read back from the journal."""
        process = data.get("process")
        return cls(
            at=float(data["at"]),
            gpu=GpuSnapshot.from_dict(data["gpu"]),
            process=None if process is None else ProcessReading.from_dict(process),
        )
