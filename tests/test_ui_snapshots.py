"""Screenshots of the cockpit, compared with the committed SVGs in tests/__snapshots__/.

Each journal is written through the Journal API with a fixed clock, fixed values and a fixed
home folder, so the screen is the same on every machine. After a deliberate change of the
screen, look at the report and update with ``pytest tests/test_ui_snapshots.py
--snapshot-update``.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

import cockpit.store.records as records_module
from cockpit.bench.ui_bench import build_workspace
from cockpit.ui import workers_panel
from cockpit.ui.app import create_app
from cockpit.ui.ledger_table import LedgerTable

WIDE = (160, 50)
NARROW = (80, 24)
CLOCK_START = 1_764_176_400.0  # 2025-11-26 17:00:00 UTC

SnapCompare = Callable[..., bool]


@pytest.fixture(autouse=True)
def fixed_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The same home, time zone, clock and saved theme on every machine."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("COCKPIT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("COCKPIT_UI__THEME", raising=False)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    ticks = itertools.count()
    monkeypatch.setattr(records_module, "now", lambda: CLOCK_START + 7.0 * next(ticks))
    yield
    monkeypatch.undo()
    time.tzset()


def cockpit_on(tmp_path: Path, theme: str | None = None, **options: Any) -> Any:
    options.setdefault("experiments", 24)
    root = build_workspace(tmp_path / "home" / "ws", engine_pid=os.getpid(), **options)
    return create_app(root, theme=theme, poll_seconds=600.0)


async def loaded(pilot: Pilot[Any]) -> None:
    """Wait until the first read of the journal is on screen, and the layout after it (a
    resize that arrives late on a busy machine redraws the ledger once more)."""
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    # On a busy machine the ledger may first draw its rows before it knows its width; wait
    # until it has fitted them (no horizontal scrolling), as it does once its size is known.
    deadline = time.monotonic() + 5.0
    # The table measures its columns when its messages run out (DataTable's idle handler): a
    # snapshot taken before that shows rows redrawn after a resize in columns of the old width.
    while time.monotonic() < deadline and any(
        not table.size.width
        or table.description_width != table._description_room(table.size.width)
        or table._require_update_dimensions
        or table._updated_cells
        for table in pilot.app.query(LedgerTable)
        if table.display
    ):
        await pilot.pause(0.05)
    for _ in range(2):  # and until the screen has been drawn from it
        await pilot.pause(0.05)
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()


def test_training_wide_with_gpu_readings(snap_compare: SnapCompare, tmp_path: Path) -> None:
    app = cockpit_on(tmp_path, phase="training", gpus=1)
    assert snap_compare(app, terminal_size=WIDE, run_before=loaded)


def test_training_narrow(snap_compare: SnapCompare, tmp_path: Path) -> None:
    app = cockpit_on(tmp_path, phase="training", gpus=1)
    assert snap_compare(app, terminal_size=NARROW, run_before=loaded)


def test_awaiting_approval_wide(snap_compare: SnapCompare, tmp_path: Path) -> None:
    app = cockpit_on(tmp_path, phase="awaiting_approval", gpus=1)
    assert snap_compare(app, terminal_size=WIDE, run_before=loaded)


def test_awaiting_approval_narrow_diff_tab(snap_compare: SnapCompare, tmp_path: Path) -> None:
    app = cockpit_on(tmp_path, phase="awaiting_approval", gpus=1)
    assert snap_compare(app, terminal_size=NARROW, run_before=loaded, press=["2"])


def test_no_gpu_wide(snap_compare: SnapCompare, tmp_path: Path) -> None:
    app = cockpit_on(tmp_path, phase="training", gpus=0)
    assert snap_compare(app, terminal_size=WIDE, run_before=loaded)


def test_no_gpu_narrow_gpu_tab(snap_compare: SnapCompare, tmp_path: Path) -> None:
    app = cockpit_on(tmp_path, phase="training", gpus=0)
    assert snap_compare(app, terminal_size=NARROW, run_before=loaded, press=["5"])


def test_daylight_theme_wide(snap_compare: SnapCompare, tmp_path: Path) -> None:
    app = cockpit_on(tmp_path, theme="daylight", phase="awaiting_approval", gpus=2)
    assert snap_compare(app, terminal_size=WIDE, run_before=loaded)


def test_contrast_theme_narrow_loss_tab(snap_compare: SnapCompare, tmp_path: Path) -> None:
    app = cockpit_on(tmp_path, theme="contrast", phase="training", gpus=1)
    assert snap_compare(app, terminal_size=NARROW, run_before=loaded, press=["3"])


def test_two_workers_wide(
    snap_compare: SnapCompare, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers_panel, "now_seconds", lambda: CLOCK_START)
    app = cockpit_on(tmp_path, phase="training", gpus=2, workers=2, started_at=CLOCK_START)
    assert snap_compare(app, terminal_size=WIDE, run_before=loaded)


def test_two_workers_narrow(
    snap_compare: SnapCompare, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers_panel, "now_seconds", lambda: CLOCK_START)
    app = cockpit_on(tmp_path, phase="training", gpus=2, workers=2, started_at=CLOCK_START)
    assert snap_compare(app, terminal_size=NARROW, run_before=loaded)
