"""The cockpit through Textual's pilot: real journals, real keys, the commands they write, and
one real engine that a key press approves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.syntax import Syntax
from rich.text import Text
from textual.message import Message
from textual.notifications import Notify
from textual.pilot import Pilot
from textual.widgets import Input, Static, TabbedContent

from cockpit.bench.ui_bench import build_workspace
from cockpit.store.journal import Journal
from cockpit.store.records import Command
from cockpit.ui.agent_panel import AgentPanel
from cockpit.ui.app import EXIT_SCREEN, EXIT_STOP_ENGINE, CockpitApp, create_app
from cockpit.ui.decision_log import DecisionLog
from cockpit.ui.gpu_panel import GpuPanel
from cockpit.ui.ledger_table import LedgerTable
from cockpit.ui.plot import Axis, BrailleCanvas, Series, bar, chart, sparkline
from cockpit.ui.preferences import preferences_path, saved_theme
from cockpit.ui.screens import HelpScreen, PromptScreen
from cockpit.ui.status_line import StatusLine
from cockpit.ui.theme_choice import choose_theme
from cockpit.views.readmodel import journal_file
from tests.conftest import REPO
from tests.helpers import make_workspace
from tests.pilot import poll, settle

WIDE = (160, 50)
NARROW = (80, 24)

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test has its own home, state folder (the saved theme) and data folder."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("COCKPIT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COCKPIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("COCKPIT_UI__THEME", raising=False)
    return home


def workspace(tmp_path: Path, **options: Any) -> Path:
    """A workspace whose journal holds a run of 24 experiments and one more in ``phase``."""
    options.setdefault("experiments", 24)
    options.setdefault("engine_pid", os.getpid())  # an engine that is alive: this process
    return build_workspace(tmp_path / "home" / "ws", **options)


def app_for(root: Path, **options: Any) -> CockpitApp:
    # The tests read the journal when they ask to, not on a timer.
    return create_app(root, poll_seconds=options.pop("poll_seconds", 600.0), **options)


def pending(root: Path) -> list[Command]:
    with Journal.open(journal_file(root), readonly=True) as journal:
        return journal.pending_commands()


def sent(root: Path) -> list[tuple[str, dict[str, Any]]]:
    return [(command.kind, command.payload) for command in pending(root)]


async def press_and_settle(pilot: Pilot[Any], *keys: str) -> None:
    await settle(pilot)
    await pilot.press(*keys)
    await settle(pilot)


def notified(messages: list[Message]) -> list[str]:
    """What the app told the researcher in notifications, from the messages it handled."""
    return [m.notification.message for m in messages if isinstance(m, Notify)]


def rendered(widget: Any) -> str:
    result = widget.render()
    assert isinstance(result, Text)
    return result.plain


async def select_row(pilot: Pilot[Any], number: int) -> None:
    """Put the ledger's cursor on experiment ``number``."""
    app = pilot.app
    ledger = app.query_one(LedgerTable)
    ledger.focus()
    ledger.move_cursor(row=ledger.get_row_index(str(number)))
    await pilot.pause()
    assert ledger.selected_number() == number


# ---------------------------------------------------------------------------------------------
# what it shows


async def test_the_ledger_shows_every_experiment_newest_first(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="training")
    app = app_for(root)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        ledger = app.query_one(LedgerTable)
        assert ledger.row_count == 26
        assert [ledger.get_row_at(i)[0].plain for i in range(3)] == ["25", "24", "23"]
        assert ledger.get_row_at(0)[5].plain == "training"
        assert ledger.border_title == "Ledger · 26 experiments"
        status = rendered(app.query_one(StatusLine))
        assert "TRAINING  #25" in status and "2:30 left" in status
        assert "~/ws" in status and "cockpit/nov26" in status and "supervised" in status
        assert "qwen2.5-coder:7b" in status and "Ollama ready" in status
        assert "best 3." in status and "vs baseline" in status


