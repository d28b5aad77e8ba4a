"""Confinement of the training process's files (and, as a fallback, its TCP) by Landlock.

The training script is untrusted, and Python's audit hooks only see Python's own calls: a
compiled extension, a raw syscall through ctypes or a shell it starts goes around them.
Landlock is a Linux security module that any process may use, without privilege, to give up
rights for itself and for everything it starts afterwards, for good. So before the script runs
(and before torch, which starts threads: Landlock confines the calling thread only, and only
threads started later inherit it), the trusted part of ``python -m trainer`` calls `restrict`:

- files: reads (and execution) only beneath the `Policy`'s ``read`` paths, full access only
  beneath its ``read_write`` paths, read/write/ioctl on its ``devices`` (the GPU's device
  files), nothing anywhere else; a shell or subprocess the script starts inherits all of it;
- TCP (``deny_tcp``, Landlock ABI 4 and later): no connect and no bind, to any port, for when
  the kernel refuses the network namespace that `trainer.confine` prefers;
- from ABI 6: no signals to, and no abstract unix sockets of, processes outside the training.

The kernel's Landlock ABI grows over releases; `restrict` handles every right that the running
ABI knows (REFER from 2, TRUNCATE from 3, TCP from 4, IOCTL_DEV from 5, scopes from 6) and
leaves out the others, which the kernel would otherwise refuse. It is all or nothing: when it
raises, nothing is enforced (at most no_new_privs, set just before the last step, stays set).

``COCKPIT_LANDLOCK_ABI_MAX`` (an integer) is a diagnostic knob for trying degraded kernels on
a recent one: ``0`` behaves as if the kernel had no Landlock, ``3`` uses at most ABI 3.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

ABI_MAX_ENV = "COCKPIT_LANDLOCK_ABI_MAX"

# Landlock came after the kernel gave new system calls one number on every architecture
# (from 424 on), so these hold on x86_64 and aarch64 alike.
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1 << 0
LANDLOCK_RULE_PATH_BENEATH = 1
PR_SET_NO_NEW_PRIVS = 38

# Filesystem rights, from include/uapi/linux/landlock.h.
ACCESS_FS_EXECUTE = 1 << 0
ACCESS_FS_WRITE_FILE = 1 << 1
ACCESS_FS_READ_FILE = 1 << 2
ACCESS_FS_READ_DIR = 1 << 3
ACCESS_FS_MAKE_SYM = 1 << 12  # the last of ABI 1's thirteen rights (bits 0 to 12)
ACCESS_FS_REFER = 1 << 13  # ABI 2
ACCESS_FS_TRUNCATE = 1 << 14  # ABI 3
ACCESS_FS_IOCTL_DEV = 1 << 15  # ABI 5
# Network rights (ABI 4) and scopes (ABI 6).
ACCESS_NET_BIND_TCP = 1 << 0
ACCESS_NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

# The only rights the kernel accepts in a rule on a file rather than a directory.
FILE_RIGHTS = ACCESS_FS_EXECUTE | ACCESS_FS_WRITE_FILE | ACCESS_FS_READ_FILE
FILE_RIGHTS |= ACCESS_FS_TRUNCATE | ACCESS_FS_IOCTL_DEV
READ_RIGHTS = ACCESS_FS_EXECUTE | ACCESS_FS_READ_FILE | ACCESS_FS_READ_DIR
DEVICE_RIGHTS = ACCESS_FS_READ_FILE | ACCESS_FS_WRITE_FILE | ACCESS_FS_READ_DIR
DEVICE_RIGHTS |= ACCESS_FS_TRUNCATE | ACCESS_FS_IOCTL_DEV
# Writing files that exist (opening for writing may truncate), creating nothing.
EXISTING_FILE_RIGHTS = ACCESS_FS_READ_FILE | ACCESS_FS_WRITE_FILE | ACCESS_FS_READ_DIR
EXISTING_FILE_RIGHTS |= ACCESS_FS_TRUNCATE

# Open for the life of the process: see `_own_tasks`.
_PINNED: list[int] = []

NOT_CONFINED = "reads and writes of the training process are not confined"


class LandlockUnavailable(Exception):
    """The kernel cannot enforce what was asked; the message says why and what to do. Nothing
    was applied. ``abi`` is the ABI that is available (0: none), so a caller that asked for
    ``deny_tcp`` can still confine files alone when it is not 0."""

    def __init__(self, message: str, abi: int = 0) -> None:
        super().__init__(message)
        self.abi = abi


@dataclass(frozen=True)
class Policy:
    """What the confined process may still reach; every path not listed is out of reach."""

    read: tuple[Path, ...] = ()
    """Read files, list directories and execute beneath each of these."""
    read_write: tuple[Path, ...] = ()
    """Full access beneath each of these: write, truncate, create, remove, rename."""
    devices: tuple[Path, ...] = ()
    """Read, write and ioctl (no create or remove) on these device files or directories."""
    writable_files: tuple[Path, ...] = ()
    """Read and write the files that already exist beneath each of these, create nothing (for
    a pseudo-filesystem such as /proc)."""
    own_thread_names: bool = False
    """Name this process's own threads, now and those started later, through
    ``/proc/<pid>/task/<tid>/comm`` (NVIDIA's driver does this in ``cuInit``)."""
    deny_tcp: bool = False
    """No TCP connect or bind at all (needs ABI 4, Linux 6.7)."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),  # ABI 4
        ("scoped", ctypes.c_uint64),  # ABI 6
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # packed in the kernel's header: 12 bytes, not 16
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc_call(function_name: str, *args: object) -> int:
    """Call a libc function that returns -1 and sets errno on failure; OSError then."""
    function = getattr(ctypes.CDLL(None, use_errno=True), function_name)
    function.restype = ctypes.c_long
    result = int(function(*args))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def _syscall(number: int, *args: object) -> int:
    """A raw system call: glibc wraps none of Landlock's."""
    return _libc_call("syscall", ctypes.c_long(number), *args)


def _abi_cap() -> int | None:
    raw = os.environ.get(ABI_MAX_ENV, "").strip()
    if not raw:
        return None
    try:
        return max(0, int(raw))
    except ValueError:
        raise ValueError(
            f"{ABI_MAX_ENV}={raw!r} is not an integer: set it to 0 (as if the kernel had no "
            "Landlock), to the highest ABI to use, or leave it unset"
        ) from None


def _probe() -> tuple[int, str]:
    """The usable Landlock ABI, and when it is 0 the reason in plain words."""
    if not sys.platform.startswith("linux"):
        return 0, f"Landlock is a Linux feature and this is {sys.platform}"
    cap = _abi_cap()
    if cap == 0:
        return 0, f"Landlock is turned off by {ABI_MAX_ENV}=0; unset it to use the kernel's"
    try:
        abi = _syscall(
            SYS_LANDLOCK_CREATE_RULESET,
            None,
            ctypes.c_size_t(0),
            ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION),
        )
    except OSError as exc:
        if exc.errno == errno.EOPNOTSUPP:
            return 0, (
                "Landlock is built into this kernel but not enabled in the kernel's lsm= list; "
                "add landlock to lsm= on the kernel command line (or CONFIG_LSM) and reboot"
            )
        if exc.errno in (errno.ENOSYS, errno.EPERM):
            return 0, (
                "Landlock is not available (kernel older than 5.13, built without "
                "CONFIG_SECURITY_LANDLOCK, or a container's seccomp profile blocks its system "
                "calls); use Linux 5.13 or later with landlock in its lsm= list"
            )
        return 0, f"asking the kernel for its Landlock ABI failed: {exc.strerror}"
    return (abi if cap is None else min(abi, cap)), ""


