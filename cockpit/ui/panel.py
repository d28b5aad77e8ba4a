"""What the panels share: the base of a panel drawn from one value, the text helpers that
cut its lines to its size, and the words for the model server's state that the status line and
the agent panel both use."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from agent import names
from cockpit.ui.palette import Palette
from cockpit.views.readmodel import StatusInfo, describe_split


def palette_of(widget: Widget) -> Palette:
    """The palette of the app's current theme."""
    return Palette.from_theme(widget.app.current_theme)


class ValuePanel(Widget):
    """A panel drawn from one value: ``show()`` stores it and redraws when it differs."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._view: Any = None

    def show(self, view: Any) -> None:
        """Draw ``view`` (nothing happens when it equals what is drawn)."""
        if view != self._view:
            self._view = view
            self.refresh()

    @property
    def view(self) -> Any:
        """What the panel shows now."""
        return self._view


def text_line(*parts: tuple[str, str | Style] | str | Text) -> Text:
    """One line of a panel from its parts (plain, styled ``(text, style)``, or a Text); it
    never wraps, and is cut with an ellipsis."""
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    for part in parts:
        if isinstance(part, Text):
            text.append_text(part)
        elif isinstance(part, str):
            text.append(part)
        else:
            text.append(*part)
    return text


def fit_lines(lines: Sequence[Text], width: int, height: int) -> Text:
    """Lines cut to the panel's size, as one text."""
    shown = list(lines)[: max(0, height)]
    for line in shown:
        line.truncate(max(0, width), overflow="ellipsis")
    joined = Text("\n", end="").join(shown)
    joined.no_wrap = True
    joined.overflow = "ellipsis"
    return joined


def hard_wrap(text: str, width: int) -> list[str]:
    """Lines of ``text`` cut at ``width`` characters, wherever that falls (tabs as four
    spaces)."""
    lines: list[str] = []
    for raw in text.splitlines() or [""]:
        raw = raw.expandtabs(4)
        while len(raw) > width:
            lines.append(raw[:width])
            raw = raw[width:]
        lines.append(raw)
    return lines


# The model server's state, as the status line (cockpit.ui.status_line) and the agent panel
# (cockpit.ui.agent_panel) say it: (words, level).
AGENT_STATES = {
    "ready": ("Ollama ready", "success"),
    "server_down": ("Ollama unreachable", "error"),
    "model_missing": ("model not pulled", "error"),
    "timeout": ("Ollama timed out", "warning"),
    "bad_reply": ("bad reply from the model", "warning"),
    "error": ("Ollama error", "error"),
}


def agent_state_text(status: StatusInfo, palette: Palette) -> Text:
    """The model server's state in a few words; without a model, the proposer that works
    alone (Optuna or the built-in one)."""
    muted = Style(color=palette.muted)
    if (
        status.model is None
        and status.proposer is not None
        and not names.uses_model(status.proposer)
    ):
        name = names.label(status.proposer)
        return Text(f"{name} proposer (no LLM)", style=muted, end="")
    if status.agent_state is None:
        return Text("Ollama: no word yet", style=muted, end="")
    words, level = AGENT_STATES.get(status.agent_state, (status.agent_state, "warning"))
    colour = {"success": palette.success, "warning": palette.warning, "error": palette.error}[level]
    return Text("● " + words, style=Style(color=colour), end="")


def split_text(status: StatusInfo, palette: Palette) -> Text | None:
    """The hybrid's split, ``hybrid: LLM 35% · Optuna 65%`` (None: not the hybrid's turn)."""
    if status.search_split is None:
        return None
    return text_line(("hybrid: ", Style(color=palette.muted)), describe_split(status.search_split))
