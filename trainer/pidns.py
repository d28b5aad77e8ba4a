"""A PID namespace of its own for the training: nothing it starts outlives it, and its /proc
shows its own processes only.

Inside the training's user namespace (trainer.confine), the process that the harness started
unshares a PID and a mount namespace and forks. The child is process 1 of the new PID
namespace: it mounts a procfs of that namespace on /proc, so /proc lists the training's own
processes and none of the host's (their command lines often carry paths, hosts, tokens), and
forks the training, process 2. Process 1 is a small init of ours (process 1 ignores every
signal it has no handler for, even a SIGKILL it sends itself, so the training must not be
it): it reaps orphans, and when the training ends it says how and ends too. The kernel then
kills every process left in the namespace, whatever it did to detach (a new session, a double
fork): nothing outlives the training, and no kill of the harness's has to win a race with a
process that keeps forking.

The process outside runs nothing of the script, passes the harness's signals on, and ends
as the training ended (its exit code, or killed by the same signal), so the harness reads the
training's outcome as before.

A process 1 whose namespace cannot get its own /proc would read the host's with ids of the
new namespace (a thread's name, written by NVIDIA's driver under /proc/self/task/<tid>, would
go nowhere), and once it has started, its namespace cannot be left. So a throwaway child tries
the whole setup first; where the kernel refuses any part, the training runs without the PID
namespace and says why.

Only the standard library is used: this runs before torch, while the process has one thread.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
from types import FrameType

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8

ENFORCED_BY = "a PID namespace of its own (its /proc shows its own processes only)"
_FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
# The throwaway child's exit codes for the step of the setup that was refused.
_UNSHARE_REFUSED, _MOUNT_REFUSED = 3, 4
_REFUSALS = {
    _UNSHARE_REFUSED: "unsharing a PID and a mount namespace was refused",
    _MOUNT_REFUSED: "mounting a /proc of its own was refused",
}


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {errno.errorcode.get(code, code)} ({os.strerror(code)})")


def _own_proc() -> None:
    """In process 1 of the new namespaces: stop mounts from reaching the host's namespace,
    then mount this PID namespace's procfs over /proc."""
    libc = _libc()
    _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "making mounts private")
    _check(
        libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None),
        "mounting /proc of the new PID namespace",
    )


def _enter() -> None:
    """Unshare the PID and mount namespaces (children are born into the new PID one)."""
    _check(_libc().unshare(CLONE_NEWNS | CLONE_NEWPID), "unsharing the PID and mount namespaces")


def refused() -> str | None:
    """Why the PID namespace cannot be had here (None: it can): a throwaway child tries the
    whole setup and reports, so that a refusal costs nothing."""
    trial = os.fork()
    if trial == 0:  # the throwaway child: never returns
        code = _UNSHARE_REFUSED
        try:
            _enter()
            first = os.fork()
            if first == 0:
                try:
                    _own_proc()
                    os._exit(0)
                except OSError:
                    os._exit(_MOUNT_REFUSED)
            code = os.waitstatus_to_exitcode(os.waitpid(first, 0)[1])
        except OSError:
            pass
        os._exit(code if code >= 0 else _MOUNT_REFUSED)
    status = os.waitstatus_to_exitcode(os.waitpid(trial, 0)[1])
    if status == 0:
        return None
    return _REFUSALS.get(status, f"setting up a PID namespace failed (status {status})")


def isolate() -> str | None:
    """Run the rest of this program as the training in a PID namespace of its own, with its own
    /proc; returns None there, or why the namespace could not be had (then nothing changed).
    The process that calls it waits outside and ends as the training ended (it never returns
    there); process 1 of the namespace is a small init of ours that reaps orphans and ends the
    namespace with the training. Call it inside the training's user namespace, while the
    process has one thread."""
    why = refused()
    if why is not None:
        return why
    status_read, status_write = os.pipe()
    _enter()
    init = os.fork()
    if init != 0:  # the harness's child: waits outside the namespace
        os.close(status_write)
        _follow(init, status_read)
    os.close(status_read)
    _own_proc()  # the trial succeeded: a failure here is an error of the setup
    training = os.fork()
    if training == 0:
        os.close(status_write)
        return None  # the training: process 2, with the signals of any process
    _init(training, status_write)
    raise AssertionError("unreachable")  # pragma: no cover


def _forward_to(pid: int) -> None:
    """Pass the signals a harness sends (`_FORWARDED`) on to ``pid``."""

    def forward(signum: int, frame: FrameType | None) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for signum in _FORWARDED:
        signal.signal(signum, forward)


def _init(training: int, status_write: int) -> None:
    """Process 1: reap whatever ends (orphans are its children), and when the training ends,
    tell the process outside how (its raw wait status) and end: the kernel then ends every
    process left in the namespace. Being process 1, it ignores signals it has no handler for;
    the training, process 2, does not."""
    _forward_to(training)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(1)
        if pid == training:
            os.write(status_write, str(status).encode())
            os._exit(0)


def _follow(init: int, status_read: int) -> None:
    """The part of the process the harness started: pass its signals on, and end as the
    training ended (as process 1 said; as process 1 ended where it could not say)."""
    _forward_to(init)
    while True:
        try:
            _, status = os.waitpid(init, 0)
            break
        except ChildProcessError:
            os._exit(1)
    said = os.read(status_read, 64).decode(errors="replace").strip()
    code = os.waitstatus_to_exitcode(int(said) if said.isdigit() else status)
    if code < 0:
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # those two have no handler
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code & 0xFF)
