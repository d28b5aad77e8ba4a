"""The cockpit: the terminal screen that watches and steers a workspace's engine.

It reads the journal through a `JournalPoller` in thread workers that post messages; the
app's handlers own all state and hand each panel what it shows. Keys become commands written
to the journal, which the engine (its own process) carries out. Quitting the screen leaves
the engine running.

Entry points: `create_app()` (shared by the command line and the tests), `run_cockpit()`,
and ``python -m cockpit.ui.app WORKSPACE`` (what `cockpit bench ui` starts in a terminal).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import BindingType
from textual.containers import Container, Horizontal, Vertical
from textual.css.query import NoMatches
from textual.geometry import Size
from textual.theme import Theme
from textual.widget import Widget
from textual.widgets import DataTable, Footer, TabbedContent, TabPane
from textual.worker import Worker

from cockpit.store.journal import Journal, JournalError
from cockpit.store.lock import engine_lock_held
from cockpit.store.steering import AUTONOMOUS, SUPERVISED, Kind, Steer
from cockpit.ui import keys
from cockpit.ui.agent_panel import AGENT_EVENT_KINDS, AgentPanel
from cockpit.ui.decision_log import DECISION_EVENT_KINDS, DecisionLog
from cockpit.ui.diff_view import DiffView
from cockpit.ui.gpu_panel import GpuPanel
from cockpit.ui.keys import PANELS
from cockpit.ui.ledger_table import LedgerTable
from cockpit.ui.loss_plot import LossPlot
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
)
from cockpit.ui.panel import palette_of
from cockpit.ui.preferences import save_theme, saved_theme
from cockpit.ui.progress_plot import ProgressPlot
from cockpit.ui.screens import HelpScreen, PromptScreen
from cockpit.ui.status_line import StatusLine
from cockpit.ui.workers_panel import WorkersPanel
from cockpit.views.poller import JournalPoller
from cockpit.views.readmodel import (
    Delta,
    EventLine,
    ExperimentDetail,
    GpuHistory,
    LedgerRow,
    LossCurves,
    StatusInfo,
    display_path,
    journal_file,
)
from themes import DEFAULT_THEME, LAYOUT_CSS, THEME_NAMES, THEMES, next_theme, resolve_theme

DEFAULT_POLL_SECONDS = 0.25
# Below either size the panels fold into tabs.
WIDE_MIN_COLUMNS = 100
WIDE_MIN_ROWS = 32
AGENT_EVENTS_SHOWN = 60
DECISIONS_SHOWN = 120

# (tab id, title, panel id) in the order of the tabs and of the 1-7 keys.
PANEL_TITLES = {
    "ledger": "Ledger",
    "diff": "Proposal",
    "loss": "Live loss",
    "progress": "Progress",
    "gpu": "GPU",
    "agent": "Agent",
    "log": "Decisions",
    "workers": "Workers",
}

# What the app returns when it closes: the screen only, or the engine too.
EXIT_SCREEN = "screen"
EXIT_STOP_ENGINE = "stop_engine"

_W = TypeVar("_W", bound=Widget)


def is_narrow(size: Size) -> bool:
    """Whether a terminal of this size shows the panels as tabs."""
    return size.width < WIDE_MIN_COLUMNS or size.height < WIDE_MIN_ROWS


class CockpitBody(Container):
    """The panels: side by side on a wide terminal, as tabs on a narrow one."""

    def __init__(self, *, narrow: bool, active_tab: str = "tab-ledger") -> None:
        super().__init__(id="body")
        self.narrow = narrow
        self.active_tab = active_tab

    def compose(self) -> ComposeResult:
        panels = {
            "ledger": LedgerTable(id="ledger", compact=self.narrow),
            "diff": DiffView(id="diff"),
            "loss": LossPlot(id="loss", classes="plot"),
            "progress": ProgressPlot(id="progress", classes="plot"),
            "gpu": GpuPanel(id="gpu"),
            "agent": AgentPanel(id="agent"),
            "log": DecisionLog(id="log"),
            "workers": WorkersPanel(id="workers"),
        }
        for panel_id, panel in panels.items():
            panel.add_class("panel")
            panel.border_title = PANEL_TITLES[panel_id]
        if self.narrow:
            with TabbedContent(id="tabs", initial=self.active_tab):
                for tab_id, title, panel_id in PANELS:
                    with TabPane(title, id=tab_id):
                        if panel_id == "ledger":  # with several workers, theirs above it
                            yield panels["workers"]
                        yield panels[panel_id]
            return
        with Vertical(id="wide"):
            with Horizontal(id="row-top"):
                yield panels["ledger"]
                yield panels["diff"]
            with Horizontal(id="row-plots"):
                yield panels["loss"]
                yield panels["progress"]
                yield panels["gpu"]
            with Horizontal(id="row-story"):
                yield panels["workers"]
                yield panels["agent"]
                yield panels["log"]


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
        self.status = StatusInfo(workspace=self.poller.label)
        self.ledger: dict[int, LedgerRow] = {}
        self.events: deque[EventLine] = deque(maxlen=self.poller.snapshot.events.maxlen)
        self.current: ExperimentDetail | None = None
        self.pinned_number: int | None = None
        self.pinned: ExperimentDetail | None = None
        self.loss = LossCurves()
        self.gpu = GpuHistory()
        self.agent_stream = ""
        self.poll_error: str | None = None
        self.pause_requested = False
        self._poll_worker: Worker[Any] | None = None
        self._poll_failing = False  # touched by the poll worker only

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusLine(id="status")
        yield CockpitBody(narrow=is_narrow(self.size))
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        self._focus_ledger()
        self.push_everything()
        self.poll_now()
        self.set_interval(self.poll_seconds, self.poll_now)

    def on_resize(self, event: events.Resize) -> None:
        body = self._panel(CockpitBody)
        if body is not None and body.narrow != is_narrow(event.size):
            self.run_worker(self._relayout(is_narrow(event.size)), group="layout", exclusive=True)

    async def _relayout(self, narrow: bool) -> None:
        body = self._panel(CockpitBody)
        if body is None:
            return
        tabs = self._panel(TabbedContent)
        if tabs is not None and tabs.active:
            body.active_tab = tabs.active
        body.narrow = narrow
        await body.recompose()
        self.push_everything()
        tabs = self._panel(TabbedContent)
        if tabs is None:
            self._focus_ledger()
        else:
            # Focus inside another tab would switch to it: focus what the active tab shows.
            panel_id = next(panel for tab, _title, panel in PANELS if tab == tabs.active)
            panel = self.query_one(f"#{panel_id}")
            if panel.focusable:
                panel.focus()

    def _focus_ledger(self) -> None:
        ledger = self._panel(LedgerTable)
        if ledger is not None:
            ledger.focus()

    def _panel(self, kind: type[_W]) -> _W | None:
        if not self.screen_stack:
            return None  # closing: a worker's last message may still arrive
        try:
            return self.query_one(kind)
        except NoMatches:
            return None

    @property
    def narrow(self) -> bool:
        """Whether the panels are shown as tabs now."""
        body = self._panel(CockpitBody)
        return body.narrow if body is not None else is_narrow(self.size)

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
        self.ledger = {}
        self.events.clear()
        self.current = self.pinned = None
        self.pinned_number = None
        self.loss, self.gpu, self.agent_stream = LossCurves(), GpuHistory(), ""
        ledger = self._panel(LedgerTable)
        if ledger is not None:
            ledger.set_rows(())
        self.push_everything()

    @on(StatusChanged)
    def _status_changed(self, message: StatusChanged) -> None:
        before = self.status
        self.status = message.status
        # Once the engine is paused, or leaves a pause, the phase itself says which key applies.
        if "paused" in (before.phase, message.status.phase):
            self.pause_requested = False
        self._push_status()
        self._push_agent()
        self._push_gpu()
        pinned = self.pinned_number
        if pinned is not None and any(w.experiment == pinned for w in self.status.workers):
            self._load_detail(pinned)  # a selected worker's training: its loss, live
        if self.screen_stack:
            self.refresh_bindings()

    @on(LedgerChanged)
    def _ledger_changed(self, message: LedgerChanged) -> None:
        for row in message.rows:
            self.ledger[row.number] = row
        ledger = self._panel(LedgerTable)
        if ledger is not None:
            ledger.upsert(message.rows)
            ledger.border_title = f"Ledger · {len(self.ledger)} experiments"
        self._push_progress()
        if self.pinned_number is not None and any(
            row.number == self.pinned_number for row in message.rows
        ):
            self._load_detail(self.pinned_number)

    @on(EventsAdded)
    def _events_added(self, message: EventsAdded) -> None:
        self.events.extend(message.events)
        kinds = {event.kind for event in message.events}
        if kinds & set(AGENT_EVENT_KINDS):
            self._push_agent()
        if kinds & set(DECISION_EVENT_KINDS):
            self._push_log()

    @on(CurrentChanged)
    def _current_changed(self, message: CurrentChanged) -> None:
        self.current = message.detail
        self._push_detail()

    @on(LossChanged)
    def _loss_changed(self, message: LossChanged) -> None:
        self.loss = message.curves
        self._push_loss()

    @on(GpuChanged)
    def _gpu_changed(self, message: GpuChanged) -> None:
        self.gpu = message.history
        self._push_gpu()

    @on(AgentStreamChanged)
    def _agent_stream_changed(self, message: AgentStreamChanged) -> None:
        self.agent_stream = message.text
        self._push_agent()

    @on(PollFailed)
    def _poll_failed(self, message: PollFailed) -> None:
        self.poll_error = message.error
        self._push_status()

    @on(CommandsAnswered)
    def _commands_answered(self, message: CommandsAnswered) -> None:
        for command in message.commands:
            if command.status == "done":
                self.notify(f"{command.kind}: {command.result}", title="engine")
            else:
                self.notify(
                    f"{command.kind} failed: {command.result}", title="engine", severity="error"
                )

    # -- showing -----------------------------------------------------------------------------

    def push_everything(self) -> None:
        """Hand every panel what it shows (after a new layout or a new run)."""
        self._push_status()
        ledger = self._panel(LedgerTable)
        if ledger is not None:
            ledger.set_rows(self.ledger.values())
            ledger.border_title = f"Ledger · {len(self.ledger)} experiments"
        self._push_detail()
        self._push_loss()
        self._push_progress()
        self._push_gpu()
        self._push_agent()
        self._push_log()

    def _push_status(self) -> None:
        line = self._panel(StatusLine)
        if line is not None:
            line.show((self.status, self.poll_error, self.pause_requested))

    def _push_detail(self) -> None:
        view = self._panel(DiffView)
        if view is None:
            return
        if self.pinned_number is not None:
            view.show(self.pinned, True)
            view.border_title = f"Experiment #{self.pinned_number}"
            return
        note = ""
        status = self.status
        if (
            status.phase == "proposing"
            and status.experiment is not None
            and (self.current is None or self.current.number != status.experiment)
        ):
            note = f"the agent is writing proposal #{status.experiment}; the latest one:"
        view.show(self.current, False, note)
        waiting = self.current is not None and self.current.status == "awaiting_approval"
        view.border_title = "Proposal · awaiting approval" if waiting else "Proposal"

    def _push_loss(self) -> None:
        plot = self._panel(LossPlot)
        if plot is not None:
            plot.show((self.loss, self.pinned if self.pinned_number is not None else None))

    def _push_progress(self) -> None:
        plot = self._panel(ProgressPlot)
        if plot is not None:
            plot.show(tuple(self.ledger[number] for number in sorted(self.ledger)))

    def _push_gpu(self) -> None:
        panel = self._panel(GpuPanel)
        if panel is not None:
            panel.show((self.gpu, self.status.engine_running))
        self._push_workers()  # each worker's GPU utilisation

    def _push_workers(self) -> None:
        panel = self._panel(WorkersPanel)
        if panel is None:
            return
        workers = self.status.workers
        panel.set_class(len(workers) > 1, "several")
        panel.border_title = f"Workers ({len(workers)})"
        panel.show(workers, self.gpu.latest, palette_of(panel))

    def _push_agent(self) -> None:
        panel = self._panel(AgentPanel)
        if panel is None:
            return
        events = tuple(e for e in self.events if e.kind in AGENT_EVENT_KINDS)
        status = self.status
        # Only what the panel shows of the status, so the countdown does not redraw it.
        agent = StatusInfo(
            workspace="",
            proposer=status.proposer,
            model=status.model,
            agent_state=status.agent_state,
            agent_message=status.agent_message,
            search_split=status.search_split,
        )
        panel.show((agent, self.agent_stream, events[-AGENT_EVENTS_SHOWN:]))

    def _push_log(self) -> None:
        panel = self._panel(DecisionLog)
        if panel is not None:
            decisions = tuple(e for e in self.events if e.kind in DECISION_EVENT_KINDS)
            panel.show(decisions[-DECISIONS_SHOWN:])

    def _theme_changed(self, theme: Theme) -> None:
        # The panels draw with concrete colours of the theme: draw them again.
        ledger = self._panel(LedgerTable)
        if ledger is not None:
            ledger.set_rows(self.ledger.values())
        diff = self._panel(DiffView)
        if diff is not None:
            diff.redraw()
        for kind in (StatusLine, LossPlot, ProgressPlot, GpuPanel, AgentPanel, DecisionLog):
            for widget in self.query(kind):
                widget.refresh()

    # -- selecting an experiment ---------------------------------------------------------------

    @on(DataTable.RowSelected, "#workers")
    def _worker_selected(self, event: DataTable.RowSelected) -> None:
        panel = self._panel(WorkersPanel)
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
        self.pinned_number = number
        self.pinned = None
        self._load_detail(number)
        if self.narrow:
            tabs = self._panel(TabbedContent)
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
        if message.number != self.pinned_number:
            return
        self.pinned = message.detail
        self._push_detail()
        self._push_loss()

    def action_follow_engine(self) -> None:
        """Show the engine's experiment again instead of the selected one."""
        if self.pinned_number is None:
            return
        self.pinned_number = None
        self.pinned = None
        self._push_detail()
        self._push_loss()

    def action_show_panel(self, index: int) -> None:
        """Show panel ``index`` (1-7): its tab on a narrow screen, focus on a wide one."""
        if not 1 <= index <= len(PANELS):
            return
        tab_id, _title, panel_id = PANELS[index - 1]
        tabs = self._panel(TabbedContent)
        if tabs is not None:
            tabs.active = tab_id
        try:
            panel = self.query_one(f"#{panel_id}")
        except NoMatches:
            return
        if panel.focusable:
            panel.focus()

    # -- commands --------------------------------------------------------------------------------

    def pending_proposal(self) -> int | None:
        """The proposal waiting for approval: the engine's, or (while it is down) the latest
        one the ledger shows as waiting, which it takes up again when it starts."""
        if self.status.awaiting_approval is not None:
            return self.status.awaiting_approval
        waiting = [row.number for row in self.ledger.values() if row.status == "awaiting_approval"]
        return max(waiting) if waiting else None

    def selected_row(self) -> LedgerRow | None:
        """The ledger row under the cursor."""
        ledger = self._panel(LedgerTable)
        return None if ledger is None else ledger.selected_row()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Show pause or resume, whichever applies."""
        paused = self.status.phase == "paused" or self.pause_requested
        if action == "pause":
            return not paused
        if action == "resume":
            return paused
        return True

    def send_command(self, steer: Steer, *, then_exit: str | None = None) -> Worker[Any]:
        """Write a command for the engine into the journal (in a thread)."""
        return self._post_command(steer.kind.value, steer.payload(), then_exit)

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
        if self.status.engine_running:
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
        number = self.pending_proposal()
        if number is None:
            self.notify("no proposal is waiting for approval", severity="warning")
            return
        self.send_command(Steer(Kind.APPROVE, experiment=number))

    def action_veto(self) -> None:
        """Veto the waiting proposal, with an optional reason for the agent."""
        number = self.pending_proposal()
        if number is None:
            self.notify("no proposal is waiting for approval", severity="warning")
            return

        def veto(reason: str | None) -> None:
            if reason is not None:
                self.send_command(Steer(Kind.VETO, experiment=number, reason=reason.strip()))

        self.push_screen(
            PromptScreen(
                f"Veto proposal #{number}",
                placeholder="why (optional): the agent reads it",
                hint="enter vetoes · esc cancels",
            ),
            veto,
        )

    def action_pause(self) -> None:
        """Pause the engine after the current step."""
        self.pause_requested = True
        self.send_command(Steer(Kind.PAUSE))
        self._push_status()
        self.refresh_bindings()

    def action_resume(self) -> None:
        """Let a paused engine go on."""
        self.pause_requested = False
        self.send_command(Steer(Kind.RESUME))
        self._push_status()
        self.refresh_bindings()

    def action_stop_training(self) -> None:
        """Stop the training in progress (the selected worker's, when the workers panel has
        the focus; with several workers and none selected, every one)."""
        workers = self._panel(WorkersPanel)
        if workers is not None and workers.has_focus and len(self.status.workers) > 1:
            number = workers.selected_experiment()
            if number is None:
                self.notify("the selected worker is idle", severity="warning")
                return
            self.send_command(Steer(Kind.STOP_RUN, experiment=number))
            return
        if self.status.phase not in ("training", "evaluating"):
            self.notify("no training is running", severity="warning")
            return
        self.send_command(Steer(Kind.STOP_RUN))

    def action_override(self, decision: str) -> None:
        """Keep or discard the selected ledger row against the engine's decision."""
        row = self.selected_row()
        if row is None:
            self.notify("select an experiment in the ledger first", severity="warning")
            return
        if not row.is_final or row.status in ("vetoed", "rejected"):
            self.notify(
                f"#{row.number} has no decision to override ({row.status})", severity="warning"
            )
            return
        kind = Kind.OVERRIDE_KEEP if decision == "keep" else Kind.OVERRIDE_DISCARD
        self.send_command(Steer(kind, experiment=row.number))

    def action_note(self) -> None:
        """Write a note that the agent reads before its next proposal."""

        def note(text: str | None) -> None:
            if text is not None and text.strip():
                self.send_command(Steer(Kind.NOTE, text=text.strip()))

        self.push_screen(
            PromptScreen(
                "Note to the agent",
                placeholder="e.g. try a smaller learning rate with a longer warmup",
            ),
            note,
        )

    def action_toggle_mode(self) -> None:
        """Switch between autonomous and supervised mode."""
        if self.status.mode is None:
            self.notify("no run yet: start the engine first", severity="warning")
            return
        mode = AUTONOMOUS if self.status.mode == SUPERVISED else SUPERVISED
        self.send_command(Steer(Kind.SET_MODE, mode=mode))

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

    def action_stop_engine_and_quit(self) -> None:
        """Ask the engine to stop, then close the screen."""
        self.send_command(Steer(Kind.STOP_ENGINE), then_exit=EXIT_STOP_ENGINE)

    def on_unmount(self) -> None:
        self.poller.close()


