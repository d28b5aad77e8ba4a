"""The host's unix sockets out of the training's reach, and a /dev/shm of its own.

A network namespace (trainer.confine) covers abstract unix sockets, but not pathname ones: a
socket is reached through its file, and a daemon's socket file (Docker's
``/var/run/docker.sock``, whose user is root in all but name) stays in the training's sight.
Landlock refuses *creating* a socket file outside the training's folder, but not
``connect()`` to one that exists. So the training's mount namespace (trainer.pidns: mounts
there never reach the host's) covers them, before Landlock is on (Landlock then refuses
mount(2) and umount(2), and the mounts a further namespace would copy are locked there):

- an empty, read-only tmpfs over the folders where daemons keep their sockets (``/run``, and
  ``/var/run`` where it is a folder of its own), unless something the training must read or
  write lies inside;
- ``/dev/null`` over every other socket file in reach: those bound in the host's network
  namespace when the training started (`host_sockets`, read before the training leaves that
  namespace) and those mounted on their own (`mounted_sockets`). Connecting to it gets
  ECONNREFUSED.

Hiding ``/run`` takes nothing the training needs: Landlock grants it nothing there
(trainer.walls.SYSTEM_READ), and CUDA and NVML need only ``/dev/nvidia*`` and
``/proc/driver/nvidia``; nvidia-persistenced's socket there serves ``nvidia-smi``'s settings,
not CUDA. The device probe runs in this same confinement and would see otherwise.

What stays in reach, where the training may resolve its path: a socket bound after the
training started outside the hidden folders (in ``/tmp``, say), by a host process or in
another network namespace; one bound at a relative path (its listing does not say where).
Where Landlock is left out (the ``no-landlock`` layer), the training holds the privilege to
unmount in its own namespaces, and could uncover them.

Multiprocessing's own machinery keeps working: socketpairs have no file, and its listeners
are bound in the training's temporary folder, after this. Its semaphores and PyTorch's shared
tensors (DataLoader workers) live in ``/dev/shm``, which is the host's and so out of
Landlock's grants; `own_shm` gives the training an empty one of its own instead.

Only the standard library is used: this runs before torch, while the process has one thread.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import stat
from collections.abc import Iterable

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000

# Where daemons keep their sockets; /var/run is mostly a link to /run.
FOLDERS = ("/run", "/var/run")
UNIX_TABLE = "/proc/net/unix"
MOUNTS = "/proc/self/mountinfo"
# Mounts not looked at: looking at a file there may hang on a server that does not answer.
REMOTE = ("nfs", "nfs4", "cifs", "smb3", "9p", "ceph", "glusterfs", "lustre", "afs")
SHM = "/dev/shm"
# A training's /dev/shm holds at most this share of the machine's memory: what it holds is
# memory that no process's resident size shows until it is mapped.
SHM_SHARE = 0.1


def host_sockets(table: str = UNIX_TABLE) -> list[str]:
    """The absolute paths of the pathname unix sockets bound in this process's network
    namespace, each once. Read it before leaving the host's network namespace: in a new one
    the table lists that namespace's sockets only. Abstract sockets (``@name``) are left out:
    a network namespace of its own already keeps them out of reach."""
    try:
        with open(table, encoding="utf-8", errors="surrogateescape") as handle:
            lines = handle.read().splitlines()[1:]
    except OSError:
        return []
    # Num RefCount Protocol Flags Type St Inode Path: a path may hold spaces.
    paths = (fields[7] for line in lines if len(fields := line.split(maxsplit=7)) == 8)
    return list(dict.fromkeys(path for path in paths if path.startswith("/")))


def mounted_sockets(table: str = MOUNTS) -> list[str]:
    """The socket files mounted on their own in this mount namespace, as a container is given
    a host's ``docker.sock``: bound in another network namespace, they are not in
    `host_sockets`."""
    try:
        with open(table, encoding="utf-8", errors="surrogateescape") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        # ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - FSTYPE SOURCE OPTIONS
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        if len(parts) < 5 or parts[3] == "/" or rest.split(" ", 1)[0].startswith(REMOTE):
            continue  # a whole file system, not a file; or a remote one
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[4])
        try:
            if stat.S_ISSOCK(os.lstat(point).st_mode):
                found.append(point)
        except OSError:
            continue
    return found


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.mount(
        source.encode(),
        os.fsencode(target),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, errno.errorcode.get(code, os.strerror(code)))


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _folders() -> list[str]:
    """`FOLDERS` that are folders, at their real paths, each once (a link to /run is /run)."""
    found = (os.path.realpath(folder) for folder in FOLDERS if os.path.isdir(folder))
    return list(dict.fromkeys(found))


def hide(sockets: Iterable[str], keep: Iterable[str]) -> tuple[str | None, str]:
    """In the training's own mount namespace, before Landlock: hide `FOLDERS` under an empty
    tmpfs (but a folder that holds one of ``keep``, what the training must read or write), then
    ``sockets`` (`host_sockets`) and `mounted_sockets` still in reach under ``/dev/null``.
    Returns what hides them (None where nothing could) and what falls short ("" where
    nothing does)."""
    kept = [os.path.realpath(path) for path in keep]
    hidden: list[str] = []
    short: list[str] = []
    refused = 0
    for folder in _folders():
        holding = next((path for path in kept if _within(path, folder)), None)
        if holding is not None:
            short.append(f"{folder} is not hidden: the training needs {holding}")
            continue
        try:
            flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
            _mount("tmpfs", folder, "tmpfs", flags, "size=16k,nr_inodes=16,mode=755")
        except OSError as exc:
            short.append(f"{folder} is not hidden ({exc.strerror})")
            refused += 1
            continue
        hidden.append(folder)
    covered, missed = 0, []
    for path in dict.fromkeys([*sockets, *mounted_sockets()]):
        try:
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                continue  # gone, and something else in its place
        except OSError:
            continue  # gone, or under a hidden folder: out of reach by its path
        try:
            _mount("/dev/null", path, None, MS_BIND)
        except OSError as exc:
            missed.append(f"{path} ({exc.strerror})")
            continue
        covered += 1
    if missed:
        short.append(f"{len(missed)} host sockets stay in reach: {', '.join(missed[:3])}")
    if not hidden and not covered and (refused or missed):
        return None, "host unix sockets are in reach: " + "; ".join(short)
    what = [f"an empty {folder}" for folder in hidden]
    if covered:
        other, plural = "other " if hidden else "", "s" if covered > 1 else ""
        what.append(f"/dev/null over {covered} {other}host socket{plural}")
    if missed:
        what.append(f"{len(missed)} still in reach")
    enforced = f"a mount namespace of its own ({', '.join(what) or 'no host socket in sight'})"
    return enforced, "; ".join(short)


def own_shm() -> bool:
    """In the training's own mount namespace: an empty tmpfs of its own on /dev/shm (at most
    `SHM_SHARE` of the machine's memory), so that its semaphores and shared tensors work and
    nothing of the host's shared memory is in sight. Whether it is mounted (only then may
    Landlock grant /dev/shm)."""
    if not os.path.isdir(SHM):
        return False
    size = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * SHM_SHARE)
    try:
        _mount("tmpfs", SHM, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=1777")
    except OSError:
        return False
    return True
