"""The cockpit: the terminal screen that watches and steers a workspace's engine.

It reads the journal through a `JournalPoller` in thread workers that post messages; the
app's handlers own all state (a `ScreenState`) and a `PanelFeed` hands each panel what it
shows. Keys become commands written to the journal (`cockpit.ui.steering_keys` decides
which), which the engine (its own process) carries out. Quitting the screen leaves the engine
running.

Entry points: `create_app()` (shared by the command line and the tests), `run_cockpit()`,
and ``python -m cockpit.ui.app WORKSPACE`` (what `cockpit bench ui` starts in a terminal).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import BindingType
from textual.theme import Theme
from textual.widgets import DataTable, Footer, TabbedContent
from textual.worker import Worker

from cockpit.store.journal import Journal
from cockpit.store.lock import engine_lock_held
from cockpit.store.records import JournalError
from cockpit.store.steering import Kind, Steer
from cockpit.ui import keys, steering_keys
from cockpit.ui.agent_panel import AGENT_EVENT_KINDS
from cockpit.ui.body import CockpitBody, find_panel, is_narrow
from cockpit.ui.decision_log import DECISION_EVENT_KINDS
from cockpit.ui.ledger_table import LedgerTable
from cockpit.ui.messages import (
    AgentStreamChanged,
    CommandFailed,
    CommandsAnswered,
    CommandSent,
    CurrentChanged,
    DetailLoaded,
    EventsAdded,
    GpuChanged,
    LedgerChanged,
    LossChanged,
    PollFailed,
    RunReset,
    StatusChanged,
    delta_messages,
)
from cockpit.ui.panel_feed import PanelFeed
from cockpit.ui.preferences import save_theme, saved_theme
from cockpit.ui.screen_state import ScreenState
from cockpit.ui.screens import HelpScreen, PromptScreen
from cockpit.ui.status_line import StatusLine
from cockpit.ui.steering_keys import Refused
from cockpit.ui.theme_choice import choose_theme, configured_theme
from cockpit.ui.workers_panel import WorkersPanel
from cockpit.views.poller import JournalPoller
from cockpit.views.readmodel import display_path, journal_file
from themes import DEFAULT_THEME, LAYOUT_CSS, THEME_NAMES, THEMES, next_theme, resolve_theme

DEFAULT_POLL_SECONDS = 0.25

# What the app returns when it closes: the screen only, or the engine too.
EXIT_SCREEN = "screen"
EXIT_STOP_ENGINE = "stop_engine"


class CockpitApp(App[str]):
    """Watch and steer the research engine of one workspace."""

    TITLE = "Research Cockpit"
    CSS_PATH = LAYOUT_CSS
    ENABLE_COMMAND_PALETTE = False
    # The footer lists these in cockpit.ui.keys's order and cuts what does not fit; the help
    # screen lists all of them.
    BINDINGS: ClassVar[list[BindingType]] = list(keys.bindings())

    def __init__(
        self,
        workspace_path: Path,
        *,
        theme_name: str = DEFAULT_THEME,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        workspace_label: str | None = None,
    ) -> None:
        super().__init__()
        for theme in THEMES.values():
            self.register_theme(theme)
        self.theme = resolve_theme(theme_name).name
        self.workspace_path = Path(workspace_path)
        self.poll_seconds = poll_seconds
        self.poller = JournalPoller(
            self.workspace_path,
            workspace_label=workspace_label or display_path(self.workspace_path),
        )
        # What the screen shows; only the handlers below change it.
        self.state = ScreenState.empty(self.poller.label, self.poller.snapshot.events.maxlen)
        self.feed = PanelFeed(self, self.state)
        self._poll_worker: Worker[Any] | None = None
        self._poll_failing = False  # touched by the poll worker only

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusLine(id="status")
        yield CockpitBody(narrow=is_narrow(self.size))
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        ledger = find_panel(self, LedgerTable)
        if ledger is not None:
            ledger.focus()
        self.feed.show_everything()
        self.poll_now()
        self.set_interval(self.poll_seconds, self.poll_now)

    def on_resize(self, event: events.Resize) -> None:
        body = find_panel(self, CockpitBody)
        if body is not None and body.narrow != is_narrow(event.size):
            self.run_worker(self._relayout(is_narrow(event.size)), group="layout", exclusive=True)

    async def _relayout(self, narrow: bool) -> None:
        body = find_panel(self, CockpitBody)
        if body is None:
            return
        await body.fold(narrow)
        self.feed.show_everything()
        body.focus_shown()

    @property
    def narrow(self) -> bool:
        """Whether the panels are shown as tabs now."""
        body = find_panel(self, CockpitBody)
        return body.narrow if body is not None else is_narrow(self.size)

    def _theme_changed(self, theme: Theme) -> None:
        self.feed.redraw()

    # -- reading the journal -----------------------------------------------------------------

    def poll_now(self) -> Worker[Any] | None:
        """Read what changed in the journal (in a thread); None while a read is under way."""
        worker = self._poll_worker
        if worker is not None and not worker.is_finished:
            return None
        self._poll_worker = self._poll_journal()
        return self._poll_worker

    @work(thread=True, exclusive=True, exit_on_error=False, group="journal")
    def _poll_journal(self) -> None:
        try:
            delta = self.poller.poll()
        except (JournalError, sqlite3.Error, OSError) as exc:
            self._poll_failing = True
            self.post_message(PollFailed(f"cannot read the journal: {exc}"))
            return
        if self._poll_failing:
            self._poll_failing = False
            self.post_message(PollFailed(None))
        for message in delta_messages(delta):
            self.post_message(message)

    @on(RunReset)
    def _run_reset(self, message: RunReset) -> None:
        self.state.forget_run()
        self.feed.show_everything()

    @on(StatusChanged)
    def _status_changed(self, message: StatusChanged) -> None:
        state = self.state
        before = state.status
        state.status = message.status
        # Once the engine is paused, or leaves a pause, the phase itself says which key applies.
        if "paused" in (before.phase, message.status.phase):
            state.pause_requested = False
        self.feed.show_status()
        self.feed.show_agent()
        self.feed.show_gpu()
        pinned = state.pinned_number
        if pinned is not None and any(w.experiment == pinned for w in state.status.workers):
            self._load_detail(pinned)  # a selected worker's training: its loss, live
        if self.screen_stack:
            self.refresh_bindings()

    @on(LedgerChanged)
    def _ledger_changed(self, message: LedgerChanged) -> None:
        for row in message.rows:
            self.state.ledger[row.number] = row
        self.feed.show_new_rows(message.rows)
        self.feed.show_progress()
        pinned = self.state.pinned_number
        if pinned is not None and any(row.number == pinned for row in message.rows):
            self._load_detail(pinned)

    @on(EventsAdded)
    def _events_added(self, message: EventsAdded) -> None:
        self.state.events.extend(message.events)
        kinds = {event.kind for event in message.events}
        if kinds & set(AGENT_EVENT_KINDS):
            self.feed.show_agent()
        if kinds & set(DECISION_EVENT_KINDS):
            self.feed.show_log()

    @on(CurrentChanged)
    def _current_changed(self, message: CurrentChanged) -> None:
        self.state.current = message.detail
        self.feed.show_detail()

    @on(LossChanged)
    def _loss_changed(self, message: LossChanged) -> None:
        self.state.loss = message.curves
        self.feed.show_loss()

    @on(GpuChanged)
    def _gpu_changed(self, message: GpuChanged) -> None:
        self.state.gpu = message.history
        self.feed.show_gpu()

    @on(AgentStreamChanged)
    def _agent_stream_changed(self, message: AgentStreamChanged) -> None:
        self.state.agent_stream = message.text
        self.feed.show_agent()

    @on(PollFailed)
    def _poll_failed(self, message: PollFailed) -> None:
        self.state.poll_error = message.error
        self.feed.show_status()

    @on(CommandsAnswered)
    def _commands_answered(self, message: CommandsAnswered) -> None:
        for command in message.commands:
            if command.status == "done":
                self.notify(f"{command.kind}: {command.result}", title="engine")
            else:
                self.notify(
                    f"{command.kind} failed: {command.result}", title="engine", severity="error"
                )

    # -- selecting an experiment ---------------------------------------------------------------

    @on(DataTable.RowSelected, "#workers")
    def _worker_selected(self, event: DataTable.RowSelected) -> None:
        panel = find_panel(self, WorkersPanel)
        number = None if panel is None else panel.selected_experiment()
        if number is not None:
            self._pin(number)

    @on(DataTable.RowSelected, "#ledger")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is None:
            return
        self._pin(int(event.row_key.value))

    def _pin(self, number: int) -> None:
        """Show experiment ``number``'s diff and loss instead of the engine's latest."""
        self.state.pinned_number = number
        self.state.pinned = None
        self._load_detail(number)
        if self.narrow:
            tabs = find_panel(self, TabbedContent)
            if tabs is not None:
                tabs.active = "tab-diff"

    @work(thread=True, exclusive=True, exit_on_error=False, group="detail")
    def _load_detail(self, number: int) -> None:
        try:
            detail = self.poller.detail(number)
        except (JournalError, sqlite3.Error, OSError) as exc:
            self.post_message(PollFailed(f"cannot read experiment #{number}: {exc}"))
            return
        self.post_message(DetailLoaded(detail, number))

    @on(DetailLoaded)
    def _detail_loaded(self, message: DetailLoaded) -> None:
        if message.number != self.state.pinned_number:
            return
        self.state.pinned = message.detail
        self.feed.show_detail()
        self.feed.show_loss()

    def action_follow_engine(self) -> None:
        """Show the engine's experiment again instead of the selected one."""
        if self.state.pinned_number is None:
            return
        self.state.pinned_number = None
        self.state.pinned = None
        self.feed.show_detail()
        self.feed.show_loss()

    def action_show_panel(self, index: int) -> None:
        """Show panel ``index`` (1-7): its tab on a narrow screen, focus on a wide one."""
        body = find_panel(self, CockpitBody)
        if body is not None:
            body.show_panel(index)

    # -- commands --------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Show pause or resume, whichever applies."""
        if action == "pause":
            return not self.state.paused
        if action == "resume":
            return self.state.paused
        return True

    def send_command(self, steer: Steer, *, then_exit: str | None = None) -> Worker[Any]:
        """Write a command for the engine into the journal (in a thread)."""
        return self._post_command(steer.kind.value, steer.payload(), then_exit)

    def _steer(self, command: Steer | Refused | None) -> None:
        """Send what a steering key decided, or say why it sends nothing."""
        if isinstance(command, Refused):
            self.notify(command.reason, severity="warning")
        elif command is not None:
            self.send_command(command)

    @work(thread=True, exit_on_error=False, group="commands")
    def _post_command(self, kind: str, payload: dict[str, Any], then_exit: str | None) -> None:
        if not self.workspace_path.is_dir():
            self.post_message(
                CommandFailed(kind, f"there is no workspace at {self.workspace_path}")
            )
            return
        try:
            with Journal.open(journal_file(self.workspace_path)) as journal:
                command_id = journal.post_command(kind, payload)
        except (JournalError, sqlite3.Error, OSError, ValueError) as exc:
            self.post_message(CommandFailed(kind, str(exc)))
            return
        self.post_message(CommandSent(kind, payload, command_id, then_exit))

    @on(CommandSent)
    def _command_sent(self, message: CommandSent) -> None:
        if message.then_exit is not None:
            self.exit(message.then_exit)
            return
        if self.state.status.engine_running:
            self.poller.watch_command(message.command_id)
        else:
            self.notify(
                f"{message.kind} is written to the journal; no engine is running, so it waits "
                "for the next `cockpit start`",
                title="engine not running",
                severity="warning",
            )

    @on(CommandFailed)
    def _command_failed(self, message: CommandFailed) -> None:
        self.notify(
            f"{message.kind} was not sent: {message.error}",
            title="command failed",
            severity="error",
        )

    def action_approve(self) -> None:
        """Approve the proposal waiting for approval."""
        self._steer(steering_keys.approve(self.state))

    def action_veto(self) -> None:
        """Veto the waiting proposal, with an optional reason for the agent."""
        number = steering_keys.waiting_proposal(self.state)
        if number is None:
            self._steer(steering_keys.NO_PROPOSAL)
            return
        self.push_screen(
            PromptScreen(
                f"Veto proposal #{number}",
                placeholder="why (optional): the agent reads it",
                hint="enter vetoes · esc cancels",
            ),
            lambda reason: self._steer(steering_keys.veto(number, reason)),
        )

    def action_pause(self) -> None:
        """Pause the engine after the current step."""
        self.state.pause_requested = True
        self.send_command(Steer(Kind.PAUSE))
        self.feed.show_status()
        self.refresh_bindings()

    def action_resume(self) -> None:
        """Let a paused engine go on."""
        self.state.pause_requested = False
        self.send_command(Steer(Kind.RESUME))
        self.feed.show_status()
        self.refresh_bindings()

    def action_stop_training(self) -> None:
        """Stop the training in progress (the selected worker's, when the workers panel has
        the focus; with several workers and none selected, every one)."""
        workers = find_panel(self, WorkersPanel)
        chosen = workers is not None and workers.has_focus
        experiment = workers.selected_experiment() if workers is not None and chosen else None
        self._steer(steering_keys.stop_training(self.state, chosen, experiment))

    def action_override(self, decision: str) -> None:
        """Keep or discard the selected ledger row against the engine's decision."""
        ledger = find_panel(self, LedgerTable)
        row = None if ledger is None else ledger.selected_row()
        self._steer(steering_keys.override(row, decision))

    def action_note(self) -> None:
        """Write a note that the agent reads before its next proposal."""
        self.push_screen(
            PromptScreen(
                "Note to the agent",
                placeholder="e.g. try a smaller learning rate with a longer warmup",
            ),
            lambda text: self._steer(steering_keys.note(text)),
        )

    def action_toggle_mode(self) -> None:
        """Switch between autonomous and supervised mode."""
        self._steer(steering_keys.toggle_mode(self.state))

    def action_stop_engine_and_quit(self) -> None:
        """Ask the engine to stop, then close the screen."""
        self.send_command(Steer(Kind.STOP_ENGINE), then_exit=EXIT_STOP_ENGINE)

    # -- the rest of the keys ------------------------------------------------------------------

    def action_next_theme(self) -> None:
        """Switch to the next theme and remember it."""
        self.theme = next_theme(self.theme)
        self._save_theme(self.theme)

    @work(thread=True, exit_on_error=False, group="preferences")
    def _save_theme(self, name: str) -> None:
        try:
            save_theme(name)
        except OSError as exc:
            self.call_from_thread(
                self.notify,
                f"the theme could not be remembered: {exc}",
                severity="warning",
            )

    def action_help(self) -> None:
        """Show the keys."""
        self.push_screen(HelpScreen())

    def action_quit_screen(self) -> None:
        """Close the screen; the engine keeps running."""
        self.exit(EXIT_SCREEN)

    def on_unmount(self) -> None:
        self.poller.close()