def abi_version() -> int:
    """The Landlock ABI this process may use (capped by ``COCKPIT_LANDLOCK_ABI_MAX``), or 0
    when there is none."""
    return _probe()[0]


def unavailable_reason() -> str:
    """Why Landlock cannot be used here, in plain words; "" when it can."""
    return _probe()[1]


def _handled_fs_rights(abi: int) -> int:
    """Every filesystem right the ABI knows: a right left unhandled would stay allowed."""
    rights = (ACCESS_FS_MAKE_SYM << 1) - 1
    if abi >= 2:
        rights |= ACCESS_FS_REFER
    if abi >= 3:
        rights |= ACCESS_FS_TRUNCATE
    if abi >= 5:
        rights |= ACCESS_FS_IOCTL_DEV
    return rights


def _ruleset_size(abi: int) -> int:
    """The part of the ruleset struct the ABI knows: a larger size with fields it does not
    know is refused by older kernels."""
    return 8 if abi < 4 else 16 if abi < 6 else 24


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1  # no /proc to ask: trust the caller


def _add_path_rule(ruleset_fd: int, path: Path, rights: int, keep_open: bool = False) -> bool:
    """Allow ``rights`` beneath ``path``; False when it does not exist (nothing to allow).
    ``keep_open`` keeps the path open for the life of the process (see `_own_tasks`)."""
    try:
        path_fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        if not stat.S_ISDIR(os.fstat(path_fd).st_mode):
            rights &= FILE_RIGHTS  # directory rights on a file make the kernel say EINVAL
        if not rights:
            return False
        rule = _PathBeneathAttr(allowed_access=rights, parent_fd=path_fd)
        try:
            _syscall(
                SYS_LANDLOCK_ADD_RULE,
                ctypes.c_int(ruleset_fd),
                ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH),
                ctypes.byref(rule),
                ctypes.c_uint32(0),
            )
        except OSError as exc:
            raise LandlockUnavailable(
                f"the kernel refused a Landlock rule for {path}: {exc.strerror}; "
                f"nothing was applied, so {NOT_CONFINED}"
            ) from exc
        return True
    finally:
        if keep_open:
            _PINNED.append(path_fd)
        else:
            os.close(path_fd)