async def test_a_long_ledger_holds_the_newest_rows_and_the_older_ones_as_the_cursor_goes(
    tmp_path: Path,
) -> None:
    """Ten thousand rows would cost the table seconds to lay out: it holds the newest
    PAGE_ROWS, and a page more each time the cursor reaches the oldest it holds, so every row
    stays reachable; a new experiment still arrives at the top."""
    from cockpit.ui.ledger_table import PAGE_ROWS

    total = 2 * PAGE_ROWS + 50
    root = workspace(tmp_path, experiments=total - 2, phase="training")
    app = app_for(root)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        ledger = app.query_one(LedgerTable)
        assert ledger.border_title == f"Ledger · {total} experiments"
        assert ledger.row_count == PAGE_ROWS and not ledger.held_all
        assert ledger.get_row_at(0)[0].plain == str(total - 1)
        assert ledger.get_row_at(PAGE_ROWS - 1)[0].plain == str(total - PAGE_ROWS)
        ledger.focus()
        await settle(pilot)
        assert app.focused is ledger
        for before, held in ((PAGE_ROWS, 2 * PAGE_ROWS), (2 * PAGE_ROWS, total)):
            await pilot.press("ctrl+end")
            await settle(pilot)
            assert ledger.selected_number() == total - before  # the oldest it held, and stays
            assert ledger.row_count == held
        assert ledger.held_all
        numbers = [int(ledger.get_row_at(i)[0].plain) for i in range(ledger.row_count)]
        assert numbers == list(range(total - 1, -1, -1))
        await pilot.press("ctrl+end")
        await pilot.pause()
        assert ledger.row_count == total  # nothing more to hold


async def test_selecting_a_row_shows_its_diff_and_decision(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="training")
    app = app_for(root)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        diff = app.query_one("#diff-body", Static).content
        assert isinstance(diff, Syntax) and "+LEARNING_RATE" in diff.code  # the live proposal
        await select_row(pilot, 3)
        await press_and_settle(pilot, "enter")
        with Journal.open(journal_file(root), readonly=True) as journal:
            run = journal.latest_run()
            assert run is not None
            third = journal.experiment(run.id, 3)
        assert third is not None
        diff = app.query_one("#diff-body", Static).content
        assert isinstance(diff, Syntax) and diff.code == third.diff.rstrip("\n")
        assert app.state.pinned is not None and app.state.pinned.number == 3
        assert app.state.pinned.decision_reason == third.decision_reason
        assert app.query_one("#diff").border_title == "Experiment #3"
        await press_and_settle(pilot, "escape")
        assert app.state.pinned_number is None
        assert app.query_one("#diff").border_title == "Proposal"


async def test_no_gpu_is_a_state_of_its_own(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="training", gpus=0)
    app = app_for(root)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        text = rendered(app.query_one(GpuPanel))
        assert "no NVIDIA GPU" in text and "training runs on the CPU" in text
        assert "CPU 1" in text and "RSS" in text  # the training's own process still shows


async def test_gpu_readings_show_gauges(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="training", gpus=2)
    app = app_for(root)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        text = rendered(app.query_one(GpuPanel))
        assert "GPU0" in text and "GPU1" in text and "H100" in text and "°C" in text


async def test_the_agent_panel_and_the_decision_log(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="awaiting_approval")
    app = app_for(root)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        agent = rendered(app.query_one(AgentPanel))
        assert "reply so far" in agent and '"edits"' in agent  # the streamed reply
        assert "rejected" in agent and "SEARCH block not found" in agent  # with its reason
        assert "the built-in proposer stands in" in agent  # a fallback
        assert "note try a longer warmup" in agent
        log = rendered(app.query_one(DecisionLog)).splitlines()
        assert log[0].split()[1:3] == ["#24", "discard"]  # newest first
        assert any("crash" in line and "exited with code 1" in line for line in log)


async def test_the_agent_panel_shows_the_hybrids_split_and_follows_it(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="training")
    with Journal.open(journal_file(root)) as journal:
        journal.set_state(proposer="hybrid", search_split={"llm": 0.35, "optuna": 0.65})
    app = app_for(root)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        head = rendered(app.query_one(AgentPanel)).splitlines()[0]
        # Before the server's message, which the panel's width cuts short.
        assert head.startswith(
            "● Ollama ready  qwen2.5-coder:7b  hybrid: LLM 35% · Optuna 65%  qwen2.5"
        ), head
        # The hybrid gives the LLM more once its keeps gain more: the next poll shows it.
        with Journal.open(journal_file(root)) as journal:
            journal.set_state(search_split={"llm": 0.6, "optuna": 0.4})
        await poll(pilot)
        head = rendered(app.query_one(AgentPanel)).splitlines()[0]
        assert "  hybrid: LLM 60% · Optuna 40%  " in head, head
        assert "hybrid: LLM 60% · Optuna 40%" in rendered(app.query_one(StatusLine))


