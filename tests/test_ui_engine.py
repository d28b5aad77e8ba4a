"""Every key of the cockpit against a real engine: a supervised run with a tiny budget and the
LLM proposer talking to the Ollama test server. Each key press must reach the journal as a
command, and the engine must act on it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from cockpit.store.journal import Journal
from cockpit.store.records import FINAL_STATUSES
from cockpit.ui.app import EXIT_SCREEN, EXIT_STOP_ENGINE, CockpitApp, create_app
from cockpit.ui.ledger_table import LedgerTable
from cockpit.ui.screens import PromptScreen
from cockpit.views.readmodel import journal_file
from tests.conftest import REPO
from tests.helpers import edit, make_workspace
from tests.ollama_server import OllamaDouble

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]  # e2e: starts the engine

WIDE = (160, 50)

REPLIES = [
    edit("smaller learning rate", "LEARNING_RATE = 0.1", "LEARNING_RATE = 0.05"),
    edit("larger batch", "BATCH_SIZE = 16", "BATCH_SIZE = 32"),
    edit("faster second moment", "BETA2 = 0.99", "BETA2 = 0.95"),
    edit(
        "random init",
        "nn.init.zeros_(self.table.weight)",
        "nn.init.normal_(self.table.weight, std=0.01)",
    ),
    edit("larger learning rate", "LEARNING_RATE = 0.1", "LEARNING_RATE = 0.2"),
    edit("smaller batch", "BATCH_SIZE = 16", "BATCH_SIZE = 8"),
    edit("slower second moment", "BETA2 = 0.99", "BETA2 = 0.999"),
    edit("larger init", "nn.init.zeros_(self.table.weight)", "nn.init.normal_(self.table.weight)"),
]


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("COCKPIT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("COCKPIT_UI__THEME", raising=False)


def read(root: Path, what: Callable[[Journal], Any]) -> Any:
    try:
        with Journal.open(journal_file(root), readonly=True) as journal:
            return what(journal)
    except Exception:
        return None


def phase(root: Path) -> object:
    return read(root, lambda journal: journal.get_state("phase"))


def waiting_number(root: Path) -> int | None:
    """The experiment that waits for approval, once the engine is waiting."""
    if phase(root) != "awaiting_approval":
        return None
    number = read(root, lambda journal: journal.get_state("experiment"))
    return number if isinstance(number, int) else None


def experiment(root: Path, number: int) -> Any:
    def find(journal: Journal) -> Any:
        run = journal.latest_run()
        return None if run is None else journal.experiment(run.id, number)

    return read(root, find)


def final_status(root: Path, number: int) -> str | None:
    """The experiment's status once it is final, else None."""
    found = experiment(root, number)
    return found.status if found is not None and found.status in FINAL_STATUSES else None


def run_mode(root: Path) -> object:
    return read(root, lambda journal: getattr(journal.latest_run(), "mode", None))


