"""The device a run trains on: `auto` resolved to CUDA or the CPU, and a GPU that the driver
shows but torch cannot use refused rather than quietly trained around."""

from __future__ import annotations

import glob
import os

import torch

from trainer.outcomes import HarnessStop, Outcome


def visible_gpus() -> list[str]:
    """The NVIDIA GPUs the driver shows (their PCI addresses), whether torch can use them or
    not; none where CUDA_VISIBLE_DEVICES hides them on purpose."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return []
    return sorted(os.path.basename(p) for p in glob.glob("/proc/driver/nvidia/gpus/*"))


def resolve_device(name: str, gpus: list[str] | None = None) -> torch.device:
    """`auto` is CUDA when a GPU is usable, else the CPU; but a GPU the driver shows that torch
    cannot use is an error, never a quiet move to the CPU. Asking for CUDA without one is an
    error. ``gpus``: the GPUs the driver shows (default: `visible_gpus`)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        shown = visible_gpus() if gpus is None else gpus
        if shown:
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise HarnessStop(
                Outcome.SETUP,
                f"the driver shows {len(shown)} NVIDIA GPU(s) ({', '.join(shown)}) but torch "
                f"{torch.__version__} ({build}) cannot use them; install a torch build for this "
                "driver's CUDA (`cockpit doctor` compares them), or set [trainer] device = "
                '"cpu" to train on the CPU on purpose',
            )
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise HarnessStop(
            Outcome.SETUP, f"unknown device {name!r}; use auto, cpu or cuda[:N]"
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HarnessStop(
            Outcome.SETUP,
            "device cuda was asked for but no CUDA GPU is usable (no driver, no device, or a "
            "CPU-only torch build); use --device cpu",
        )
    if device.type not in ("cpu", "cuda"):
        raise HarnessStop(
            Outcome.SETUP, f"device {name!r} is not supported; use auto, cpu or cuda[:N]"
        )
    return device
