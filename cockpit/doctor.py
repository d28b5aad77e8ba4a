"""`cockpit doctor`: is this box ready for a night of research? One line per check.

Each check is a pure function of what was read (`check_torch`, `check_gpus`, `check_probe`,
`check_landlock`, `check_userns`, `check_disk`, `check_corpus`, `check_ollama`,
`check_terminal`) and gives a `Check`: its key, pass / warn / fail, a one-line summary and
the fix. The readings that feed them (NVML, torch, the confined device probe, a child process
that tries a user namespace, the disk, the corpus cache, Ollama, the terminal) are gathered by
`run_doctor`, which blocks for as long as they take: seconds, more when the device probe's
cache is cold. Nothing here raises for what it finds; a machine without an NVIDIA GPU is a
normal state with its own line, not a traceback.

The doctor passes when no check fails; warnings say what a night loses (speed, confinement,
the model's proposals) without stopping it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.names import MODEL_PROPOSERS
from cockpit.config import Settings
from cockpit.engine.monitor import GpuSource, default_gpu_source
from cockpit.store.paths import WorkspacePaths
from cockpit.store.samples import GpuSnapshot
from trainer import pidns

if TYPE_CHECKING:  # the probe imports torch: loaded when the probe runs
    from trainer.probe import DeviceCheck

PASS = "pass"
WARN = "warn"
FAIL = "fail"
STATUSES = (PASS, WARN, FAIL)

GB = 1e9
MIB = 2**20
WARN_FREE_GB = 5.0  # a night's runs, kept models and compiler caches take a few GB
FAIL_FREE_GB = 1.0
MIN_COLUMNS, MIN_LINES = 100, 30  # below this the cockpit's panels are cramped
# Encoding a corpus reads and writes every byte once: tens of MB a second on one core.
ENCODE_BYTES_PER_SECOND = 20e6
# Ollama holds a model's weights and its context cache: about a fifth more than the file.
MODEL_MEMORY_FACTOR = 1.2
# A model that takes more than this share of a GPU leaves a training too little of it.
MODEL_GPU_SHARE = 0.5
USERNS_TIMEOUT_SECONDS = 30.0
# The settings that let unprivileged processes have user namespaces, by distribution.
USERNS_SETTINGS = {
    "apparmor": "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",  # Ubuntu 23.10+
    "debian": "/proc/sys/kernel/unprivileged_userns_clone",
    "max": "/proc/sys/user/max_user_namespaces",
}
# Tries a user namespace with a network namespace in a fresh, single-threaded interpreter,
# exactly as a training confines itself, and prints what it got.
# Inside the user namespace, the PID namespace is tried too (trainer.pidns): it is what ends
# everything a training starts and hides the host's processes from it.
USERNS_PROBE = (
    "import json; from trainer import pidns; from trainer.confine import confine_network; "
    "said = confine_network('auto').to_dict(); "
    "said['pid_namespace_refused'] = pidns.refused() if said['network'] else None; "
    "print(json.dumps(said))"
)


@dataclass(frozen=True)
class Check:
    """The outcome of one check: ``status`` is pass, warn or fail; ``fix`` says what to do
    (on a pass, a tip or ""); ``details`` are the readings behind it, for ``--json``."""

    key: str
    status: str
    summary: str
    fix: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(
                f"a check's status is one of {', '.join(STATUSES)}, not {self.status!r}"
            )

    def line(self) -> str:
        """The check in one line, its fix at the end."""
        text = f"{self.status:<4}  {self.key:<8}  {self.summary}"
        if self.fix:
            text += f" | {'tip' if self.status == PASS else 'fix'}: {self.fix}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """key, status, summary and fix, then the details (which cannot replace those)."""
        head = {"key": self.key, "status": self.status, "summary": self.summary, "fix": self.fix}
        return {**head, **{name: value for name, value in self.details.items() if name not in head}}


def doctor_ok(checks: Sequence[Check]) -> bool:
    """Whether no check failed (warnings allowed)."""
    return all(check.status != FAIL for check in checks)


def doctor_json(checks: Sequence[Check], **extra: Any) -> dict[str, Any]:
    """What ``cockpit doctor --json`` prints."""
    return {"ok": doctor_ok(checks), **extra, "checks": [check.to_dict() for check in checks]}


def verdict(checks: Sequence[Check]) -> str:
    """The last line: ready or not, and how many warnings and failures."""
    failed = sum(check.status == FAIL for check in checks)
    warned = sum(check.status == WARN for check in checks)
    warnings = f"{warned} warning{'s' if warned != 1 else ''}"
    if failed:
        return f"not ready: {failed} check{'s' if failed != 1 else ''} failed, {warnings}"
    return f"ready: no check failed, {warnings}"


def _gb(amount_bytes: float) -> str:
    return f"{amount_bytes / GB:.1f} GB"


# ---------------------------------------------------------------------------------------------
# torch and the GPUs


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


# ---------------------------------------------------------------------------------------------
# confinement: the device probe, Landlock, user namespaces


def check_probe(result: DeviceCheck | None, error: str = "") -> Check:
    """The confined device probe: the device trainings use, and under which confinement."""
    if result is None:
        return Check(
            "probe",
            FAIL,
            f"the confined device probe did not run: {error}",
            'train on the CPU ([trainer] device = "cpu", or --device cpu), or make the GPU '
            "usable (see the torch and gpus lines)",
            {"error": error},
        )
    details = result.to_dict()
    when = "cached" if result.cached else "probed just now"
    if not result.usable:
        fix = "fix what the probe names, then `cockpit doctor --refresh`"
        if result.device != "cpu":
            fix += '; meanwhile [trainer] device = "cpu" trains on the CPU'
        return Check(
            "probe", FAIL, f"{result.device} refused: {result.message} ({when})", fix, details
        )
    if result.degraded:
        fix = (
            "confinement is off: set it back to auto"
            if result.layer == "off"
            else "see the landlock and userns lines for what the kernel refuses, then "
            "`cockpit doctor --refresh`"
        )
        return Check(
            "probe",
            WARN,
            f"confinement degraded to {result.layer}: {result.message} ({when})",
            fix,
            details,
        )
    return Check("probe", PASS, f"{result.message} ({when})", details=details)


def run_probe(
    settings: Settings, device: str, refresh: bool, torch_build: TorchBuild | None
) -> tuple[DeviceCheck | None, str]:
    """The confined device probe for ``device``, as trainings would be confined; (None, why)
    when it could not run."""
    if device.startswith("cuda") and (torch_build is None or not torch_build.cuda_available):
        return None, f"{device} asked for, but torch cannot use a GPU here"
    from trainer.probe import check_device

    mode = "require" if settings.trainer.require_confinement else "auto"
    try:
        result = check_device(device, mode, cache_dir_of(settings), refresh)
    except Exception as exc:  # the probe should not raise; a doctor never does
        return None, f"{type(exc).__name__}: {exc}"
    return result, ""


def check_landlock(abi: int, reason: str, *, required: bool) -> Check:
    """Landlock, which confines a training's files (and its TCP without namespaces)."""
    details = {"abi": abi, "reason": reason}
    if abi >= 1:
        note = "" if abi >= 4 else " (before ABI 4: no TCP filter where namespaces are refused)"
        return Check(
            "landlock",
            PASS,
            f"Landlock ABI {abi}: a training's files are confined{note}",
            details=details,
        )
    consequence = (
        "trainings are refused (require_confinement)"
        if required
        else "a training's files are not confined"
    )
    return Check(
        "landlock", FAIL if required else WARN, f"no Landlock: {consequence}", reason, details
    )