def delta_messages(delta: Delta) -> list[Any]:
    """The messages that carry a poll's changes to the app, in the order to apply them."""
    messages: list[Any] = []
    if delta.reset:
        messages.append(RunReset())
    if delta.status is not None:
        messages.append(StatusChanged(delta.status))
    if delta.ledger:
        messages.append(LedgerChanged(delta.ledger))
    if delta.events:
        messages.append(EventsAdded(delta.events))
    if delta.current_changed:
        messages.append(CurrentChanged(delta.current))
    if delta.loss is not None:
        messages.append(LossChanged(delta.loss))
    if delta.gpu is not None:
        messages.append(GpuChanged(delta.gpu))
    if delta.agent_stream is not None:
        messages.append(AgentStreamChanged(delta.agent_stream))
    if delta.answered:
        messages.append(CommandsAnswered(delta.answered))
    return messages


# ---------------------------------------------------------------------------------------------
# entry points


def choose_theme(requested: str | None, saved: str | None, configured: str) -> str:
    """The theme to start with: the one asked for, else the one saved last time, else the
    configured one. An unknown requested or configured name is a ValueError that lists the
    valid ones; an unknown saved one is ignored (the file may come from another version)."""
    if requested is not None:
        return resolve_theme(requested).name
    if saved is not None and saved in THEMES:
        return saved
    try:
        return resolve_theme(configured).name
    except ValueError as exc:
        raise ValueError(f"{exc} (set ui.theme in the workspace's config.toml)") from None


def configured_theme(workspace: Path) -> str:
    """The theme the workspace's settings name (the default when they cannot be read: the
    engine reports a broken config.toml itself)."""
    from cockpit.config import ConfigError, load_settings

    try:
        return load_settings(workspace).ui.theme
    except ConfigError:
        return DEFAULT_THEME


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
