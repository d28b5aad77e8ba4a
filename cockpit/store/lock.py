"""One engine per workspace: the lock it holds while it runs, and how others ask about it.

The lock is an exclusive `flock` on ``.cockpit/engine.lock``, which dies with the process that
holds it (kill -9 included); the file holds the engine's pid, for a starter waiting on the
engine it spawned.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from cockpit.errors import EngineError
from cockpit.store.paths import WorkspacePaths


@contextlib.contextmanager
def engine_lock(cockpit_dir: Path) -> Iterator[None]:
    """One engine per workspace: an exclusive lock that dies with the process holding it."""
    path = WorkspacePaths(cockpit_dir.parent).lock
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise EngineError(
                f"an engine is already running for this workspace (pid {holder}); "
                "see it with `cockpit status`, stop it with `cockpit stop`"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _engine_lock(workspace: Path) -> Path:
    return WorkspacePaths(Path(workspace)).lock


def engine_lock_pid(workspace: Path) -> int | None:
    """The pid an engine wrote into the workspace's lock when it took it, read without
    touching the lock: for a starter waiting on the engine it spawned (see `engine_lock_held`).
    An engine that has died leaves its pid behind; ask `engine_lock_held` whether it holds."""
    try:
        text = _engine_lock(workspace).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def engine_lock_held(workspace: Path) -> bool:
    """Whether an engine holds the workspace's lock right now: the one definition of an
    engine running, for the screen, `cockpit status` and the commands alike.

    Read from the kernel's table of file locks (``/proc/locks``) without touching the lock, so
    that a screen may ask several times a second: an engine starting in that instant never
    finds it taken. Where that table cannot be read, the lock is tried for an instant."""
    path = _engine_lock(workspace)
    try:
        stat = os.stat(path)
    except OSError:
        return False
    listed = _flock_listed(stat)
    return listed if listed is not None else _lock_taken(path)


def _flock_listed(stat: os.stat_result) -> bool | None:
    """Whether ``/proc/locks`` lists a held flock on the file (None: the table is unreadable).
    A line reads ``1: FLOCK  ADVISORY  WRITE 4242 00:2d:1311 0 EOF``: the device's major and
    minor numbers in hex, then the inode; a ``->`` line is a lock waited for, not held."""
    wanted = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as table:
            lines = table.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            return True
    return False


def _lock_taken(path: Path) -> bool:
    """Whether the lock is taken, found by trying it for an instant (an engine starting in
    that instant would find it taken: only where ``/proc/locks`` is unreadable)."""
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