# ---------------------------------------------------------------------------------------------
# entry points


def create_app(
    workspace_path: Path,
    *,
    theme: str | None = None,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
) -> CockpitApp:
    """The cockpit for a workspace. ``theme`` wins over the one saved last time, which wins
    over the workspace's ``ui.theme``; an unknown name is a ValueError listing the valid ones."""
    workspace = Path(workspace_path).expanduser().absolute()
    name = choose_theme(theme, saved_theme(), configured_theme(workspace))
    return CockpitApp(workspace, theme_name=name, poll_seconds=poll_seconds)


def run_cockpit(workspace_path: Path, *, theme: str | None = None) -> int:
    """Run the cockpit in this terminal until the researcher quits; say what became of the
    engine. The exit code: 0, or 2 for an unknown theme."""
    try:
        app = create_app(workspace_path, theme=theme)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = app.run()
    workspace = app.workspace_path
    if result == EXIT_STOP_ENGINE:
        print(
            f"the engine of {workspace} stops after the current experiment; "
            "`cockpit stop --now` stops it at once"
        )
    elif engine_lock_held(workspace):
        print(
            f"the engine keeps running for {workspace}; `cockpit` shows it again, "
            "`cockpit stop` stops it"
        )
    else:
        print(f"no engine is running for {workspace}; `cockpit start` starts one")
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m cockpit.ui.app WORKSPACE [--theme NAME]``: the cockpit alone."""
    parser = argparse.ArgumentParser(
        prog="python -m cockpit.ui.app", description="The cockpit screen of a workspace."
    )
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--theme", choices=THEME_NAMES, default=None)
    args = parser.parse_args(None if argv is None else list(argv))
    return run_cockpit(args.workspace, theme=args.theme)


if __name__ == "__main__":
    sys.exit(main())
