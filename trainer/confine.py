"""Confinement of the training process by the kernel, not by Python.

The training script is untrusted: the harness's audit hook sees Python's own calls, but not a
raw ``connect()`` through ctypes, a compiled extension, or a shell it starts. So before the
script can run, the training process leaves the host's network: it enters a network namespace
of its own (inside a user namespace of its own, so that no privilege is needed and none is
kept over the host), whose only interface is its own loopback. Everything it starts inherits
that: a subprocess, a shell, a forked child. Nothing reaches the host's interfaces, nor the
ports of the host's own loopback (the engine's, a model server's).

``unshare(CLONE_NEWUSER)`` refuses a process with more than one thread, and importing torch
starts one: `confine_network` runs first thing in ``python -m trainer``, before torch.

Where the kernel refuses (no user namespaces, AppArmor's limits on them, a container that
forbids ``unshare``), the run goes on unconfined and says why; ``--confinement require``
makes that an error instead. The result travels in the summary and the metrics stream, so
that the engine and ``cockpit status`` show what was in force.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer import landlock, pidns, sockets

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

MODES = ("auto", "require", "off")
TCP_ABI = 4  # the Landlock ABI that filters TCP
ENFORCED_BY = "a network namespace of its own (only its own loopback)"


class ConfinementError(Exception):
    """Confinement was required and the kernel refused it; the message says why."""


@dataclass(frozen=True)
class Layer:
    """A level of confinement, from the full one down. The device probe (trainer.probe) tries
    them in `LAYERS` order and trainings run under the first in which the device works."""

    name: str
    label: str  # what is given up, for a person
    user_namespace: bool = True  # the user and network namespaces
    landlock: bool = True  # Landlock's limits on files (and its scopes)
    narrow_proc: bool = True  # /proc written only where the device's driver must write

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "label": self.label}


FULL = Layer("full", "full confinement")
LAYERS = (
    FULL,
    Layer(
        "proc-wide",
        "without the /proc narrowing (it may write any /proc file its user may)",
        narrow_proc=False,
    ),
    Layer(
        "no-userns",
        "without the user namespace (Landlock alone: no network namespace)",
        user_namespace=False,
    ),
    Layer(
        "no-landlock",
        "without Landlock (the network namespace alone: its files are not confined)",
        landlock=False,
    ),
)
OFF = Layer("off", "no confinement (confinement is off)", False, False, False)


def layer_named(name: str) -> Layer:
    """The layer called ``name`` (one of `LAYERS`, or ``off``)."""
    for layer in (*LAYERS, OFF):
        if layer.name == name:
            return layer
    raise ValueError(
        f"unknown confinement layer {name!r}; one of {', '.join(known.name for known in LAYERS)}"
    )


@dataclass(frozen=True)
class Confinement:
    """What confines the training process. ``network`` names what enforces that it reaches no
    network beyond its own loopback and ``files`` what limits the files it may read and
    write; each is None where nothing does, and ``reason`` says why."""

    network: str | None
    reason: str = ""
    files: str | None = None
    layer: str = "full"  # the `Layer` asked for (a degraded one says why in ``reason``)
    # What keeps its processes to themselves (trainer.pidns): none outlives it, and its /proc
    # shows only them. None where nothing does (``reason`` says why).
    processes: str | None = None
    # The bounds on what it may use (trainer.bounds: memory, processes, disk, metrics), each
    # with its limit and what enforces it; None where none were set.
    bounds: dict[str, Any] | None = None
    # What keeps the host's pathname unix sockets out of its reach (trainer.sockets); None
    # where nothing does (``reason`` says why).
    sockets: str | None = None

    @property
    def enforced(self) -> bool:
        """Whether the training is fully confined: off the network and limited in its files."""
        return self.network is not None and self.files is not None

    @property
    def degraded(self) -> bool:
        """Whether the device probe chose a layer below full confinement (see `LAYERS`)."""
        return self.layer not in (FULL.name, OFF.name)

    @property
    def missing(self) -> str:
        """What is not confined: "network", "files", "network and files", or ""."""
        return " and ".join(
            name for name, by in (("network", self.network), ("files", self.files)) if by is None
        )

    def describe(self) -> str:
        """One line for a log, the cockpit and ``cockpit status``."""
        parts = []
        if self.network is not None:
            parts.append(f"network: none beyond loopback, enforced by {self.network}")
        if self.files is not None:
            parts.append(f"files: {self.files}")
        if self.processes is not None:
            parts.append(f"processes: {self.processes}")
        elif parts:
            parts.append("processes: in sight of the host's /proc (no PID namespace)")
        if self.sockets is not None:
            parts.append(f"host sockets: hidden by {self.sockets}")
        elif parts:
            parts.append("host sockets: in reach (no mount namespace of its own)")
        if self.degraded:
            parts.insert(0, f"confinement degraded to {self.layer}: {self.reason}")
            return "; ".join(parts)
        if self.enforced:
            return "; ".join(parts)
        return "; ".join([f"training is not confined: {self.missing}: {self.reason}", *parts])

    def to_dict(self) -> dict[str, object]:
        return {
            "network": self.network,
            "files": self.files,
            "enforced": self.enforced,
            "reason": self.reason,
            "layer": self.layer,
            "processes": self.processes,
            "bounds": self.bounds,
            "sockets": self.sockets,
        }

    @classmethod
    def from_dict(cls, data: object) -> Confinement | None:
        """The confinement a training reported (`to_dict`); None for anything else."""
        if not isinstance(data, dict):
            return None
        network, files = data.get("network"), data.get("files")
        layer, processes = data.get("layer"), data.get("processes")
        bounds, hidden = data.get("bounds"), data.get("sockets")
        return cls(
            network if isinstance(network, str) else None,
            str(data.get("reason") or ""),
            files if isinstance(files, str) else None,
            layer if isinstance(layer, str) else FULL.name,
            processes if isinstance(processes, str) else None,
            bounds if isinstance(bounds, dict) else None,
            hidden if isinstance(hidden, str) else None,
        )


def _unshare(flags: int) -> int:
    """0, or the errno of ``unshare(flags)``."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) == 0:
        return 0
    return ctypes.get_errno()


