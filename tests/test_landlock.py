"""Landlock confines a real process: each test runs a small Python program in a fresh process
that confines itself with `restrict` and then tries things, a shell it starts included, and
prints what happened. Each forbidden action is also tried unconfined, where it must succeed,
so that a confinement which silently did nothing would fail the test. Degraded kernels are
tried for real through ``COCKPIT_LANDLOCK_ABI_MAX``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from tests.conftest import REPO
from trainer.landlock import ABI_MAX_ENV, abi_version

# Its tests start processes: the slow tier (see tests/conftest.py).
pytestmark = pytest.mark.e2e

KERNEL_ABI = abi_version()

# What every confined program may read so that Python, and a shell it starts, can run.
RUNTIME = ["/usr", "/lib", "/lib64", "/bin", "/etc", sys.prefix, sys.base_prefix]

# Runs in the child: imports everything first (nothing is readable afterwards), confines
# itself per ARGS, then the test's own lines call attempt(), which records "ok" or the error.
PRELUDE = """
import json, os, shlex, signal, socket, subprocess, sys, threading
from pathlib import Path
from trainer.landlock import LandlockUnavailable, Policy, abi_version, restrict

ARGS = json.loads(sys.argv[1])
RESULTS = {"abi": abi_version()}


def attempt(name, action):
    try:
        action()
        RESULTS[name] = "ok"
    except OSError as exc:
        RESULTS[name] = type(exc).__name__


def confine(deny_tcp=ARGS["deny_tcp"]):
    policy = Policy(
        read=tuple(Path(p) for p in ARGS["read"]),
        read_write=tuple(Path(p) for p in ARGS["read_write"]),
        devices=tuple(Path(p) for p in ARGS["devices"]),
        writable_files=tuple(Path(p) for p in ARGS.get("writable_files", ())),
        own_thread_names=ARGS.get("own_thread_names", False),
        deny_tcp=deny_tcp,
    )
    try:
        RESULTS["enforced"] = restrict(policy)
    except LandlockUnavailable as exc:
        RESULTS["unavailable"] = str(exc)
        RESULTS["unavailable_abi"] = exc.abi


if ARGS["confined"]:
    confine()
"""


def needs_abi(minimum: int) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        minimum > KERNEL_ABI,
        reason=f"needs Landlock ABI {minimum}; this kernel offers {KERNEL_ABI or 'none'}",
    )


def confined_and_control(minimum_abi: int = 1) -> list[Any]:
    """Both ways to run a test: confined, and unconfined as the control proving it can fail."""
    return [
        pytest.param(True, id="confined", marks=needs_abi(minimum_abi)),
        pytest.param(False, id="unconfined-control"),
    ]


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, str]:
    """A read-only folder, a writable one with two subfolders, and one outside both."""
    (tmp_path / "readonly").mkdir()
    (tmp_path / "readonly" / "notes.txt").write_text("readable")
    for sub in ("a", "b"):
        (tmp_path / "writable" / sub).mkdir(parents=True)
    (tmp_path / "writable" / "a" / "existing.txt").write_text("0123456789")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("secret")
    return {name: str(tmp_path / name) for name in ("readonly", "writable", "outside")}


def run_program(
    lines: str,
    tree: dict[str, str],
    *,
    confined: bool,
    devices: tuple[str, ...] = (),
    deny_tcp: bool = False,
    abi_max: int | None = None,
    **extra: object,
) -> dict[str, Any]:
    """Run PRELUDE + ``lines`` in a fresh Python and return what it recorded."""
    args = {
        "confined": confined,
        "read": [*RUNTIME, tree["readonly"]],
        "read_write": [tree["writable"]],
        "devices": list(devices),
        "deny_tcp": deny_tcp,
        **tree,
        **extra,
    }
    env = {key: value for key, value in os.environ.items() if key != ABI_MAX_ENV}
    if abi_max is not None:
        env[ABI_MAX_ENV] = str(abi_max)
    program = PRELUDE + lines + "\nprint(json.dumps(RESULTS))\n"
    proc = subprocess.run(
        [sys.executable, "-c", program, json.dumps(args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    results: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    if confined:
        assert "enforced" in results, results.get("unavailable")
    return results


@pytest.mark.parametrize("confined", confined_and_control())
def test_reads_and_writes_reach_only_the_listed_paths(tree: dict[str, str], confined: bool) -> None:
    results = run_program(
        """
