"""The decisions panel: every keep, discard, crash and veto of the run."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import RenderableType
from rich.style import Style
from rich.text import Text

from cockpit.ui import format as fmt
from cockpit.ui.palette import status_word
from cockpit.ui.panel import ValuePanel, fit_lines, palette_of, text_line
from cockpit.views.readmodel import EventLine

# The events the panel shows.
DECISION_EVENT_KINDS = ("decision",)


class DecisionLog(ValuePanel):
    """Every keep, discard, crash and veto, newest first, with its reason and time. View: a
    tuple of decision events."""

    def render(self) -> RenderableType:
        palette = palette_of(self)
        width, height = self.size.width, self.size.height
        events: Sequence[EventLine] = self.view or ()
        if not events:
            return Text("no decision yet", style=Style(color=palette.muted))
        lines = []
        for event in reversed(events):
            decision = str(event.data.get("decision", ""))
            status = str(event.data.get("status", decision))
            colour = palette.status_colour(status)
            number = event.data.get("number")
            reason = event.message
            if "(" in reason and reason.endswith(")"):
                reason = reason[reason.index("(") + 1 : -1]
            line = text_line(
                (fmt.time_of_day(event.at) + " ", Style(color=palette.muted)),
                (f"#{number}".rjust(5) + " ", Style(bold=True, color=colour)),
                (f"{status_word(status):<8} ", Style(bold=True, color=colour)),
            )
            previous = event.data.get("previous_decision")
            if previous and previous != decision:
                line.append(f"(was {previous}) ", Style(color=palette.warning))
            line.append(reason)
            lines.append(line)
        return fit_lines(lines, width, height)
