"""Hands each panel its part of the screen's state ("attributes down"): the app's handlers
change the `ScreenState`, then ask the feed to show the parts that changed. Each panel redraws
only when what it is handed differs; a panel that the layout shown lacks is skipped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.app import App

from cockpit.ui.agent_panel import AGENT_EVENT_KINDS, AgentPanel
from cockpit.ui.body import find_panel
from cockpit.ui.decision_log import DECISION_EVENT_KINDS, DecisionLog
from cockpit.ui.diff_view import DiffView
from cockpit.ui.gpu_panel import GpuPanel
from cockpit.ui.ledger_table import LedgerTable
from cockpit.ui.loss_plot import LossPlot
from cockpit.ui.panel import palette_of
from cockpit.ui.progress_plot import ProgressPlot
from cockpit.ui.screen_state import ScreenState
from cockpit.ui.status_line import StatusLine
from cockpit.ui.workers_panel import WorkersPanel
from cockpit.views.readmodel import LedgerRow, StatusInfo

AGENT_EVENTS_SHOWN = 60
DECISIONS_SHOWN = 120


class PanelFeed:
    """Shows the state of one app's screen on its panels."""

    def __init__(self, app: App[Any], state: ScreenState) -> None:
        self.app = app
        self.state = state

    def show_everything(self) -> None:
        """Hand every panel what it shows (after a new layout or a new run)."""
        self.show_status()
        ledger = find_panel(self.app, LedgerTable)
        if ledger is not None:
            ledger.set_rows(self.state.ledger.values())
            self._title_ledger(ledger)
        self.show_detail()
        self.show_loss()
        self.show_progress()
        self.show_gpu()
        self.show_agent()
        self.show_log()

    def show_status(self) -> None:
        """The status line."""
        line = find_panel(self.app, StatusLine)
        if line is not None:
            state = self.state
            line.show((state.status, state.poll_error, state.pause_requested))

    def show_new_rows(self, rows: Sequence[LedgerRow]) -> None:
        """Ledger rows that are new or changed."""
        ledger = find_panel(self.app, LedgerTable)
        if ledger is not None:
            ledger.upsert(rows)
            self._title_ledger(ledger)

    def _title_ledger(self, ledger: LedgerTable) -> None:
        ledger.border_title = f"Ledger · {len(self.state.ledger)} experiments"

    def show_detail(self) -> None:
        """The selected experiment, or the one the engine works on."""
        view = find_panel(self.app, DiffView)
        if view is None:
            return
        state = self.state
        if state.pinned_number is not None:
            view.show(state.pinned, True)
            view.border_title = f"Experiment #{state.pinned_number}"
            return
        note = ""
        status, current = state.status, state.current
        if (
            status.phase == "proposing"
            and status.experiment is not None
            and (current is None or current.number != status.experiment)
        ):
            note = f"the agent is writing proposal #{status.experiment}; the latest one:"
        view.show(current, False, note)
        waiting = current is not None and current.status == "awaiting_approval"
        view.border_title = "Proposal · awaiting approval" if waiting else "Proposal"

    def show_loss(self) -> None:
        """The live loss, or the selected experiment's."""
        plot = find_panel(self.app, LossPlot)
        if plot is not None:
            plot.show((self.state.loss, self.state.pinned_detail()))

    def show_progress(self) -> None:
        """val_bpb of every experiment."""
        plot = find_panel(self.app, ProgressPlot)
        if plot is not None:
            ledger = self.state.ledger
            plot.show(tuple(ledger[number] for number in sorted(ledger)))

    def show_gpu(self) -> None:
        """The GPU readings, and the workers (each worker's GPU utilisation)."""
        panel = find_panel(self.app, GpuPanel)
        if panel is not None:
            panel.show((self.state.gpu, self.state.status.engine_running))
        self._show_workers()

    def _show_workers(self) -> None:
        panel = find_panel(self.app, WorkersPanel)
        if panel is None:
            return
        workers = self.state.status.workers
        panel.set_class(len(workers) > 1, "several")
        panel.border_title = f"Workers ({len(workers)})"
        panel.show(workers, self.state.gpu.latest, palette_of(panel))

    def show_agent(self) -> None:
        """The model's state, its reply so far and the agent's events."""
        panel = find_panel(self.app, AgentPanel)
        if panel is None:
            return
        state = self.state
        events = tuple(e for e in state.events if e.kind in AGENT_EVENT_KINDS)
        status = state.status
        # Only what the panel shows of the status, so the countdown does not redraw it.
        agent = StatusInfo(
            workspace="",
            proposer=status.proposer,
            model=status.model,
            agent_state=status.agent_state,
            agent_message=status.agent_message,
            search_split=status.search_split,
        )
        panel.show((agent, state.agent_stream, events[-AGENT_EVENTS_SHOWN:]))

    def show_log(self) -> None:
        """The decisions."""
        panel = find_panel(self.app, DecisionLog)
        if panel is not None:
            decisions = tuple(e for e in self.state.events if e.kind in DECISION_EVENT_KINDS)
            panel.show(decisions[-DECISIONS_SHOWN:])

    def redraw(self) -> None:
        """Draw every panel again: they draw with concrete colours of the theme, which
        changed."""
        ledger = find_panel(self.app, LedgerTable)
        if ledger is not None:
            ledger.set_rows(self.state.ledger.values())
        diff = find_panel(self.app, DiffView)
        if diff is not None:
            diff.redraw()
        for kind in (StatusLine, LossPlot, ProgressPlot, GpuPanel, AgentPanel, DecisionLog):
            for widget in self.app.query(kind):
                widget.refresh()