attempt("read outside", lambda: Path(ARGS["outside"], "secret.txt").read_text())
attempt("list outside", lambda: os.listdir(ARGS["outside"]))
attempt("read inside read", lambda: Path(ARGS["readonly"], "notes.txt").read_text())
attempt("write inside read", lambda: Path(ARGS["readonly"], "new.txt").write_text("x"))
attempt("write outside", lambda: Path(ARGS["outside"], "new.txt").write_text("x"))
""",
        tree,
        confined=confined,
    )
    refused = "PermissionError" if confined else "ok"
    assert results["read inside read"] == "ok"
    assert results["read outside"] == refused
    assert results["list outside"] == refused
    assert results["write inside read"] == refused
    assert results["write outside"] == refused
    assert Path(tree["outside"], "new.txt").exists() is not confined
    if confined:
        assert results["enforced"].startswith("files: reads limited to ")


@pytest.mark.parametrize("abi_max", [None, 1, 2, 3, 4, 5, 6], ids=lambda cap: f"abi-max-{cap}")
@needs_abi(1)
def test_read_write_paths_allow_everything_beneath_on_every_abi(
    tree: dict[str, str], abi_max: int | None
) -> None:
    results = run_program(
        """
w = Path(ARGS["writable"])
attempt("create", lambda: (w / "a" / "new.txt").write_text("x"))
attempt("append", lambda: (w / "a" / "existing.txt").open("a").write("more"))
attempt("truncate", lambda: os.truncate(w / "a" / "existing.txt", 2))
attempt("mkdir", lambda: (w / "a" / "sub").mkdir())
attempt("rename within", lambda: (w / "a" / "new.txt").rename(w / "a" / "renamed.txt"))
attempt("rename across", lambda: (w / "a" / "renamed.txt").rename(w / "b" / "moved.txt"))
attempt("symlink", lambda: (w / "b" / "link").symlink_to(w / "b" / "moved.txt"))
attempt("fifo", lambda: os.mkfifo(w / "b" / "fifo"))
attempt("unlink", lambda: (w / "b" / "link").unlink())
attempt("rmdir", lambda: (w / "a" / "sub").rmdir())
attempt("write outside", lambda: Path(ARGS["outside"], "new.txt").write_text("x"))
""",
        tree,
        confined=True,
        abi_max=abi_max,
    )
    effective = KERNEL_ABI if abi_max is None else min(KERNEL_ABI, abi_max)
    # ABI 1 knows no REFER: the kernel then refuses every move between folders (EXDEV).
    across = "ok" if effective >= 2 else "OSError"
    expected = dict.fromkeys(
        ["create", "append", "truncate", "mkdir", "rename within", "symlink", "fifo"], "ok"
    )
    expected |= {"rename across": across, "unlink": "ok", "rmdir": "ok"}
    expected["write outside"] = "PermissionError"
    assert {name: results[name] for name in expected} == expected
    assert results["abi"] == effective
    assert f"(Landlock ABI {effective})" in results["enforced"]


@pytest.mark.parametrize("confined", confined_and_control())
def test_a_shell_child_cannot_write_outside_either(tree: dict[str, str], confined: bool) -> None:
    results = run_program(
        """
outside, writable = shlex.quote(ARGS["outside"]), shlex.quote(ARGS["writable"])
RESULTS["system"] = os.system(f"echo x > {outside}/by_system")
shell = subprocess.run(
    ["/bin/sh", "-c", f"echo x > {outside}/by_sh; echo y > {writable}/by_sh"],
    capture_output=True, text=True,
)
RESULTS["sh stderr"] = shell.stderr
""",
        tree,
        confined=confined,
    )
    assert Path(tree["writable"], "by_sh").exists()
    assert Path(tree["outside"], "by_system").exists() is not confined
    assert Path(tree["outside"], "by_sh").exists() is not confined
    if confined:
        assert results["system"] != 0
        assert "Permission denied" in results["sh stderr"]


@pytest.fixture
def tcp_listener() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


@pytest.mark.parametrize("confined", confined_and_control(minimum_abi=4))
def test_deny_tcp_refuses_every_connect_and_bind(
    tree: dict[str, str], tcp_listener: int, confined: bool
) -> None:
    results = run_program(
        """
port = ARGS["port"]
attempt("connect", lambda: socket.create_connection(("127.0.0.1", port), timeout=5).close())
attempt("bind", lambda: socket.socket().bind(("127.0.0.1", 0)))
child = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5)"
RESULTS["child exit"] = subprocess.run([sys.executable, "-c", child], capture_output=True).returncode
""",
        tree,
        confined=confined,
        deny_tcp=True,
        port=tcp_listener,
    )
    refused = "PermissionError" if confined else "ok"
    assert results["connect"] == refused
    assert results["bind"] == refused
    assert (results["child exit"] != 0) is confined
    if confined:
        assert "no TCP (Landlock)" in results["enforced"]


@pytest.mark.parametrize("listed", [True, False], ids=["listed", "not-listed-control"])
@needs_abi(1)
def test_a_listed_device_is_writable(tree: dict[str, str], listed: bool) -> None:
    results = run_program(
        """
