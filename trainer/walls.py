"""What the confined training process may touch: the paths it may read, write and use as
devices, and the environment it starts with.

One owner for these, because two processes are confined with them: the training itself and
the device probe (trainer.probe), which must run in exactly the training's confinement to
vouch for it.
"""

from __future__ import annotations

import glob
import os
import re
import sys
from pathlib import Path
from typing import Any

import trainer

# What the training process may read besides Python, PyTorch, its script and its split.
SYSTEM_READ = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/etc", "/opt",
               "/proc", "/sys")  # fmt: skip
# NVIDIA's driver reads these in cuInit (the UVM part too); listed apart so that they stay
# readable wherever /proc is narrowed.
NVIDIA_PROC_READ = ("/proc/driver/nvidia", "/proc/driver/nvidia-uvm")
DEVICE_FILES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
# Every NVIDIA node (nvidia0.., nvidiactl, nvidia-uvm, nvidia-uvm-tools, which driver 570
# opens, nvidia-modeset) and the MIG capabilities folder nvidia-caps/; DRM render nodes.
DEVICE_PATTERNS = ("/dev/nvidia*", "/dev/dri")

# The training's environment is an allow-list: a token or password in the researcher's shell
# must not reach agent-written code. These names pass as they are...
ENVIRONMENT_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TERM", "PYTHONPATH",
    "LD_LIBRARY_PATH", "SSL_CERT_FILE",
    # Diagnostic knobs the confined process reads, and the bench's reference script's size.
    "COCKPIT_LANDLOCK_ABI_MAX", "COCKPIT_PROBE_THREAD_NAMES", "COCKPIT_BENCH_TEMPLATE",
})  # fmt: skip
# ... and so do these families: locale, the GPU stack, PyTorch and its compilers, the math
# libraries' thread settings.
ENVIRONMENT_PREFIXES = (
    "LC_", "CUDA_", "NVIDIA_", "CUBLAS_", "CUDNN_", "NCCL_", "PYTORCH_", "TORCH_",
    "TORCHINDUCTOR_", "TRITON_", "OMP_", "MKL_", "KMP_", "OPENBLAS_", "GOMP_",
)  # fmt: skip
# A name that still looks like a secret is dropped even in an allowed family.
_SECRET = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_?KEY", re.IGNORECASE)


def unique_paths(paths: list[str]) -> list[str]:
    """The absolute paths that exist, resolved, in order, each once."""
    seen: dict[str, None] = {}
    for path in paths:
        if path and os.path.isabs(path) and os.path.exists(path):
            seen.setdefault(os.path.realpath(path), None)
    return list(seen)


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def carve(grants: list[str], hidden: list[str]) -> list[str]:
    """``grants`` (trees the training may read) less everything beneath ``hidden``: a tree
    that holds a hidden path is replaced by its entries, down to the hidden path's siblings.
    Landlock only allows, so a hole in a tree is made of what surrounds it. Entries are taken
    at their real paths, so a symbolic link into a hidden folder grants nothing."""
    folders = [os.path.realpath(path) for path in hidden]
    carved: list[str] = []
    seen: set[str] = set()

    def visit(path: str) -> None:
        real = os.path.realpath(path)
        if real in seen or any(_within(real, folder) for folder in folders):
            return
        seen.add(real)
        if not any(_within(folder, real) for folder in folders) or not os.path.isdir(real):
            carved.append(real)
            return
        try:
            names = sorted(os.listdir(real))
        except OSError:
            return  # unreadable here: nothing of it is granted
        for name in names:
            visit(os.path.join(real, name))

    for grant in grants:
        visit(grant)
    return unique_paths(carved)


def read_paths(
    script: Path | None, train_path: Path | None, hidden: list[str] | tuple[str, ...] = ()
) -> list[str]:
    """What the training process may read: the system, Python and its packages (not the
    current folder, which is the workspace), the trainer, its script and the training split;
    nothing beneath ``hidden`` (the corpus's held-out documents, `CorpusSpec.hidden`)."""
    here = os.path.realpath(os.getcwd())
    python = [p for p in sys.path if p and os.path.realpath(p) != here]
    granted = unique_paths(
        [
            *SYSTEM_READ,
            *NVIDIA_PROC_READ,
            sys.prefix,
            sys.base_prefix,
            sys.exec_prefix,
            sys.base_exec_prefix,
            *python,
            str(Path(trainer.__file__).parent),
            str(script or ""),
            str(train_path or ""),
        ]
    )
    return carve(granted, list(hidden)) if hidden else granted


def device_paths() -> list[str]:
    """The device files the training may use: the basic ones and the GPU's (CUDA, NVML)."""
    found = (p for pattern in DEVICE_PATTERNS for p in sorted(glob.glob(pattern)))
    return unique_paths([*DEVICE_FILES, *found])


def nvidia_present(devices: list[str]) -> bool:
    """Whether an NVIDIA device is among ``devices``: only then does the confinement grant
    what NVIDIA's driver needs in /proc."""
    return any(os.path.basename(path).startswith("nvidia") for path in devices)


def walls_for(
    script: Path | None,
    train_path: Path | None,
    work_dir: Path,
    compile_cache: Path,
    hidden: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """The fields of a `trainer.confined.TrainingSpec` that say what the process may touch:
    the training's, and the device probe's, which must be the same to vouch for it."""
    devices = device_paths()
    return {
        "read": read_paths(script, train_path, hidden),
        "read_write": unique_paths([str(work_dir), str(compile_cache)]),
        "devices": devices,
        "nvidia": nvidia_present(devices),
    }


def allowed_environment(environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """The part of ``environ`` a training may see (`ENVIRONMENT_NAMES`, `ENVIRONMENT_PREFIXES`,
    nothing that looks like a secret)."""
    return {
        name: value
        for name, value in environ.items()
        if (name in ENVIRONMENT_NAMES or name.startswith(ENVIRONMENT_PREFIXES))
        and not _SECRET.search(name)
    }


def training_environment(work_dir: Path, compile_cache: Path) -> dict[str, str]:
    """The training process's environment: the allowed part of this one, a private temporary
    folder, and the compiler caches (Inductor, Triton, CUDA) in one folder that survives from
    run to run."""
    tmp = work_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return {
        **allowed_environment(os.environ),
        "TMPDIR": str(tmp),
        "TORCHINDUCTOR_CACHE_DIR": str(compile_cache / "inductor"),
        "TRITON_CACHE_DIR": str(compile_cache / "triton"),
        "TRITON_HOME": str(compile_cache),
        "CUDA_CACHE_PATH": str(compile_cache / "nv"),
        "XDG_CACHE_HOME": str(compile_cache / "xdg"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
