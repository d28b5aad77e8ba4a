"""The training process is taken off the network by the kernel: run for real through
`python -m trainer`, a script that reaches for the network as an agent would disguise it
(a raw connect() through ctypes, a shell it starts) finds nothing beyond its own loopback;
with the confinement off, the same script reaches the test's server. Where the kernel
refuses the namespaces, the run goes on and says so, or stops when confinement is
required."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, SCRIPTS, HarnessRun, run_harness, tagged
from trainer.confine import Confinement
from trainer.outcomes import Outcome

# Its tests start processes: the slow tier (see tests/conftest.py).
pytestmark = pytest.mark.e2e

# The tests' tiny research script, with a train(ctx) that first tries the network three ways:
# the interfaces it can see, a raw connect() through libc, and a shell's own connect. It prints
# what it found, one `REACH name=value` line each, then trains for the budget.
REACHING = (
    (SCRIPTS / "tiny_research.py").read_text()
    + """

import ctypes
import socket
import struct
import subprocess
import sys

PORT = 0  # the test's server


def _libc_connect(port):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
    address = struct.pack("H", socket.AF_INET) + struct.pack(
        "!H4s8x", port, socket.inet_aton("127.0.0.1")
    )
    result = libc.connect(fd, ctypes.c_char_p(address), len(address))
    error = ctypes.get_errno()
    libc.close(fd)
    return "connected" if result == 0 else f"errno {error}"


def _shell_connect(port):
    code = (
        "import socket\\n"
        "try:\\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=3).close()\\n"
        "    print('connected')\\n"
        "except OSError as exc:\\n"
        "    print(type(exc).__name__)\\n"
    )
    done = subprocess.run(["/bin/sh", "-c", f'"{sys.executable}" -c "$0"', code],
                          capture_output=True, text=True, timeout=30)
    return (done.stdout.strip() or done.stderr.strip()).splitlines()[-1]


_train_for_the_budget = train


def train(ctx):
    print("REACH interfaces=" + ",".join(name for _, name in socket.if_nameindex()))
    print("REACH libc=" + _libc_connect(PORT))
    print("REACH shell=" + _shell_connect(PORT))
    return _train_for_the_budget(ctx)
"""
)


@pytest.fixture
def host_server() -> Iterator[tuple[int, list[str]]]:
    """A TCP server on the host's loopback that records every connection it accepts."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    accepted: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, peer = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(f"{peer[0]}:{peer[1]}")
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join(timeout=5)
    server.close()


def reached(run: HarnessRun) -> dict[str, str]:
    return tagged(run.output, "REACH")


def test_the_training_process_and_its_children_reach_nothing_beyond_their_own_loopback(
    tmp_path: Path, text_corpus: Path, host_server: tuple[int, list[str]]
) -> None:
    port, accepted = host_server
    script = REACHING.replace("PORT = 0 ", f"PORT = {port} ")
    assert f"PORT = {port} " in script
    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    corpus = f"text:{text_corpus}"
    confined = run_harness(script, tmp_path / "on", budget=1.5, corpus=corpus)
    assert confined.exit_code == 0, confined.output
    found = reached(confined)
    assert found["interfaces"] == "lo", found
    assert found["libc"].startswith("errno"), found  # refused: nothing listens on its loopback
    assert found["shell"] == "ConnectionRefusedError", found
    assert accepted == []
    confinement = confined.summary["confinement"]
    assert confinement["network"] == "a network namespace of its own (only its own loopback)"
    assert confinement["files"].startswith("reads limited to"), confinement
    assert confinement["enforced"] is True and confinement["reason"] == ""
    assert "network: none beyond loopback" in confined.output

    # The protection is what made the difference: off, the same script reaches the server.
    exposed = run_harness(
        script, tmp_path / "off", "--confinement", "off", budget=1.5, corpus=corpus
    )
    assert exposed.exit_code == 0, exposed.output
    found = reached(exposed)
    assert found["interfaces"] != "lo" and "lo" in found["interfaces"].split(","), found
    assert found["libc"] == "connected" and found["shell"] == "connected", found
    assert len(accepted) == 2
    assert exposed.summary["confinement"]["enforced"] is False
    assert "training is not confined: network and files: confinement is off" in exposed.output