attempt("write /dev/null", lambda: open("/dev/null", "w").write("x"))
attempt("read /dev/zero", lambda: open("/dev/zero", "rb").read(1))
""",
        tree,
        confined=True,
        devices=("/dev/null",) if listed else (),
    )
    assert results["write /dev/null"] == ("ok" if listed else "PermissionError")
    assert results["read /dev/zero"] == "PermissionError"


def test_without_landlock_restrict_says_why_and_changes_nothing(tree: dict[str, str]) -> None:
    results = run_program(
        'confine()\nattempt("write outside", lambda: Path(ARGS["outside"], "new.txt").write_text("x"))',
        tree,
        confined=False,
        deny_tcp=True,
        abi_max=0,
    )
    assert results["abi"] == 0
    assert "enforced" not in results
    assert f"{ABI_MAX_ENV}=0" in results["unavailable"]
    assert "not confined" in results["unavailable"]
    assert results["unavailable_abi"] == 0
    assert results["write outside"] == "ok"


@needs_abi(1)
def test_an_old_abi_cannot_deny_tcp_but_can_still_confine_files(tree: dict[str, str]) -> None:
    results = run_program(
        """
confine(deny_tcp=True)
attempt("write outside before", lambda: Path(ARGS["outside"], "before.txt").write_text("x"))
confine(deny_tcp=False)
attempt("write outside after", lambda: Path(ARGS["outside"], "after.txt").write_text("x"))
attempt("read inside read", lambda: Path(ARGS["readonly"], "notes.txt").read_text())
""",
        tree,
        confined=False,
        abi_max=3,
    )
    effective = min(KERNEL_ABI, 3)
    assert f"Landlock ABI {effective} cannot deny TCP" in results["unavailable"]
    assert "deny_tcp=False" in results["unavailable"]
    assert results["unavailable_abi"] == effective
    assert results["write outside before"] == "ok"  # the refusal changed nothing
    assert results["write outside after"] == "PermissionError"
    assert results["read inside read"] == "ok"
    assert "TCP" not in results["enforced"]


@needs_abi(1)
def test_restrict_refuses_a_process_that_already_runs_threads(tree: dict[str, str]) -> None:
    results = run_program(
        """
release = threading.Event()
worker = threading.Thread(target=release.wait)
worker.start()
confine()
release.set()
worker.join()
attempt("write outside", lambda: Path(ARGS["outside"], "new.txt").write_text("x"))
""",
        tree,
        confined=False,
    )
    assert "already runs 2 threads" in results["unavailable"]
    assert results["write outside"] == "ok"


@pytest.fixture
def sigusr1_received() -> Iterator[list[int]]:
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        yield received
    finally:
        signal.signal(signal.SIGUSR1, previous)


@pytest.mark.parametrize("confined", confined_and_control(minimum_abi=6))
def test_signals_reach_only_the_confined_processes(
    tree: dict[str, str], sigusr1_received: list[int], confined: bool
) -> None:
    results = run_program(
        """
attempt("signal parent", lambda: os.kill(os.getppid(), signal.SIGUSR1))
attempt("signal self", lambda: os.kill(os.getpid(), 0))
child = subprocess.Popen(["/bin/sleep", "30"])
attempt("signal own child", lambda: os.kill(child.pid, signal.SIGTERM))
child.wait()
""",
        tree,
        confined=confined,
    )
    deadline = time.monotonic() + 5
    while not confined and not sigusr1_received and time.monotonic() < deadline:
        time.sleep(0.01)
    assert results["signal parent"] == ("PermissionError" if confined else "ok")
    assert bool(sigusr1_received) is not confined
    assert results["signal self"] == "ok"
    assert results["signal own child"] == "ok"


@pytest.mark.parametrize("confined", confined_and_control(minimum_abi=6))
def test_abstract_unix_sockets_outside_are_out_of_reach(
    tree: dict[str, str], confined: bool
) -> None:
    name = f"cockpit-landlock-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind("\0" + name)
        server.listen()
        results = run_program(
            """
def connect():
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect("\\0" + ARGS["name"])
attempt("connect", connect)
""",
            tree,
            confined=confined,
            name=name,
        )
    assert results["connect"] == ("PermissionError" if confined else "ok")


# Names a thread started after confinement, through each path NVIDIA's driver (or a library)
# may use; then tries what must stay refused: another process's name and memory, the
# harness's files, /proc beyond its own threads. ``ARGS["pin"] == False`` drops the rule's
# pin first, as a control for the test that evicts procfs entries.
THREAD_NAMES = """
import trainer.landlock as landlock_module
if not ARGS.get("pin", True):
    _add = landlock_module._add_path_rule
    landlock_module._add_path_rule = lambda fd, path, rights, keep_open=False: _add(fd, path, rights)