async def test_a_narrow_terminal_folds_the_panels_into_tabs(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="awaiting_approval")
    app = app_for(root)
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        tabs = app.query_one(TabbedContent)
        assert tabs.active == "tab-ledger"
        assert app.query_one(LedgerTable).row_count == 26
        assert "AWAITING APPROVAL  #25" in rendered(app.query_one(StatusLine))
        await press_and_settle(pilot, "5")
        assert tabs.active == "tab-gpu"
        await press_and_settle(pilot, "2")
        assert tabs.active == "tab-diff"
        # Wider: every panel at once, with the same data.
        await pilot.resize_terminal(*WIDE)
        await settle(pilot)
        assert not app.query(TabbedContent)
        assert app.query_one(LedgerTable).row_count == 26
        await pilot.resize_terminal(*NARROW)
        await settle(pilot)
        assert app.query_one(TabbedContent).active == "tab-diff"


async def test_no_engine_and_no_journal_say_what_to_do(tmp_path: Path) -> None:
    app = app_for(tmp_path / "home" / "empty")
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        assert "NO JOURNAL" in rendered(app.query_one(StatusLine))
    root = workspace(tmp_path, phase="stopped", engine_pid=None)
    app = app_for(root)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        status = rendered(app.query_one(StatusLine))
        assert "ENGINE NOT RUNNING" in status and "cockpit start" in status


async def test_an_unreadable_journal_is_shown_and_the_app_carries_on(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="stopped")
    app = app_for(root)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        assert app.query_one(LedgerTable).row_count == 25
        app.poller.close()
        for name in os.listdir(root / ".cockpit"):
            (root / ".cockpit" / name).unlink()
        journal_file(root).write_bytes(b"this is not a database" * 100)
        await poll(pilot)
        assert app.is_running
        assert "cannot read the journal" in rendered(app.query_one(StatusLine))
        assert app.query_one(LedgerTable).row_count == 25  # what it knew stays on screen


# ---------------------------------------------------------------------------------------------
# keys: each one writes its command into the journal


async def test_a_approves_the_waiting_proposal(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="awaiting_approval")
    app = app_for(root)
    async with app.run_test(size=WIDE) as pilot:
        await press_and_settle(pilot, "a")
    assert sent(root) == [("approve", {"experiment": 25})]


async def test_a_with_nothing_waiting_sends_nothing(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="training")
    app = app_for(root)
    messages: list[Message] = []
    async with app.run_test(size=WIDE, message_hook=messages.append) as pilot:
        await press_and_settle(pilot, "a")
    assert any("no proposal is waiting" in text for text in notified(messages))
    assert sent(root) == []


async def test_a_approves_a_waiting_proposal_while_the_engine_is_down(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="awaiting_approval", engine_pid=None)
    app = app_for(root)
    messages: list[Message] = []
    async with app.run_test(size=WIDE, message_hook=messages.append) as pilot:
        await press_and_settle(pilot, "a")
    assert any("next `cockpit start`" in text for text in notified(messages))
    assert sent(root) == [("approve", {"experiment": 25})]


async def test_v_vetoes_with_the_reason_typed(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="awaiting_approval")
    app = app_for(root)
    async with app.run_test(size=WIDE) as pilot:
        await press_and_settle(pilot, "v")
        assert isinstance(app.screen, PromptScreen)
        await pilot.press(*"too risky")
        await press_and_settle(pilot, "enter")
        assert not isinstance(app.screen, PromptScreen)
    assert sent(root) == [("veto", {"experiment": 25, "reason": "too risky"})]


async def test_v_then_escape_vetoes_nothing(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="awaiting_approval")
    app = app_for(root)
    async with app.run_test(size=WIDE) as pilot:
        await press_and_settle(pilot, "v")
        await pilot.press("a")  # typed into the reason, not a key of the cockpit
        assert app.screen.query_one(Input).value == "a"
        await press_and_settle(pilot, "escape")
    assert sent(root) == []


async def test_p_pauses_then_resumes(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="training")
    app = app_for(root)
    async with app.run_test(size=WIDE) as pilot:
        await press_and_settle(pilot, "p")
        assert "pausing after this step" in rendered(app.query_one(StatusLine))
        await press_and_settle(pilot, "p")
    assert sent(root) == [("pause", {}), ("resume", {})]