def harness_without_namespaces(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m trainer` in a user namespace whose limits allow no new user or network
    namespace: as on a kernel that refuses them (the host's limits are left alone)."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    probe = subprocess.run(["unshare", "-U", "-r", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"this kernel gives no user namespace to make the test's own: {probe.stderr}")
    summary = tmp_path / "summary.json"
    command = " ".join(
        [
            "echo 0 > /proc/sys/user/max_user_namespaces &&",
            "echo 0 > /proc/sys/user/max_net_namespaces &&",
            f'exec "{sys.executable}" -m trainer --script {REPO}/tests/scripts/tiny_research.py',
            "--device cpu --budget 1 --seq-len 64 --eval-tokens 4096",
            f"--summary-json {summary}",
            *args,
        ]
    )
    return subprocess.run(
        ["unshare", "-U", "-r", "--fork", "sh", "-c", command],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_where_the_kernel_refuses_the_run_goes_on_and_says_why(tmp_path: Path) -> None:
    done = harness_without_namespaces(tmp_path, "--corpus", "stdlib")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    confinement = summary["confinement"]
    assert confinement["enforced"] is False and confinement["network"] is None
    assert "namespace limit" in confinement["reason"], confinement
    # Landlock needs no namespace: the files stay confined, and TCP is blocked at least.
    assert confinement["files"].startswith("reads limited to"), confinement
    assert "Landlock blocks its TCP connections, but not UDP" in confinement["reason"]
    assert (
        "training is not confined: network: a user namespace with a network namespace was "
        "refused" in done.stderr
    )


def test_where_confinement_is_required_and_refused_the_run_stops_with_what_to_do(
    tmp_path: Path,
) -> None:
    done = harness_without_namespaces(tmp_path, "--corpus", "stdlib", "--confinement", "require")
    assert done.returncode == Outcome.SETUP, done.stdout + done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "setup"
    assert "training must be confined (require_confinement)" in summary["reason"]
    assert "set [trainer] require_confinement = false" in summary["reason"]


def test_a_confinement_reads_back_from_what_the_training_reported() -> None:
    both = Confinement("a namespace", "", "reads limited to 3 paths")
    assert both.enforced and Confinement.from_dict(both.to_dict()) == both
    assert Confinement.from_dict({"network": None, "reason": "why"}) == Confinement(None, "why")
    assert Confinement.from_dict("junk") is None
    assert Confinement(None, "why").describe() == "training is not confined: network and files: why"
    partly = Confinement("a namespace", "no Landlock")
    assert not partly.enforced
    assert partly.describe().startswith("training is not confined: files: no Landlock")


def test_without_landlock_the_files_are_unconfined_and_the_run_says_why(
    tmp_path: Path, text_corpus: Path
) -> None:
    """A kernel without Landlock (the diagnostic cap stands in for one): the run goes on,
    off the network still, and says that its files are not confined and why; where
    confinement is required, it stops."""
    no_landlock = {"COCKPIT_LANDLOCK_ABI_MAX": "0"}
    (tmp_path / "auto").mkdir()
    (tmp_path / "require").mkdir()
    corpus = f"text:{text_corpus}"
    script = SCRIPTS / "tiny_research.py"
    run = run_harness(script, tmp_path / "auto", budget=1, corpus=corpus, env=no_landlock)
    assert run.exit_code == 0, run.output
    confinement = run.summary["confinement"]
    assert confinement["network"] is not None and confinement["files"] is None
    assert confinement["enforced"] is False
    assert "Landlock" in confinement["reason"], confinement
    assert "training is not confined: files:" in run.output
    required = run_harness(
        script, tmp_path / "require", "--confinement", "require", budget=1, corpus=corpus,
        env=no_landlock,
    )  # fmt: skip
    assert required.exit_code == Outcome.SETUP, required.output
    assert "training must be confined (require_confinement)" in required.summary["reason"]
