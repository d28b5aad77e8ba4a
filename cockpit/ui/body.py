"""The cockpit's body: the panels side by side on a wide terminal, as tabs on a narrow one;
which tab is shown and which panel has the focus; and how the app finds a panel in whichever
layout is shown."""

from __future__ import annotations

from typing import Any, TypeVar

from textual.app import App, ComposeResult
from textual.containers import Container, Horizontal, Vertical
from textual.css.query import NoMatches
from textual.geometry import Size
from textual.widget import Widget
from textual.widgets import TabbedContent, TabPane

from cockpit.ui.agent_panel import AgentPanel
from cockpit.ui.decision_log import DecisionLog
from cockpit.ui.diff_view import DiffView
from cockpit.ui.gpu_panel import GpuPanel
from cockpit.ui.keys import PANELS
from cockpit.ui.ledger_table import LedgerTable
from cockpit.ui.loss_plot import LossPlot
from cockpit.ui.progress_plot import ProgressPlot
from cockpit.ui.workers_panel import WorkersPanel

# Below either size the panels fold into tabs.
WIDE_MIN_COLUMNS = 100
WIDE_MIN_ROWS = 32

# Each panel's border title, by panel id.
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

_W = TypeVar("_W", bound=Widget)


def is_narrow(size: Size) -> bool:
    """Whether a terminal of this size shows the panels as tabs."""
    return size.width < WIDE_MIN_COLUMNS or size.height < WIDE_MIN_ROWS


def find_panel(app: App[Any], kind: type[_W]) -> _W | None:
    """The app's one widget of ``kind``; None when the layout shown has none, or the app is
    closing (a worker's last message may still arrive then)."""
    if not app.screen_stack:
        return None
    try:
        return app.query_one(kind)
    except NoMatches:
        return None


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

    async def fold(self, narrow: bool) -> None:
        """Lay the panels out again, as tabs (``narrow``) or side by side; folded again into
        tabs, they open on the tab that was shown last."""
        tabs = self._tabs()
        if tabs is not None and tabs.active:
            self.active_tab = tabs.active
        self.narrow = narrow
        await self.recompose()

    def focus_shown(self) -> None:
        """Focus the ledger; on tabs, what the active tab shows (focus inside another tab would
        switch to it)."""
        tabs = self._tabs()
        if tabs is None:
            self.query_one(LedgerTable).focus()
            return
        panel_id = next(panel for tab, _title, panel in PANELS if tab == tabs.active)
        panel = self.query_one(f"#{panel_id}")
        if panel.focusable:
            panel.focus()

    def show_panel(self, index: int) -> None:
        """Show panel ``index`` (1-7): its tab on a narrow screen, focus on a wide one."""
        if not 1 <= index <= len(PANELS):
            return
        tab_id, _title, panel_id = PANELS[index - 1]
        tabs = self._tabs()
        if tabs is not None:
            tabs.active = tab_id
        try:
            panel = self.query_one(f"#{panel_id}")
        except NoMatches:
            return
        if panel.focusable:
            panel.focus()

    def _tabs(self) -> TabbedContent | None:
        try:
            return self.query_one(TabbedContent)
        except NoMatches:
            return None
