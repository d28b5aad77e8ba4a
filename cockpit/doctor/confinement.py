"""The checks of a training's confinement: the confined device probe, Landlock, and user
namespaces tried for real in a child process, as a training confines itself."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cockpit.config import Settings
from cockpit.doctor.gpu import TorchBuild
from cockpit.doctor.storage import cache_dir_of
from cockpit.doctor.verdicts import FAIL, PASS, WARN, Check
from trainer import pidns

if TYPE_CHECKING:  # the probe imports torch: loaded when the probe runs
    from trainer.probe import DeviceCheck

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
