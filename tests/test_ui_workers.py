"""The workers panel, through the real app and its pilot."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cockpit.bench.ui_bench import build_workspace
from cockpit.store.journal import Journal
from cockpit.ui.app import CockpitApp, create_app
from cockpit.ui.diff_view import DiffView
from cockpit.ui.workers_panel import WorkersPanel
from cockpit.views.readmodel import journal_file
from tests.pilot import settle

WIDE = (160, 50)
NARROW = (80, 24)

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COCKPIT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("COCKPIT_UI__THEME", raising=False)


def two_workers(tmp_path: Path) -> tuple[Path, int, int]:
    """A journal with two trainings in flight, on cuda:0 and cuda:1 (the second further on,
    then evaluating); the workspace and the two experiments' numbers."""
    root = build_workspace(
        tmp_path / "home" / "ws", experiments=12, phase="training", gpus=2, workers=2,
        engine_pid=os.getpid(), started_at=time.time() - 50.0,
    )  # fmt: skip
    with Journal.open(journal_file(root)) as journal:
        workers = journal.get_state("workers")
        workers[1]["phase"] = "evaluating"
        journal.set_state(workers=workers)
    return root, workers[0]["experiment"], workers[1]["experiment"]


def cells(panel: WorkersPanel) -> list[list[str]]:
    return [[cell.plain for cell in panel.get_row_at(index)] for index in range(panel.row_count)]


async def test_one_worker_shows_no_workers_panel(tmp_path: Path) -> None:
    root = build_workspace(tmp_path / "home" / "ws", experiments=6, engine_pid=os.getpid())
    app = create_app(root, poll_seconds=600.0)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        panel = app.query_one(WorkersPanel)
        assert not panel.has_class("several") and not panel.display


async def test_two_workers_each_show_device_experiment_phase_and_readings(tmp_path: Path) -> None:
    root, first, second = two_workers(tmp_path)
    app = create_app(root, poll_seconds=600.0)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        panel = app.query_one(WorkersPanel)
        assert panel.display and panel.border_title == "Workers (2)"
        rows = cells(panel)
        assert [row[:4] for row in rows] == [
            ["0", "cuda:0", f"#{first}", "training"],
            ["1", "cuda:1", f"#{second}", "evaluating"],
        ]
        assert rows[0][4] in ("1:40", "1:39", "1:41")  # the countdown of its budget
        assert rows[1][4] == ""  # evaluating: no training time left
        spark = rows[1][5]
        assert len(spark) == 12 and spark[0] > spark[-1]  # the loss falls: a sparkline
        assert all(row[6].endswith("%") for row in rows)  # each worker's own GPU


async def test_selecting_a_worker_shows_its_experiment_and_s_stops_only_it(
    tmp_path: Path,
) -> None:
    root, _first, second = two_workers(tmp_path)
    app = create_app(root, poll_seconds=600.0)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        panel = app.query_one(WorkersPanel)
        panel.focus()
        panel.move_cursor(row=1)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app, CockpitApp) and app.state.pinned_number == second
        assert app.query_one(DiffView).border_title == f"Experiment #{second}"
        await pilot.press("s")
        await settle(pilot)
    with Journal.open(journal_file(root), readonly=True) as journal:
        commands = [(c.kind, c.payload) for c in journal.pending_commands()]
    assert commands == [("stop_run", {"experiment": second})]


async def test_a_narrow_terminal_shows_the_workers_in_the_ledger_tab(tmp_path: Path) -> None:
    root, first, _second = two_workers(tmp_path)
    app = create_app(root, poll_seconds=600.0)
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        panel = app.query_one(WorkersPanel)
        assert panel.display and panel.region.height >= 3
        assert cells(panel)[0][2] == f"#{first}"