if ARGS["confined"] and "enforced" not in RESULTS:
    confine()
pid = os.getpid()


def in_a_new_thread(name, path_of):
    def body():
        attempt(name, lambda: open(path_of(threading.get_native_id()), "w").write(name[:15]))
    thread = threading.Thread(target=body)
    thread.start()
    thread.join()


in_a_new_thread("by pid", lambda tid: f"/proc/{pid}/task/{tid}/comm")
in_a_new_thread("by self", lambda tid: f"/proc/self/task/{tid}/comm")
in_a_new_thread("by thread-self", lambda tid: "/proc/thread-self/comm")
if ARGS.get("evict"):
    input()  # the test evicts procfs's cached entries now
    in_a_new_thread("after eviction", lambda tid: f"/proc/{pid}/task/{tid}/comm")
parent = os.getppid()
attempt("parent's name", lambda: open(f"/proc/{parent}/comm", "w").write("x"))
attempt("parent's memory", lambda: open(f"/proc/{parent}/mem", "r+b").read(1))
attempt("parent's oom score", lambda: open(f"/proc/{parent}/oom_score_adj", "w").write("900"))
attempt("own oom score", lambda: open(f"/proc/{pid}/oom_score_adj", "w").write("900"))
attempt("a harness file", lambda: Path(ARGS["outside"], "summary.json").write_text("{}"))
"""


@pytest.mark.parametrize("rule", [True, False], ids=["rule-on", "rule-off"])
@needs_abi(1)
def test_the_nvidia_rule_lets_a_process_name_only_its_own_threads(
    tree: dict[str, str], rule: bool
) -> None:
    results = run_program(
        THREAD_NAMES,
        tree,
        confined=True,
        read=[*RUNTIME, "/proc"],
        own_thread_names=rule,
    )
    named = "ok" if rule else "PermissionError"
    assert results["by pid"] == results["by self"] == results["by thread-self"] == named
    for refused in (
        "parent's name", "parent's memory", "parent's oom score", "own oom score", "a harness file"
    ):  # fmt: skip
        assert results[refused] == "PermissionError", refused
    if rule:
        assert "its own threads' names" in results["enforced"]


def test_unconfined_the_same_writes_go_through(tree: dict[str, str]) -> None:
    """The control: the writes the rule must refuse are allowed to this process otherwise."""
    results = run_program(THREAD_NAMES, tree, confined=False)
    assert results["by pid"] == results["parent's oom score"] == results["a harness file"] == "ok"


@pytest.mark.skipif(os.geteuid() != 0, reason="evicting procfs entries needs root")
@pytest.mark.parametrize("pin", [True, False], ids=["pinned", "unpinned-control"])
@needs_abi(1)
def test_the_rule_survives_procfs_dropping_its_entries(tree: dict[str, str], pin: bool) -> None:
    """Landlock ties the rule to the folder's inode, which procfs makes anew when an evicted
    entry is looked up again: the folder is kept open so that the rule holds all night."""
    args = {
        "confined": True,
        "read": [*RUNTIME, "/proc", tree["readonly"]],
        "read_write": [tree["writable"]],
        "devices": [],
        "deny_tcp": False,
        "own_thread_names": True,
        "evict": True,
        "pin": pin,
        **tree,
    }
    program = PRELUDE.replace('if ARGS["confined"]:\n    confine()\n', "")
    program += THREAD_NAMES + "\nprint(json.dumps(RESULTS))\n"
    with subprocess.Popen(
        [sys.executable, "-c", program, json.dumps(args)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        time.sleep(2.0)  # it confines itself and names its first threads
        task = Path(f"/proc/{child.pid}/task")
        before = task.stat().st_ino
        for _ in range(50):
            os.sync()
            Path("/proc/sys/vm/drop_caches").write_text("2")
            # procfs numbers an entry anew when it makes it again: a new number is a done
            # eviction. Another process that has a file of the child's open at that moment
            # (a busy machine: a process list being read) keeps the entry; try again.
            if pin or task.stat().st_ino != before:
                break
            time.sleep(0.1)
        evicted = task.stat().st_ino != before
        out, _ = child.communicate("\n", timeout=60)
    results = json.loads(out.splitlines()[-1])
    assert results["by pid"] == "ok"
    if not pin:
        assert evicted, "procfs kept the child's entries through 50 evictions"
    assert results["after eviction"] == ("ok" if pin else "PermissionError")
