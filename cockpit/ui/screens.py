"""Screens over the cockpit: the key help and a one-line prompt (veto reason, note)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from cockpit.ui import keys

# (key, what it does) in the order the help lists them.
KEY_HELP = keys.help_lines()


class HelpScreen(ModalScreen[None]):
    """Every key, what it does, and that quitting leaves the engine running."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss_help", "close", show=False),
    ]

    def __init__(self, keys: Iterable[tuple[str, str]] = KEY_HELP) -> None:
        super().__init__()
        self._keys = tuple(keys)

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style=Style(bold=True), justify="right")
        table.add_column()
        for key, meaning in self._keys:
            table.add_row(key, meaning)
        with Vertical(id="help-box"):
            yield Label("Keys", id="help-title")
            yield Static(table, id="help-keys")
            yield Static(
                Text(
                    "The engine runs on its own: closing this screen (q) or losing the "
                    "terminal leaves it working. `cockpit` attaches again; `cockpit stop` "
                    "stops it.",
                    style="italic",
                ),
                id="help-note",
            )
            yield Label("esc closes", id="help-hint")

    def action_dismiss_help(self) -> None:
        """Close the help."""
        self.dismiss(None)


class PromptScreen(ModalScreen[str | None]):
    """Ask for one line of text: enter gives it back, escape gives back None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel", show=False)]

    def __init__(self, title: str, placeholder: str = "", hint: str = "") -> None:
        super().__init__()
        self._title = title
        self._placeholder = placeholder
        self._hint = hint or "enter sends · esc cancels"

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt-box"):
            yield Label(self._title, id="prompt-title")
            yield Input(placeholder=self._placeholder, id="prompt-input")
            yield Label(self._hint, id="prompt-hint")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Give back what was typed."""
        event.stop()
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        """Give back nothing."""
        self.dismiss(None)