async def until(
    pilot: Pilot[Any], condition: Callable[[], object], what: str, timeout: float = 60
) -> Any:
    """Let the app run (it polls the journal) until the condition holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await pilot.pause(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def type_and_enter(pilot: Pilot[Any], key: str, text: str) -> None:
    await pilot.press(key)
    await until(pilot, lambda: isinstance(pilot.app.screen, PromptScreen), f"the {key} prompt")
    await pilot.press(*text)
    await pilot.press("enter")
    await until(
        pilot, lambda: not isinstance(pilot.app.screen, PromptScreen), "the prompt to close"
    )


async def select(pilot: Pilot[Any], number: int) -> None:
    ledger = pilot.app.query_one(LedgerTable)
    await until(pilot, lambda: str(number) in {key.value for key in ledger.rows}, f"row {number}")
    ledger.focus()
    for _ in range(20):  # a row the engine adds meanwhile may move it: try again
        ledger.move_cursor(row=ledger.get_row_index(str(number)))
        await pilot.pause()
        if ledger.selected_number() == number:
            return
    raise AssertionError(f"could not select row {number}")


async def test_every_key_reaches_a_real_engine_and_the_engine_acts_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ws"
    make_workspace(root)
    server = OllamaDouble(replies=REPLIES).start()
    monkeypatch.setenv("OLLAMA_HOST", server.host)
    engine = subprocess.Popen(
        [sys.executable, "-m", "cockpit", "run", "--headless", "--workspace", str(root),
         "--budget", "3", "--mode", "supervised", "--proposer", "llm"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        app = create_app(root, poll_seconds=0.1)
        assert isinstance(app, CockpitApp)
        async with app.run_test(size=WIDE) as pilot:
            first = await until(pilot, lambda: waiting_number(root), "the first proposal", 90)

            # n: a note for the agent; v: a veto with its reason. Both reach the next prompt.
            await type_and_enter(pilot, "n", "prefer changes to the optimizer")
            await type_and_enter(pilot, "v", "not the learning rate yet")
            await until(pilot, lambda: experiment(root, first).status == "vetoed", "the veto", 30)
            second = await until(
                pilot, lambda: (w := waiting_number(root)) and w != first and w, "#2", 60
            )
            prompt = server.requests_to("/api/chat")[-1].body["messages"][-1]["content"]
            assert "prefer changes to the optimizer" in prompt
            assert "not the learning rate yet" in prompt

            # a: approve; the engine trains it and decides.
            await until(
                pilot, lambda: app.state.status.awaiting_approval == second, "the screen to see #2"
            )
            await pilot.press("a")
            await until(
                pilot,
                lambda: experiment(root, second).decision in ("keep", "discard"),
                "the approved experiment's decision",
                60,
            )

            # k / d: override that decision from its ledger row; the engine flips it.
            decided = experiment(root, second).decision
            await until(
                pilot,
                lambda: second in app.state.ledger and app.state.ledger[second].decision == decided,
                "the screen to see the decision",
            )
            await select(pilot, second)
            await pilot.press("d" if decided == "keep" else "k")
            flipped = "discard" if decided == "keep" else "keep"
            await until(
                pilot,
                lambda: experiment(root, second).decision == flipped,
                f"the override to {flipped}",
                30,
            )

            # m: autonomous; the next proposal trains without approval.
            await until(pilot, lambda: waiting_number(root), "the next proposal", 60)
            await pilot.press("m")
            await until(pilot, lambda: run_mode(root) == "autonomous", "autonomous mode", 30)

            # s: stop the training in progress; it is recorded as interrupted. A training
            # that ends on its own before the command lands is decided as usual: try the next.
            for _attempt in range(3):
                await until(
                    pilot,
                    lambda: phase(root) == "training" and app.state.status.phase == "training",
                    "a training the screen sees",
                    60,
                )
                training = read(root, lambda journal: journal.get_state("experiment"))
                await pilot.press("s")
                final = await until(
                    pilot,
                    lambda number=training: final_status(root, number),
                    "the training to end",
                    30,
                )
                if final == "interrupted":
                    break
            else:
                raise AssertionError("s never stopped a training before it ended")

            # p: pause after the current step, p again: resume.
            await pilot.press("p")
            await until(pilot, lambda: phase(root) == "paused", "the pause", 60)
            await pilot.press("p")
            await until(pilot, lambda: phase(root) not in (None, "paused"), "the resume", 30)

            # q: the screen quits, the engine goes on.
            await pilot.press("q")
        assert app.return_value == EXIT_SCREEN
        time.sleep(0.5)
        assert engine.poll() is None

        # Q: a new screen stops the engine and quits.
        app = create_app(root, poll_seconds=0.1)
        async with app.run_test(size=WIDE) as pilot:
            await pilot.pause(0.5)
            await pilot.press("Q")
        assert app.return_value == EXIT_STOP_ENGINE
        output, _ = engine.communicate(timeout=90)
        assert engine.returncode == 0, output
        assert "Traceback" not in output
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()
        server.stop()
    # Every command was handled, none left pending.
    assert read(root, lambda journal: journal.pending_commands()) == []
