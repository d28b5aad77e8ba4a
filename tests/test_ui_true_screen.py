"""What the screen says must be true and read as it is meant: the proposal panel's sentences
apart, and the header's phase the same as the ledger's for the experiment in flight."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from rich.console import Console
from textual.widgets import Static

from cockpit.bench.ui_bench import build_workspace
from cockpit.store.journal import Journal
from cockpit.ui.app import CockpitApp, create_app
from cockpit.ui.ledger_table import LedgerTable
from cockpit.ui.status_line import StatusLine
from cockpit.views.readmodel import journal_file
from tests.pilot import poll, settle

WIDE = (160, 50)

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COCKPIT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("COCKPIT_UI__THEME", raising=False)


def training(tmp_path: Path) -> Path:
    """A run of 24 decided experiments and #25 in training, with an engine that is alive."""
    return build_workspace(
        tmp_path / "home" / "ws", experiments=24, engine_pid=os.getpid(), phase="training"
    )


def panel_lines(app: CockpitApp) -> list[str]:
    """The proposal panel's head, as the terminal shows it."""
    console = Console(width=WIDE[0], record=True)
    console.print(app.query_one("#diff-head", Static).content)
    return [line.rstrip() for line in console.export_text().splitlines()]


async def test_the_proposal_panel_gives_the_hypothesis_and_the_decision_a_line_each(
    tmp_path: Path,
) -> None:
    root = training(tmp_path)
    with Journal.open(journal_file(root)) as journal:
        run = journal.latest_run()
        assert run is not None
        experiment = journal.experiment(run.id, 25)
        assert experiment is not None
        journal.update_experiment(experiment.id, hypothesis="a wider model may lower val_bpb.")
        journal.record_decision(experiment.id, "discard", "discarded early: the loss trailed")
    app = create_app(root, poll_seconds=600.0)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        lines = panel_lines(app)
    assert "why: a wider model may lower val_bpb." in lines, lines
    assert "discard: discarded early: the loss trailed" in lines, lines


def header_and_ledger(app: CockpitApp) -> tuple[str, str]:
    """The header's first line, and the status the ledger shows for #25."""
    rendered = app.query_one(StatusLine).render()
    header = str(getattr(rendered, "plain", rendered)).splitlines()[0]
    ledger = app.query_one(LedgerTable)
    return header, ledger.get_row(str(25))[5].plain


async def test_the_ledger_says_evaluating_when_the_header_does(tmp_path: Path) -> None:
    """The harness evaluates before its process exits: the engine's worker says so (and the
    header with it) while the journal still has the experiment in training. The ledger and
    the proposal panel follow the worker, as the header does."""
    root = training(tmp_path)
    app = create_app(root, poll_seconds=600.0)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        header, ledger = header_and_ledger(app)
        assert header.startswith(" TRAINING  #25 ") and ledger == "training", (header, ledger)
        with Journal.open(journal_file(root)) as journal:
            workers = journal.get_state("workers")
            # What the engine publishes once the flight hears the harness evaluate.
            journal.set_state(
                phase="evaluating",
                experiment=25,
                workers=[{**workers[0], "phase": "evaluating"}],
            )
        await poll(pilot)
        header, ledger = header_and_ledger(app)
        assert header.startswith(" EVALUATING  #25 ") and ledger == "eval", (header, ledger)
        assert panel_lines(app)[0].startswith("#25 eval "), panel_lines(app)