async def test_p_resumes_a_paused_engine(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="paused")
    app = app_for(root)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        assert "PAUSED" in rendered(app.query_one(StatusLine))
        await press_and_settle(pilot, "p")
    assert sent(root) == [("resume", {})]


async def test_s_stops_the_training(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="training")
    app = app_for(root)
    async with app.run_test(size=WIDE) as pilot:
        await press_and_settle(pilot, "s")
    assert sent(root) == [("stop_run", {})]


async def test_s_without_a_training_sends_nothing(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="awaiting_approval")
    app = app_for(root)
    async with app.run_test(size=WIDE) as pilot:
        await press_and_settle(pilot, "s")
    assert sent(root) == []


async def test_k_and_d_override_the_selected_row(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="stopped")
    app = app_for(root)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        rows = app.query_one(LedgerTable).rows_by_number
        discarded = max(n for n, row in rows.items() if row.decision == "discard")
        kept = max(n for n, row in rows.items() if row.decision == "keep")
        await select_row(pilot, discarded)
        await press_and_settle(pilot, "k")
        await select_row(pilot, kept)
        await press_and_settle(pilot, "d")
    assert sent(root) == [
        ("override_keep", {"experiment": discarded}),
        ("override_discard", {"experiment": kept}),
    ]


async def test_k_on_an_undecided_row_sends_nothing(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="training")
    app = app_for(root)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await select_row(pilot, 25)
        await press_and_settle(pilot, "k")
    assert sent(root) == []


async def test_n_writes_a_note_for_the_agent(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="training")
    app = app_for(root)
    async with app.run_test(size=WIDE) as pilot:
        await press_and_settle(pilot, "n")
        await pilot.press(*"try a cosine schedule")
        await press_and_settle(pilot, "enter")
    assert sent(root) == [("note", {"text": "try a cosine schedule"})]


async def test_m_switches_to_the_other_mode(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="training")
    app = app_for(root)
    async with app.run_test(size=WIDE) as pilot:
        await press_and_settle(pilot, "m")
    assert sent(root) == [("set_mode", {"mode": "autonomous"})]


async def test_q_quits_the_screen_and_leaves_the_engine_alone(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="training")
    app = app_for(root)
    async with app.run_test(size=WIDE) as pilot:
        await press_and_settle(pilot, "q")
    assert app.return_value == EXIT_SCREEN
    assert sent(root) == []


async def test_shift_q_stops_the_engine_and_quits(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="training")
    app = app_for(root)
    async with app.run_test(size=WIDE) as pilot:
        await press_and_settle(pilot, "Q")
    assert app.return_value == EXIT_STOP_ENGINE
    assert sent(root) == [("stop_engine", {"now": False})]


async def test_question_mark_shows_every_key(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="training")
    app = app_for(root)
    async with app.run_test(size=WIDE) as pilot:
        await press_and_settle(pilot, "question_mark")
        assert isinstance(app.screen, HelpScreen)
        keys = app.screen.query_one("#help-keys", Static).content
        from rich.console import Console

        console = Console(width=120, record=True)
        console.print(keys)
        text = console.export_text()
        for key in ("a", "v", "p", "s", "k", "d", "n", "m", "t", "q", "Q"):
            assert f" {key} " in f" {text} ".replace("\n", " \n ")
        assert "engine keeps running" in text
        await press_and_settle(pilot, "escape")
        assert not isinstance(app.screen, HelpScreen)
    assert sent(root) == []


async def test_footer_offers_pause_or_resume_as_the_state_has_it(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="training")
    app = app_for(root)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        shown = {b.binding.action for b in app.screen.active_bindings.values() if b.enabled}
        assert "pause" in shown
        await press_and_settle(pilot, "p")
        active = app.screen.active_bindings
        assert active["p"].binding.action == "resume"


async def test_a_command_answered_by_the_engine_is_reported(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="training")
    app = app_for(root)
    messages: list[Message] = []
    async with app.run_test(size=WIDE, message_hook=messages.append) as pilot:
        await press_and_settle(pilot, "s")
        [command] = pending(root)
        assert not notified(messages)  # the engine runs: the answer is what gets reported
        with Journal.open(journal_file(root)) as journal:
            journal.finish_command(command.id, "done", "stopping the current training")
        await poll(pilot)
    assert "stop_run: stopping the current training" in notified(messages)


