"""Bounds on what one training may take of the machine: memory, processes, disk and the metrics
stream. On a GPU box shared with Ollama and the engine, a script that grows without bound costs
the night's research, not one experiment; past a bound the training ends as a crash whose
reason names the bound and the setting that raises it.

Who enforces each, from the kernel outwards:

- **processes**: in the training's own user namespace, ``RLIMIT_NPROC`` (counted per user
  namespace since Linux 5.14: a fork past it fails) for a user other than root; the kernel
  exempts root, whose count the harness keeps. Threads count as processes, as they do for the
  kernel.
- **disk**: ``RLIMIT_FSIZE`` stops any one file at the bound (a write past it fails with
  EFBIG); the harness adds up its folder, which also bounds many smaller files.
- **memory**: the harness adds up the resident memory of every process of the training (shared
  pages counted in each) and what it holds in tmpfs mounts of its own (its ``/dev/shm``,
  trainer.sockets), and the training's ``oom_score_adj`` is the highest, so that where
  the machine runs out all the same the kernel ends the training, not the engine or Ollama.
  No address-space limit: CUDA reserves far more address space than it uses.
- **metrics**: the harness counts the bytes the training writes into its stream.

What the harness counts, it samples (`Watch`): a training can pass a bound for part of a
second before it is ended. cgroup v2's ``memory.max`` and ``pids.max`` would hold the line
exactly, but only in a cgroup delegated to the user (an SSH session's is not), so they are not
used yet.

Only the standard library and psutil: `apply` runs in the training process before torch.
"""

from __future__ import annotations

import os
import re
import resource
import time
from concurrent.futures import ThreadPoolExecutor, TimeoutError
from dataclasses import asdict, dataclass
from typing import Any

import psutil

from trainer.readback import size_text

# By default a training may use this share of the machine's memory: the rest is left to the
# engine, the cockpit and Ollama (whose model lives in the GPU's memory, its runner in this).
MEMORY_SHARE = 0.5
# Sampling: memory and processes at every look of the harness; the folder's size less often,
# since it walks the folder. Past this many entries the walk stops and the bound is hit.
DISK_PERIOD_SECONDS = 1.0
MAX_FOLDER_ENTRIES = 100_000
OOM_SCORE_ADJ = 1000  # the first the kernel's OOM killer takes
MOUNT_LOOK_SECONDS = 1.0  # how long a look into the training's mounts may take
MB = 1_000_000

SETTINGS = {
    "memory": "memory_limit_mb",
    "processes": "max_processes",
    "disk": "disk_limit_mb",
    "metrics": "metrics_limit_mb",
}


def machine_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass(frozen=True)
class Bounds:
    """The bounds of one training ([trainer] settings of the same names). 0 memory: the default
    share of the machine's; 0 anywhere else: no bound."""

    memory_mb: int = 0
    processes: int = 1024
    disk_mb: int = 8192
    metrics_mb: int = 64

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"bound {name} must be a whole number, 0 or more, not {value!r}")

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * MB if self.memory_mb else int(MEMORY_SHARE * machine_memory())

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> Bounds | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(**{k: v for k, v in data.items() if k in asdict(cls())})
        except (TypeError, ValueError):
            return None


def hint(bound: str) -> str:
    """What raises ``bound``, for a reason that names it."""
    return f"raise [trainer] {SETTINGS[bound]} (0 for no bound) to allow more"


def first_to_go() -> bool:
    """Make this process (and all it starts) the first that the kernel's OOM killer ends;
    whether it could. Raising one's own score needs no privilege."""
    try:
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write(str(OOM_SCORE_ADJ))
    except OSError:
        return False
    return True


def apply(
    bounds: Bounds, own_user_namespace: bool, first_to_go: bool = False
) -> dict[str, dict[str, Any]]:
    """In the training process, before any of the script: the kernel's part of the bounds.
    Returns the table of every bound and what enforces it (see the module's docstring), for the
    confinement the training reports; ``first_to_go``: `first_to_go` succeeded."""
    oom = ""
    if first_to_go:
        oom = f"; oom_score_adj {OOM_SCORE_ADJ}: the first the kernel ends where memory runs out"
    table: dict[str, dict[str, Any]] = {
        "memory": {
            "limit_mb": round(bounds.memory_bytes / MB),
            "enforced_by": "the harness, summing its processes' resident memory and its own "
            "tmpfs mounts" + oom,
        },
        "metrics": {
            "limit_mb": bounds.metrics_mb or None,
            "enforced_by": "the harness, counting the stream's bytes"
            if bounds.metrics_mb
            else None,
        },
    }
    processes = "the harness, counting its processes and threads"
    if bounds.processes and own_user_namespace and os.getuid() != 0:
        resource.setrlimit(resource.RLIMIT_NPROC, (bounds.processes, bounds.processes))
        processes = "RLIMIT_NPROC in its own user namespace, and " + processes
    table["processes"] = {
        "limit": bounds.processes or None,
        "enforced_by": processes if bounds.processes else None,
    }
    disk = None
    if bounds.disk_mb:
        limit = bounds.disk_mb * MB
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        disk = "RLIMIT_FSIZE for any one file, and the harness, adding up its folder"
    table["disk"] = {"limit_mb": bounds.disk_mb or None, "enforced_by": disk}
    return table


