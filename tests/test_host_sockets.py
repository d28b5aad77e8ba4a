"""The training reaches none of the host's pathname unix sockets (trainer.sockets): a daemon's
socket under /run, or one elsewhere that was bound when it started, refuses it, and it creates
no socket file outside its folder; its own multiprocessing (DataLoader workers, whose
semaphores need the /dev/shm of its own that trainer.sockets.own_shm mounts) keeps working.

One real harness run confined and one with confinement off share the attack: without the
protection the same script reaches both sockets' servers and plants a socket file."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, HarnessRun, run_harness, tagged
from trainer import pidns, sockets
from trainer.confine import Confinement

# Its tests start processes: the slow tier (see tests/conftest.py).
pytestmark = pytest.mark.e2e

# Connects to each socket and reads the byte its server sends; binds a socket file where it
# was told to; runs a DataLoader with two workers, whose tensors come back through
# multiprocessing's own sockets and /dev/shm.
ATTACK = """
import errno
import socket

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

TARGETS = {targets!r}
PLANT = {plant!r}


def outcome(action):
    try:
        return action()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


def reach(path):
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(5)
        client.connect(path)
        return "reached:" + client.recv(1).decode()


def plant():
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(PLANT)
        return "bound"


class Numbers(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, index):
        return torch.full((4,), index)


def train(ctx):
    for name, path in TARGETS.items():
        print(f"SEEN {{name}}={{outcome(lambda: reach(path))}}", flush=True)
    print(f"SEEN plant={{outcome(plant)}}", flush=True)
    batches = DataLoader(Numbers(), batch_size=2, num_workers=2)
    print(f"SEEN loader={{sum(int(batch.sum()) for batch in batches)}}", flush=True)
    return nn.Sequential(nn.Embedding(ctx.vocab_size, 8), nn.Linear(8, ctx.vocab_size))
"""
LOADER_SUM = 4 * sum(range(8))


class Server:
    """A host process's AF_UNIX stream server at ``path``: it sends each client one byte."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(str(path))
        self.listener.listen()
        self.listener.settimeout(0.1)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            with client, contextlib.suppress(OSError):  # a client that hangs up at once
                client.sendall(b"h")

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.listener.close()
        self.path.unlink(missing_ok=True)


