"""The training's processes are its own: a PID namespace of its own (trainer.pidns) ends all
of them with it, whatever they did to detach, and its /proc shows them and nothing of the
host's. Real harness runs of scripts that try.

Each attack also shows what it would do without the namespace: the process that keeps
forking outlives a harness that kills the tree it can see, and /proc lists the host."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_harness, tagged
from trainer import pidns
from trainer.confine import Confinement

# Its tests start processes: the slow tier (see tests/conftest.py).
pytestmark = pytest.mark.e2e

# A process that never stays put: it forks, lets the parent exit and starts a new session,
# again and again, so that any list of the training's processes is out of date by the time
# it is acted on. It beats into a file beside it (the training's folder), and stops when a
# file says so (the test's cleanup, whatever happened).
WALKER = """
import os, sys, time
beat = sys.argv[1]
while not os.path.exists(beat + ".stop"):
    if os.fork():
        os._exit(0)
    os.setsid()
    with open(beat, "a") as handle:
        handle.write(".")
    time.sleep(0.002)
"""

ESCAPES = f"""
import os
import subprocess
import sys

import torch.nn as nn


def train(ctx):
    beat = os.path.abspath("walker.beat")
    for _ in range(3):
        subprocess.Popen(
            [sys.executable, "-c", {WALKER!r}, beat], start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    model = nn.Sequential(nn.Embedding(ctx.vocab_size, 8), nn.Linear(8, ctx.vocab_size))
    while ctx.time_left() > 0:
        ctx.batch(2)
    return model
"""

LOOKS_AROUND = """
import os

import torch.nn as nn


def train(ctx):
    pids = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
    print(f"SEEN pids={','.join(map(str, pids))}", flush=True)
    with open("/proc/1/cmdline", "rb") as handle:
        first = handle.read().replace(b"\\0", b" ").decode(errors="replace")
    print(f"SEEN first={first}", flush=True)
    print(f"SEEN me={os.getpid()}", flush=True)
    return nn.Sequential(nn.Embedding(ctx.vocab_size, 8), nn.Linear(8, ctx.vocab_size))
"""


def beats(tmp_path: Path) -> int:
    """How often the walkers have beaten so far (0 before the first beat)."""
    return sum(path.stat().st_size for path in tmp_path.rglob("walker.beat"))


@pytest.fixture
def walkers_stopped(tmp_path: Path) -> Iterator[None]:
    """Whatever the test finds, every walker stops after it."""
    yield
    for beat in tmp_path.rglob("walker.beat"):
        beat.with_name("walker.beat.stop").touch()
    time.sleep(0.2)


@pytest.fixture(scope="module")
def corpus(text_corpus: Path) -> str:
    return f"text:{text_corpus}"


@pytest.fixture(scope="module", autouse=True)
def namespaces_here() -> None:
    why = pidns.refused()
    if why is not None:
        pytest.skip(f"no PID namespace on this machine: {why}")


@pytest.mark.usefixtures("walkers_stopped")
def test_a_process_that_keeps_forking_does_not_outlive_the_training(
    tmp_path: Path, corpus: str
) -> None:
    run = run_harness(ESCAPES, tmp_path, "--threads", "1", budget=1.5, corpus=corpus)
    assert run.exit_code == 0, run.output
    assert beats(tmp_path) > 0  # the walkers ran while the training did
    time.sleep(0.5)
    ended = beats(tmp_path)
    time.sleep(1.0)
    assert beats(tmp_path) == ended, "a walker is still beating after the training ended"
    assert run.summary["confinement"]["processes"] == pidns.ENFORCED_BY


def test_its_proc_shows_its_own_processes_only(tmp_path: Path, corpus: str) -> None:
    run = run_harness(LOOKS_AROUND, tmp_path, "--threads", "1", budget=1.0, corpus=corpus)
    assert run.exit_code == 0, run.output
    seen = tagged(run.output, "SEEN")
    pids = [int(pid) for pid in seen["pids"].split(",")]
    # Process 1 is the namespace's init, process 2 the training; nothing of the host's.
    assert seen["me"] == "2" and "trainer.confined" in seen["first"], seen
    assert len(pids) < 10, pids
    assert "processes: " + pidns.ENFORCED_BY in run.output


def test_without_the_namespace_the_training_says_its_processes_are_in_sight() -> None:
    shared = Confinement("a network namespace", "unsharing a PID namespace was refused", "x")
    assert "processes: in sight of the host's /proc (no PID namespace)" in shared.describe()
    alone = Confinement.from_dict({**shared.to_dict(), "processes": pidns.ENFORCED_BY})
    assert alone is not None and alone.processes == pidns.ENFORCED_BY
    assert f"processes: {pidns.ENFORCED_BY}" in alone.describe()
