"""The cockpit's colour themes and the stylesheet of its layout.

Three Textual themes: ``midnight`` (the default, dark), ``daylight`` (light) and
``contrast`` (high contrast, for bright rooms, projectors and tired eyes). Besides Textual's
own colours each theme names the colours the cockpit draws with itself (plot series, ledger
statuses) as ``cockpit-*`` variables, so that a new theme only has to add a ``Theme`` here.

``LAYOUT_CSS`` is the stylesheet of the app's layout; it uses only theme variables, so it
works with every theme.
"""

from __future__ import annotations

from pathlib import Path

from textual.theme import Theme

DEFAULT_THEME = "midnight"
LAYOUT_CSS = Path(__file__).resolve().parent / "cockpit.tcss"

# The colours the cockpit draws with, besides Textual's own: every theme sets all of them.
COCKPIT_COLOURS = (
    "cockpit-live",  # the running experiment's loss curve
    "cockpit-best",  # the best run's loss curve and the running-best step line
    "cockpit-keep",  # kept experiments
    "cockpit-discard",  # discarded experiments
    "cockpit-crash",  # crashed or timed-out experiments
    "cockpit-veto",  # vetoed proposals
    "cockpit-running",  # the experiment in progress
    "cockpit-muted",  # axes, labels and anything secondary
)

MIDNIGHT = Theme(
    name="midnight",
    primary="#5EA1FF",
    secondary="#8B7CF6",
    accent="#FFB454",
    warning="#F5C451",
    error="#FF6B6B",
    success="#4FD18B",
    foreground="#D7DCEA",
    background="#0B1021",
    surface="#121933",
    panel="#1B2443",
    dark=True,
    variables={
        "cockpit-live": "#FFB454",
        "cockpit-best": "#4FD18B",
        "cockpit-keep": "#4FD18B",
        "cockpit-discard": "#8A93AD",
        "cockpit-crash": "#FF6B6B",
        "cockpit-veto": "#C792EA",
        "cockpit-running": "#5EA1FF",
        "cockpit-muted": "#6B7490",
        "footer-key-foreground": "#FFB454",
        "block-cursor-background": "#2A3B66",
        "block-cursor-foreground": "#FFFFFF",
        "block-cursor-text-style": "bold",
    },
)

DAYLIGHT = Theme(
    name="daylight",
    primary="#1F5FBF",
    secondary="#6B4FBB",
    accent="#B35C00",
    warning="#9A6700",
    error="#C62828",
    success="#1B7F3B",
    foreground="#1D232F",
    background="#F7F6F2",
    surface="#FFFFFF",
    panel="#E9E6DE",
    dark=False,
    variables={
        "cockpit-live": "#C25E00",
        "cockpit-best": "#1B7F3B",
        "cockpit-keep": "#1B7F3B",
        "cockpit-discard": "#6B7280",
        "cockpit-crash": "#C62828",
        "cockpit-veto": "#7B3FA0",
        "cockpit-running": "#1F5FBF",
        "cockpit-muted": "#7C8394",
        "footer-key-foreground": "#B35C00",
        "block-cursor-background": "#CFE0FA",
        "block-cursor-foreground": "#10141C",
        "block-cursor-text-style": "bold",
    },
)

CONTRAST = Theme(
    name="contrast",
    primary="#00D7FF",
    secondary="#FFFF00",
    accent="#FFFF00",
    warning="#FFD700",
    error="#FF4040",
    success="#00FF5F",
    foreground="#FFFFFF",
    background="#000000",
    surface="#000000",
    panel="#202020",
    dark=True,
    luminosity_spread=0.25,
    text_alpha=1.0,
    variables={
        "cockpit-live": "#FFFF00",
        "cockpit-best": "#00FF5F",
        "cockpit-keep": "#00FF5F",
        "cockpit-discard": "#C0C0C0",
        "cockpit-crash": "#FF4040",
        "cockpit-veto": "#FF87FF",
        "cockpit-running": "#00D7FF",
        "cockpit-muted": "#B0B0B0",
        "footer-key-foreground": "#FFFF00",
        "block-cursor-background": "#FFFF00",
        "block-cursor-foreground": "#000000",
        "block-cursor-text-style": "bold",
    },
)

THEMES: dict[str, Theme] = {theme.name: theme for theme in (MIDNIGHT, DAYLIGHT, CONTRAST)}
THEME_NAMES: tuple[str, ...] = tuple(THEMES)


def resolve_theme(name: str) -> Theme:
    """The theme called ``name``; a ValueError naming the valid themes for any other name."""
    try:
        return THEMES[name]
    except KeyError:
        raise ValueError(
            f"unknown theme {name!r}; choose one of: {', '.join(THEME_NAMES)}"
        ) from None


def next_theme(name: str) -> str:
    """The theme after ``name`` in the cycle that ``t`` walks (the first after an unknown one)."""
    if name not in THEMES:
        return THEME_NAMES[0]
    return THEME_NAMES[(THEME_NAMES.index(name) + 1) % len(THEME_NAMES)]