def _own_tasks() -> Path:
    """This process's own thread folder in /proc, ``/proc/<pid>/task``.

    A rule beneath it lets the process write the ``comm`` (name) of each of its threads,
    those started later included: each appears as ``task/<tid>`` beneath the same folder.
    NVIDIA's driver (570 and later) names the threads it starts in ``cuInit`` that way, and
    fails with error 304 when the write is refused. Why this is narrow enough:

    - the folder is this process's own (resolved now, not ``/proc/self``, which would follow
      whoever reads it); no other process's files lie beneath it, and the kernel refuses a
      ``comm`` write to a thread of another process anyway;
    - what else is writable there concerns these threads alone (raising their own OOM
      score, their own memory through ``mem``), which the process could do to itself
      without /proc; lowering an OOM score or a login uid needs privileges it lacks;
    - processes it starts get their own pid folders, which the rule does not reach, and
      Landlock's scoping already keeps it from tracing or signalling anything outside.

    Landlock ties a rule to the folder's inode; procfs makes a new inode when a dropped
    folder is looked up again, which would silently lose the rule. So the folder is kept
    open for the life of the process (``_PINNED``), which keeps its entry, and the rule,
    in place."""
    return Path(f"/proc/{os.getpid()}/task")


def restrict(policy: Policy) -> str:
    """Confine this process, and everything it starts, to ``policy`` for good.

    Call it while the process has a single thread. Paths that do not exist are skipped.
    Returns one line saying what is enforced. Raises LandlockUnavailable, enforcing nothing,
    when the kernel offers no Landlock, when ``deny_tcp`` is asked of an ABI older
    than 4 (``exc.abi`` then says files alone could be confined: call again without it), or
    when the process already runs several threads.
    """
    abi, reason = _probe()
    if abi == 0:
        raise LandlockUnavailable(f"{reason}; {NOT_CONFINED}")
    if policy.deny_tcp and abi < 4:
        raise LandlockUnavailable(
            f"Landlock ABI {abi} cannot deny TCP (that needs ABI 4, Linux 6.7); nothing was "
            "applied: call restrict again with deny_tcp=False to confine files alone",
            abi=abi,
        )
    threads = _thread_count()
    if threads > 1:
        raise LandlockUnavailable(
            f"the process already runs {threads} threads and Landlock would confine only the "
            "calling one; call restrict before anything starts a thread (before importing "
            f"torch); {NOT_CONFINED}",
            abi=abi,
        )
    handled_fs = _handled_fs_rights(abi)
    attr = _RulesetAttr(
        handled_access_fs=handled_fs,
        # Handled with no port rule at all: every TCP connect and bind is refused.
        handled_access_net=(ACCESS_NET_BIND_TCP | ACCESS_NET_CONNECT_TCP) if policy.deny_tcp else 0,
        scoped=(SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET) if abi >= 6 else 0,
    )
    try:
        ruleset_fd = _syscall(
            SYS_LANDLOCK_CREATE_RULESET,
            ctypes.byref(attr),
            ctypes.c_size_t(_ruleset_size(abi)),
            ctypes.c_uint32(0),
        )
    except OSError as exc:
        raise LandlockUnavailable(
            f"the kernel refused to create a Landlock ruleset (ABI {abi}): {exc.strerror}; "
            f"{NOT_CONFINED}",
            abi=abi,
        ) from exc
    try:
        # Read-write paths get REFER too: with it handled, moving a file between directories
        # needs it on both sides. IOCTL_DEV keeps CUDA's ioctls on its device files working.
        readable = sum(_add_path_rule(ruleset_fd, p, READ_RIGHTS & handled_fs) for p in policy.read)
        writable = sum(_add_path_rule(ruleset_fd, p, handled_fs) for p in policy.read_write)
        devices = sum(
            _add_path_rule(ruleset_fd, p, DEVICE_RIGHTS & handled_fs) for p in policy.devices
        )
        existing = sum(
            _add_path_rule(ruleset_fd, p, EXISTING_FILE_RIGHTS & handled_fs)
            for p in policy.writable_files
        )
        names = policy.own_thread_names and _add_path_rule(
            ruleset_fd, _own_tasks(), EXISTING_FILE_RIGHTS & handled_fs, keep_open=True
        )
        try:
            # Without no_new_privs an unprivileged process may not restrict itself (a setuid
            # program it ran could be fooled by the missing rights). Set last: it is for good
            # too, and a refused rule above must leave the process as it was.
            _libc_call(
                "prctl", ctypes.c_int(PR_SET_NO_NEW_PRIVS), *map(ctypes.c_ulong, (1, 0, 0, 0))
            )
            _syscall(SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset_fd), ctypes.c_uint32(0))
        except OSError as exc:
            raise LandlockUnavailable(
                f"the kernel refused to enforce the Landlock ruleset: {exc.strerror}; "
                f"{NOT_CONFINED}",
                abi=abi,
            ) from exc
    finally:
        os.close(ruleset_fd)
    line = f"files: reads limited to {readable + writable + devices + existing} paths, writes to {writable}"
    if devices:
        line += f", devices to {devices}"
    if existing:
        line += ", existing files writable beneath " + ", ".join(map(str, policy.writable_files))
    if names:
        line += ", its own threads' names"
    line += f" (Landlock ABI {abi})"
    if policy.deny_tcp:
        line += ", no TCP (Landlock)"
    if abi >= 6:
        line += ", no signals or abstract unix sockets beyond its own processes"
    return line