def _map_identity(uid: int, gid: int) -> None:
    """Map this process's user and group to themselves inside its new user namespace, so that
    files keep the owners they had (writing the maps is allowed for one's own ids)."""
    with open("/proc/self/setgroups", "w") as handle:
        handle.write("deny")
    with open("/proc/self/uid_map", "w") as handle:
        handle.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as handle:
        handle.write(f"{gid} {gid} 1")


def _loopback_up() -> None:
    """Bring the namespace's loopback up (it starts down): the script may still talk to
    itself, as some libraries do, but to nothing else."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(probe, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(probe, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _refused(what: str, code: int) -> str:
    name = errno.errorcode.get(code, str(code))
    hint = {
        errno.EPERM: "the kernel or a security module forbids it here",
        errno.EACCES: "a security module (AppArmor's limits on user namespaces?) forbids it",
        errno.ENOSPC: "the namespace limit (/proc/sys/user/max_*_namespaces) is reached",
        errno.EINVAL: "the process already runs threads, or the kernel lacks the feature",
        errno.ENOSYS: "the kernel has no unshare",
    }.get(code, os.strerror(code))
    return f"{what} was refused ({name}: {hint})"


def confine_network(mode: str = "auto") -> Confinement:
    """Take this process, and all it will start, off the host's network. ``mode`` is
    ``auto`` (confine where the kernel allows, else say why not), ``require`` (raise
    `ConfinementError` where it does not) or ``off``. Call it while the process has one
    thread."""
    if mode not in MODES:
        raise ValueError(f"confinement must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "off":
        return Confinement(None, "confinement is off (--confinement off)")
    uid, gid = os.getuid(), os.getgid()
    code = _unshare(CLONE_NEWUSER | CLONE_NEWNET)
    if code == 0:
        try:
            _map_identity(uid, gid)
        except OSError as exc:
            # The namespaces hold all the same: files of other owners look unowned.
            return _loopback(Confinement(ENFORCED_BY, f"ids not mapped: {exc}"))
        return _loopback(Confinement(ENFORCED_BY))
    reason = _refused("a user namespace with a network namespace", code)
    if os.geteuid() == 0 and _unshare(CLONE_NEWNET) == 0:
        # Root may enter a network namespace without a user namespace, but keeps the
        # privilege to leave it (setns): say so.
        return _loopback(
            Confinement(
                "a network namespace of its own (as root, without a user namespace: code "
                "that calls setns() could leave it)",
                reason,
            ),
        )
    if mode == "require":
        raise ConfinementError(
            f"training must be confined (require_confinement) but {reason}; allow "
            "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, or "
            "AppArmor's kernel.apparmor_restrict_unprivileged_userns=0), or set "
            "[trainer] require_confinement = false"
        )
    return Confinement(None, reason)


def _loopback(confinement: Confinement) -> Confinement:
    try:
        _loopback_up()
    except OSError as exc:
        # No loopback either: still no network beyond it.
        return Confinement(confinement.network, f"loopback left down ({exc})")
    return confinement


def confine(
    mode: str,
    read: Sequence[str],
    read_write: Sequence[str],
    devices: Sequence[str],
    layer: Layer = FULL,
    nvidia: bool = False,
    why: str = "",
) -> Confinement:
    """Confine this process for good with what the kernel offers, at ``layer``: a network
    namespace (see `confine_network`), and Landlock limiting reads to ``read`` and
    ``read_write``, writes to ``read_write`` and device files to ``devices``. Where user
    namespaces are refused but Landlock can filter TCP, Landlock blocks TCP at least (the
    network still counts as not confined: UDP gets through). ``nvidia`` grants what NVIDIA's
    driver writes in /proc: the names of this process's own threads (only where an NVIDIA
    device exists; see `trainer.landlock`). A degraded ``layer`` gives up a part, and ``why``
    says why (the device probe's finding). ``require`` raises `ConfinementError` unless both
    hold. Call it while the process has one thread."""
    if mode not in MODES:
        raise ValueError(f"confinement must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "off" or layer == OFF:
        return Confinement(None, "confinement is off (--confinement off)", layer=OFF.name)
    # The host's unix sockets, listed while this process is still in the host's network
    # namespace (the table in its own would list none).
    host_sockets = sockets.host_sockets() if layer.user_namespace else []
    if layer.user_namespace:
        network = confine_network("auto")
    else:
        network = Confinement(None, f"the user namespace is left out ({layer.label})")
    reasons = [why] if why else []
    reasons += [network.reason] if network.network is None else []
    processes: str | None = None
    hidden: str | None = None
    shm: list[str] = []
    if layer.user_namespace:
        # From here on this is process 1 of a PID namespace of its own (its parent waits
        # outside), or it says why not.
        refusal = pidns.isolate()
        if refusal is None:
            processes = pidns.ENFORCED_BY
            # Its own mount namespace: mounts there come before Landlock, which refuses them.
            hidden, short = sockets.hide(host_sockets, [*read, *read_write, *devices])
            reasons += [short] if short else []
            shm = [sockets.SHM] if sockets.own_shm() else []
        else:
            reasons.append(refusal)
    if processes is None:
        reasons.append("host unix sockets are in reach: no mount namespace of its own")
    files: str | None = None
    if layer.landlock:
        policy = landlock.Policy(
            read=tuple(Path(p) for p in read),
            read_write=tuple(Path(p) for p in [*read_write, *shm]),
            devices=tuple(Path(p) for p in devices),
            writable_files=() if layer.narrow_proc else (Path("/proc"),),
            own_thread_names=nvidia and layer.narrow_proc,
            deny_tcp=network.network is None and landlock.abi_version() >= TCP_ABI,
        )
        try:
            files = landlock.restrict(policy).removeprefix("files: ")
            if policy.deny_tcp:
                reasons.append("Landlock blocks its TCP connections, but not UDP")
        except landlock.LandlockUnavailable as exc:
            reasons.append(str(exc))
    else:
        reasons.append(f"Landlock is left out ({layer.label})")
    confinement = Confinement(
        network.network, "; ".join(reasons), files, layer.name, processes, sockets=hidden
    )
    if mode == "require" and not (confinement.enforced and layer == FULL):
        raise ConfinementError(
            f"training must be confined (require_confinement) but {confinement.reason}; allow "
            "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, or "
            "AppArmor's kernel.apparmor_restrict_unprivileged_userns=0) and use a kernel with "
            "Landlock (5.13+, in the boot lsm= list), or set [trainer] require_confinement = false"
        )
    return confinement