@pytest.fixture(scope="module", autouse=True)
def namespaces_here() -> None:
    why = pidns.refused()
    if why is not None:
        pytest.skip(f"no mount namespace on this machine: {why}")


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of the host's, outside every training's folder."""
    return tmp_path_factory.mktemp("host")


@pytest.fixture(scope="module")
def servers(host: Path) -> Iterator[dict[str, Path]]:
    """Host servers listening on a socket under /run (a daemon's) and one under /tmp."""
    try:
        run = Server(Path(f"/run/cockpit-test-{uuid.uuid4().hex[:8]}.sock"))
    except OSError as exc:
        pytest.skip(f"cannot listen under /run here: {exc}")
    tmp = Server(host / "host.sock")
    yield {"run": run.path, "tmp": tmp.path}
    run.close()
    tmp.close()


def attack(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    servers: dict[str, Path],
    host: Path,
    corpus: Path,
    *args: str,
) -> HarnessRun:
    targets = {label: str(path) for label, path in servers.items()}
    script = ATTACK.format(targets=targets, plant=str(host / f"planted-{name}.sock"))
    return run_harness(
        script, tmp_path_factory.mktemp(name), "--threads", "1", *args,
        budget=1.0, corpus=f"text:{corpus}",
    )  # fmt: skip


@pytest.fixture(scope="module")
def confined(
    tmp_path_factory: pytest.TempPathFactory,
    servers: dict[str, Path],
    host: Path,
    text_corpus: Path,
) -> HarnessRun:
    return attack(tmp_path_factory, "confined", servers, host, text_corpus)


@pytest.fixture(scope="module")
def exposed(
    tmp_path_factory: pytest.TempPathFactory,
    servers: dict[str, Path],
    host: Path,
    text_corpus: Path,
) -> HarnessRun:
    return attack(tmp_path_factory, "exposed", servers, host, text_corpus, "--confinement", "off")


def test_a_confined_training_reaches_no_host_socket(confined: HarnessRun) -> None:
    assert confined.exit_code == 0, confined.output
    seen = tagged(confined.output, "SEEN")
    assert seen["run"] == "ENOENT", seen  # /run is an empty folder of its own
    assert seen["tmp"] == "ECONNREFUSED", seen  # /dev/null lies over it


def test_a_confined_training_creates_no_socket_file_outside_its_folder(
    confined: HarnessRun, host: Path
) -> None:
    assert tagged(confined.output, "SEEN")["plant"] == "EACCES"
    assert not (host / "planted-confined.sock").exists()


def test_its_own_dataloader_workers_keep_working(confined: HarnessRun) -> None:
    assert tagged(confined.output, "SEEN")["loader"] == str(LOADER_SUM), confined.output


def test_the_summary_says_what_hides_the_host_sockets(confined: HarnessRun) -> None:
    hidden = confined.summary["confinement"]["sockets"]
    assert hidden.startswith("a mount namespace of its own (an empty /run"), hidden
    assert "/dev/null over" in hidden, hidden
    assert f"host sockets: hidden by {hidden}" in confined.output


def test_without_the_protection_the_training_reaches_them(exposed: HarnessRun, host: Path) -> None:
    assert exposed.exit_code == 0, exposed.output
    seen = tagged(exposed.output, "SEEN")
    assert seen["run"] == seen["tmp"] == "reached:h", seen
    assert seen["plant"] == "bound" and (host / "planted-exposed.sock").exists()
    assert exposed.summary["confinement"]["sockets"] is None


def test_host_sockets_lists_the_pathname_sockets_bound_here(tmp_path: Path) -> None:
    path = tmp_path / "a socket with spaces.sock"
    abstract = f"\0cockpit-test-{uuid.uuid4().hex[:8]}"
    with socket.socket(socket.AF_UNIX) as named, socket.socket(socket.AF_UNIX) as hidden:
        named.bind(str(path))
        named.listen()
        hidden.bind(abstract)
        found = sockets.host_sockets()
    assert found.count(str(path)) == 1, found
    assert all(entry.startswith("/") for entry in found), found


def test_host_sockets_reads_the_table_format(tmp_path: Path) -> None:
    table = tmp_path / "unix"
    table.write_text(
        "Num       RefCount Protocol Flags    Type St Inode Path\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 101 /run/a daemon.sock\n"
        "0000000000000000: 00000003 00000000 00000000 0001 03 102 /run/a daemon.sock\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 103 @/tmp/.X11-unix/X0\n"
        "0000000000000000: 00000003 00000000 00000000 0001 03 104\n"
        "0000000000000000: 00000002 00000000 00010000 0005 01 105 relative.sock\n"
    )
    assert sockets.host_sockets(str(table)) == ["/run/a daemon.sock"]


# In a user and mount namespace of its own (as the training's), hide a listed socket and
# /run, then try each socket: a socket under /run that was not listed (bound after the list
# was read) is hidden with /run; one mounted on a file of its own (as a container is given
# docker.sock) is found in the mount table; one elsewhere that was not listed is the gap.
HIDE = """
import ctypes, errno, json, os, socket, sys
from trainer import sockets

listed, late, stray, given, keep = sys.argv[1:6]
uid, gid = os.getuid(), os.getgid()
libc = ctypes.CDLL(None, use_errno=True)
assert libc.unshare(0x10000000 | 0x00020000) == 0, os.strerror(ctypes.get_errno())
for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                   ("gid_map", f"{gid} {gid} 1")):
    with open(f"/proc/self/{name}", "w") as handle:
        handle.write(text)
assert libc.mount(None, b"/", None, 0x4000 | (1 << 18), None) == 0
assert libc.mount(stray.encode(), given.encode(), None, 0x1000, None) == 0
mounted = sockets.mounted_sockets()
by, short = sockets.hide([listed], [keep] if keep else [])


def reach(path):
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
            return "reached" if client.recv(1) == b"h" else "silent"
    except OSError as exc:
        return errno.errorcode[exc.errno]


print(json.dumps({"by": by, "short": short, "listed": reach(listed), "late": reach(late),
                  "stray": reach(stray), "given": reach(given), "mounted": mounted}))
"""


def hide_in_a_namespace(servers: dict[str, Path], host: Path, keep: str = "") -> dict[str, Any]:
    stray = Server(host / "stray.sock")
    given = host / "given.sock"
    given.touch()
    try:
        args = [str(servers["tmp"]), str(servers["run"]), str(stray.path), str(given), keep]
        completed = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(HIDE), *args],
            capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
        )  # fmt: skip
    finally:
        stray.close()
        given.unlink()
    assert completed.returncode == 0, completed.stderr
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def test_hide_covers_run_whole_and_the_listed_sockets_elsewhere(
    servers: dict[str, Path], host: Path
) -> None:
    seen = hide_in_a_namespace(servers, host)
    assert seen["late"] == "ENOENT" and seen["listed"] == "ECONNREFUSED", seen
    assert seen["mounted"] == [str(host / "given.sock")], seen
    assert seen["given"] == "ECONNREFUSED", seen
    assert seen["stray"] == "reached", seen  # the gap: bound elsewhere, after the list
    expected = "a mount namespace of its own (an empty /run, /dev/null over 2 other host sockets)"
    assert seen["by"] == expected, seen
    assert seen["short"] == "", seen


def test_hide_leaves_run_where_the_training_needs_something_there(
    servers: dict[str, Path], host: Path
) -> None:
    needed = str(servers["run"])  # as if the training had to read it
    seen = hide_in_a_namespace(servers, host, keep=needed)
    assert seen["late"] == "reached" and seen["listed"] == "ECONNREFUSED", seen
    assert seen["short"] == f"/run is not hidden: the training needs {needed}", seen


def test_the_confinement_carries_what_hides_the_sockets() -> None:
    base = Confinement("a network namespace", "", "x", processes=pidns.ENFORCED_BY)
    assert "host sockets: in reach (no mount namespace of its own)" in base.describe()
    hidden = Confinement.from_dict({**base.to_dict(), "sockets": "a mount namespace"})
    assert hidden is not None and hidden.sockets == "a mount namespace"
    assert "host sockets: hidden by a mount namespace" in hidden.describe()