# ---------------------------------------------------------------------------------------------
# themes


async def test_t_cycles_the_themes_and_the_choice_persists(tmp_path: Path) -> None:
    root = workspace(tmp_path, phase="training")
    app = app_for(root)
    assert app.theme == "midnight"
    async with app.run_test(size=WIDE) as pilot:
        await press_and_settle(pilot, "t")
        assert app.theme == "daylight"
        await press_and_settle(pilot, "t")
        assert app.theme == "contrast"
    assert saved_theme() == "contrast"
    assert json.loads(preferences_path().read_text())["theme"] == "contrast"
    assert app_for(root).theme == "contrast"  # the next start
    assert app_for(root, theme="daylight").theme == "daylight"  # --theme wins
    async with app_for(root).run_test(size=WIDE) as pilot:
        await press_and_settle(pilot, "t")
        assert pilot.app.theme == "midnight"  # round the cycle


def test_the_saved_theme_wins_over_the_config_and_an_argument_over_both(tmp_path: Path) -> None:
    assert choose_theme(None, None, "daylight") == "daylight"
    assert choose_theme(None, "contrast", "daylight") == "contrast"
    assert choose_theme("midnight", "contrast", "daylight") == "midnight"
    assert choose_theme(None, "gone-theme", "daylight") == "daylight"  # stale file: ignored


def test_an_unknown_theme_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="midnight, daylight, contrast") as error:
        create_app(tmp_path, theme="neon")
    assert "neon" in str(error.value)
    with pytest.raises(ValueError, match=r"ui\.theme"):
        choose_theme(None, None, "sepia")


def test_the_workspace_config_names_the_default_theme(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "config.toml").write_text('[ui]\ntheme = "contrast"\n')
    assert create_app(root).theme == "contrast"


def test_run_cockpit_refuses_an_unknown_theme_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cockpit.ui.app import run_cockpit

    assert run_cockpit(tmp_path, theme="neon") == 2
    assert "unknown theme 'neon'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# drawing with text


def test_braille_lines_set_the_dots_between_their_ends() -> None:
    canvas = BrailleCanvas(2, 1)
    canvas.line(0, 0, 3, 3, "red")
    [row] = canvas.rows()
    # dots (0,0) (1,1) in the first cell, (2,2) (3,3) in the second
    assert row.plain == chr(0x2800 + 0x01 + 0x10) + chr(0x2800 + 0x04 + 0x80)


def test_a_chart_has_its_range_on_the_left_and_the_axis_below() -> None:
    lines = chart(
        [Series([(0.0, 1.0), (1.0, 2.0)], "red")],
        30,
        6,
        x_axis=Axis(0.0, 1.0),
        y_axis=Axis(1.0, 2.0),
        y_format="{:.1f}".format,
        x_labels=("0%", "100%"),
    )
    assert len(lines) == 6
    assert lines[0].plain.startswith("2.0 ┤") and lines[4].plain.startswith("1.0 ┤")
    assert lines[-1].plain.strip().startswith("└0%") and lines[-1].plain.endswith("100%")
    assert all(len(line.plain) == 30 for line in lines)


def test_sparklines_and_bars() -> None:
    assert sparkline([0, 50, 100, None], 4, low=0, high=100) == "▁▅█ "
    assert sparkline([0, 100], 1, low=0, high=100) == "█"
    assert bar(0.5, 4) == ("██", "  ")
    assert bar(0.5, 1) == ("▌", "")
    assert bar(None, 3) == ("", "   ")


# ---------------------------------------------------------------------------------------------
# a real engine


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def journal_state(root: Path, key: str) -> object:
    try:
        with Journal.open(journal_file(root), readonly=True) as journal:
            return journal.get_state(key)
    except Exception:
        return None


def experiment_status(root: Path, number: int) -> str | None:
    with Journal.open(journal_file(root), readonly=True) as journal:
        run = journal.latest_run()
        experiment = None if run is None else journal.experiment(run.id, number)
        return None if experiment is None else experiment.status


