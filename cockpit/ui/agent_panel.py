"""The agent panel: the model's reply as it streams, and what became of its proposals."""

from __future__ import annotations

from rich.console import RenderableType
from rich.style import Style
from rich.text import Text

from cockpit.ui import format as fmt
from cockpit.ui.palette import Palette
from cockpit.ui.panel import (
    AGENT_STATES,
    ValuePanel,
    agent_state_text,
    fit_lines,
    hard_wrap,
    palette_of,
    split_text,
    text_line,
)
from cockpit.views.readmodel import EventLine

# The events the panel shows.
AGENT_EVENT_KINDS = ("agent", "proposer", "note")


class AgentPanel(ValuePanel):
    """The model's reply as it streams, and the proposals it got rejected, fallbacks and
    notes. View: (StatusInfo or None, stream text, agent events)."""

    def render(self) -> RenderableType:
        palette = palette_of(self)
        width, height = self.size.width, self.size.height
        status, stream, events = self.view or (None, "", ())
        muted = Style(color=palette.muted)
        lines: list[Text] = []
        if status is not None:
            head = agent_state_text(status, palette)
            head.no_wrap = True
            if status.model:
                head.append(f"  {status.model}", Style(bold=True))
            split = split_text(status, palette)
            if split is not None:
                head.append("  ")
                head.append_text(split)
            if status.agent_message:
                head.append(f"  {status.agent_message}", muted)
            lines.append(head)
        shown_events = [_agent_event_line(event, palette) for event in reversed(events)]
        stream_lines = hard_wrap(stream.rstrip(), max(1, width - 2)) if stream.strip() else []
        room = height - len(lines)
        if stream_lines:
            stream_room = max(2, room - min(len(shown_events), max(2, room // 3)) - 1)
            tail = stream_lines[-stream_room:]
            lines.append(text_line(("▍reply so far", Style(color=palette.primary, bold=True))))
            lines.extend(
                text_line(("▍", Style(color=palette.primary)), (text, "")) for text in tail
            )
        if shown_events:
            lines.extend(shown_events)
        if len(lines) <= (1 if status is not None else 0):
            lines.append(text_line(("nothing from the agent yet", muted)))
        return fit_lines(lines, width, height)


def _agent_event_line(event: EventLine, palette: Palette) -> Text:
    """One agent event: what kind (``data.type``: rejected, fallback, resumed, health, fix…)
    with a mark and a colour, and its message."""
    kind = event.data.get("type")
    line = text_line((fmt.time_of_day(event.at) + " ", Style(color=palette.muted)))
    if event.kind == "note":
        line.append("✎ note ", Style(color=palette.accent, bold=True))
        line.append(event.message)
        return line
    if kind == "rejected":
        line.append("✗ rejected ", Style(color=palette.crash, bold=True))
        # The reason first: it is what the model is told, and what a narrow panel keeps.
        reason = str(event.data.get("reason") or "")
        if reason and reason not in event.message:
            line.append(reason)
            line.append(f" — {event.message}", Style(color=palette.muted))
        else:
            line.append(event.message)
        return line
    if kind == "fallback":
        line.append("↯ ", Style(color=palette.warning, bold=True))
        line.append(event.message, Style(color=palette.warning))
        return line
    if kind == "resumed":
        line.append("✓ ", Style(color=palette.success, bold=True))
        line.append(event.message, Style(color=palette.success))
        return line
    if kind == "health":
        state = str(event.data.get("state", ""))
        _words, level = AGENT_STATES.get(state, (state, "warning"))
        colour = {"success": palette.success, "warning": palette.warning}.get(level, palette.error)
        line.append("● ", Style(color=colour))
        line.append(event.message)
        return line
    line.append("• ", Style(color=palette.primary))
    line.append(event.message)
    return line