def describe(table: dict[str, Any]) -> str:
    """One line: the bounds in force."""
    parts = []
    for name in ("memory", "processes", "disk", "metrics"):
        entry = table.get(name)
        if not isinstance(entry, dict):
            continue
        limit = entry.get("limit_mb", entry.get("limit"))
        unit = " MB" if "limit_mb" in entry else ""
        parts.append(f"{name} {limit}{unit}" if limit else f"{name} unbounded")
    return "bounds: " + ", ".join(parts)


class Watch:
    """The harness's side of the bounds for one training: ``check()`` at each of its looks
    says which bound the training passed (None while it keeps within them)."""

    def __init__(self, bounds: Bounds, pid: int, folder: str) -> None:
        self.bounds = bounds
        self.folder = folder
        self._root = psutil.Process(pid)
        self._next_walk = 0.0
        self.peak_memory = 0
        self.peak_processes = 0
        self.folder_bytes = 0
        self.unanswered = False  # a look into its mounts did not come back (`_own_tmpfs`)
        self._looks = ThreadPoolExecutor(1, thread_name_prefix="bounds-mounts")
        # The host's tmpfs mounts, read once: a training's mount of one of them is not its own.
        self._host_tmpfs = frozenset(
            device for device, _point, kind in _mounts("/proc/self/mountinfo") if kind == "tmpfs"
        )

    def check(self) -> str | None:
        memory, tasks = self._tree()
        if self.unanswered:
            return (
                "the training's mounts did not answer the harness within "
                f"{MOUNT_LOOK_SECONDS:g} s (a file system of its own that blocks?), so its memory "
                "cannot be counted"
            )
        self.peak_memory = max(self.peak_memory, memory)
        self.peak_processes = max(self.peak_processes, tasks)
        bounds = self.bounds
        if memory > bounds.memory_bytes:
            return (
                f"the training used {size_text(memory)} of memory, past its bound of "
                f"{size_text(bounds.memory_bytes)}; {hint('memory')}"
            )
        if bounds.processes and tasks >= bounds.processes:
            return (
                f"the training ran {tasks} processes and threads, reaching its bound of "
                f"{bounds.processes}; {hint('processes')}"
            )
        now = time.monotonic()
        if bounds.disk_mb and now >= self._next_walk:
            self._next_walk = now + DISK_PERIOD_SECONDS
            return self.check_disk()
        return None

    def check_disk(self) -> str | None:
        limit = self.bounds.disk_mb * MB
        if not limit:
            return None
        used, entries = folder_usage(self.folder, MAX_FOLDER_ENTRIES)
        self.folder_bytes = used
        if entries > MAX_FOLDER_ENTRIES:
            return (
                f"the training left more than {MAX_FOLDER_ENTRIES} files in its folder; keep "
                "fewer (the harness adds the folder up against the disk bound)"
            )
        if used >= limit:
            return (
                f"the training wrote {size_text(used)} into its folder, reaching its bound of "
                f"{size_text(limit)}; {hint('disk')}"
            )
        return None

    def _tree(self) -> tuple[int, int]:
        """The resident memory and the task count of the training's processes, summed."""
        memory = tasks = 0
        try:
            processes = [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            return 0, 0
        for process in processes:
            try:
                with process.oneshot():
                    memory += process.memory_info().rss
                    tasks += process.num_threads()
            except psutil.Error:
                continue
        return memory + self._own_tmpfs(), tasks

    def _own_tmpfs(self) -> int:
        """What the training holds in tmpfs mounts of its own (its /dev/shm, trainer.sockets;
        any other it could mount where Landlock is left out), read through its mount namespace:
        memory that no resident size shows until it is mapped. Mounts it shares with the host
        are not its own (their device is the host's). The lookups run in a thread of their own
        and may take `MOUNT_LOOK_SECONDS`: a mount of the training's that does not answer (a
        FUSE server of its own) must not stop the harness's clock."""
        future = self._looks.submit(_own_tmpfs_bytes, self._root.pid, self._host_tmpfs)
        try:
            return future.result(timeout=MOUNT_LOOK_SECONDS)
        except TimeoutError:
            self.unanswered = True
            return 0

    def close(self) -> None:
        """After the training: no more looks (one still waiting on its mounts is let go)."""
        self._looks.shutdown(wait=False, cancel_futures=True)


def _mounts(mountinfo: str) -> list[tuple[str, str, str]]:
    """(device, mount point, file system type) of each mount in a mountinfo file."""
    found = []
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    for line in lines:
        fields, _, rest = line.partition(" - ")
        parts, kind = fields.split(), rest.split()
        if len(parts) >= 5 and kind:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[4])
            found.append((parts[2], point, kind[0]))
    return found


def _own_tmpfs_bytes(pid: int, host: frozenset[str]) -> int:
    used = 0
    for device, point, kind in _mounts(f"/proc/{pid}/mountinfo"):
        if kind != "tmpfs" or device in host:
            continue
        try:
            usage = os.statvfs(f"/proc/{pid}/root{point}")
        except OSError:
            continue
        used += (usage.f_blocks - usage.f_bfree) * usage.f_frsize
    return used


def folder_usage(folder: str, most: int) -> tuple[int, int]:
    """The bytes the files under ``folder`` take on disk, and how many entries were seen (the
    walk stops past ``most``). Links are not followed."""
    used = entries = 0
    pending = [folder]
    while pending:
        try:
            scan = os.scandir(pending.pop())
        except OSError:
            continue
        with scan:
            for entry in scan:
                entries += 1
                if entries > most:
                    return used, entries
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                used += info.st_blocks * 512
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
    return used, entries
