"""`cockpit status` of a running engine: a real engine, a real training with a small budget,
and the status read while it trains."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from cockpit.commands import status_report
from cockpit.engine.workspace import Workspace
from cockpit.store.journal import Journal
from cockpit.store.lock import engine_lock_held
from cockpit.store.state import PendingStop
from cockpit.views.readmodel import StatusInfo, journal_file, read_status
from tests.helpers import cockpit, ended, make_workspace, spawn, state, wait_for

# Commits without a git identity (conftest.py).
pytestmark = [pytest.mark.usefixtures("no_git_identity"), pytest.mark.e2e]  # e2e: starts processes

BUDGET_SECONDS = 10


def training_workspace(root: Path) -> Workspace:
    """A workspace whose trainings run long enough to read the status during one."""
    return make_workspace(root, budget=BUDGET_SECONDS)


def start_engine(root: Path) -> subprocess.Popen[str]:
    return spawn("run", "--headless", "--workspace", str(root), "--experiments", "0")


def wait_for_training(root: Path) -> None:
    wait_for(lambda: state(root, "phase") == "training", timeout=90, what="a training")


def status_of(root: Path) -> tuple[str, dict[str, Any]]:
    """What `cockpit status` prints, as text and as JSON."""
    text = cockpit("status", "--workspace", str(root))
    as_json = cockpit("status", "--workspace", str(root), "--json")
    assert text.returncode == 0 and as_json.returncode == 0, text.stderr + as_json.stderr
    return text.stdout, json.loads(as_json.stdout)


def cockpit_status(root: Path) -> StatusInfo:
    """What the cockpit's status line reads."""
    with Journal.open(journal_file(root), readonly=True) as journal:
        running = engine_lock_held(root)
        return read_status(str(root), journal.engine_state(), journal.latest_run(), running=running)


def test_the_time_left_of_a_training_counts_down(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    workspace = training_workspace(root)
    with ended(start_engine(root)):
        try:
            wait_for_training(root)
            time.sleep(1.5)  # past the engine's first heartbeat of the training
            first = status_report(workspace)
            time.sleep(3.0)
            second = status_report(workspace)
        finally:
            cockpit("stop", "--workspace", str(root), "--now")
    assert first["phase"] == second["phase"] == "training", (first, second)
    assert first["time_left"] is not None and second["time_left"] is not None, (first, second)
    assert first["time_left"] <= BUDGET_SECONDS
    # Three seconds apart, less a second for the heartbeat's cadence.
    assert first["time_left"] - second["time_left"] >= 2.0, (first, second)


def test_status_shows_a_stop_the_engine_has_accepted_until_a_new_engine_starts(
    tmp_path: Path,
) -> None:
    root = tmp_path / "ws"
    training_workspace(root)
    with ended(start_engine(root)) as engine:
        wait_for_training(root)
        text, report = status_of(root)
        assert report["stopping"] is None and "stopping" not in text, text

        asked = time.time()
        stop = cockpit("stop", "--workspace", str(root))
        assert "stopping after the trainings in flight" in stop.stdout, stop.stdout + stop.stderr
        text, report = status_of(root)
        assert report["running"] is True and report["phase"] == "training", report
        stopping = report["stopping"]
        assert stopping is not None and stopping["now"] is False, report
        assert asked - 1 <= stopping["asked_at"] <= time.time()
        shown = time.strftime("%H:%M:%S", time.localtime(stopping["asked_at"]))
        assert f"\n  stopping after the trainings in flight (asked {shown})\n" in text, text
        assert cockpit_status(root).stopping == PendingStop(
            now=False, asked_at=stopping["asked_at"]
        )
        assert engine.wait(timeout=90) == 0

    text, report = status_of(root)
    assert report["running"] is False and report["stopping"] is None, report
    assert "stopping" not in text, text

    # An engine killed while it was stopping leaves its stop behind: the next one starts
    # afresh, and neither its status nor the cockpit's shows the old stop.
    with Journal.open(journal_file(root)) as journal:
        journal.set_state(**PendingStop(now=True, asked_at=asked).to_state())
    with ended(start_engine(root)):
        try:
            wait_for_training(root)
            text, report = status_of(root)
            seen = cockpit_status(root)
        finally:
            cockpit("stop", "--workspace", str(root), "--now")
    assert report["running"] is True and report["stopping"] is None, report
    assert "stopping" not in text, text
    assert seen.engine_running and seen.stopping is None, seen
