"""How numbers and times read on screen."""

from __future__ import annotations

import math
import time

MIB_PER_GIB = 1024.0


def metric(value: float | None, digits: int = 4) -> str:
    """A val_bpb, or a dash when there is none."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


def signed(value: float | None, digits: int = 4) -> str:
    """A difference with its sign (+0.0123, -0.0456), or blank when there is none."""
    if value is None or not math.isfinite(value):
        return ""
    return f"{value:+.{digits}f}"


def gib(megabytes: float | None) -> str:
    """MiB as GiB with one decimal, or a dash."""
    if megabytes is None or not math.isfinite(megabytes):
        return "—"
    return f"{megabytes / MIB_PER_GIB:.1f}"


def memory(megabytes: float | None) -> str:
    """A memory size for people: MiB below a GiB, GiB above."""
    if megabytes is None or not math.isfinite(megabytes):
        return "N/A"
    if megabytes < MIB_PER_GIB:
        return f"{megabytes:.0f} MiB"
    return f"{megabytes / MIB_PER_GIB:.1f} GiB"


def clock(seconds: float | None) -> str:
    """Seconds as m:ss (h:mm:ss from an hour), or a dash."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def time_of_day(at: float) -> str:
    """A journal timestamp as the local time of day, HH:MM:SS."""
    return time.strftime("%H:%M:%S", time.localtime(at))


def percent(value: float | None) -> str:
    """A percentage without decimals, or N/A."""
    if value is None or not math.isfinite(value):
        return "N/A"
    return f"{value:.0f}%"


def shorten(text: str, width: int) -> str:
    """One line of ``text`` cut to ``width`` characters with an ellipsis."""
    line = " ".join(text.split())
    if width <= 0:
        return ""
    return line if len(line) <= width else line[: max(0, width - 1)] + "…"
