"""The cockpit's keys: one table from which the app's bindings (and so its footer), the help
screen and the status line's hint are made, so that a key is named in one place."""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding

# The narrow layout's panels, in the order of their number keys and tabs: (tab id, title,
# panel id).
PANELS: tuple[tuple[str, str, str], ...] = (
    ("tab-ledger", "Ledger", "ledger"),
    ("tab-diff", "Diff", "diff"),
    ("tab-loss", "Loss", "loss"),
    ("tab-progress", "Progress", "progress"),
    ("tab-gpu", "GPU", "gpu"),
    ("tab-agent", "Agent", "agent"),
    ("tab-log", "Log", "log"),
)


@dataclass(frozen=True)
class Key:
    """A key of the cockpit. ``action`` is the app's (None: a widget's own, such as enter on
    the ledger); ``label`` its word in the footer, where ``in_footer``; ``help`` its line on the
    help screen ("": not listed there, another line speaks for it)."""

    name: str  # as Textual names it: "a", "question_mark", "escape"
    action: str | None
    label: str
    help: str
    display: str = ""  # as a person reads it, where that is not the name ("?", "esc")
    in_footer: bool = True

    @property
    def shown(self) -> str:
        return self.display or self.name

    def binding(self) -> Binding:
        return Binding(
            self.name,
            self.action or "",
            self.label,
            show=self.in_footer,
            key_display=self.display or None,
        )


# In the footer's order, which cuts what does not fit: the keys needed most come first.
KEYS: tuple[Key, ...] = (
    Key("a", "approve", "approve", "approve the proposal waiting for you"),
    Key("v", "veto", "veto", "veto it (you may give a reason; the agent reads it)"),
    Key("p", "pause", "pause", "pause after the current step / resume"),
    Key("p", "resume", "resume", ""),
    Key(
        "s", "stop_training", "stop run", "stop the training in progress (recorded as interrupted)"
    ),
    Key("n", "note", "note", "write a note to the agent: it reads it before its next proposal"),
    Key("question_mark", "help", "help", "this help", display="?"),
    Key("q", "quit_screen", "quit", "quit the screen; the engine keeps running"),
    Key(
        "Q",
        "stop_engine_and_quit",
        "stop+quit",
        "stop the engine (after the current experiment) and quit",
        display="Q",
    ),
    Key("k", "override('keep')", "keep", "keep the selected ledger row (override the decision)"),
    Key(
        "d", "override('discard')", "discard", "discard the selected row (revert the current best)"
    ),
    Key("m", "toggle_mode", "mode", "switch between autonomous and supervised mode"),
    Key("t", "next_theme", "theme", "next colour theme (remembered)"),
    Key("escape", "follow_engine", "follow", "follow the engine again", "esc", in_footer=False),
    *(
        Key(str(index), f"show_panel({index})", title, "", in_footer=False)
        for index, (_tab, title, _panel) in enumerate(PANELS, 1)
    ),
    Key("enter", None, "", "show the selected ledger row's diff, curve and decision"),
    Key("tab", None, "", "move between panels"),
)
# The line that stands for the panels' number keys on the help screen, and the screen's order
# (by key as shown).
PANEL_KEYS_HELP = (
    f"1-{len(PANELS)}",
    "narrow screens: show " + ", ".join(title.lower() if title != "GPU" else title
                                        for _t, title, _p in PANELS),
)  # fmt: skip
HELP_ORDER = ("a", "v", "p", "s", "k", "d", "n", "m", "t", "enter", "esc", PANEL_KEYS_HELP[0],
              "tab", "?", "q", "Q")  # fmt: skip


def bindings() -> list[Binding]:
    """The app's bindings: every key with an action of the app's."""
    return [key.binding() for key in KEYS if key.action is not None]


def help_lines() -> tuple[tuple[str, str], ...]:
    """(key, what it does) for the help screen, in `HELP_ORDER`."""
    lines = {key.shown: key.help for key in KEYS if key.help}
    lines[PANEL_KEYS_HELP[0]] = PANEL_KEYS_HELP[1]
    assert set(HELP_ORDER) == set(lines), "every key with help has a place in HELP_ORDER"
    return tuple((shown, lines[shown]) for shown in HELP_ORDER)


def shown(action: str) -> str:
    """How the key of ``action`` reads on screen (for hints such as "a approve")."""
    return next(key.shown for key in KEYS if key.action == action)