@pytest.mark.e2e
async def test_pressing_a_makes_a_real_engine_go_on(tmp_path: Path) -> None:
    root = tmp_path / "engine-ws"
    make_workspace(root)
    engine = subprocess.Popen(
        [sys.executable, "-m", "cockpit", "run", "--headless", "--workspace", str(root),
         "--experiments", "1", "--budget", "1", "--mode", "supervised",
         "--proposer", "builtin"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for(
            lambda: journal_state(root, "phase") == "awaiting_approval",
            timeout=60,
            what="the engine's first proposal",
        )
        number = journal_state(root, "experiment")
        assert isinstance(number, int)
        app = create_app(root, poll_seconds=0.1)
        async with app.run_test(size=WIDE) as pilot:
            deadline = time.monotonic() + 10
            while app.state.status.awaiting_approval != number and time.monotonic() < deadline:
                await pilot.pause(0.1)
            assert app.state.status.awaiting_approval == number
            await pilot.press("a")
            deadline = time.monotonic() + 20
            while (
                experiment_status(root, number) == "awaiting_approval"
                and time.monotonic() < deadline
            ):
                await pilot.pause(0.1)
            assert experiment_status(root, number) != "awaiting_approval"
            # The engine answers, and the screen sees the experiment move on.
            deadline = time.monotonic() + 10
            while (
                app.state.ledger.get(number) is None
                or app.state.ledger[number].status == "awaiting_approval"
            ) and time.monotonic() < deadline:
                await pilot.pause(0.1)
            assert app.state.ledger[number].status != "awaiting_approval"
        assert engine.wait(timeout=60) == 0
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()
    with Journal.open(journal_file(root), readonly=True) as journal:
        approvals = [c for c in journal.pending_commands() if c.kind == "approve"]
        assert approvals == []  # handled, not left pending


def test_the_detail_header_lists_the_runs_and_the_flags() -> None:
    from rich.console import Console

    from cockpit.ui.diff_view import detail_header
    from cockpit.ui.palette import Palette
    from cockpit.views.readmodel import ExperimentDetail
    from themes import THEMES

    detail = ExperimentDetail(
        id=1, number=3, status="keep", description="wider model", hypothesis="more capacity",
        diff="", proposer="llm", model="m", val_bpb=2.403, decision="keep",
        decision_reason="beats the best", outcome="ok", crash_tail=None,
        flags=("line 7: [sleep] sleeps",), trials=((42, 2.401), (43, 2.405)),
    )  # fmt: skip
    header = detail_header(detail, False, "", Palette.from_theme(THEMES["midnight"]))
    console = Console(width=120, record=True)
    console.print(header)
    text = console.export_text()
    assert "runs: 2.401000 (seed 42), 2.405000 (seed 43)" in text
    assert "⚠ flagged line 7: [sleep] sleeps" in text


def test_the_ledger_shows_no_value_for_an_experiment_stopped_early() -> None:
    from cockpit.store.records import Experiment
    from cockpit.ui.ledger_table import LEDGER_COLUMNS, ledger_cell
    from cockpit.ui.palette import Palette
    from cockpit.views.readmodel import ledger_entry, ledger_row, with_deltas
    from themes import THEMES

    def experiment(number: int, decision: str, val_bpb: float | None) -> Experiment:
        return Experiment(
            id=number + 1, run_id=1, number=number, parent_commit=None,
            commit_sha=f"{number:040x}", ref=None, proposer="builtin", model=None,
            description="lr 1e-5", hypothesis="", diff="", script_hash=None, status=decision, outcome="ok",
            exit_code=0, val_bpb=val_bpb, peak_memory_mb=None, training_seconds=None,
            total_seconds=None, num_steps=None, attempt=1, created_at=0.0, started_at=None,
            ended_at=None, decision=decision, decision_reason="", summary=None,
            log_path=None, crash_tail=None, lines_of_code=None,
            details={"early_abort": {"progress": 0.4, "gap": 0.31}} if val_bpb is None else None,
        )  # fmt: skip

    rows = with_deltas(
        [
            ledger_row(ledger_entry(experiment(0, "keep", 2.5))),
            ledger_row(ledger_entry(experiment(1, "discard", None))),
        ]
    )
    palette = Palette.from_theme(THEMES["midnight"])
    cells = {key: ledger_cell(key, rows[1], palette, 40).plain for key, _, _ in LEDGER_COLUMNS}
    assert cells["val_bpb"] == "—" and cells["delta"] == ""
    assert "0.0000" not in "".join(cells.values())
