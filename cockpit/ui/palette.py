"""The colours the cockpit draws with itself (plots, ledger statuses), taken from the theme."""

from __future__ import annotations

from dataclasses import dataclass

from textual.theme import Theme

# What each experiment status looks like in the ledger: a palette field and a word of at
# most eight letters (the width of the ledger's status column).
STATUS_LOOK: dict[str, tuple[str, str]] = {
    "keep": ("keep", "keep"),
    "discard": ("discard", "discard"),
    "crash": ("crash", "crash"),
    "timeout": ("crash", "timeout"),
    "vetoed": ("veto", "vetoed"),
    "rejected": ("veto", "rejected"),
    "interrupted": ("muted", "stopped"),
    "proposed": ("running", "proposed"),
    "awaiting_approval": ("waiting", "waiting"),
    "committed": ("running", "queued"),
    "training": ("running", "training"),
    "evaluating": ("running", "eval"),
}


@dataclass(frozen=True)
class Palette:
    """Concrete colours (hex) for one theme."""

    foreground: str
    background: str
    surface: str
    primary: str
    accent: str
    success: str
    warning: str
    error: str
    live: str
    best: str
    keep: str
    discard: str
    crash: str
    veto: str
    running: str
    waiting: str
    muted: str
    dark: bool

    @classmethod
    def from_theme(cls, theme: Theme) -> Palette:
        """The palette of a theme; a missing ``cockpit-*`` colour falls back to Textual's."""
        foreground = theme.foreground or ("#E0E0E0" if theme.dark else "#1E1E1E")
        background = theme.background or ("#121212" if theme.dark else "#EFEFEF")
        success = theme.success or "#4EBF71"
        warning = theme.warning or "#FFA62B"
        error = theme.error or "#BA3C5B"
        primary = theme.primary
        accent = theme.accent or warning
        variables = theme.variables

        def pick(name: str, fallback: str) -> str:
            return variables.get(f"cockpit-{name}", fallback)

        return cls(
            foreground=foreground,
            background=background,
            surface=theme.surface or background,
            primary=primary,
            accent=accent,
            success=success,
            warning=warning,
            error=error,
            live=pick("live", accent),
            best=pick("best", success),
            keep=pick("keep", success),
            discard=pick("discard", "#888888"),
            crash=pick("crash", error),
            veto=pick("veto", theme.secondary or primary),
            running=pick("running", primary),
            waiting=pick("waiting", warning),
            muted=pick("muted", "#808080"),
            dark=theme.dark,
        )

    def status_colour(self, status: str) -> str:
        """The colour of an experiment status."""
        field_name = STATUS_LOOK.get(status, ("muted", status))[0]
        colour: str = getattr(self, field_name)
        return colour


def status_word(status: str) -> str:
    """The short word the ledger shows for a status."""
    return STATUS_LOOK.get(status, ("muted", status))[1]