def read_userns_settings(
    read: Callable[[Path], str | None] | None = None,
) -> dict[str, str | None]:
    """The kernel's settings on unprivileged user namespaces (None: not on this kernel)."""

    def read_file(path: Path) -> str | None:
        try:
            return path.read_text().strip()
        except OSError:
            return None

    reader = read or read_file
    return {name: reader(Path(path)) for name, path in USERNS_SETTINGS.items()}


@dataclass(frozen=True)
class UsernsTrial:
    """What a child process got when it tried a user namespace with a network namespace:
    the `Confinement.to_dict()` it printed, or ``error`` when it printed none."""

    confinement: dict[str, Any] | None
    error: str = ""


def try_userns(timeout: float = USERNS_TIMEOUT_SECONDS) -> UsernsTrial:
    """Try it for real, in a child: a training confines itself the same way."""
    try:
        completed = subprocess.run(
            [sys.executable, "-c", USERNS_PROBE],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return UsernsTrial(None, str(exc))
    lines = completed.stdout.strip().splitlines()
    try:
        found = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        found = None
    if not isinstance(found, dict):
        tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        return UsernsTrial(None, f"exit code {completed.returncode}: {tail}")
    return UsernsTrial(found)


def userns_fix(settings: Mapping[str, str | None]) -> str:
    """The setting to change where a distribution restricts user namespaces."""
    keep = "(a file in /etc/sysctl.d/ keeps it after a reboot)"
    if settings.get("apparmor") == "1":
        return (
            "AppArmor restricts unprivileged user namespaces (Ubuntu 23.10+): sudo sysctl -w "
            f"kernel.apparmor_restrict_unprivileged_userns=0 {keep}"
        )
    if settings.get("debian") == "0":
        return f"sudo sysctl -w kernel.unprivileged_userns_clone=1 {keep}"
    if settings.get("max") == "0":
        return f"sudo sysctl -w user.max_user_namespaces=15000 {keep}"
    return (
        "the kernel or a container forbids unshare(); in a container, allow user namespaces "
        "(e.g. Docker's --security-opt seccomp=unconfined) or run on the host"
    )


def check_userns(
    trial: UsernsTrial, settings: Mapping[str, str | None], *, required: bool
) -> Check:
    """Unprivileged user namespaces, which take a training off the network."""
    details: dict[str, Any] = {"confinement": trial.confinement, "settings": dict(settings)}
    network = trial.confinement.get("network") if trial.confinement else None
    if network:
        message = f"a training leaves the network: enforced by {network}"
        assert trial.confinement is not None
        refused = trial.confinement.get("pid_namespace_refused")
        if refused:
            return Check(
                "userns",
                WARN,
                f"{message}; but {refused}: what a training starts can outlive it (the harness "
                "ends the tree it can see) and it sees the host's processes in /proc",
                "allow PID and mount namespaces inside user namespaces (a container's seccomp "
                "or AppArmor profile may forbid them)",
                details,
            )
        return Check(
            "userns",
            PASS,
            f"{message}; its processes: {pidns.ENFORCED_BY}",
            details=details,
        )
    if trial.confinement is None:
        reason = f"the trial process failed ({trial.error})"
    else:
        reason = str(trial.confinement.get("reason") or "refused")
    consequence = (
        "trainings are refused (require_confinement)"
        if required
        else "trainings are not taken off the network"
    )
    return Check(
        "userns",
        FAIL if required else WARN,
        f"{reason}: {consequence}",
        userns_fix(settings),
        details,
    )


# ---------------------------------------------------------------------------------------------
# disk and corpus


@dataclass(frozen=True)
class DiskPlace:
    """A folder the cockpit writes to and the free space on its file system."""

    name: str
    path: Path
    free_bytes: int
    device: int = 0  # st_dev of the file system: places on one are reported together


def _existing(path: Path) -> Path:
    """The path, or its nearest ancestor that exists (what a folder will be made in)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def disk_place(name: str, path: Path) -> DiskPlace:
    """The free space where ``path`` is, or will be made."""
    existing = _existing(path.expanduser())
    return DiskPlace(name, path, shutil.disk_usage(existing).free, existing.stat().st_dev)


def check_disk(
    places: Sequence[DiskPlace],
    *,
    warn_bytes: float = WARN_FREE_GB * GB,
    fail_bytes: float = FAIL_FREE_GB * GB,
) -> Check:
    """Free disk where the workspace, its runs and the caches live; the tightest one counts."""
    groups: dict[int, list[DiskPlace]] = {}
    for place in places:
        groups.setdefault(place.device, []).append(place)
    parts = []
    for group in groups.values():
        named = [place.name for place in group]
        names = ", ".join(named[:-1]) + " and " + named[-1] if len(named) > 1 else named[0]
        parts.append(f"{_gb(group[0].free_bytes)} free for the {names} ({group[0].path})")
    details = {
        "places": [
            {"name": place.name, "path": str(place.path), "free_bytes": place.free_bytes}
            for place in places
        ],
        "warn_bytes": warn_bytes,
        "fail_bytes": fail_bytes,
    }
    tightest = min(places, key=lambda place: place.free_bytes)
    summary = "; ".join(parts)
    fix = (
        f"free space on the disk of {tightest.path}, or move it: the workspace with "
        "--workspace, the caches with [paths] cache_dir"
    )
    if tightest.free_bytes < fail_bytes:
        status, summary = FAIL, f"{summary}: under {_gb(fail_bytes)}, trainings will fail to write"
    elif tightest.free_bytes < warn_bytes:
        status, summary = WARN, f"{summary}: under {_gb(warn_bytes)}, a night's runs may fill it"
    else:
        return Check("disk", PASS, summary, details=details)
    return Check("disk", status, summary, fix, details)


def cache_dir_of(settings: Settings) -> Path:
    """Where trainings cache corpora and compiled kernels: [paths] cache_dir when it is set,
    else what the trainer picks (COCKPIT_CACHE_DIR, else the user cache directory)."""
    from trainer.data import default_cache_dir

    configured = settings.paths.cache_dir
    return Path(configured).expanduser() if configured else default_cache_dir()


@dataclass(frozen=True)
class CorpusState:
    """Whether a corpus is already encoded in the cache, and how big it is."""

    name: str
    cached: bool
    files: int = 0
    size_bytes: int = 0
    directory: Path | None = None
    meta: dict[str, Any] | None = None
    error: str = ""


def read_corpus_state(name: str, cache_dir: Path) -> CorpusState:
    """Look the corpus up in the cache without encoding it (`trainer.data.CorpusSpec.cache_entry`
    names its folder from the files' names, sizes and times)."""
    from trainer.data import CorpusError, CorpusSpec

    try:
        spec = CorpusSpec.parse(name)
        files = spec.files()
    except (CorpusError, OSError) as exc:
        return CorpusState(name, False, error=str(exc))
    if not files:
        return CorpusState(name, False, error=f"no files found under {spec.root}")
    size = sum(path.stat().st_size for path in files)
    directory = spec.cache_entry(files, cache_dir)
    meta_path = directory / "meta.json"
    meta = None
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            meta = None
    return CorpusState(name, meta is not None, len(files), size, directory, meta)


def corpus_build_seconds(state: CorpusState) -> float:
    """About how long encoding the corpus takes (0 when it is cached)."""
    if state.cached:
        return 0.0
    return max(1.0, state.size_bytes / ENCODE_BYTES_PER_SECOND)


def check_corpus(state: CorpusState) -> Check:
    """The configured corpus: encoded in the cache already, or built by the first training."""
    details: dict[str, Any] = {
        "corpus": state.name,
        "cached": state.cached,
        "files": state.files,
        "size_bytes": state.size_bytes,
        "directory": None if state.directory is None else str(state.directory),
        "build_seconds": corpus_build_seconds(state),
    }
    if state.error:
        return Check(
            "corpus",
            FAIL,
            f"corpus {state.name}: {state.error}",
            "set [trainer] corpus to stdlib, text:DIR or parquet:DIR with files in DIR",
            details,
        )
    if state.cached and state.meta is not None:
        tokens = state.meta.get("train_tokens", 0) + state.meta.get("val_tokens", 0)
        return Check(
            "corpus",
            PASS,
            f"{state.name} encoded in the cache ({tokens / 1e6:.1f} M tokens, fingerprint "
            f"{state.meta.get('fingerprint')})",
            details=details,
        )
    seconds = corpus_build_seconds(state)
    return Check(
        "corpus",
        WARN,
        f"{state.name} ({state.files} files, {state.size_bytes / 1e6:.0f} MB) is not encoded "
        f"yet: the first training builds it (about {seconds:.0f} s)",
        'to build it now: python -c "from trainer.data import prepare_corpus; '
        f"prepare_corpus('{state.name}')\"",
        details,
    )


# ---------------------------------------------------------------------------------------------
# Ollama


@dataclass(frozen=True)
class OllamaState:
    """What the doctor learnt from Ollama: the backend's health check, the model's size when
    it is pulled, and the [agent] settings that decide whether it must fit beside a training."""

    state: str  # an agent.ollama_backend.AgentState value
    message: str
    host: str
    model: str
    version: str | None = None
    model_bytes: int | None = None
    unload_before_training: bool = True
    on_cpu: bool = False


def read_ollama_state(settings: Settings) -> OllamaState:
    """Ask Ollama (the configured host and timeout) whether it runs and has the model, and
    the model's size."""
    import ollama

    from agent.ollama_backend import (
        PROBE_TIMEOUT_SECONDS,
        AgentState,
        OllamaBackend,
        OllamaOptions,
        full_model_name,
    )

    agent = settings.agent
    try:
        backend = OllamaBackend(
            OllamaOptions(host=agent.host, model=agent.model, timeout_seconds=agent.timeout_seconds)
        )
    except ValueError as exc:  # a host that is not a URL
        return OllamaState("error", str(exc), agent.host, agent.model)
    try:
        health = backend.check()
    finally:
        backend.close()
    size = None
    if health.state == AgentState.READY:
        wanted = full_model_name(agent.model)
        try:
            timeout = min(agent.timeout_seconds, PROBE_TIMEOUT_SECONDS)
            listed = ollama.Client(host=backend.host, timeout=timeout).list()
            size = next(
                (
                    int(entry.size)
                    for entry in listed.models
                    if entry.model and full_model_name(entry.model) == wanted and entry.size
                ),
                None,
            )
        except Exception:  # the size is a detail; the health check already answered
            size = None
    return OllamaState(
        state=health.state.value,
        message=health.message,
        host=backend.host,
        model=agent.model,
        version=health.version,
        model_bytes=size,
        unload_before_training=agent.unload_before_training,
        on_cpu=agent.on_cpu,
    )


def check_ollama(state: OllamaState, snapshot: GpuSnapshot, proposer: str) -> Check:
    """Ollama reachable, the model pulled, and whether it fits beside a training."""
    details: dict[str, Any] = {
        "state": state.state,
        "host": state.host,
        "model": state.model,
        "version": state.version,
        "model_bytes": state.model_bytes,
        "proposer": proposer,
    }
    needed = proposer in MODEL_PROPOSERS
    if state.state != "ready":
        if not needed:
            return Check(
                "ollama",
                PASS,
                f"not needed (engine.proposer = {proposer}): {state.message}",
                details=details,
            )
        if state.state == "server_down":
            return Check(
                "ollama",
                WARN,
                f"Ollama is not running at {state.host}: the optimiser proposes alone until "
                "it answers",
                f"start it with `ollama serve`, then `ollama pull {state.model}` (or set "
                "[agent] host to where it runs)",
                details,
            )
        if state.state == "model_missing":
            return Check(
                "ollama",
                FAIL,
                f"Ollama answers at {state.host} but model {state.model} is not pulled",
                f"ollama pull {state.model} (or set [agent] model to one `ollama list` shows)",
                details,
            )
        return Check("ollama", WARN, state.message, "see the message", details)
    summary = f"Ollama {state.version or ''} at {state.host} is ready with {state.model}"
    if state.model_bytes is None or not snapshot.available or state.on_cpu:
        where = "kept off the GPUs ([agent] on_cpu)" if state.on_cpu else "no GPU to share"
        return Check("ollama", PASS, f"{summary} ({where})", details=details)
    memories = [gpu.memory_total_mb for gpu in snapshot.gpus if gpu.memory_total_mb]
    if not memories:
        return Check("ollama", PASS, summary, details=details)
    gpu_bytes = min(memories) * MIB
    model_memory = state.model_bytes * MODEL_MEMORY_FACTOR
    share = model_memory / gpu_bytes
    details["model_gpu_share"] = share
    size = f"about {_gb(model_memory)} of a {_gb(gpu_bytes)} GPU ({share:.0%})"
    # One GPU and the model unloaded before each training: they never meet on it.
    if state.unload_before_training and len(snapshot.gpus) == 1:
        return Check(
            "ollama", PASS, f"{summary}: {size}, unloaded before each training", details=details
        )
    if share > MODEL_GPU_SHARE:
        return Check(
            "ollama",
            WARN,
            f"{summary}, but it takes {size}: a training beside it has too little left",
            "start Ollama on a GPU of its own and list it in [agent] reserved_gpus, set "
            "[agent] on_cpu = true, or pull a smaller model",
            details,
        )
    return Check("ollama", PASS, f"{summary}: {size}, fits beside a training", details=details)


# ---------------------------------------------------------------------------------------------
# the terminal


def terminal_size() -> tuple[int, int] | None:
    """(columns, lines) of the terminal on stdout, stderr or stdin; None without one."""
    for stream in (sys.stdout, sys.stderr, sys.stdin):
        try:
            if stream is not None and stream.isatty():
                size = os.get_terminal_size(stream.fileno())
                return size.columns, size.lines
        except (OSError, ValueError):
            continue
    return None


def check_terminal(size: tuple[int, int] | None, environ: Mapping[str, str]) -> Check:
    """The terminal the cockpit will draw in: size, colours, and tmux."""
    term = environ.get("TERM", "")
    colorterm = environ.get("COLORTERM", "").lower()
    if colorterm in ("truecolor", "24bit"):
        colours = "true colour"
    elif term.endswith("256color"):
        colours = "256 colours"
    elif term in ("", "dumb"):
        colours = "no colours"
    else:
        colours = f"basic colours (TERM={term})"
    multiplexer = (
        "inside tmux" if environ.get("TMUX") else "inside screen" if environ.get("STY") else ""
    )
    details = {
        "columns": size[0] if size else None,
        "lines": size[1] if size else None,
        "term": term,
        "colorterm": colorterm,
        "multiplexer": multiplexer or None,
    }
    tip = (
        ""
        if multiplexer
        else "run the cockpit inside tmux (`tmux new -s cockpit`) so that a lost SSH keeps its "
        "screen; the engine survives either way"
    )
    parts = [
        "not a terminal" if size is None else f"{size[0]}x{size[1]}",
        colours,
        multiplexer or "not in tmux",
    ]
    summary = ", ".join(parts)
    if size is not None and (size[0] < MIN_COLUMNS or size[1] < MIN_LINES):
        return Check(
            "terminal",
            WARN,
            f"{summary}: under {MIN_COLUMNS}x{MIN_LINES}, the cockpit's panels are cramped",
            f"enlarge the window to at least {MIN_COLUMNS}x{MIN_LINES}"
            + (f"; {tip}" if tip else ""),
            details,
        )
    if colours == "no colours" and size is not None:
        return Check(
            "terminal",
            WARN,
            f"{summary}: TERM={term or '(unset)'} shows no colours",
            "export TERM=xterm-256color" + (f"; {tip}" if tip else ""),
            details,
        )
    return Check("terminal", PASS, summary, tip, details)


# ---------------------------------------------------------------------------------------------
# all of them


def disk_places(workspace: Path, cache_dir: Path) -> list[DiskPlace]:
    """The workspace, its runs and the caches, with the free space where each lives."""
    paths = WorkspacePaths(workspace)
    return [
        disk_place("workspace", workspace),
        disk_place("runs", paths.cockpit_dir / "runs"),
        disk_place("caches", cache_dir),
    ]


def run_doctor(
    settings: Settings,
    workspace: Path,
    *,
    device: str | None = None,
    refresh: bool = False,
    fail_free_gb: float = FAIL_FREE_GB,
    gpu_source: GpuSource | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[Check]:
    """Every check, in order, for the workspace at ``workspace`` (which need not exist yet)
    with its ``settings``. ``device`` is the one the probe tries (default: trainer.device);
    ``gpu_source`` replaces NVML (tests); a check fails below ``fail_free_gb`` of free disk."""
    from trainer import landlock

    source = gpu_source if gpu_source is not None else default_gpu_source()
    try:
        snapshot = source.read(())
    finally:
        source.close()
    driver = read_driver() if snapshot.available else None
    required = settings.trainer.require_confinement
    cache_dir = cache_dir_of(settings)
    torch_build = read_torch_build()
    probe, probe_error = run_probe(
        settings, device or settings.trainer.device, refresh, torch_build
    )
    warn_bytes = max(WARN_FREE_GB, fail_free_gb) * GB
    return [
        check_torch(torch_build, snapshot, driver),
        check_gpus(snapshot, driver),
        check_probe(probe, probe_error),
        check_landlock(landlock.abi_version(), landlock.unavailable_reason(), required=required),
        check_userns(try_userns(), read_userns_settings(), required=required),
        check_disk(
            disk_places(workspace, cache_dir), warn_bytes=warn_bytes, fail_bytes=fail_free_gb * GB
        ),
        check_corpus(read_corpus_state(settings.trainer.corpus, cache_dir)),
        check_ollama(read_ollama_state(settings), snapshot, settings.engine.proposer),
        check_terminal(terminal_size(), os.environ if environ is None else environ),
    ]


def print_doctor(checks: Sequence[Check], workspace: Path, *, as_json: bool) -> int:
    """Print the checks (one line each, or JSON); 0 when none failed, else 1."""
    if as_json:
        print(json.dumps(doctor_json(checks, workspace=str(workspace)), indent=2))
    else:
        print(f"cockpit doctor: workspace {workspace}")
        for check in checks:
            print("  " + check.line())
        print(verdict(checks))
    return 0 if doctor_ok(checks) else 1
