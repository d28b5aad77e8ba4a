"""The check of the terminal the cockpit will draw in: its size, its colours, and tmux."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from cockpit.doctor.verdicts import PASS, WARN, Check

MIN_COLUMNS, MIN_LINES = 100, 30  # below this the cockpit's panels are cramped


def terminal_size() -> tuple[int, int] | None:
    """(columns, lines) of the terminal on stdout, stderr or stdin; None without one."""
    for stream in (sys.stdout, sys.stderr, sys.stdin):
        try:
            if stream is not None and stream.isatty():
                size = os.get_terminal_size(stream.fileno())
                return size.columns, size.lines
        except (OSError, ValueError):
            continue
    return None


def check_terminal(size: tuple[int, int] | None, environ: Mapping[str, str]) -> Check:
    """The terminal the cockpit will draw in: size, colours, and tmux."""
    term = environ.get("TERM", "")
    colorterm = environ.get("COLORTERM", "").lower()
    if colorterm in ("truecolor", "24bit"):
        colours = "true colour"
    elif term.endswith("256color"):
        colours = "256 colours"
    elif term in ("", "dumb"):
        colours = "no colours"
    else:
        colours = f"basic colours (TERM={term})"
    multiplexer = (
        "inside tmux" if environ.get("TMUX") else "inside screen" if environ.get("STY") else ""
    )
    details = {
        "columns": size[0] if size else None,
        "lines": size[1] if size else None,
        "term": term,
        "colorterm": colorterm,
        "multiplexer": multiplexer or None,
    }
    tip = (
        ""
        if multiplexer
        else "run the cockpit inside tmux (`tmux new -s cockpit`) so that a lost SSH keeps its "
        "screen; the engine survives either way"
    )
    parts = [
        "not a terminal" if size is None else f"{size[0]}x{size[1]}",
        colours,
        multiplexer or "not in tmux",
    ]
    summary = ", ".join(parts)
    if size is not None and (size[0] < MIN_COLUMNS or size[1] < MIN_LINES):
        return Check(
            "terminal",
            WARN,
            f"{summary}: under {MIN_COLUMNS}x{MIN_LINES}, the cockpit's panels are cramped",
            f"enlarge the window to at least {MIN_COLUMNS}x{MIN_LINES}"
            + (f"; {tip}" if tip else ""),
            details,
        )
    if colours == "no colours" and size is not None:
        return Check(
            "terminal",
            WARN,
            f"{summary}: TERM={term or '(unset)'} shows no colours",
            "export TERM=xterm-256color" + (f"; {tip}" if tip else ""),
            details,
        )
    return Check("terminal", PASS, summary, tip, details)
